"""`ConvFrontEnd`: 1-D convolutions over time ahead of the LSTM (a CNN-LSTM).

Each layer is Conv1d (stride 1, odd kernel, zero "same" padding) -> BatchNorm -> ReLU, so the
time axis and the lengths are unchanged. With ``squeeze_excite`` every layer but the last is
followed by a squeeze-and-excitation block (Hu et al. 2018), as in MLSTM-FCN (Karim et al.
2019). Padding never leaks into a sequence's outputs:

- padded steps are zeroed before every convolution, so the steps past a sequence's end read
  exactly the zeros a convolution pads an unpadded sequence with;
- in training, BatchNorm's statistics are taken over real steps only (the padded steps of a
  batch would otherwise pull the mean towards zero, by an amount that depends on the batch);
- the outputs are zero at padded steps.

A sequence's outputs are therefore the same whether it is run alone or padded in a batch. The
convolutions look ``kernel_size // 2`` steps ahead, so the front end is not causal: next-step
tasks refuse it, as they refuse a bidirectional LSTM.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from seqlab.nn.masking import lengths_to_mask


class SqueezeExcite(nn.Module):
    """(B, C, T) features, optional (B, T) ``mask`` -> the same, each channel scaled by a gate.

    The gate, ``sigmoid(W2 relu(W1 s))``, reads ``s``, each channel's mean over the sequence's
    real steps (padding never enters it), through a bottleneck of ``channels // reduction``.
    """

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.gate = nn.Sequential(
            nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, channels), nn.Sigmoid()
        )

    def forward(self, h: Tensor, mask: Tensor | None = None) -> Tensor:
        if mask is None:
            squeezed = h.mean(-1)
        else:
            real = mask.unsqueeze(1).to(h.dtype)  # (B, 1, T)
            squeezed = (h * real).sum(-1) / real.sum(-1).clamp_min(1.0)
        return h * self.gate(squeezed).unsqueeze(-1)


class ConvFrontEnd(nn.Module):
    """(B, T, input_size) padded batch, optional (B, T) bool ``mask`` -> (B, T, channels[-1])."""

    def __init__(
        self,
        input_size: int,
        channels: Sequence[int],
        kernel_size: int | Sequence[int] = 5,
        squeeze_excite: bool = False,
    ) -> None:
        super().__init__()
        channels = [int(c) for c in channels]
        if not channels:
            raise ValueError("conv_channels is empty: give at least one layer's channel count")
        if any(c < 1 for c in channels):
            raise ValueError(f"conv_channels={channels}: every entry must be >= 1")
        if isinstance(kernel_size, int):
            kernels = [kernel_size] * len(channels)
        else:
            kernels = [int(k) for k in kernel_size]
        if len(kernels) != len(channels):
            raise ValueError(
                f"conv_kernel_size={list(kernels)}: give one size, or one per layer "
                f"({len(channels)} for conv_channels={channels})"
            )
        if any(k < 1 or k % 2 == 0 for k in kernels):
            raise ValueError(
                f"conv_kernel_size={kernel_size}: kernel sizes must be odd and >= 1 (a centred "
                "kernel keeps every step aligned with its input)"
            )
        self.input_size = input_size
        self.channels = channels
        self.kernel_sizes = kernels
        self.output_size = channels[-1]
        sizes = [input_size, *channels]
        # No conv bias: the BatchNorm after each convolution has its own shift.
        self.convs = nn.ModuleList(
            nn.Conv1d(c_in, c_out, k, padding=k // 2, bias=False)
            for c_in, c_out, k in zip(sizes[:-1], sizes[1:], kernels, strict=True)
        )
        self.norms = nn.ModuleList(nn.BatchNorm1d(c) for c in channels)
        # MLSTM-FCN recalibrates the first layers' channels, not the last one's.
        self.excites = nn.ModuleList(
            SqueezeExcite(c) for c in (channels[:-1] if squeeze_excite else [])
        )
        self.squeeze_excite = squeeze_excite

    def extra_repr(self) -> str:
        return (
            f"input_size={self.input_size}, channels={self.channels}, "
            f"kernel_sizes={self.kernel_sizes}, squeeze_excite={self.squeeze_excite}"
        )

    def forward(
        self, x: Tensor, mask: Tensor | None = None, lengths: Tensor | None = None
    ) -> Tensor:
        """``mask`` (B, T): True at real steps; None when every step is real. ``lengths``: the
        (B,) lengths ``mask`` was made from, on the CPU, if the caller has them there: training
        then finds the real steps for BatchNorm's statistics on the host; without them, it
        reads ``mask`` back from its device (a host sync)."""
        pad = None if mask is None else ~mask.unsqueeze(1)  # (B, 1, T), True at padding
        rows = None  # the real steps among the batch's B * T, for batch statistics
        if mask is not None and any(self._batch_statistics(norm) for norm in self.norms):
            rows = self._real_rows(mask, lengths)
        h = x.transpose(1, 2)  # (B, C, T)
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms, strict=True)):
            if pad is not None:
                h = h.masked_fill(pad, 0.0)
            h = torch.relu(self._normalize(norm, conv(h), rows))
            if i < len(self.excites):
                h = self.excites[i](h, mask)
        if pad is not None:
            h = h.masked_fill(pad, 0.0)
        return h.transpose(1, 2)

    @staticmethod
    def _batch_statistics(norm: nn.Module) -> bool:
        return bool(norm.training or not norm.track_running_stats)

    @staticmethod
    def _real_rows(mask: Tensor, lengths: Tensor | None) -> Tensor:
        """(N_real,) indices of the real steps among the (B * T) steps, in order: from the
        host's ``lengths`` if given, else from ``mask`` (which waits for its device to count)."""
        if lengths is None:
            return mask.flatten().nonzero().squeeze(1)
        rows = lengths_to_mask(lengths, mask.size(1)).flatten().nonzero().squeeze(1)
        return rows.to(mask.device, non_blocking=True)

    @staticmethod
    def _normalize(norm: nn.Module, h: Tensor, rows: Tensor | None) -> Tensor:
        if rows is None or not ConvFrontEnd._batch_statistics(norm):
            # All steps real, or evaluation with running statistics: an element-wise affine map
            # that padded steps cannot influence (and that torch.export can trace).
            return norm(h)
        # Batch statistics over the real steps only: (N_real, C) through the same BatchNorm
        # (so Lightning's sync_batchnorm can still convert it), scattered back.
        batch, channels, steps = h.shape
        flat = h.transpose(1, 2).reshape(batch * steps, channels)  # (B * T, C)
        real = norm(flat.index_select(0, rows))  # (N_real, C)
        out = real.new_zeros(batch * steps, channels).index_copy(0, rows, real)
        return out.view(batch, steps, channels).transpose(1, 2)
