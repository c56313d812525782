"""The LSTM recurrence: one step, `lstm_step`, and the time loops that run it.

`lstm_step` is the recurrence in plain autograd operations, written once (gate order i, f, g, o):

    gates = x W_ih^T + b_ih + LN_hh(h W_hh^T + b_hh);  i, f, g, o = chunk(gates, 4)
    c' = sigmoid(f) * c + sigmoid(i) * tanh(g);  h' = sigmoid(o) * tanh(LN_cell(c'))  [W_hr h']

It is `seqlab.nn.LSTMCell`'s step, and the step of two time loops over one direction:
`layer_norm_recurrence` (layer norm; rows leave a packed batch as their sequences end) and
`masked_recurrence` (every row steps through every step, its length a mask, the loop torch's
`scan`: traceable, for `seqlab.nn.MaskedLSTM` and export).

`lstm_layer`, the default loop of `seqlab.nn.LSTM`, computes the same step without layer norm
as a hand-written kernel for one or both directions at once (`_LSTMLayer`: its own forward and
backward, the step's arithmetic rearranged for speed; see there). Its input projection
`x @ W_ih^T + b_ih + b_hh` is computed for all time steps at once (one large matrix product), so
the loop only does `h @ W_hh^T` and the gate arithmetic per step.

Layout conventions (directions stacked so both run in one batched matmul per step):

    x        (dirs, T, B, D)    each direction's input (the reverse one already reversed in time)
    w_ih     (dirs, 4H, D)      gate order i, f, g, o as in torch.nn.LSTM
    w_hh     (dirs, 4H, Hp)     Hp = proj_size or H
    w_hr     (dirs, Hp, H)      only with proj_size
    h0, c0   (dirs, B, Hp), (dirs, B, H)
    outputs  (dirs, T, B, Hp)   zeros at padded steps

Variable lengths use the packed-sequence trick: the batch is sorted by length (longest first) and
`batch_sizes[t]` says how many leading rows are still real at step t. Only those rows are
computed; the others keep their state, so padding never touches the state.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

try:  # torch >= 2.6; a private module, but what torch.export and ONNX turn into a loop op.
    from torch._higher_order_ops.scan import scan as _torch_scan
except ImportError:  # pragma: no cover - older torch: an unrolled loop (T fixed when exported)
    _torch_scan = None  # type: ignore[assignment]

State = tuple[Tensor, Tensor]


def _zero_padded_rows(buffers: Sequence[Tensor], batch_sizes: Sequence[int]) -> None:
    """Zero the rows of every (dirs, T, B, ...) buffer that lie past a sequence's end."""
    batch = batch_sizes[0] if batch_sizes else 0
    for t, rows in enumerate(batch_sizes):
        if rows < batch:
            for buffer in buffers:
                buffer[:, t, rows:] = 0


