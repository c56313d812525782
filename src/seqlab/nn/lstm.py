"""`seqlab.nn.LSTM`: a drop-in `torch.nn.LSTM` with a readable loop implementation and `lengths=`.

The class subclasses `torch.nn.LSTM`, so parameter names (`weight_ih_l0`, `bias_hh_l1_reverse`,
`weight_hr_l0`), flat-weight / cuDNN handling and state dicts are torch's own.

`impl="fused"` runs torch's kernel (cuDNN, oneDNN or ATen). `impl="loop"` runs
`seqlab.nn.recurrence`: one matrix product for the input projection of every step, then a time loop
doing only `h @ W_hh^T` and the gate arithmetic, with a hand-written backward. The loop is where
the research options live (layer norm, recurrent dropout, forget-gate bias).

`MaskedLSTM` is the same function in traceable operations, for `torch.export` and ONNX.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn import init
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from seqlab.errors import UserError
from seqlab.nn.masking import LengthsLike, as_lengths, lengths_on, lengths_to_mask
from seqlab.nn.recurrence import layer_norm_recurrence, lstm_layer, masked_recurrence

IMPLS = ("auto", "fused", "loop")
#: Padded batches on the CPU through `LSTM._fused_runs` where it pays; False: always packed
#: (what `scripts/benchmark.py --sections padded` compares against).
FUSED_RUNS = True
State = tuple[Tensor, Tensor]
#: One layer of all directions: (input (T, B, D), layer, h0 (dirs, B, Hp), c0 (dirs, B, H))
#: -> (output (T, B, dirs * Hp), h_n (dirs, B, Hp), c_n (dirs, B, H)).
LayerFn = Callable[[Tensor, int, Tensor, Tensor], tuple[Tensor, Tensor, Tensor]]
#: One direction of a layer: (input (T, B, D) in its own time, direction, "l{layer}{suffix}")
#: -> (output (T, B, Hp) in its own time, h_n (B, Hp), c_n (B, H)).
DirectionFn = Callable[[Tensor, int, str], tuple[Tensor, Tensor, Tensor]]


#: The options only the loop implementation has, each with the value that leaves it off. A new
#: loop-only option is added here (and to `LSTM.__init__`): impl="auto" then picks the loop for
#: it, and impl="fused" refuses it, here and in the config checks before a run.
LOOP_ONLY_OPTIONS: dict[str, Any] = {
    "layer_norm": False,
    "recurrent_dropout": 0.0,
    "forget_bias": None,
}


def loop_only_requested(options: Mapping[str, Any]) -> list[str]:
    """``key=value`` for each option of `LOOP_ONLY_OPTIONS` that ``options`` sets to something
    other than its off value."""
    return [
        f"{key}={options[key]}"
        for key, off in LOOP_ONLY_OPTIONS.items()
        if key in options and options[key] != off
    ]


def resolve_impl(impl: str, loop_only: list[str]) -> str:
    """Map "auto" to "fused" or "loop" and reject options the chosen implementation lacks."""
    if impl not in IMPLS:
        raise ValueError(f"impl={impl!r} is not one of {', '.join(map(repr, IMPLS))}")
    if impl == "fused" and loop_only:
        raise ValueError(
            f"{', '.join(loop_only)} is only supported by the loop implementation; "
            'use impl="loop" (or impl="auto")'
        )
    if impl == "auto":
        return "loop" if loop_only else "fused"
    return impl


def reverse_time(x: Tensor, reverse_index: Tensor | None) -> Tensor:
    """(T, B, ...) -> (T, B, ...) with each sequence reversed within its own length.

    `reverse_index` (T, B) comes from `_reverse_index`; None means every sequence spans all T.
    Padded steps stay where they are, so the reversed sequence starts at its own last real step.
    """
    if reverse_index is None:
        return x.flip(0)
    index = reverse_index.view(*reverse_index.shape, *([1] * (x.dim() - 2))).expand_as(x)
    return x.gather(0, index)


def _reverse_index(lengths: Tensor, steps: int, device: torch.device) -> Tensor:
    """(B,) lengths -> (T, B) time index that reverses each sequence's real steps in place."""
    lengths = lengths_on(lengths, device)
    t = torch.arange(steps, device=device).unsqueeze(1)
    return torch.where(t < lengths, lengths - 1 - t, t)


