"""seqlab.nn.Pooling: many-to-one summaries that only ever see real steps (those of the mask)."""

from __future__ import annotations

import pytest
import torch

from seqlab.nn import Pooling, lengths_to_mask
from seqlab.nn.pooling import POOLING_KINDS

LENGTHS = torch.tensor([3, 5, 1])
MASK = lengths_to_mask(LENGTHS, 5)


def test_lengths_to_mask_marks_real_steps():
    mask = lengths_to_mask(torch.tensor([2, 0, 3]), 3)
    assert mask.tolist() == [[True, True, False], [False, False, False], [True, True, True]]


@pytest.mark.parametrize("kind", POOLING_KINDS)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_values_at_padded_steps_never_change_the_pooled_output(kind, bidirectional):
    torch.manual_seed(0)
    pooling = Pooling(kind, 4, bidirectional=bidirectional)
    outputs = torch.randn(3, 5, 4)
    changed = outputs.clone()
    for b, length in enumerate(LENGTHS.tolist()):
        changed[b, length:] = 1e4
    torch.testing.assert_close(pooling(changed, MASK), pooling(outputs, MASK))


def test_last_reads_each_sequence_at_its_own_last_real_step():
    outputs = torch.arange(3 * 5 * 2, dtype=torch.float).view(3, 5, 2)
    pooled = Pooling("last", 2)(outputs, MASK)
    torch.testing.assert_close(pooled, outputs[torch.arange(3), LENGTHS - 1])


def test_last_reads_the_backward_half_at_step_zero_when_bidirectional():
    outputs = torch.randn(3, 5, 4)
    pooled = Pooling("last", 4, bidirectional=True)(outputs, MASK)
    torch.testing.assert_close(pooled[:, :2], outputs[torch.arange(3), LENGTHS - 1, :2])
    torch.testing.assert_close(pooled[:, 2:], outputs[:, 0, 2:])


def test_mean_and_max_only_use_real_steps():
    outputs = torch.randn(3, 5, 2) - 10.0  # all negative: a padded zero would win the max
    mean = Pooling("mean", 2)(outputs, MASK)
    maximum = Pooling("max", 2)(outputs, MASK)
    for b, length in enumerate(LENGTHS.tolist()):
        torch.testing.assert_close(mean[b], outputs[b, :length].mean(0))
        torch.testing.assert_close(maximum[b], outputs[b, :length].amax(0))


def test_attention_weights_are_learned_and_stay_on_real_steps():
    torch.manual_seed(0)
    pooling = Pooling("attention", 4)
    outputs = torch.randn(3, 5, 4, requires_grad=True)
    pooled = pooling(outputs, MASK)
    pooled.sum().backward()
    assert pooling.attention_hidden.weight.grad.abs().sum() > 0
    for b, length in enumerate(LENGTHS.tolist()):
        assert torch.all(outputs.grad[b, length:] == 0)
    # A single real step gets all the weight.
    torch.testing.assert_close(pooled[2], outputs[2, 0])


def test_no_mask_means_every_step_is_real():
    outputs = torch.randn(2, 4, 3)
    torch.testing.assert_close(Pooling("mean", 3)(outputs), outputs.mean(1))


def test_unknown_kind_lists_the_allowed_values():
    with pytest.raises(ValueError, match="'last', 'mean', 'max', 'attention'"):
        Pooling("median", 4)


@pytest.mark.parametrize(
    "mask",
    [MASK[:2], MASK[:, :4], MASK.long(), LENGTHS],
    ids=["batch", "steps", "dtype", "lengths"],
)
def test_a_mask_of_the_wrong_shape_or_dtype_is_rejected(mask):
    with pytest.raises(ValueError, match=r"\(3, 5\) bool tensor.*lengths_to_mask\(lengths, 5\)"):
        Pooling("mean", 2)(torch.randn(3, 5, 2), mask)
