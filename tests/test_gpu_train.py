"""Training on a GPU: mixed precision with both LSTM implementations, and fused weights that
stay one contiguous block. Skipped without CUDA (run them with `make test-gpu`)."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from seqlab.nn import LSTMEncoder
from seqlab.train import train

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

SMALL_ADDING = [
    "data=adding",
    "data.seq_len=50",
    "data.train_size=512",
    "data.val_size=128",
    "data.test_size=128",
    "trainer=gpu",
    "trainer.max_epochs=2",
]


@pytest.mark.parametrize("precision", ["16-mixed", "bf16-mixed", "32-true"])
@pytest.mark.parametrize("impl", ["fused", "loop"])
def test_mixed_precision_trains_with_finite_loss(make_cfg, precision: str, impl: str) -> None:
    cfg = make_cfg(*SMALL_ADDING, f"trainer.precision={precision}", f"model.encoder.impl={impl}")
    metrics = train(cfg)
    assert math.isfinite(metrics["test/loss"])
    assert math.isfinite(metrics["test/mse"])


def test_fused_weights_stay_contiguous_after_moving_loading_and_ddp_wrapping(tmp_path) -> None:
    encoder = LSTMEncoder(12, 32, 2, impl="fused")
    state = encoder.state_dict()
    encoder = encoder.cuda()
    encoder.load_state_dict(state)
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(
            "nccl", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1
        )
    try:
        wrapped = torch.nn.parallel.DistributedDataParallel(encoder, device_ids=[0])
        x = torch.randn(4, 7, 12, device="cuda")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            wrapped(x, torch.tensor([7, 5, 3, 1])).features.sum().backward()
        assert not [w for w in caught if "contiguous chunk" in str(w.message)]
    finally:
        torch.distributed.destroy_process_group()