@functools.cache
def _packed_weights_work() -> bool:
    """Whether oneDNN's prepacked linear (the kernel torch.compile uses on CPU) is usable."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        weight = torch.ones(8, 4)
        packed = torch.ops.mkldnn._reorder_linear_weight(weight, 2)
        result = torch.ops.mkldnn._linear_pointwise(torch.ones(3, 4), packed, None, "none", [], "")
        return bool(torch.equal(result, torch.full((3, 8), 4.0)))
    except (RuntimeError, AttributeError):
        return False


# Tests switch this off to exercise the batched-matmul path with float32.
PACK_WEIGHTS = True


class _BatchedLinear:
    """`x @ weight^T (+ bias)` for a group of directions: (n, rows, K) -> (n, rows, N).

    On CPU with float32 this goes through oneDNN with the weight packed once into its
    GEMM-friendly layout, the kernel torch.compile uses for linear layers on CPU. Measured here
    (AVX-512, float32, one thread) against MKL, which repacks the weight on every call: 1.18 vs
    1.45 ms for the per-step (64 x 512) @ (512 x 2048) product, and 505 vs 547 ms for the
    (12288 x 1024) @ (1024 x 2048) input projection. oneDNN has no `out=`, so each of its
    products is a new tensor: there every direction is its own group (`groups()`), and the
    layer keeps its directions' gate buffers apart instead of stacking them, a copy that
    costs ~100 ms per bidirectional layer at the seed size (mostly page faults on a fresh
    200 MB buffer). Elsewhere (GPU, other dtypes) all directions form one group and a step
    is one batched matmul.
    """

    def __init__(self, weight: Tensor, bias: Tensor | None = None, *, rows_hint: int) -> None:
        self.weight = weight  # (dirs, N, K)
        self.bias = bias  # (dirs, N)
        self.rows_hint = rows_hint
        self.on_cpu = weight.device.type == "cpu"
        self.use_onednn = (
            PACK_WEIGHTS
            # torch.compile cannot trace packing a weight that is not a graph constant.
            and not torch.compiler.is_compiling()
            and self.on_cpu
            and weight.dtype == torch.float32
            and torch.backends.mkldnn.enabled
            and _packed_weights_work()
        )
        self._packed: list[Tensor] | None = None

    def groups(self) -> list[slice]:
        """The direction groups whose products come out as one tensor each."""
        dirs = self.weight.size(0)
        if self.use_onednn:
            return [slice(direction, direction + 1) for direction in range(dirs)]
        return [slice(0, dirs)]

    def _product(self, x: Tensor, direction: int) -> Tensor:
        if self._packed is None:  # packed on first use: not every caller needs it
            self._packed = [
                torch.ops.mkldnn._reorder_linear_weight(w.contiguous(), self.rows_hint)
                for w in self.weight
            ]
        bias = self.bias[direction] if self.bias is not None else None
        return torch.ops.mkldnn._linear_pointwise(
            x.contiguous(), self._packed[direction], bias, "none", [], ""
        )

    def __call__(self, x: Tensor, group: slice = slice(None)) -> Tensor:
        """x (n, rows, K), the inputs of the directions in `group` -> (n, rows, N)."""
        directions = range(*group.indices(self.weight.size(0)))
        if self.use_onednn:
            if len(directions) == 1:
                return self._product(x[0], directions[0]).unsqueeze(0)
            return torch.stack(
                [self._product(x_d, d) for x_d, d in zip(x, directions, strict=True)]
            )
        weight, bias = self.weight[group], self.bias[group] if self.bias is not None else None
        if not self.on_cpu:
            if bias is None:
                return torch.bmm(x, weight.transpose(1, 2))
            return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))
        out = x.new_empty(len(directions), x.size(1), weight.size(1))
        for index in range(len(directions)):
            if bias is None:
                torch.mm(x[index], weight[index].T, out=out[index])
            else:
                torch.addmm(bias[index], x[index], weight[index].T, out=out[index])
        return out

    def write_to(self, out: Tensor, x: Tensor, group: slice = slice(None)) -> None:
        """out = x @ weight^T (+ bias), in place, for the directions in `group`."""
        if not self.use_onednn:
            out.copy_(self(x, group))
            return
        directions = range(*group.indices(self.weight.size(0)))
        for index, direction in enumerate(directions):
            out[index] = self._product(x[index], direction)

    def add_to(self, out: Tensor, x: Tensor, group: slice = slice(None)) -> None:
        """out += x @ weight^T, in place (the bias is not added), for the directions in `group`."""
        if not self.use_onednn:
            out.baddbmm_(x, self.weight[group].transpose(1, 2))
            return
        directions = range(*group.indices(self.weight.size(0)))
        for index, direction in enumerate(directions):
            out[index].add_(self._product(x[index], direction))


class _LSTMLayer(torch.autograd.Function):
    """Hand-written forward and backward of one LSTM layer, all directions at once.

    Autograd on a Python loop would record ~10 nodes per step and compute the recurrent weight
    gradient as T small matrix products. Here the forward does the input projection for every
    step as one large product, and the backward loop only carries dh, dc back through time: the
    weight gradients and dx are a few large products over all steps at the end. This is the
    structure cuDNN uses.

    Buffers are laid out (dirs, T, B, ...), so each direction's slab is one contiguous
    (T * B, ...) matrix for those large products, and a step is a (dirs, B, ...) strided view.
    The gate buffers are the exception: one (n, T, B, 4H) tensor per direction group (see
    `_BatchedLinear.groups`), each step's element-wise work runs once per group. The input
    projection's buffer becomes the saved gate activations in place, which saves allocating
    (and page-faulting in) another T * B * 4H floats per layer.

    Per step this is `lstm_step` (no layer norm), rearranged in place; two tricks keep the
    per-step work to one sigmoid over all four gates:
    - The cell-gate rows of W_ih, W_hh and the bias are doubled, so its pre-activation arrives
      as 2a and g = tanh(a) = 2 * sigmoid(2a) - 1. The saved activations are then sigmoids for
      all four gates, whose derivative is uniformly s * (1 - s).
    - tanh(c) is computed the same way: on CPU, torch.sigmoid is several times faster than
      torch.tanh for float32 (measured ~7x with AVX-512); the error is ~1e-7 absolute.
    """

    @staticmethod
    def forward(
        ctx: Any,
        x: Tensor,
        w_ih: Tensor,
        bias: Tensor | None,
        w_hh: Tensor,
        h0: Tensor,
        c0: Tensor,
        w_hr: Tensor | None,
        recurrent_mask: Tensor | None,
        batch_sizes: tuple[int, ...],
    ) -> tuple[Tensor, Tensor, Tensor]:
        dirs, steps, batch, features = x.shape
        hidden = w_hh.size(1) // 4
        scale = _cell_gate_scale(hidden, w_ih)
        w_ih, w_hh = w_ih * scale, w_hh * scale
        bias = bias * scale[:, 0] if bias is not None else None
        input_projection = _BatchedLinear(w_ih, bias, rows_hint=steps * batch)
        recurrent = _BatchedLinear(w_hh, rows_hint=batch)
        projection = _BatchedLinear(w_hr, rows_hint=batch) if w_hr is not None else None

        groups = input_projection.groups()
        x_rows = x.reshape(dirs, steps * batch, features)
        gate_acts = [
            input_projection(x_rows[group], group).view(
                x_rows[group].size(0), steps, batch, 4 * hidden
            )
            for group in groups
        ]
        for_backward = any(ctx.needs_input_grad)
        if for_backward:
            cells = x.new_empty(dirs, steps, batch, hidden)
            tanh_cells = torch.empty_like(cells)
            if w_hr is not None:
                # The projection's weight gradient multiplies every row of tanh(c), padded rows
                # too (by a zero gradient): uninitialised memory there could be NaN, and 0 * NaN
                # is NaN.
                _zero_padded_rows((tanh_cells,), batch_sizes)
        else:
            # Inference keeps only the current cell state, updated in place (element-wise ops
            # may write over their input): small buffers that stay in cache, instead of two
            # (dirs, T, B, H) tensors nobody will read.
            cells = x.new_empty(dirs, 1, batch, hidden)
            tanh_cells = torch.empty_like(cells)
        outputs = x.new_empty(dirs, steps, batch, h0.size(-1))
        # Rows past a sequence's end are never computed: outputs there must read as zero.
        _zero_padded_rows((outputs,), batch_sizes)
        h_n, c_n = torch.empty_like(h0), torch.empty_like(c0)

        h_prev, c_prev = h0, c0
        for t in range(steps):
            rows = batch_sizes[t]
            kept = t if for_backward else 0
            for group, group_acts in zip(groups, gate_acts, strict=True):
                h_rows = h_prev[group, :rows]
                if recurrent_mask is not None:
                    h_rows = h_rows * recurrent_mask[group, :rows]
                acts = group_acts[:, t, :rows]
                recurrent.add_to(acts, h_rows, group)
                acts.sigmoid_()
                i, f, g_sigmoid, o = acts.chunk(4, dim=-1)
                cell = cells[group, kept, :rows]
                torch.mul(f, c_prev[group, :rows], out=cell)
                cell.addcmul_(i, g_sigmoid, value=2).sub_(i)  # + i * g, g = 2 * g_sigmoid - 1
                tanh_cell = tanh_cells[group, kept, :rows]
                torch.mul(cell, 2, out=tanh_cell).sigmoid_().mul_(2).sub_(1)
                if projection is None:
                    torch.mul(o, tanh_cell, out=outputs[group, t, :rows])
                else:
                    outputs[group, t, :rows] = projection(o * tanh_cell, group)
            h_prev, c_prev = outputs[:, t], cells[:, kept]
            # Rows whose last real step is t leave the batch now: their state is final.
            next_rows = batch_sizes[t + 1] if t + 1 < steps else 0
            if next_rows < rows:
                h_n[:, next_rows:rows] = h_prev[:, next_rows:rows]
                c_n[:, next_rows:rows] = c_prev[:, next_rows:rows]

        if not for_backward:
            return outputs, h_n, c_n
        ctx.save_for_backward(
            x, w_ih, w_hh, h0, c0, w_hr, recurrent_mask, cells, tanh_cells, outputs, *gate_acts
        )
        ctx.groups = groups
        ctx.batch_sizes = batch_sizes
        ctx.has_bias = bias is not None
        return outputs, h_n, c_n

    @staticmethod
    @once_differentiable
    def backward(
        ctx: Any, d_outputs: Tensor | None, d_h_n: Tensor | None, d_c_n: Tensor | None
    ) -> tuple[Tensor | None, ...]:
        x, w_ih, w_hh, h0, c0, w_hr, recurrent_mask, cells, tanh_cells, outputs, *gate_acts = (
            ctx.saved_tensors
        )
        groups, batch_sizes = ctx.groups, ctx.batch_sizes
        dirs, steps, batch, features = x.shape
        hidden = cells.size(-1)
        recurrent_t = _BatchedLinear(w_hh.transpose(1, 2), rows_hint=batch)
        projection_t = (
            _BatchedLinear(w_hr.transpose(1, 2), rows_hint=batch) if w_hr is not None else None
        )

        # The gate gradients overwrite the saved activations (step t's are last read at step t),
        # which saves page-faulting in a fresh (dirs, T, B, 4H) buffer, unless the graph is
        # kept for another backward or the projection's gradient still needs the o gates.
        if w_hr is None and not _graph_is_kept():
            d_gates = gate_acts
            _zero_padded_rows(d_gates, batch_sizes)
        else:
            d_gates_buffer = x.new_empty(dirs, steps, batch, 4 * hidden)
            _zero_padded_rows((d_gates_buffer,), batch_sizes)
            d_gates = [d_gates_buffer[group] for group in groups]
        dh = d_h_n.clone() if d_h_n is not None else torch.zeros_like(h0)
        dc = d_c_n.clone() if d_c_n is not None else torch.zeros_like(c0)
        d_projected = torch.zeros_like(outputs) if w_hr is not None else None

        for t in reversed(range(steps)):
            rows = batch_sizes[t]
            for group, group_acts, group_d_gates in zip(groups, gate_acts, d_gates, strict=True):
                dh_t = dh[group, :rows]
                if d_outputs is not None:
                    dh_t = dh_t + d_outputs[group, t, :rows]
                if projection_t is not None:
                    assert d_projected is not None
                    d_projected[group, t, :rows] = dh_t
                    dh_t = projection_t(dh_t, group)  # now the gradient of o * tanh(c)
                acts = group_acts[:, t, :rows]
                i, f, g_sigmoid, o = acts.unflatten(-1, (4, hidden)).unbind(-2)
                tanh_cell = tanh_cells[group, t, :rows]
                c_prev = cells[group, t - 1, :rows] if t > 0 else c0[group, :rows]
                # dc through h = o * tanh(c): dh * o * (1 - tanh(c)^2)
                dc_t = torch.addcmul(
                    dc[group, :rows], dh_t, torch.addcmul(o, o, tanh_cell * tanh_cell, value=-1)
                )
                # Everything read from the activations is read before they may be overwritten.
                torch.mul(dc_t, f, out=dc[group, :rows])
                d_i_factor = g_sigmoid * 2 - 1  # g
                d_g_factor = i * 2  # 2i: the cell gate's pre-activation is doubled
                # d pre-activation = sigmoid'(s) * [dc * g, dc * c_prev, dc * 2i, dh * tanh(c)]
                d_gates_t = group_d_gates[:, t, :rows]
                torch.addcmul(acts, acts, acts, value=-1, out=d_gates_t)
                d_gates4 = d_gates_t.unflatten(-1, (4, hidden))
                d_i, d_f, d_g, d_o = d_gates4.unbind(-2)
                d_i.mul_(d_i_factor)
                d_f.mul_(c_prev)
                d_g.mul_(d_g_factor)
                d_gates4[..., :3, :].mul_(dc_t.unsqueeze(-2))
                d_o.mul_(tanh_cell).mul_(dh_t)
                recurrent_t.write_to(dh[group, :rows], d_gates_t, group)
                if recurrent_mask is not None:
                    dh[group, :rows].mul_(recurrent_mask[group, :rows])

        # The large products over all steps, one direction group at a time. Gradients of the
        # doubled weights times the doubling give the true weights' gradients.
        needs = ctx.needs_input_grad
        scale = _cell_gate_scale(hidden, w_ih)
        input_projection_t = _BatchedLinear(w_ih.transpose(1, 2), rows_hint=steps * batch)
        x_rows = x.reshape(dirs, steps * batch, features)
        d_x_groups = []
        d_w_ih = torch.empty_like(w_ih) if needs[1] else None
        d_bias = w_ih.new_empty(dirs, 4 * hidden) if needs[2] and ctx.has_bias else None
        d_w_hh = torch.empty_like(w_hh) if needs[3] else None
        if d_w_hh is not None:
            # sum over t of dG_t^T h_{t-1}: h_{-1} = h0, then the outputs shifted by one step
            # (rows past a sequence's end have zero dG, so the zeros there do not matter).
            h_prev, h_first = outputs[:, :-1], h0
            if recurrent_mask is not None:
                h_prev = h_prev * recurrent_mask.unsqueeze(1)
                h_first = h0 * recurrent_mask
        for group, group_d_gates in zip(groups, d_gates, strict=True):
            d_gate_rows = group_d_gates.flatten(1, 2)
            if needs[0]:
                d_x_groups.append(input_projection_t(d_gate_rows, group))
            if d_w_ih is not None:
                torch.bmm(d_gate_rows.transpose(1, 2), x_rows[group], out=d_w_ih[group])
            if d_bias is not None:
                torch.sum(d_gate_rows, 1, out=d_bias[group])
            if d_w_hh is not None:
                torch.bmm(group_d_gates[:, 0].transpose(1, 2), h_first[group], out=d_w_hh[group])
                d_w_hh[group].baddbmm_(
                    group_d_gates[:, 1:].flatten(1, 2).transpose(1, 2),
                    h_prev[group].flatten(1, 2),
                )
        d_x = None
        if needs[0]:
            # One group (a GPU): its product is d_x already; one per direction: joined.
            d_x = d_x_groups[0] if len(d_x_groups) == 1 else torch.cat(d_x_groups)
            d_x = d_x.view(x.shape)
        for grad in (d_w_ih, d_w_hh):
            if grad is not None:
                grad.mul_(scale)
        if d_bias is not None:
            d_bias.mul_(scale[:, 0])
        d_w_hr = None
        if d_projected is not None and needs[6]:
            output_gates = torch.cat([acts[..., 3 * hidden :] for acts in gate_acts])
            unprojected = tanh_cells * output_gates  # o * tanh(c)
            d_w_hr = torch.bmm(d_projected.flatten(1, 2).transpose(1, 2), unprojected.flatten(1, 2))
        return d_x, d_w_ih, d_bias, d_w_hh, dh, dc, d_w_hr, None, None


def _graph_is_kept() -> bool:
    """Whether the running backward keeps the graph (`retain_graph=True`), so saved tensors must
    survive it. Unknown (older torch): assume kept."""
    keep_graph = getattr(torch._C._autograd, "_get_current_graph_task_keep_graph", None)
    return True if keep_graph is None else bool(keep_graph())


def _cell_gate_scale(hidden: int, like: Tensor) -> Tensor:
    """(4H, 1) column of ones with 2 on the cell gate's rows (gate order i, f, g, o)."""
    scale = like.new_ones(4 * hidden, 1)
    scale[2 * hidden : 3 * hidden] = 2
    return scale


