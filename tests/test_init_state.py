"""seqlab.nn.InitialState: zeros, learned and noise initial states, and caller-provided state."""

from __future__ import annotations

import pytest
import torch

from seqlab.nn import LSTM, InitialState


def test_zeros_have_the_shapes_nn_lstm_expects():
    init = InitialState(2, 8, bidirectional=True, proj_size=3)
    h0, c0 = init(5)
    assert h0.shape == (4, 5, 3) and c0.shape == (4, 5, 8)
    assert not h0.any() and not c0.any()
    LSTM(2, 8, 2, bidirectional=True, proj_size=3, impl="loop")(torch.randn(6, 5, 2), (h0, c0))


def test_learned_states_are_shared_over_the_batch_and_receive_gradients():
    torch.manual_seed(0)
    init = InitialState(2, 4, kind="learned")
    lstm = LSTM(3, 4, 2, impl="loop")
    h0, c0 = init(3)
    assert h0.shape == (2, 3, 4)
    output, _ = lstm(torch.randn(5, 3, 3), (h0, c0))
    output.sum().backward()
    assert init.h0.grad is not None and init.h0.grad.abs().sum() > 0
    assert init.c0.grad is not None and init.c0.grad.abs().sum() > 0
    assert {name for name, _ in init.named_parameters()} == {"h0", "c0"}


def test_noise_is_random_in_training_and_zero_in_eval():
    init = InitialState(1, 6, kind="noise", noise_std=0.5)
    first, second = init(4), init(4)
    assert first[0].abs().sum() > 0
    assert not torch.equal(first[0], second[0])
    init.eval()
    h0, c0 = init(4)
    assert not h0.any() and not c0.any()


def test_provided_state_is_returned_unchanged_for_stateful_training():
    init = InitialState(2, 4, kind="learned")
    state = (torch.randn(2, 3, 4), torch.randn(2, 3, 4))
    h0, c0 = init(3, state=state)
    assert h0 is state[0] and c0 is state[1]


def test_provided_state_of_wrong_shape_is_rejected():
    init = InitialState(2, 4, bidirectional=True)
    with pytest.raises(ValueError, match="do not match"):
        init(3, state=(torch.zeros(2, 3, 4), torch.zeros(2, 3, 4)))


def test_states_follow_the_requested_and_module_dtype():
    init = InitialState(1, 2, kind="learned")
    assert init(2, dtype=torch.float64)[0].dtype == torch.float64
    assert InitialState(1, 2).double()(2)[1].dtype == torch.float64


def test_unknown_kind_lists_the_allowed_kinds():
    with pytest.raises(ValueError, match="'zeros', 'learned', 'noise'"):
        InitialState(1, 2, kind="random")
