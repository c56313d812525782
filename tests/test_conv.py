"""seqlab.nn.ConvFrontEnd: the optional convolutions ahead of (or beside) the LSTM, and their
padding."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from seqlab.nn import ConvFrontEnd, LSTMEncoder, lengths_to_mask

LENGTHS = torch.tensor([9, 4, 1, 6])


def padded(lengths: torch.Tensor, steps: int, size: int, fill: float = 0.0) -> torch.Tensor:
    x = torch.randn(len(lengths), steps, size)
    for b, length in enumerate(lengths.tolist()):
        x[b, length:] = fill
    return x


def reference(frontend: ConvFrontEnd) -> nn.Sequential:
    """The same layers as a plain torch stack, for one unpadded sequence in eval mode."""
    layers: list[nn.Module] = []
    for conv, norm in zip(frontend.convs, frontend.norms, strict=True):
        layers += [conv, norm, nn.ReLU()]
    return nn.Sequential(*layers)


def trained_statistics(frontend: ConvFrontEnd) -> None:
    """Non-trivial running statistics and affine parameters, so eval mode is a real test."""
    with torch.no_grad():
        for norm in frontend.norms:
            norm.running_mean.uniform_(-0.5, 0.5)
            norm.running_var.uniform_(0.5, 2.0)
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.uniform_(-0.3, 0.3)


def test_eval_equals_a_plain_conv_batchnorm_relu_stack_per_sequence():
    torch.manual_seed(0)
    frontend = ConvFrontEnd(3, [8, 5], kernel_size=[5, 3]).eval()
    trained_statistics(frontend)
    x = padded(LENGTHS, 9, 3, fill=7.0)  # padding that is not zero must not matter either
    out = frontend(x, lengths_to_mask(LENGTHS, 9))
    plain = reference(frontend)
    for b, length in enumerate(LENGTHS.tolist()):
        alone = plain(x[b : b + 1, :length].transpose(1, 2)).transpose(1, 2)[0]
        torch.testing.assert_close(out[b, :length], alone)
        assert torch.all(out[b, length:] == 0)


def test_training_statistics_come_from_real_steps_only():
    """Extra padding changes neither the outputs nor the running statistics; the statistics
    equal torch's BatchNorm fed the real steps alone."""
    torch.manual_seed(0)
    x = padded(LENGTHS, 9, 3)
    longer = torch.cat([x, torch.full((4, 5, 3), -3.0)], dim=1)
    frontends = [ConvFrontEnd(3, [6], kernel_size=3).train() for _ in range(2)]
    frontends[1].load_state_dict(frontends[0].state_dict())
    out = frontends[0](x, lengths_to_mask(LENGTHS, 9))
    out_longer = frontends[1](longer, lengths_to_mask(LENGTHS, 14))
    torch.testing.assert_close(out_longer[:, :9], out)
    assert torch.all(out_longer[:, 9:] == 0)
    torch.testing.assert_close(
        frontends[1].norms[0].running_mean, frontends[0].norms[0].running_mean
    )

    conv = frontends[0].convs[0]
    real = torch.cat(
        [conv(x[b : b + 1, :n].transpose(1, 2))[0].T for b, n in enumerate(LENGTHS.tolist())]
    )
    norm = nn.BatchNorm1d(6).train()
    expected = torch.relu(norm(real.detach()))
    torch.testing.assert_close(out[lengths_to_mask(LENGTHS, 9)], expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(frontends[0].norms[0].running_var, norm.running_var)


def test_gradients_never_reach_padded_inputs():
    torch.manual_seed(0)
    frontend = ConvFrontEnd(3, [4, 4], kernel_size=5).train()
    x = padded(LENGTHS, 9, 3).requires_grad_()
    frontend(x, lengths_to_mask(LENGTHS, 9)).pow(2).sum().backward()
    for b, length in enumerate(LENGTHS.tolist()):
        assert torch.all(x.grad[b, length:] == 0)
        assert x.grad[b, :length].abs().sum() > 0


def test_gradcheck_in_double_precision():
    torch.manual_seed(0)
    frontend = ConvFrontEnd(2, [3], kernel_size=3).double().train()
    x = padded(LENGTHS, 9, 2).double().requires_grad_()
    mask = lengths_to_mask(LENGTHS, 9)
    assert torch.autograd.gradcheck(lambda inp: frontend(inp, mask), (x,))


@pytest.mark.parametrize("squeeze_excite", [False, True])
def test_host_lengths_find_the_real_steps_the_mask_gives(squeeze_excite):
    """In training, BatchNorm's real steps found from the lengths on the host (what
    LSTMEncoder passes) give, to the bit, what reading the mask gives."""
    torch.manual_seed(0)
    frontends = [ConvFrontEnd(3, [6, 5], 3, squeeze_excite).train() for _ in range(2)]
    frontends[1].load_state_dict(frontends[0].state_dict())
    x = padded(LENGTHS, 9, 3).requires_grad_()
    mask = lengths_to_mask(LENGTHS, 9)
    outs = [frontends[0](x, mask), frontends[1](x, mask, LENGTHS)]
    grads = [torch.autograd.grad(out.pow(2).sum(), x)[0] for out in outs]
    assert torch.equal(outs[0], outs[1]) and torch.equal(grads[0], grads[1])
    for a, b in zip(frontends[0].norms, frontends[1].norms, strict=True):
        assert torch.equal(a.running_mean, b.running_mean)
        assert torch.equal(a.running_var, b.running_var)


def test_training_with_host_lengths_reads_nothing_back_from_the_device():
    """On the data-less meta device (see tests/test_encoder.py): with the lengths on the host
    the masked batch statistics need no value from the device; without them, they do."""
    frontend = ConvFrontEnd(3, [6, 5], 3, squeeze_excite=True).to("meta").train()
    x = torch.randn(4, 9, 3, device="meta", requires_grad=True)
    mask = lengths_to_mask(LENGTHS, 9).to("meta")
    frontend(x, mask, LENGTHS).sum().backward()
    assert x.grad.device.type == "meta"
    with pytest.raises(NotImplementedError, match="nonzero"):
        frontend(x, mask)


@pytest.mark.parametrize("impl", ["fused", "loop"])
def test_encoder_with_a_front_end_is_independent_of_padding(impl):
    torch.manual_seed(0)
    encoder = LSTMEncoder(
        3, 8, 2, bidirectional=True, impl=impl, conv_channels=[6, 5], conv_kernel_size=3
    ).eval()
    trained_statistics(encoder.frontend)
    assert encoder.lstm.input_size == 5
    x = padded(LENGTHS, 9, 3, fill=100.0)
    batch = encoder(x, LENGTHS)
    for b, length in enumerate(LENGTHS.tolist()):
        alone = encoder(x[b : b + 1, :length], LENGTHS[b : b + 1])
        torch.testing.assert_close(batch.features[b], alone.features[0])
        torch.testing.assert_close(batch.outputs[b, :length], alone.outputs[0])


@pytest.mark.parametrize("impl", ["fused", "loop"])
def test_parallel_mode_joins_the_lstm_and_the_conv_average_over_real_steps(impl):
    """LSTM-FCN: the LSTM reads the raw inputs; the convolutions' outputs, averaged over each
    sequence's real steps, are appended to its pooled features (and per step to its outputs)."""
    torch.manual_seed(0)
    encoder = LSTMEncoder(
        3,
        8,
        2,
        bidirectional=True,
        impl=impl,
        conv_channels=[6, 5],
        conv_kernel_size=3,
        conv_mode="parallel",
    ).eval()
    trained_statistics(encoder.frontend)
    assert encoder.lstm.input_size == 3 and encoder.output_size == 16 + 5
    # The same LSTM without convolutions is the oracle for the first 16 features.
    plain = LSTMEncoder(3, 8, 2, bidirectional=True, impl=impl).eval()
    plain.load_state_dict(
        {k: v for k, v in encoder.state_dict().items() if not k.startswith("frontend.")}
    )
    stack = reference(encoder.frontend)
    x = padded(LENGTHS, 9, 3, fill=100.0)
    out = encoder(x, LENGTHS)
    expected = plain(x, LENGTHS)
    torch.testing.assert_close(out.features[:, :16], expected.features)
    torch.testing.assert_close(out.outputs[..., :16], expected.outputs)
    assert out.state[0].shape == (4, 4, 8)
    for b, length in enumerate(LENGTHS.tolist()):
        conv = stack(x[b : b + 1, :length].transpose(1, 2))[0].T  # (length, 5), unpadded
        torch.testing.assert_close(out.features[b, 16:], conv.mean(0))
        torch.testing.assert_close(out.outputs[b, :length, 16:], conv)
        assert (out.outputs[b, length:] == 0).all()


@pytest.mark.parametrize("impl", ["fused", "loop"])
def test_both_mode_feeds_the_lstm_the_convolutions_and_joins_their_average(impl):
    """conv_mode="both": the LSTM reads the convolutions' outputs, as a serial encoder does,
    and their average over real steps joins its pooled features, as in parallel mode."""
    torch.manual_seed(0)
    encoder = LSTMEncoder(
        3, 8, 1, impl=impl, conv_channels=[6, 5], conv_kernel_size=3, conv_mode="both"
    ).eval()
    trained_statistics(encoder.frontend)
    assert encoder.lstm.input_size == 5 and encoder.output_size == 8 + 5
    # Oracle: a plain LSTM of the same weights, run on the convolutions' outputs per sequence.
    plain = LSTMEncoder(5, 8, 1, impl=impl).eval()
    plain.load_state_dict(
        {k: v for k, v in encoder.state_dict().items() if not k.startswith("frontend.")}
    )
    stack = reference(encoder.frontend)
    x = padded(LENGTHS, 9, 3, fill=100.0)
    out = encoder(x, LENGTHS)
    for b, length in enumerate(LENGTHS.tolist()):
        conv = stack(x[b : b + 1, :length].transpose(1, 2))[0].T  # (length, 5), unpadded
        alone = plain(conv[None])
        torch.testing.assert_close(out.features[b, :8], alone.features[0])
        torch.testing.assert_close(out.features[b, 8:], conv.mean(0))
        torch.testing.assert_close(out.outputs[b, :length], torch.cat([alone.outputs[0], conv], -1))
        assert (out.outputs[b, length:] == 0).all()


def test_parallel_mode_in_training_is_independent_of_padding():
    torch.manual_seed(0)
    encoder = LSTMEncoder(
        3, 8, 1, impl="loop", conv_channels=[6], conv_kernel_size=3, conv_mode="parallel"
    ).train()
    x = padded(LENGTHS, 9, 3, fill=100.0)
    wider = torch.cat([x, torch.full((4, 5, 3), -7.0)], dim=1)
    torch.testing.assert_close(encoder(x, LENGTHS).features, encoder(wider, LENGTHS).features)


def test_an_unknown_conv_mode_is_refused():
    with pytest.raises(ValueError, match="conv_mode='side': allowed: serial, parallel, both"):
        LSTMEncoder(3, 8, conv_channels=[4], conv_mode="side")


def test_no_lengths_means_every_step_is_real():
    torch.manual_seed(0)
    frontend = ConvFrontEnd(3, [4]).eval()
    x = torch.randn(2, 7, 3)
    full = torch.ones(2, 7, dtype=torch.bool)
    torch.testing.assert_close(frontend(x), frontend(x, full))


@pytest.mark.parametrize(
    ("channels", "kernel", "message"),
    [
        ([], 3, "conv_channels is empty"),
        ([4, 0], 3, "conv_channels=[4, 0]: every entry must be >= 1"),
        ([4], 4, "conv_kernel_size=4: kernel sizes must be odd"),
        ([4, 4], [3], "conv_kernel_size=[3]: give one size, or one per layer (2"),
    ],
)
def test_bad_shapes_are_refused(channels, kernel, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("(", r"\(")):
        ConvFrontEnd(3, channels, kernel)