class _BidirectionalRows(NamedTuple):
    """Row indices that move data between the layout a bidirectional layer computes in and the
    layout of torch's output. Flattened (T * B) rows for `first_input`; (2 * T * B) rows of a
    layer's (2, T, B, Hp) outputs for the other two."""

    first_input: Tensor  # (2 * T * B,): x -> (2, T, B, D), the reverse half reversed in time
    output: Tensor  # (T * B * 2,): outputs -> (T, B, 2 * Hp), both halves in natural time
    next_input: Tensor  # (2 * T * B * 2,): outputs -> the next layer's (2, T, B, 2 * Hp)


def _bidirectional_rows(
    steps: int, batch: int, reverse_index: Tensor | None, device: torch.device
) -> _BidirectionalRows:
    t = torch.arange(steps, device=device).unsqueeze(1)
    b = torch.arange(batch, device=device)
    reverse = reverse_index if reverse_index is not None else (steps - 1 - t).expand(steps, batch)
    own = t * batch + b  # row of (t, b)
    mirrored = reverse * batch + b  # row of (t reversed within the sequence, b)
    # Output at (t, b): forward half from step t, backward half from the step the reverse
    # direction was at when it read t.
    output = torch.stack([own, steps * batch + mirrored], dim=-1)  # (T, B, 2)
    next_input = torch.stack([output, output.view(-1, 2)[mirrored]])  # (2, T, B, 2)
    return _BidirectionalRows(
        torch.stack([own, mirrored]).flatten(), output.flatten(), next_input.flatten()
    )


