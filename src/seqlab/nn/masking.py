"""Helpers for padded batches described by per-sequence `lengths`."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

LengthsLike = Tensor | Sequence[int]


def as_lengths(lengths: LengthsLike, batch_size: int, max_len: int) -> Tensor:
    """Validate `lengths` for a padded batch and return them as an int64 CPU tensor of shape (B,).

    Every length must lie in [1, max_len]: a zero-length sequence has no last step to read a
    state from, and a length beyond the padded time axis would read past the data.

    Lengths on the CPU (as the collate makes them, and as the tasks keep them: see
    `SequenceTask.transfer_batch_to_device`) stay where they are, so this reads nothing back
    from an accelerator. Lengths on an accelerator are copied to the CPU, which waits for
    that device to finish its queued work (a host sync) on every call.
    """
    if isinstance(lengths, Tensor):
        if lengths.is_floating_point() or lengths.is_complex() or lengths.dtype == torch.bool:
            raise ValueError(f"lengths must hold integers, got dtype {lengths.dtype}")
        if lengths.dim() != 1:
            raise ValueError(
                f"lengths must be 1-D with one entry per sequence, got shape {tuple(lengths.shape)}"
            )
        # Packing and the loop's per-step batch sizes read them on the host: a no-op for
        # int64 lengths on the CPU, a host sync for lengths on an accelerator.
        lengths = lengths.detach().to(device="cpu", dtype=torch.int64)
    else:
        lengths = torch.as_tensor(list(lengths), dtype=torch.int64)
        if lengths.dim() != 1:
            raise ValueError("lengths must be a flat sequence of integers")
    if lengths.numel() != batch_size:
        raise ValueError(
            f"lengths has {lengths.numel()} entries but the batch holds {batch_size} sequences"
        )
    if batch_size > 0:
        shortest, longest = int(lengths.min()), int(lengths.max())
        if shortest < 1:
            raise ValueError(f"every length must be >= 1, got a length of {shortest}")
        if longest > max_len:
            raise ValueError(
                f"a length of {longest} exceeds the padded time dimension ({max_len} steps)"
            )
    return lengths


def lengths_on(lengths: LengthsLike, device: torch.device) -> Tensor:
    """`lengths` as a tensor on `device`, copied from the CPU with ``non_blocking``: the host
    queues the copy behind the device's work instead of waiting for that work to finish (a
    host sync). Lengths already on `device` are returned as they are."""
    if not isinstance(lengths, Tensor):
        lengths = torch.as_tensor(list(lengths), dtype=torch.long)
    return lengths.to(device, non_blocking=lengths.device.type == "cpu")


def lengths_to_mask(lengths: Tensor, max_len: int) -> Tensor:
    """(B,) lengths -> (B, T) bool mask on the lengths' device, True at real steps and False at
    padding."""
    steps = torch.arange(max_len, device=lengths.device)
    return steps.unsqueeze(0) < lengths.unsqueeze(1)
