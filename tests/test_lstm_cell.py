"""seqlab.nn.LSTMCell: the seed notebook's gate equations against torch.nn.LSTMCell."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from seqlab.nn import LSTMCell


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("with_state", [True, False])
def test_cell_matches_torch_cell_outputs_and_gradients(bias, with_state):
    torch.manual_seed(0)
    reference = nn.LSTMCell(10, 20, bias=bias)
    cell = LSTMCell(10, 20, bias=bias)
    cell.load_state_dict(reference.state_dict())
    x = torch.randn(4, 10, requires_grad=True)
    hx = (torch.randn(4, 20, requires_grad=True), torch.randn(4, 20)) if with_state else None

    results = []
    for model in (reference, cell):
        h, c = model(x, hx)
        loss = (h * torch.arange(20.0)).sum() + (c**2).sum()
        inputs = [*model.parameters(), x, *([hx[0]] if hx else [])]
        results.append([h, c, *torch.autograd.grad(loss, inputs)])
    for got, want in zip(results[1], results[0], strict=True):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)


def test_cell_state_dict_loads_into_torch_and_back():
    cell = LSTMCell(3, 5)
    reference = nn.LSTMCell(3, 5)
    reference.load_state_dict(cell.state_dict())
    cell.load_state_dict(reference.state_dict())
    assert list(cell.state_dict()) == ["weight_ih", "weight_hh", "bias_ih", "bias_hh"]


def test_cell_accepts_unbatched_input_like_torch():
    torch.manual_seed(0)
    cell = LSTMCell(3, 5)
    reference = nn.LSTMCell(3, 5)
    reference.load_state_dict(cell.state_dict())
    x, hx = torch.randn(3), (torch.randn(5), torch.randn(5))
    for got, want in zip(cell(x, hx), reference(x, hx), strict=True):
        assert got.shape == (5,)
        torch.testing.assert_close(got, want)


def test_cell_rejects_3d_input():
    with pytest.raises(ValueError, match="1D or 2D"):
        LSTMCell(3, 5)(torch.randn(2, 2, 3))


@pytest.mark.parametrize(
    ("x", "hx", "bad"),
    [
        (torch.randn(2, 3), (torch.randn(5), torch.randn(5)), "hx[0] of shape (2, 5)"),  # 1-D hx
        (torch.randn(2, 3), (torch.randn(2, 5), torch.randn(4, 5)), "hx[1] of shape (2, 5)"),
        (torch.randn(3), (torch.randn(1, 5), torch.randn(1, 5)), "hx[0] of shape (5,)"),
    ],
    ids=["unbatched-state", "batch-mismatch", "batched-state"],
)
def test_cell_rejects_states_that_do_not_fit_the_input(x, hx, bad):
    """torch.nn.LSTMCell refuses these too; broadcasting one state over the batch is silent."""
    with pytest.raises(ValueError, match=re.escape(bad)):
        LSTMCell(3, 5)(x, hx)