class LSTM(nn.LSTM):
    """`torch.nn.LSTM` plus a loop implementation, padded-batch `lengths` and init options.

    Shapes (L layers, dirs = 2 if bidirectional else 1, Hp = proj_size or hidden_size;
    swap T and B when batch_first=True):

        input (T, B, D), (T, D) or PackedSequence, hx ((L * dirs, B, Hp), (L * dirs, B, H))
        -> output (T, B, dirs * Hp), (h_n (L * dirs, B, Hp), c_n (L * dirs, B, H))

    Keyword-only options:
        impl: "fused" (torch's kernel), "loop" (seqlab's), or "auto" (fused unless a loop-only
            option is set).
        layer_norm: LayerNorm on the input and recurrent gate pre-activations and on the cell
            before its tanh (Ba et al., 2016). Loop only; adds `layer_norm_{ih,hh,cell}_l{k}`
            parameters, and uses a slower plain-autograd loop.
        recurrent_dropout: variational dropout (Gal & Ghahramani, 2016) on the h that feeds
            `h @ W_hh^T`: one mask per sequence, the same at every step, training only. Loop only.
        forget_bias: initial forget-gate bias. Set on the forget slice of `bias_ih`, with the
            forget slice of `bias_hh` zeroed, so their sum is `forget_bias`. Loop only.
        orthogonal_init: orthogonal init of each gate's block of `weight_hh` (both impls).

    `forward(input, hx=None, *, lengths=None)`: `lengths` (B,) marks a padded batch. Padding then
    never influences a real step in either direction, h_n / c_n are each sequence's state at its
    last real step, and outputs at padded steps are zero. The fused implementation does this with
    pack_padded_sequence(enforce_sorted=False) and pads the result back to the input's T; on
    the CPU, where torch's fast kernel takes no packed batch, by one call per distinct length
    instead (`_fused_runs`).

    torch.compile is opt-in: `torch.compile(model)` works with impl="loop" (the time loop is
    unrolled, so compiling takes a while for long sequences).
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        impl: str = "auto",
        layer_norm: bool = False,
        recurrent_dropout: float = 0.0,
        forget_bias: float | None = None,
        orthogonal_init: bool = False,
    ) -> None:
        requested = {
            "layer_norm": layer_norm,
            "recurrent_dropout": recurrent_dropout,
            "forget_bias": forget_bias,
        }
        resolved_impl = resolve_impl(impl, loop_only_requested(requested))
        if not 0.0 <= recurrent_dropout < 1.0:
            raise ValueError(f"recurrent_dropout must be in [0, 1), got {recurrent_dropout}")
        if forget_bias is not None and not bias:
            raise ValueError("forget_bias needs bias=True: there is no bias to set")
        super().__init__(
            input_size,
            hidden_size,
            num_layers,
            bias,
            batch_first,
            dropout,
            bidirectional,
            proj_size,
            device=device,
            dtype=dtype,
        )
        self.impl = resolved_impl
        self.layer_norm = layer_norm
        self.recurrent_dropout = float(recurrent_dropout)
        self.forget_bias = forget_bias
        self.orthogonal_init = orthogonal_init
        if layer_norm:
            factory: dict[str, Any] = {"device": device, "dtype": dtype}
            for layer in range(num_layers):
                for suffix in self._direction_suffixes():
                    name = f"l{layer}{suffix}"
                    setattr(self, f"layer_norm_ih_{name}", nn.LayerNorm(4 * hidden_size, **factory))
                    setattr(self, f"layer_norm_hh_{name}", nn.LayerNorm(4 * hidden_size, **factory))
                    setattr(self, f"layer_norm_cell_{name}", nn.LayerNorm(hidden_size, **factory))
        # torch's uniform init already ran inside nn.LSTM.__init__ (consuming the RNG exactly as
        # torch.nn.LSTM does, so equal seeds give equal weights); add our options on top.
        self._apply_init_options()

    def _direction_suffixes(self) -> tuple[str, ...]:
        return ("", "_reverse") if self.bidirectional else ("",)

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def output_size(self) -> int:
        """Feature size of `output`: (proj_size or hidden_size) * num_directions."""
        return (self.proj_size or self.hidden_size) * self.num_directions

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.hidden_size)
        for name in self._flat_weights_names:
            init.uniform_(getattr(self, name), -bound, bound)
        if "orthogonal_init" not in self.__dict__:
            return  # called by nn.LSTM.__init__, before our options and LayerNorms exist
        for module in self.children():
            if isinstance(module, nn.LayerNorm):
                module.reset_parameters()
        self._apply_init_options()

    @torch.no_grad()
    def _apply_init_options(self) -> None:
        hidden = self.hidden_size
        for layer in range(self.num_layers):
            for suffix in self._direction_suffixes():
                if self.orthogonal_init:
                    for gate_block in getattr(self, f"weight_hh_l{layer}{suffix}").chunk(4, dim=0):
                        init.orthogonal_(gate_block)
                if self.forget_bias is not None:
                    # Gate order is i, f, g, o: the forget gate is the second block.
                    getattr(self, f"bias_ih_l{layer}{suffix}")[hidden : 2 * hidden] = (
                        self.forget_bias
                    )
                    getattr(self, f"bias_hh_l{layer}{suffix}")[hidden : 2 * hidden] = 0.0

    def extra_repr(self) -> str:
        options = [super().extra_repr(), f"impl={self.impl!r}"]
        if self.layer_norm:
            options.append("layer_norm=True")
        if self.recurrent_dropout:
            options.append(f"recurrent_dropout={self.recurrent_dropout}")
        if self.forget_bias is not None:
            options.append(f"forget_bias={self.forget_bias}")
        if self.orthogonal_init:
            options.append("orthogonal_init=True")
        return ", ".join(options)

    # ----------------------------------------------------------------------------------- forward

    def forward(  # type: ignore[override]
        self,
        input: Tensor | PackedSequence,
        hx: State | None = None,
        *,
        lengths: LengthsLike | None = None,
    ) -> tuple[Tensor | PackedSequence, State]:
        if lengths is not None:
            if isinstance(input, PackedSequence):
                raise ValueError(
                    "lengths cannot be combined with a PackedSequence, which carries its own "
                    "lengths"
                )
            if input.dim() != 3:
                raise ValueError(
                    f"lengths needs a batched 3-D input, got a {input.dim()}-D input; "
                    "drop lengths for a single unbatched sequence"
                )
        self._update_flat_weights()
        if self.impl == "fused":
            if lengths is None:
                return super().forward(input, hx)
            # Not a PackedSequence: refused above when lengths are given.
            return self._fused_padded(cast(Tensor, input), hx, lengths)
        if isinstance(input, PackedSequence):
            return self._loop_packed(input, hx)
        return self._loop_padded(input, hx, lengths)

    def _fused_padded(
        self, input: Tensor, hx: State | None, lengths: LengthsLike
    ) -> tuple[Tensor, State]:
        time_dim, batch_dim = (1, 0) if self.batch_first else (0, 1)
        lengths = as_lengths(lengths, input.size(batch_dim), input.size(time_dim))
        if hx is not None:
            # torch skips hidden-state checks for packed input; check here to fail readably.
            self.check_forward_args(input, hx, None)
        ends = self._run_ends(input, lengths)
        if ends is not None:
            return self._fused_runs(input, hx, lengths, ends)
        # pack_padded_sequence(enforce_sorted=False), but with the sorting order sent to the
        # device without waiting for it; unpacked without the order, which pad_packed_sequence
        # would copy back to the host (for the lengths it returns), then unsorted here.
        sorted_lengths, order = torch.sort(lengths, descending=True)
        order = order.to(input.device, non_blocking=True)
        packed = pack_padded_sequence(
            input.index_select(batch_dim, order), sorted_lengths, batch_first=self.batch_first
        )
        packed = PackedSequence(packed.data, packed.batch_sizes, order)
        packed_output, state = super().forward(packed, hx)
        output, _ = pad_packed_sequence(
            PackedSequence(packed_output.data, packed_output.batch_sizes),
            batch_first=self.batch_first,
            total_length=input.size(time_dim),
        )
        restore = cast(Tensor, packed.unsorted_indices)  # the inverse of `order`
        return output.index_select(batch_dim, restore), state

    def _run_ends(self, input: Tensor, lengths: Tensor) -> list[int] | None:
        """The distinct lengths, ascending, where a padded batch goes through `_fused_runs`
        (the ends of its runs); None where it is packed.

        On the CPU, for float32 without projections, torch's kernel is oneDNN's, which takes no
        packed batch: packed, torch falls back to a loop of ATen steps, 1.3-8x slower fwd+bwd on
        this project's layers (docs/speed.md). `_fused_runs` calls oneDNN once per distinct
        length instead, which pays while those are at most half the steps (beyond, 1.0-1.3x
        packing's time was measured). A graph being compiled, and CPU autocast, keep the packed
        call."""
        if not (
            FUSED_RUNS
            and input.device.type == "cpu"
            and input.dtype == torch.float32
            and not self.proj_size
            and torch.backends.mkldnn.is_available()
            and torch.backends.mkldnn.enabled
            and lengths.numel() > 0
            and not torch.compiler.is_compiling()
            # Under CPU autocast torch hands oneDNN bf16 inputs, which it refuses on CPUs
            # without bf16 support (AVX2); packed, the ATen loop runs them.
            and not torch.is_autocast_enabled("cpu")
        ):
            return None
        ends = torch.unique(lengths).tolist()  # ascending
        return ends if 2 * len(ends) <= ends[-1] else None

    def _fused_runs(
        self, input: Tensor, hx: State | None, lengths: Tensor, ends: list[int]
    ) -> tuple[Tensor, State]:
        """`_fused_padded` without packing: torch's kernel over runs of steps.

        Sorted longest-first, the sequences still running at a step are a prefix of the batch,
        and that prefix only shrinks where a sequence ends. Between two consecutive distinct
        lengths the kernel runs on a plain (steps, live, D) block, from the state the block
        before left; a sequence's state is final at the end of its last block. Every sequence runs
        exactly its own steps, as with packing, in one kernel call per distinct length, layer and
        direction. The reverse direction reads each sequence reversed within its length, so
        its runs are the same. ``ends``: the distinct lengths, ascending (`_run_ends`)."""
        x = input.transpose(0, 1) if self.batch_first else input  # (T, B, D)
        steps, batch = x.size(0), x.size(1)
        sorted_lengths, order = torch.sort(lengths, descending=True, stable=True)
        x = x.index_select(1, order)
        hx = self._zero_state(batch, x) if hx is None else self.permute_hidden(hx, order)
        live = [int((sorted_lengths >= end).sum()) for end in ends]  # shrinking; live[0] = B
        # (start, end, sequences running in [start, end), of those the ones running after it)
        runs = list(zip([0, *ends[:-1]], ends, live, [*live[1:], 0], strict=True))
        reverse_index = None
        if self.bidirectional and ends[0] < steps:
            reverse_index = _reverse_index(sorted_lengths, steps, x.device)
        kinds = ("weight_ih", "weight_hh", *(("bias_ih", "bias_hh") if self.bias else ()))

        def layer(x: Tensor, layer: int, h0: Tensor, c0: Tensor) -> tuple[Tensor, Tensor, Tensor]:
            def direction(x: Tensor, direction: int, name: str) -> tuple[Tensor, Tensor, Tensor]:
                weights = [getattr(self, f"{kind}_{name}") for kind in kinds]
                # The state of the sequences still running, (live, Hp) and (live, H): a run
                # starts from the first rows of the one before; the rows past them have ended
                # and are final.
                h, c = h0[direction], c0[direction]
                pieces, final_h, final_c = [], [], []
                for start, end, live, after in runs:
                    out, h_run, c_run = torch.lstm(
                        x[start:end, :live],
                        (h[:live].unsqueeze(0), c[:live].unsqueeze(0)),
                        weights,
                        self.bias,
                        1,  # layers
                        0.0,  # dropout: between layers, by `by_layer`
                        self.training,
                        False,  # bidirectional: one direction at a time
                        False,  # batch_first
                    )
                    h, c = h_run[0], c_run[0]
                    final_h.append(h[after:])
                    final_c.append(c[after:])
                    pieces.append(F.pad(out, (0, 0, 0, batch - live)))
                if ends[-1] < steps:  # padding past the longest sequence
                    pieces.append(x.new_zeros(steps - ends[-1], batch, h.size(-1)))
                # Sorted longest-first: the last run's sequences come first.
                return torch.cat(pieces), torch.cat(final_h[::-1]), torch.cat(final_c[::-1])

            return self.by_direction(x, layer, reverse_index, direction)

        output, (h_n, c_n) = self.by_layer(x, hx, layer, dropout=self.training)
        restore = torch.argsort(order)
        output = output.index_select(1, restore)
        if self.batch_first:
            output = output.transpose(0, 1)
        return output, self.permute_hidden((h_n, c_n), restore)

    def _zero_state(self, batch: int, like: Tensor) -> State:
        layers = self.num_layers * self.num_directions
        h0 = like.new_zeros(layers, batch, self.proj_size or self.hidden_size)
        c0 = like.new_zeros(layers, batch, self.hidden_size)
        return h0, c0

    def _loop_padded(
        self, input: Tensor, hx: State | None, lengths: LengthsLike | None
    ) -> tuple[Tensor, State]:
        if input.dim() not in (2, 3):
            raise ValueError(f"LSTM: Expected input to be 2D or 3D, got {input.dim()}D instead")
        batched = input.dim() == 3
        time_dim, batch_dim = (1, 0) if self.batch_first else (0, 1)
        if not batched:
            input = input.unsqueeze(batch_dim)
            if hx is not None:
                if hx[0].dim() != 2 or hx[1].dim() != 2:
                    raise RuntimeError(
                        "For unbatched 2-D input, hx and cx should also be 2-D but got "
                        f"({hx[0].dim()}-D, {hx[1].dim()}-D) tensors"
                    )
                hx = (hx[0].unsqueeze(1), hx[1].unsqueeze(1))
        steps, batch = input.size(time_dim), input.size(batch_dim)
        if hx is None:
            self.check_input(input, None)
            hx = self._zero_state(batch, input)
        else:
            if batched and (hx[0].dim() != 3 or hx[1].dim() != 3):
                raise RuntimeError(
                    "For batched 3-D input, hx and cx should also be 3-D but got "
                    f"({hx[0].dim()}-D, {hx[1].dim()}-D) tensors"
                )
            self.check_forward_args(input, hx, None)
        x = input.transpose(0, 1) if self.batch_first else input

        if lengths is None:
            output, state = self._run_layers(x, hx, None)
        else:
            lengths = as_lengths(lengths, batch, steps)
            # Longest first, so the real rows at every step are a prefix of the batch.
            sorted_lengths, order = torch.sort(lengths, descending=True, stable=True)
            order = order.to(x.device, non_blocking=True)
            x = x.index_select(1, order)
            output, state = self._run_layers(x, self.permute_hidden(hx, order), sorted_lengths)
            restore = torch.argsort(order)
            output = output.index_select(1, restore)
            state = self.permute_hidden(state, restore)

        if self.batch_first:
            output = output.transpose(0, 1)
        if not batched:
            output = output.squeeze(batch_dim)
            state = (state[0].squeeze(1), state[1].squeeze(1))
        return output, state

    def _loop_packed(self, input: PackedSequence, hx: State | None) -> tuple[PackedSequence, State]:
        data, batch_sizes, sorted_indices, unsorted_indices = input
        self.check_input(data, batch_sizes)
        # Unpack without the indices: rows stay sorted longest-first, as the loop wants them.
        x, sorted_lengths = pad_packed_sequence(PackedSequence(data, batch_sizes))
        batch = x.size(1)
        if hx is None:
            hx = self._zero_state(batch, data)
        else:
            self.check_hidden_size(
                hx[0],
                self.get_expected_hidden_size(data, batch_sizes),
                "Expected hidden[0] size {}, got {}",
            )
            self.check_hidden_size(
                hx[1],
                self.get_expected_cell_size(data, batch_sizes),
                "Expected hidden[1] size {}, got {}",
            )
            hx = self.permute_hidden(hx, sorted_indices)
        output, state = self._run_layers(x, hx, sorted_lengths)
        packed = pack_padded_sequence(output, sorted_lengths, enforce_sorted=True)
        return (
            PackedSequence(packed.data, batch_sizes, sorted_indices, unsorted_indices),
            self.permute_hidden(state, unsorted_indices),
        )

    def _run_layers(
        self, x: Tensor, hx: State, sorted_lengths: Tensor | None
    ) -> tuple[Tensor, State]:
        """(T, B, D) sorted longest-first -> (T, B, dirs * Hp), ((L * dirs, B, Hp), (L * dirs, B, H))."""
        steps = x.size(0)
        batch_sizes = reverse_index = None
        if sorted_lengths is not None and int(sorted_lengths[-1]) < steps:
            real = lengths_to_mask(sorted_lengths, steps).T  # (T, B), on the host
            batch_sizes = real.sum(1).tolist()
            # The input projection's weight gradient sums over padded rows too (times zero
            # gate gradients): NaN or inf padding would turn it into NaN. Packing never reads
            # padding, so neither may the loop.
            x = x.masked_fill(~real.to(x.device, non_blocking=True).unsqueeze(-1), 0)
            if self.bidirectional:
                reverse_index = _reverse_index(sorted_lengths, steps, x.device)
        if not self.layer_norm:
            return self._run_fast_layers(x, hx, batch_sizes, reverse_index)

        def layer_norm_layer(
            x: Tensor, layer: int, h0: Tensor, c0: Tensor
        ) -> tuple[Tensor, Tensor, Tensor]:
            return self._layer_norm_layer(x, layer, h0, c0, batch_sizes, reverse_index)

        return self.by_layer(x, hx, layer_norm_layer, dropout=self.training)

    def by_layer(
        self, x: Tensor, hx: State, run: LayerFn, *, dropout: bool
    ) -> tuple[Tensor, State]:
        """(T, B, D) -> (T, B, dirs * Hp), ((L * dirs, B, Hp), (L * dirs, B, H)), one layer after
        the other through `run`, with dropout between layers if `dropout` (and self.dropout)."""
        dirs = self.num_directions
        h_n, c_n = [], []
        layer_input = x
        for layer in range(self.num_layers):
            first, last = layer * dirs, (layer + 1) * dirs
            layer_output, h, c = run(layer_input, layer, hx[0][first:last], hx[1][first:last])
            if dropout and self.dropout > 0 and layer < self.num_layers - 1:
                layer_output = F.dropout(layer_output, self.dropout, training=True)
            layer_input = layer_output
            h_n.append(h)
            c_n.append(c)
        return layer_input, (torch.cat(h_n), torch.cat(c_n))

    def by_direction(
        self, x: Tensor, layer: int, reverse_index: Tensor | None, run: DirectionFn
    ) -> tuple[Tensor, Tensor, Tensor]:
        """One layer, (T, B, D) -> (T, B, dirs * Hp), h_n (dirs, B, Hp), c_n (dirs, B, H): each
        direction through `run`, the reverse one reading each sequence reversed within its length
        (`reverse_index`, see `reverse_time`) and its output turned back into natural time."""
        outputs, h_n, c_n = [], [], []
        for direction, suffix in enumerate(self._direction_suffixes()):
            x_dir = x if direction == 0 else reverse_time(x, reverse_index)
            output, h, c = run(x_dir, direction, f"l{layer}{suffix}")
            outputs.append(output if direction == 0 else reverse_time(output, reverse_index))
            h_n.append(h)
            c_n.append(c)
        return torch.cat(outputs, dim=-1), torch.stack(h_n), torch.stack(c_n)

    def _run_fast_layers(
        self,
        x: Tensor,
        hx: State,
        batch_sizes: list[int] | None,
        reverse_index: Tensor | None,
    ) -> tuple[Tensor, State]:
        """Same contract as `_run_layers`, through `recurrence.lstm_layer`.

        Each layer reads (dirs, T, B, D) inputs, the reverse direction's reversed in time, and
        returns (dirs, T, B, Hp) outputs in the same per-direction time. Between bidirectional
        layers one row gather turns those outputs into the next layer's inputs, instead of
        reversing, concatenating, reversing again and stacking (four full copies).
        """
        steps, batch, features = x.shape
        dirs = self.num_directions
        if self.bidirectional:
            rows = _bidirectional_rows(steps, batch, reverse_index, x.device)
            flat_x = x.reshape(steps * batch, features)
            layer_input = flat_x.index_select(0, rows.first_input).view(2, steps, batch, features)
        else:
            layer_input = x.unsqueeze(0)
        h_n, c_n = [], []
        for layer in range(self.num_layers):
            first, last = layer * dirs, (layer + 1) * dirs
            outputs, h, c = self._fast_layer(
                layer_input, layer, hx[0][first:last], hx[1][first:last], batch_sizes
            )
            h_n.append(h)
            c_n.append(c)
            last_layer = layer == self.num_layers - 1
            if self.training and self.dropout > 0 and not last_layer:
                # Every element of the layer's output appears once in `outputs`: same law.
                outputs = F.dropout(outputs, self.dropout, training=True)
            if not self.bidirectional:
                layer_input = outputs
                continue
            # Sizes spelled out, not -1: an empty batch has nothing to infer them from.
            width = outputs.size(-1)
            flat_outputs = outputs.reshape(2 * steps * batch, width)
            if last_layer:
                layer_input = flat_outputs.index_select(0, rows.output)
                layer_input = layer_input.view(steps, batch, 2 * width)
            else:
                layer_input = flat_outputs.index_select(0, rows.next_input)
                layer_input = layer_input.view(2, steps, batch, 2 * width)
        output = layer_input if self.bidirectional else layer_input[0]
        return output, (torch.cat(h_n), torch.cat(c_n))

    def _weights(self, name: str, layer: int) -> list[Tensor]:
        """One parameter for every direction of `layer`, e.g. [weight_hh_l1, weight_hh_l1_reverse]."""
        return [getattr(self, f"{name}_l{layer}{suffix}") for suffix in self._direction_suffixes()]

    def _gate_biases(self, layer: int) -> list[Tensor] | list[None]:
        """b_ih + b_hh per direction: both biases are folded into the input projection."""
        if not self.bias:
            return [None] * self.num_directions
        return [
            b_ih + b_hh
            for b_ih, b_hh in zip(
                self._weights("bias_ih", layer), self._weights("bias_hh", layer), strict=True
            )
        ]

    def _recurrent_mask(self, batch: int, like: Tensor) -> Tensor | None:
        """(dirs, B, Hp) variational dropout mask, fixed over time, or None outside training."""
        if not (self.training and self.recurrent_dropout > 0):
            return None
        keep = 1.0 - self.recurrent_dropout
        shape = (self.num_directions, batch, self.proj_size or self.hidden_size)
        return like.new_empty(shape).bernoulli_(keep).div_(keep)

    def _fast_layer(
        self,
        x: Tensor,
        layer: int,
        h0: Tensor,
        c0: Tensor,
        batch_sizes: list[int] | None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """(dirs, T, B, D) -> (dirs, T, B, Hp), h_n (dirs, B, Hp), c_n (dirs, B, H)."""
        biases = self._gate_biases(layer)
        return lstm_layer(
            x,
            torch.stack(self._weights("weight_ih", layer)),
            torch.stack(biases) if biases[0] is not None else None,
            torch.stack(self._weights("weight_hh", layer)),
            h0,
            c0,
            w_hr=torch.stack(self._weights("weight_hr", layer)) if self.proj_size else None,
            recurrent_mask=self._recurrent_mask(x.size(2), x),
            batch_sizes=batch_sizes,
        )

    def _layer_norm_layer(
        self,
        x: Tensor,
        layer: int,
        h0: Tensor,
        c0: Tensor,
        batch_sizes: list[int] | None,
        reverse_index: Tensor | None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """(T, B, D) -> (T, B, dirs * Hp), h_n, c_n: one direction after the other, plain autograd."""
        recurrent_mask = self._recurrent_mask(x.size(1), x)
        biases = self._gate_biases(layer)

        def direction_loop(
            x_dir: Tensor, direction: int, name: str
        ) -> tuple[Tensor, Tensor, Tensor]:
            xw = getattr(self, f"layer_norm_ih_{name}")(
                x_dir @ getattr(self, f"weight_ih_{name}").T
            )
            if biases[direction] is not None:
                xw = xw + biases[direction]
            return layer_norm_recurrence(
                xw,
                getattr(self, f"weight_hh_{name}"),
                h0[direction],
                c0[direction],
                getattr(self, f"layer_norm_hh_{name}"),
                getattr(self, f"layer_norm_cell_{name}"),
                w_hr=getattr(self, f"weight_hr_{name}") if self.proj_size else None,
                recurrent_mask=recurrent_mask[direction] if recurrent_mask is not None else None,
                batch_sizes=batch_sizes,
            )

        return self.by_direction(x, layer, reverse_index, direction_loop)


class MaskedLSTM(nn.Module):
    """`LSTM`'s forward ``(input, hx, *, lengths) -> (output, (h_n, c_n))`` in traceable
    operations only, for `torch.export` and ONNX. Shares the LSTM's parameters. Inference
    only: no dropout between layers; LSTMs without layer norm only.

    Neither of `LSTM`'s implementations traces as it is: the fused one packs the batch (a
    PackedSequence's batch sizes are data, read on the host) and the loop one reads the lengths
    on the host too, to sort the batch and shrink it as sequences end. Here the lengths are a
    mask instead: every row steps through every time step (`recurrence.masked_recurrence`), and
    a step past a sequence's end keeps the state and outputs zeros; the reverse direction reads
    each sequence reversed within its own length (a gather), so padding never reaches it either.
    """

    def __init__(self, lstm: LSTM) -> None:
        super().__init__()
        if getattr(lstm, "layer_norm", False):
            raise UserError(
                "model.encoder.layer_norm=true: export supports LSTMs without layer norm only"
            )
        self.lstm = lstm

    def forward(
        self, input: Tensor, hx: State | None = None, *, lengths: Tensor | None = None
    ) -> tuple[Tensor, State]:
        lstm = self.lstm
        x = input.transpose(0, 1) if lstm.batch_first else input  # (T, B, D)
        steps, batch = x.shape[0], x.shape[1]
        if hx is None:
            hx = lstm._zero_state(batch, x)
        if lengths is None:
            lengths = torch.full((batch,), steps, dtype=torch.long, device=x.device)
        lengths = lengths.to(x.device)
        real = lengths_to_mask(lengths, steps).T.unsqueeze(-1)  # (T, B, 1)
        reverse = _reverse_index(lengths, steps, x.device) if lstm.bidirectional else None

        def layer_fn(
            x: Tensor, layer: int, h0: Tensor, c0: Tensor
        ) -> tuple[Tensor, Tensor, Tensor]:
            def direction_loop(
                x_dir: Tensor, direction: int, name: str
            ) -> tuple[Tensor, Tensor, Tensor]:
                gates_x = x_dir @ getattr(lstm, f"weight_ih_{name}").T
                if lstm.bias:  # added one after the other, not folded as the loop does
                    gates_x = (
                        gates_x
                        + getattr(lstm, f"bias_ih_{name}")
                        + getattr(lstm, f"bias_hh_{name}")
                    )
                return masked_recurrence(
                    gates_x,
                    real,
                    h0[direction],
                    c0[direction],
                    getattr(lstm, f"weight_hh_{name}"),
                    w_hr=getattr(lstm, f"weight_hr_{name}") if lstm.proj_size else None,
                )

            return lstm.by_direction(x, layer, reverse, direction_loop)

        output, state = lstm.by_layer(x, hx, layer_fn, dropout=False)
        output = output.transpose(0, 1) if lstm.batch_first else output
        return output, state
