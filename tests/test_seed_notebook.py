"""The seed notebook (seed/lstm_notebook.txt), cell by cell, through seqlab.nn."""

from __future__ import annotations

import pytest
import torch

from seqlab.nn import LSTM, LSTMCell

INPUT_DIM, BATCH_SIZE, HID_DIM, N_LAYERS = 258, 64, 512, 2


def test_cell_loop_collects_three_steps():
    rnn = LSTMCell(input_size=10, hidden_size=20)
    x = torch.randn(6, 10)
    h, c = torch.randn(1, 20), torch.randn(1, 20)
    outs = torch.zeros(3, 1, 20)
    for t in range(3):
        h, c = rnn(x[t].unsqueeze(0), (h, c))
        outs[t] = h
    assert outs.size() == torch.Size([3, 1, 20])


def seed_shapes(impl: str, bidirectional: bool, steps: int, with_state: bool):
    rnn = LSTM(
        input_size=INPUT_DIM,
        hidden_size=HID_DIM,
        num_layers=N_LAYERS,
        batch_first=True,
        bidirectional=bidirectional,
        dropout=0.4,
        impl=impl,
    )
    x = torch.rand(BATCH_SIZE, steps, INPUT_DIM)
    dirs = 2 if bidirectional else 1
    hx = None
    if with_state:
        hx = (
            torch.zeros(dirs * N_LAYERS, BATCH_SIZE, HID_DIM),
            torch.zeros(dirs * N_LAYERS, BATCH_SIZE, HID_DIM),
        )
    with torch.no_grad():
        out, (hidden, cell) = rnn(x, hx)
    return out.size(), hidden.size(), cell.size()


# The notebook uses T=192; the default run keeps T small, the slow run uses the real size.
@pytest.mark.parametrize("impl", ["fused", "loop"])
@pytest.mark.parametrize("with_state", [False, True])
@pytest.mark.parametrize(
    ("bidirectional", "out_features", "states"), [(False, 512, 2), (True, 1024, 4)]
)
def test_seed_lstm_shapes(impl, with_state, bidirectional, out_features, states):
    out, hidden, cell = seed_shapes(impl, bidirectional, steps=8, with_state=with_state)
    assert out == torch.Size([64, 8, out_features])
    assert hidden == cell == torch.Size([states, 64, 512])


@pytest.mark.slow
@pytest.mark.parametrize("impl", ["fused", "loop"])
@pytest.mark.parametrize("with_state", [False, True])
@pytest.mark.parametrize(
    ("bidirectional", "out_features", "states"), [(False, 512, 2), (True, 1024, 4)]
)
def test_seed_lstm_shapes_full_size(impl, with_state, bidirectional, out_features, states):
    out, hidden, cell = seed_shapes(impl, bidirectional, steps=192, with_state=with_state)
    assert out == torch.Size([64, 192, out_features])
    assert hidden == cell == torch.Size([states, 64, 512])
