"""The time loop of one LSTM layer, for one or both directions at once.

Every function here takes the input projection `xw = x @ W_ih^T + b_ih + b_hh` already computed
for all time steps (one large matrix product), so the loop only does `h @ W_hh^T` and the gate
arithmetic per step.

Layout conventions (time-major, directions stacked so both run in one batched matmul per step):

    xw       (T, dirs, B, 4H)   gate inputs, gate order i, f, g, o as in torch.nn.LSTM
    w_hh     (dirs, 4H, Hp)     Hp = proj_size or H
    w_hr     (dirs, Hp, H)      only with proj_size
    h0, c0   (dirs, B, Hp), (dirs, B, H)
    outputs  (T, dirs, B, Hp)   zeros at padded steps

Variable lengths use the packed-sequence trick: the batch is sorted by length (longest first) and
`batch_sizes[t]` says how many leading rows are still real at step t. Only those rows are
computed; the others keep their state, so padding never touches the state.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable


def _active(batch_sizes: Sequence[int], t: int) -> int:
    """Number of leading rows that are real at step t (0 past the last step)."""
    return batch_sizes[t] if t < len(batch_sizes) else 0


class _LSTMRecurrence(torch.autograd.Function):
    """Hand-written forward and backward of the LSTM time loop.

    Autograd on a Python loop would record ~10 nodes per step and, worse, compute the recurrent
    weight gradient as T small matrix products. Here the backward loop only propagates dh, dc
    through time; dW_hh (and dW_hr) are one large product over all steps at the end, and dxw is
    returned whole, so autograd turns it into the input-weight gradient with one more large
    product. This is the structure cuDNN uses.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx,
        xw: Tensor,
        w_hh: Tensor,
        h0: Tensor,
        c0: Tensor,
        w_hr: Tensor | None,
        recurrent_mask: Tensor | None,
        batch_sizes: tuple[int, ...],
    ) -> tuple[Tensor, Tensor, Tensor]:
        steps, dirs, batch, gate_size = xw.shape
        hidden = gate_size // 4
        # Zero-filled: rows past a sequence's end are never written and must read as zero
        # (outputs at pads are zero, and the backward's vectorised products must ignore them).
        gate_acts = xw.new_zeros(steps, dirs, batch, gate_size)
        cells = xw.new_zeros(steps, dirs, batch, hidden)
        outputs = xw.new_zeros(steps, dirs, batch, h0.shape[-1])
        h_n, c_n = torch.empty_like(h0), torch.empty_like(c0)
        w_hh_t = w_hh.transpose(1, 2)
        w_hr_t = w_hr.transpose(1, 2) if w_hr is not None else None

        h_prev, c_prev = h0, c0
        for t in range(steps):
            rows = _active(batch_sizes, t)
            h_rows = h_prev[:, :rows]
            if recurrent_mask is not None:
                h_rows = h_rows * recurrent_mask[:, :rows]
            gates = torch.baddbmm(xw[t, :, :rows], h_rows, w_hh_t)
            acts = gate_acts[t, :, :rows]
            # One sigmoid over all four gates, then overwrite g with tanh: two kernels, not four.
            torch.sigmoid(gates, out=acts)
            torch.tanh(gates[..., 2 * hidden : 3 * hidden], out=acts[..., 2 * hidden : 3 * hidden])
            i, f, g, o = acts.chunk(4, dim=-1)
            cell = cells[t, :, :rows]
            torch.mul(f, c_prev[:, :rows], out=cell)
            cell.addcmul_(i, g)
            if w_hr_t is None:
                torch.mul(o, torch.tanh(cell), out=outputs[t, :, :rows])
            else:
                outputs[t, :, :rows] = torch.bmm(o * torch.tanh(cell), w_hr_t)
            h_prev, c_prev = outputs[t], cells[t]
            # Rows whose last real step is t leave the batch now: their state is final.
            next_rows = _active(batch_sizes, t + 1)
            if next_rows < rows:
                h_n[:, next_rows:rows] = outputs[t, :, next_rows:rows]
                c_n[:, next_rows:rows] = cells[t, :, next_rows:rows]

        ctx.save_for_backward(w_hh, h0, c0, w_hr, recurrent_mask, gate_acts, cells, outputs)
        ctx.batch_sizes = batch_sizes
        return outputs, h_n, c_n

    @staticmethod
    @once_differentiable
    def backward(ctx, d_outputs: Tensor | None, d_h_n: Tensor | None, d_c_n: Tensor | None):  # type: ignore[override]
        w_hh, h0, c0, w_hr, recurrent_mask, gate_acts, cells, outputs = ctx.saved_tensors
        batch_sizes = ctx.batch_sizes
        steps, hidden = gate_acts.size(0), gate_acts.size(-1) // 4

        # Everything that does not depend on the incoming gradient is computed for all steps at
        # once, so the loop below is left with 2 products and 5 element-wise kernels per step.
        i, f, g, o = gate_acts.chunk(4, dim=-1)
        tanh_c = cells.tanh()
        c_prev = torch.cat([c0.unsqueeze(0), cells[:-1]])
        # d gate pre-activation = multiplier * (dc for i, f, g; d(o*tanh c) for o)
        multipliers = torch.cat(
            [g * i * (1 - i), c_prev * f * (1 - f), i * (1 - g * g), tanh_c * o * (1 - o)], dim=-1
        ).unflatten(-1, (4, hidden))
        dc_from_dh = o * (1 - tanh_c * tanh_c)
        del c_prev, tanh_c

        d_gates = torch.zeros_like(gate_acts)
        d_gates4 = d_gates.unflatten(-1, (4, hidden))
        dh = d_h_n.clone() if d_h_n is not None else torch.zeros_like(h0)
        dc = d_c_n.clone() if d_c_n is not None else torch.zeros_like(c0)
        d_projected = torch.zeros_like(outputs) if w_hr is not None else None

        for t in reversed(range(steps)):
            rows = _active(batch_sizes, t)
            dh_t = dh[:, :rows]
            if d_outputs is not None:
                dh_t = dh_t + d_outputs[t, :, :rows]
            if w_hr is not None:
                assert d_projected is not None
                d_projected[t, :, :rows] = dh_t
                d_unprojected = torch.bmm(dh_t, w_hr)
            else:
                d_unprojected = dh_t
            dc_t = torch.addcmul(dc[:, :rows], d_unprojected, dc_from_dh[t, :, :rows])
            mult = multipliers[t, :, :rows]
            torch.mul(mult[..., :3, :], dc_t.unsqueeze(-2), out=d_gates4[t, :, :rows, :3])
            torch.mul(mult[..., 3, :], d_unprojected, out=d_gates4[t, :, :rows, 3])
            dh_prev = torch.bmm(d_gates[t, :, :rows], w_hh)
            if recurrent_mask is not None:
                dh_prev.mul_(recurrent_mask[:, :rows])
            dh[:, :rows] = dh_prev
            torch.mul(dc_t, f[t, :, :rows], out=dc[:, :rows])

        d_w_hh = d_w_hr = None
        if ctx.needs_input_grad[1]:
            h_prev = torch.cat([h0.unsqueeze(0), outputs[:-1]])
            if recurrent_mask is not None:
                h_prev = h_prev * recurrent_mask
            d_w_hh = torch.einsum("tdbg,tdbh->dgh", d_gates, h_prev)
        if w_hr is not None and ctx.needs_input_grad[4]:
            d_w_hr = torch.einsum("tdbp,tdbh->dph", d_projected, o * cells.tanh())
        return d_gates, d_w_hh, dh, dc, d_w_hr, None, None


