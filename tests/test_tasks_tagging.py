"""SequenceTagger: per-step classification scored only on real steps whose target is not -100."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from seqlab.data.collate import pad_collate
from seqlab.tasks.tagging import IGNORE_INDEX, SequenceTagger

pytestmark = pytest.mark.filterwarnings("ignore:.*self.log.*:UserWarning")

ENCODER = {"hidden_size": 8, "num_layers": 1, "dropout": 0.0}
OPTIMIZER = {"_target_": "torch.optim.Adam", "lr": 1e-3}


def tagger(bidirectional: bool = False) -> SequenceTagger:
    torch.manual_seed(0)
    encoder = {**ENCODER, "bidirectional": bidirectional}
    return SequenceTagger(3, 4, encoder=encoder, optimizer=OPTIMIZER).eval()


def samples() -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    lengths, ignored = [6, 2, 4], [[0, 1], [], [3]]
    out = []
    for length, skip in zip(lengths, ignored, strict=True):
        y = torch.randint(0, 4, (length,), generator=generator)
        y[skip] = IGNORE_INDEX
        out.append((torch.randn(length, 3, generator=generator), y))
    return out


@pytest.mark.parametrize("bidirectional", [False, True])
def test_padded_batch_scores_only_real_unignored_steps(bidirectional: bool) -> None:
    model = tagger(bidirectional)
    data = samples()
    batch = pad_collate(data, pad_targets=True)
    # Padded targets are 0, a real class: they must not count either.
    assert (batch["y"][1, 2:] == 0).all()
    with torch.no_grad():
        loss = model.shared_step(batch, "val")
        logits = torch.cat([model(x[None], None)[0] for x, _ in data])
    targets = torch.cat([y for _, y in data])
    keep = targets != IGNORE_INDEX
    torch.testing.assert_close(loss, F.cross_entropy(logits[keep], targets[keep]))
    accuracy = (logits[keep].argmax(-1) == targets[keep]).float().mean()
    torch.testing.assert_close(model.val_metrics.compute()["val/acc"], accuracy)


def test_a_batch_with_no_scored_step_adds_nothing_to_the_loss() -> None:
    model = tagger()
    data = samples()
    ignored = [(x, torch.full_like(y, IGNORE_INDEX)) for x, y in data]
    with torch.no_grad():
        assert model.shared_step(pad_collate(ignored, pad_targets=True), "val") == 0
        model.shared_step(pad_collate(data, pad_targets=True), "val")
    alone = tagger()
    with torch.no_grad():
        alone.shared_step(pad_collate(data, pad_targets=True), "val")
    torch.testing.assert_close(model.val_loss_mean.compute(), alone.val_loss_mean.compute())


def test_output_is_one_distribution_per_step() -> None:
    batch = pad_collate(samples(), pad_targets=True)
    logits = tagger()(batch["x"], batch["lengths"])
    assert logits.shape == (3, 6, 4)