def lstm_layer(
    x: Tensor,
    w_ih: Tensor,
    bias: Tensor | None,
    w_hh: Tensor,
    h0: Tensor,
    c0: Tensor,
    *,
    w_hr: Tensor | None = None,
    recurrent_mask: Tensor | None = None,
    batch_sizes: Sequence[int] | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """One LSTM layer for `dirs` directions at once, each reading its own (dirs, T, B, D) input.

    x (dirs, T, B, D), w_ih (dirs, 4H, D), bias = b_ih + b_hh (dirs, 4H), w_hh (dirs, 4H, Hp),
    h0 (dirs, B, Hp), c0 (dirs, B, H), w_hr (dirs, Hp, H)
    -> outputs (dirs, T, B, Hp), h_n (dirs, B, Hp), c_n (dirs, B, H).
    `recurrent_mask` (dirs, B, Hp) multiplies h before every `h @ W_hh^T` (variational dropout).
    `batch_sizes[t]` real rows at step t, rows sorted longest first; None: all rows, all steps.
    """
    _, steps, batch, _ = x.shape
    # The hand-written kernel works in one dtype: under autocast, the one autocast would pick
    # for a matmul, elsewhere the input's. Devices autocast does not know (meta, where tests
    # run the model on tensors with no data) run in the input's dtype.
    device_type = x.device.type
    autocast = torch.amp.is_autocast_available(device_type)
    dtype = (
        torch.get_autocast_dtype(device_type)
        if autocast and torch.is_autocast_enabled(device_type)
        else x.dtype
    )
    x, w_ih, w_hh, h0, c0 = (t.to(dtype) for t in (x, w_ih, w_hh, h0, c0))
    bias, w_hr, recurrent_mask = (
        t.to(dtype) if t is not None else None for t in (bias, w_hr, recurrent_mask)
    )
    sizes = (batch,) * steps if batch_sizes is None else tuple(int(n) for n in batch_sizes)
    off = torch.autocast(device_type, enabled=False) if autocast else contextlib.nullcontext()
    with off:
        return _LSTMLayer.apply(x, w_ih, bias, w_hh, h0, c0, w_hr, recurrent_mask, sizes)


def lstm_step(
    gates_x: Tensor,
    h: Tensor,
    c: Tensor,
    w_hh: Tensor,
    b_hh: Tensor | None = None,
    *,
    norm_hh: nn.Module | None = None,
    norm_cell: nn.Module | None = None,
    w_hr: Tensor | None = None,
) -> State:
    """One LSTM step in plain autograd: (B, 4H) input gates, h (B, Hp), c (B, H) -> h', c'.

    `gates_x` is the input's share, x W_ih^T + b_ih (+ b_hh), as the caller computed it; the
    step adds h W_hh^T (+ b_hh), layer-normalised by `norm_hh` if given, then
        i, f, g, o = chunk(gates, 4)                    gate order as in torch.nn.LSTM
        c' = sigmoid(f) * c + sigmoid(i) * tanh(g)
        h' = sigmoid(o) * tanh(c')                      tanh(norm_cell(c')) with layer norm
    and projects h' by `w_hr` (proj_size). The carried c' stays un-normalised.
    """
    recurrent = F.linear(h, w_hh, b_hh)
    if norm_hh is not None:
        recurrent = norm_hh(recurrent)
    i, f, g, o = (gates_x + recurrent).chunk(4, dim=-1)
    c_next = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h_next = torch.sigmoid(o) * torch.tanh(c_next if norm_cell is None else norm_cell(c_next))
    if w_hr is not None:
        h_next = h_next @ w_hr.T
    return h_next, c_next


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
    Per step `lstm_step` with `norm_hh` and `norm_cell`, on the rows still real at that step.
    """
    steps, batch, _ = xw.shape
    if batch_sizes is None:
        batch_sizes = (batch,) * steps
    h, c = h0, c0
    outputs = []
    for t, xw_t in enumerate(xw.unbind(0)):
        rows = batch_sizes[t]
        h_rows = h[:rows] if recurrent_mask is None else h[:rows] * recurrent_mask[:rows]
        h_new, c_new = lstm_step(
            xw_t[:rows], h_rows, c[:rows], w_hh, norm_hh=norm_hh, norm_cell=norm_cell, w_hr=w_hr
        )
        if rows < batch:
            # Finished rows keep their state; their output is zero.
            h = torch.cat([h_new, h[rows:]])
            c = torch.cat([c_new, c[rows:]])
            outputs.append(F.pad(h_new, (0, 0, 0, batch - rows)))
        else:
            h, c = h_new, c_new
            outputs.append(h_new)
    return torch.stack(outputs), h, c


def scan(
    step: Callable[[State, tuple[Tensor, Tensor]], tuple[State, Tensor]],
    init: State,
    xs: tuple[Tensor, Tensor],
) -> tuple[State, Tensor]:
    """``step(carry, x_t) -> (carry, y_t)`` over dim 0 of ``xs``; returns ``(carry, ys)``."""
    if _torch_scan is not None:
        return _torch_scan(step, init, xs)
    carry, ys = init, []
    for x_t in zip(*xs, strict=True):
        carry, y = step(carry, x_t)
        ys.append(y)
    return carry, torch.stack(ys)


def masked_recurrence(
    gates_x: Tensor,
    real: Tensor,
    h0: Tensor,
    c0: Tensor,
    w_hh: Tensor,
    *,
    w_hr: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """LSTM time loop for one direction in traceable operations: every row steps through every
    step, its length a mask, the loop torch's `scan` (T stays symbolic when exported).

    (T, B, 4H) input gates, `real` (T, B, 1) bool -> outputs (T, B, Hp), zero where not real,
    h_n (B, Hp), c_n (B, H): a row keeps its state at the steps past its end.
    """

    def step(carry: State, inputs: tuple[Tensor, Tensor]) -> tuple[State, Tensor]:
        h, c = carry
        gates, keep = inputs
        h_next, c_next = lstm_step(gates, h, c, w_hh, w_hr=w_hr)
        h_next = torch.where(keep, h_next, h)
        c_next = torch.where(keep, c_next, c)
        return (h_next, c_next), torch.where(keep, h_next, torch.zeros_like(h_next))

    (h_n, c_n), outputs = scan(step, (h0, c0), (gates_x, real))
    return outputs, h_n, c_n