def lstm_recurrence(
    xw: Tensor,
    w_hh: Tensor,
    h0: Tensor,
    c0: Tensor,
    *,
    w_hr: Tensor | None = None,
    recurrent_mask: Tensor | None = None,
    batch_sizes: Sequence[int] | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Run the LSTM time loop for `dirs` directions at once.

    (T, dirs, B, 4H) gate inputs -> outputs (T, dirs, B, Hp), h_n (dirs, B, Hp), c_n (dirs, B, H).
    `recurrent_mask` (dirs, B, Hp) multiplies h before every `h @ W_hh^T` (variational dropout).
    """
    # The hand-written kernel works in one dtype; under autocast the input projection may come
    # back in half precision, and the recurrence follows it.
    dtype = xw.dtype
    w_hh, h0, c0 = w_hh.to(dtype), h0.to(dtype), c0.to(dtype)
    if w_hr is not None:
        w_hr = w_hr.to(dtype)
    if recurrent_mask is not None:
        recurrent_mask = recurrent_mask.to(dtype)
    steps, _, batch, _ = xw.shape
    sizes = (
        tuple(int(size) for size in batch_sizes) if batch_sizes is not None else (batch,) * steps
    )
    with torch.autocast(device_type=xw.device.type, enabled=False):
        return _LSTMRecurrence.apply(xw, w_hh, h0, c0, w_hr, recurrent_mask, sizes)


def layer_norm_recurrence(
    xw: Tensor,
    w_hh: Tensor,
    h0: Tensor,
    c0: Tensor,
    norm_hh: nn.LayerNorm,
    norm_cell: nn.LayerNorm,
    *,
    w_hr: Tensor | None = None,
    recurrent_mask: Tensor | None = None,
    batch_sizes: Sequence[int] | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Layer-normalised LSTM time loop for one direction (Ba et al., 2016), plain autograd.

    (T, B, 4H) gate inputs, already normalised -> outputs (T, B, Hp), h_n (B, Hp), c_n (B, H).
    Per step: gates = xw_t + LN_hh(h W_hh^T); c_t = f*c + i*g; h_t = o * tanh(LN_cell(c_t)).
    The carried cell state stays un-normalised, as in the paper.
    """
    steps, batch, _ = xw.shape
    if batch_sizes is None:
        batch_sizes = (batch,) * steps
    h, c = h0, c0
    outputs = []
    for t, xw_t in enumerate(xw.unbind(0)):
        rows = _active(batch_sizes, t)
        h_rows = h[:rows] if recurrent_mask is None else h[:rows] * recurrent_mask[:rows]
        gates = xw_t[:rows] + norm_hh(h_rows @ w_hh.T)
        i, f, g, o = gates.chunk(4, dim=-1)
        c_new = torch.sigmoid(f) * c[:rows] + torch.sigmoid(i) * torch.tanh(g)
        h_new = torch.sigmoid(o) * torch.tanh(norm_cell(c_new))
        if w_hr is not None:
            h_new = h_new @ w_hr.T
        if rows < batch:
            # Finished rows keep their state; their output is zero.
            h = torch.cat([h_new, h[rows:]])
            c = torch.cat([c_new, c[rows:]])
            outputs.append(F.pad(h_new, (0, 0, 0, batch - rows)))
        else:
            h, c = h_new, c_new
            outputs.append(h_new)
    return torch.stack(outputs), h, c
