"""`LSTMEncoder`: the sequence encoder the Lightning tasks build on."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

from seqlab.nn.conv import ConvFrontEnd
from seqlab.nn.init_state import InitialState
from seqlab.nn.lstm import LSTM
from seqlab.nn.masking import LengthsLike, lengths_on, lengths_to_mask
from seqlab.nn.pooling import Pooling

CONV_MODES = ("serial", "parallel", "both")


class EncoderOutput(NamedTuple):
    features: Tensor | None  # (B, output_size) pooled, None for many-to-many (pooling=None)
    outputs: Tensor  # (B, T, output_size), zeros at padded steps
    state: tuple[Tensor, Tensor]  # h_n (L * dirs, B, Hp), c_n (L * dirs, B, H)
    # (B, T) bool on the outputs' device, True at real steps: the padding mask the encoder
    # built once from the lengths (and pooled with). None without lengths: every step is real.
    mask: Tensor | None = None


class LSTMEncoder(nn.Module):
    """(B, T, D) padded batch, (B,) lengths -> EncoderOutput. Always batch-first.

    output_size = (proj_size or hidden_size) * (2 if bidirectional else 1), plus
    ``conv_channels[-1]`` with ``conv_mode="parallel"`` or ``"both"``.
    `dropout` sits between LSTM layers (ignored with one layer); `input_dropout` on the inputs.
    `conv_channels` (e.g. ``[128, 128]``) adds a `ConvFrontEnd` of that many 1-D convolution
    layers (kernel `conv_kernel_size`, squeeze-and-excitation blocks after all but the last
    with `conv_squeeze_excite`); empty: none. `conv_mode` says where it sits:

    - ``"serial"``: between the inputs and the LSTM (a CNN-LSTM);
    - ``"parallel"``: beside the LSTM, both reading the inputs (LSTM-FCN, Karim et al. 2017).
      The convolutions' outputs are concatenated to the LSTM's at every step, and their
      average over real steps (FCN's global average pooling) to the LSTM's pooled features.
    - ``"both"``: the LSTM reads the convolutions' outputs, as serial, and their average joins
      its features, as parallel: the convolutions find the local shapes and the LSTM reads
      their order, which an average over the sequence cannot.

    `pooling=None` (or "none") skips pooling for many-to-many tasks; `features` is then None.
    The remaining options are `seqlab.nn.LSTM`'s and `seqlab.nn.InitialState`'s.

    `lengths` belong on the CPU, where the collate makes them and the tasks keep them: the LSTM
    reads them there (packing, the loop's per-step batch sizes), and the forward copies them to
    x's device once, without waiting for it, to build the padding mask that the front end and
    the pooling use and `EncoderOutput.mask` carries. Nothing is read back from the device.
    Lengths on the device work too, at the cost of a host sync (see `as_lengths`).
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 2,
        *,
        bidirectional: bool = False,
        dropout: float = 0.4,
        impl: str = "auto",
        init_state: str = "zeros",
        noise_std: float = 0.1,
        pooling: str | None = "last",
        proj_size: int = 0,
        layer_norm: bool = False,
        recurrent_dropout: float = 0.0,
        forget_bias: float | None = None,
        orthogonal_init: bool = False,
        input_dropout: float = 0.0,
        conv_channels: Sequence[int] = (),
        conv_kernel_size: int | Sequence[int] = 5,
        conv_mode: str = "serial",
        conv_squeeze_excite: bool = False,
    ) -> None:
        super().__init__()
        if conv_mode not in CONV_MODES:
            raise ValueError(f"conv_mode={conv_mode!r}: allowed: {', '.join(CONV_MODES)}")
        self.conv_mode = conv_mode
        self.input_dropout = nn.Dropout(input_dropout)
        self.frontend = (
            ConvFrontEnd(input_size, conv_channels, conv_kernel_size, conv_squeeze_excite)
            if conv_channels
            else None
        )
        lstm_input_size = input_size
        if self.frontend is not None and conv_mode in ("serial", "both"):
            lstm_input_size = self.frontend.output_size
        self.lstm = LSTM(
            lstm_input_size,
            hidden_size,
            num_layers,
            batch_first=True,
            dropout=dropout if num_layers > 1 else 0.0,
            bidirectional=bidirectional,
            proj_size=proj_size,
            impl=impl,
            layer_norm=layer_norm,
            recurrent_dropout=recurrent_dropout,
            forget_bias=forget_bias,
            orthogonal_init=orthogonal_init,
        )
        self.init_state = InitialState(
            num_layers,
            hidden_size,
            bidirectional=bidirectional,
            proj_size=proj_size,
            kind=init_state,
            noise_std=noise_std,
        )
        self.output_size = self.lstm.output_size
        self.pooling = (
            None
            if pooling in (None, "none")
            else Pooling(pooling, self.lstm.output_size, bidirectional=bidirectional)
        )
        # LSTM-FCN's convolutional branch is read by global average pooling.
        self.conv_pooling: Pooling | None = None
        if self.frontend is not None and conv_mode in ("parallel", "both"):
            self.conv_pooling = Pooling("mean", self.frontend.output_size)
            self.output_size += self.frontend.output_size

    def forward(
        self,
        x: Tensor,
        lengths: LengthsLike | None = None,
        state: tuple[Tensor, Tensor] | None = None,
    ) -> EncoderOutput:
        hx = self.init_state(x.size(0), device=x.device, dtype=x.dtype, state=state)
        # The padding mask, built once on x's device for the front end, the pooling and the
        # caller (EncoderOutput.mask). The LSTM takes the lengths as given: it reads them on the
        # host, where they stay.
        mask = None
        if lengths is not None:
            if not isinstance(lengths, Tensor):
                lengths = torch.as_tensor(list(lengths), dtype=torch.long)
            mask = lengths_to_mask(lengths_on(lengths, x.device), x.size(1))
        x = self.input_dropout(x)
        conv = None
        if self.frontend is not None:
            host = self._host_lengths(lengths)
            if host is not None and bool((host == x.size(1)).all()):
                conv = self.frontend(x)  # no padding: the faster unmasked path (same numbers)
            else:
                conv = self.frontend(x, mask, host)
        reads_conv = conv is not None and self.conv_mode in ("serial", "both")
        outputs, final_state = self.lstm(conv if reads_conv else x, hx, lengths=lengths)
        features = None if self.pooling is None else self.pooling(outputs, mask)
        if conv is not None and self.conv_pooling is not None:  # parallel or both
            outputs = torch.cat([outputs, conv], dim=-1)
            if features is not None:
                features = torch.cat([features, self.conv_pooling(conv, mask)], dim=-1)
        return EncoderOutput(features, outputs, final_state, mask)

    @staticmethod
    def _host_lengths(lengths: Tensor | None) -> Tensor | None:
        """``lengths`` where the host has them (on the CPU), else None: no lengths, lengths on a
        device (reading them would wait for it), or a graph being traced or exported (whose
        masked path must hold for every batch it will meet)."""
        if lengths is None or lengths.device.type != "cpu" or torch.compiler.is_compiling():
            return None
        return lengths
