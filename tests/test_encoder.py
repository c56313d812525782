"""seqlab.nn.LSTMEncoder: the module the Lightning tasks use."""

from __future__ import annotations

import pytest
import torch

from seqlab.nn import EncoderOutput, LSTMEncoder, lengths_to_mask

LENGTHS = torch.tensor([6, 2, 4])


@pytest.mark.parametrize("impl", ["fused", "loop"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_pooled_features_and_per_step_outputs_have_the_documented_shapes(impl, bidirectional):
    encoder = LSTMEncoder(5, 8, 2, bidirectional=bidirectional, impl=impl, pooling="mean")
    result = encoder(torch.randn(3, 6, 5), LENGTHS)
    assert isinstance(result, EncoderOutput)
    dirs = 2 if bidirectional else 1
    assert encoder.output_size == 8 * dirs
    assert result.features.shape == (3, 8 * dirs)
    assert result.outputs.shape == (3, 6, 8 * dirs)
    assert result.state[0].shape == (2 * dirs, 3, 8)


def test_proj_size_sets_the_output_size():
    encoder = LSTMEncoder(5, 8, 1, bidirectional=True, proj_size=3, impl="loop")
    assert encoder.output_size == 6
    assert encoder(torch.randn(2, 4, 5)).features.shape == (2, 6)


@pytest.mark.parametrize("impl", ["fused", "loop"])
def test_many_to_many_outputs_are_zero_at_pads_and_features_none(impl):
    encoder = LSTMEncoder(5, 8, 2, bidirectional=True, impl=impl, pooling=None)
    result = encoder(torch.randn(3, 6, 5), LENGTHS)
    assert result.features is None
    for b, length in enumerate(LENGTHS.tolist()):
        assert torch.all(result.outputs[b, length:] == 0)
        assert result.outputs[b, :length].abs().sum() > 0


@pytest.mark.parametrize("pooling", ["last", "mean", "max", "attention"])
def test_padding_values_never_change_the_features(pooling):
    torch.manual_seed(0)
    encoder = LSTMEncoder(5, 8, 2, bidirectional=True, pooling=pooling, impl="loop").eval()
    x = torch.randn(3, 6, 5)
    changed = x.clone()
    for b, length in enumerate(LENGTHS.tolist()):
        changed[b, length:] = 100.0
    torch.testing.assert_close(encoder(changed, LENGTHS).features, encoder(x, LENGTHS).features)


def test_last_pooling_equals_the_final_hidden_state():
    torch.manual_seed(0)
    encoder = LSTMEncoder(5, 8, 2, bidirectional=True, pooling="last").eval()
    result = encoder(torch.randn(3, 6, 5), LENGTHS)
    h_n = result.state[0]
    torch.testing.assert_close(result.features, torch.cat([h_n[-2], h_n[-1]], dim=-1))


def test_carried_state_continues_a_sequence_across_chunks():
    """Stateful truncated BPTT: two chunks with the carried state equal one long pass."""
    torch.manual_seed(0)
    encoder = LSTMEncoder(5, 8, 2, init_state="learned", pooling=None).eval()
    x = torch.randn(2, 8, 5)
    whole = encoder(x)
    first = encoder(x[:, :5])
    second = encoder(x[:, 5:], state=tuple(s.detach() for s in first.state))
    torch.testing.assert_close(torch.cat([first.outputs, second.outputs], 1), whole.outputs)


def test_loop_only_options_run_through_the_encoder():
    encoder = LSTMEncoder(
        5, 8, 2, layer_norm=True, recurrent_dropout=0.2, forget_bias=1.0, input_dropout=0.1
    )
    assert encoder.lstm.impl == "loop"
    result = encoder(torch.randn(3, 6, 5), LENGTHS)
    result.features.sum().backward()
    assert all(p.grad is not None for p in encoder.lstm.parameters())


def test_lengths_may_be_a_list():
    encoder = LSTMEncoder(5, 4, 1).eval()
    x = torch.randn(3, 6, 5)
    torch.testing.assert_close(encoder(x, LENGTHS.tolist()).features, encoder(x, LENGTHS).features)


@pytest.mark.parametrize("conv_channels", [[], [4]])
@pytest.mark.parametrize("lengths", [LENGTHS, LENGTHS.tolist()], ids=["tensor", "list"])
def test_the_output_carries_the_padding_mask_built_from_the_lengths(lengths, conv_channels):
    encoder = LSTMEncoder(5, 8, 1, conv_channels=conv_channels, conv_kernel_size=3, pooling=None)
    result = encoder(torch.randn(3, 6, 5), lengths)
    assert result.mask.dtype == torch.bool
    assert torch.equal(result.mask, lengths_to_mask(LENGTHS, 6))
    assert encoder(torch.randn(3, 6, 5)).mask is None


# The data-less meta device stands in for an accelerator: reading a value back from it
# (.item(), .tolist(), int(), bool(), .cpu(), nonzero or boolean-mask indexing) raises, and so
# does mixing a CPU tensor into its arithmetic. A forward and backward that run there with the
# lengths on the CPU, as the tasks keep them, never make the host wait for the device.
ENCODER_CASES = {
    "fused": {"impl": "fused"},
    "loop": {"impl": "loop"},
    "fused-bidirectional-attention": {
        "impl": "fused",
        "bidirectional": True,
        "pooling": "attention",
    },
    "loop-bidirectional-mean": {"impl": "loop", "bidirectional": True, "pooling": "mean"},
    "loop-layer-norm-max": {"impl": "loop", "layer_norm": True, "recurrent_dropout": 0.2},
    "lstm-fcn": {
        "conv_channels": [4, 4],
        "conv_mode": "parallel",
        "conv_squeeze_excite": True,
        "pooling": "mean",
    },
    "cnn-lstm-many-to-many": {"impl": "loop", "conv_channels": [4], "pooling": None},
}


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("lengths", [LENGTHS, torch.tensor([6, 6, 6])], ids=["padded", "full"])
@pytest.mark.parametrize("options", ENCODER_CASES.values(), ids=ENCODER_CASES.keys())
def test_forward_and_backward_read_nothing_back_from_the_device(options, lengths, training):
    torch.manual_seed(0)
    options = {"dropout": 0.1, "input_dropout": 0.1, "conv_kernel_size": 3, **options}
    encoder = LSTMEncoder(5, 8, 2, **options).to("meta").train(training)
    x = torch.randn(3, 6, 5, device="meta", requires_grad=True)
    result = encoder(x, lengths)
    assert result.mask.device.type == "meta"
    loss = result.outputs.sum() + result.state[0].sum() + result.state[1].sum()
    if result.features is not None:
        loss = loss + result.features.sum()
    loss.backward()
    assert x.grad is not None and x.grad.device.type == "meta"
