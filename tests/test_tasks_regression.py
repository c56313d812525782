"""SequenceRegressor: many-to-one regression, MSE loss, MSE / MAE metrics."""

from __future__ import annotations

import pytest
import torch

from seqlab.data.collate import pad_collate
from seqlab.tasks.regression import SequenceRegressor

pytestmark = pytest.mark.filterwarnings("ignore:.*self.log.*:UserWarning")

ENCODER = {"hidden_size": 8, "num_layers": 1, "dropout": 0.0}
OPTIMIZER = {"_target_": "torch.optim.Adam", "lr": 1e-3}


def regressor(output_size: int, pooling: str = "last") -> SequenceRegressor:
    torch.manual_seed(0)
    encoder = {**ENCODER, "pooling": pooling}
    return SequenceRegressor(2, output_size, encoder=encoder, optimizer=OPTIMIZER).eval()


def samples(output_shape: tuple[int, ...]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    return [
        (
            torch.randn(length, 2, generator=generator),
            torch.randn(output_shape, generator=generator),
        )
        for length in (5, 2, 3)
    ]


@pytest.mark.parametrize(("output_size", "shape"), [(1, ()), (3, (3,))])
@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_padded_batch_predicts_as_each_sequence_alone_and_loss_is_their_mse(
    output_size: int, shape: tuple[int, ...], pooling: str
) -> None:
    model = regressor(output_size, pooling)
    data = samples(shape)
    batch = pad_collate(data)
    batch["x"][1, 2:] = 1e3  # padding must not reach the prediction
    with torch.no_grad():
        preds = model(batch["x"], batch["lengths"])
        alone = torch.stack([model(x[None], None)[0] for x, _ in data])
        loss = model.shared_step(batch, "test")
    assert preds.shape == (3, *shape)
    torch.testing.assert_close(preds, alone)
    error = alone - batch["y"]
    torch.testing.assert_close(loss, error.pow(2).mean())
    metrics = model.test_metrics.compute()
    torch.testing.assert_close(metrics["test/mse"], error.pow(2).mean())
    torch.testing.assert_close(metrics["test/mae"], error.abs().mean())


@pytest.mark.parametrize("pooling", [None, "none"])
def test_an_encoder_that_pools_nothing_is_refused(pooling) -> None:
    with pytest.raises(ValueError, match="pooling=null: this task reads one vector per sequence"):
        regressor(1, pooling)
