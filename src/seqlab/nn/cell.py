"""The seed notebook's LSTM cell: one `lstm_step` of `seqlab.nn.recurrence`."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from seqlab.nn.recurrence import lstm_step


class LSTMCell(nn.LSTMCell):
    """One LSTM step; parameters, init and state dicts are `torch.nn.LSTMCell`'s.

    input (B, D) or (D,), hx ((B, H), (B, H)) or None -> (h (B, H), c (B, H))

        f = sigmoid(W_if x + b_if + W_hf h + b_hf)     forget gate
        i = sigmoid(W_ii x + b_ii + W_hi h + b_hi)     input gate
        g = tanh(W_ig x + b_ig + W_hg h + b_hg)        cell gate (candidate)
        o = sigmoid(W_io x + b_io + W_ho h + b_ho)     output gate
        c' = f * c + i * g
        h' = o * tanh(c')

    The weight rows are stacked in torch's order i, f, g, o; the step is `recurrence.lstm_step`.
    """

    def forward(
        self, input: Tensor, hx: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Tensor, Tensor]:
        if input.dim() not in (1, 2):
            raise ValueError(f"LSTMCell: Expected input to be 1D or 2D, got {input.dim()}D instead")
        batched = input.dim() == 2
        input_shape = tuple(input.shape)
        if not batched:
            input = input.unsqueeze(0)
        if hx is None:
            zeros = input.new_zeros(input.size(0), self.hidden_size)
            h, c = zeros, zeros
        else:
            expected = (input.size(0), self.hidden_size) if batched else (self.hidden_size,)
            for idx, state in enumerate(hx):
                if tuple(state.shape) != expected:
                    raise ValueError(
                        f"LSTMCell: Expected hx[{idx}] of shape {expected} for input of shape "
                        f"{input_shape}, got {tuple(state.shape)}"
                    )
            h, c = (hx[0], hx[1]) if batched else (hx[0].unsqueeze(0), hx[1].unsqueeze(0))

        gates_x = F.linear(input, self.weight_ih, self.bias_ih)
        h, c = lstm_step(gates_x, h, c, self.weight_hh, self.bias_hh)

        if not batched:
            h, c = h.squeeze(0), c.squeeze(0)
        return h, c
