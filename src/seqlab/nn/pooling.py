"""Many-to-one pooling of per-step LSTM outputs over the real (unpadded) steps."""

from __future__ import annotations

import torch
from torch import Tensor, nn

POOLING_KINDS = ("last", "mean", "max", "attention")


class Pooling(nn.Module):
    """(B, T, F) outputs, (B, T) bool mask -> (B, F) features. Padded steps never contribute.

    The mask is True at real steps (`seqlab.nn.lengths_to_mask` makes one from lengths;
    `LSTMEncoder` passes the one it carries on `EncoderOutput.mask`); None: every step is real.
    Each sequence's length is read from the mask on its device, never on the host.

    kind:
        "last":      the output at each sequence's last real step. With `bidirectional=True` the
                     feature axis is [forward | backward]; the backward direction's summary of the
                     whole sequence sits at step 0, so that half is read there (as h_n does).
        "mean":      average over real steps.
        "max":       element-wise max over real steps.
        "attention": softmax-weighted sum over real steps with learned additive scores
                     (Bahdanau et al., 2015): score_t = v . tanh(W out_t + b).
    """

    def __init__(self, kind: str, input_size: int, *, bidirectional: bool = False) -> None:
        super().__init__()
        if kind not in POOLING_KINDS:
            raise ValueError(
                f"pooling {kind!r} is not one of {', '.join(map(repr, POOLING_KINDS))}"
            )
        if bidirectional and input_size % 2:
            raise ValueError(
                f"bidirectional outputs have an even size, got input_size={input_size}"
            )
        self.kind = kind
        self.input_size = input_size
        self.bidirectional = bidirectional
        if kind == "attention":
            self.attention_hidden = nn.Linear(input_size, input_size)
            self.attention_score = nn.Linear(input_size, 1, bias=False)

    def extra_repr(self) -> str:
        return (
            f"kind={self.kind!r}, input_size={self.input_size}, bidirectional={self.bidirectional}"
        )

    def forward(self, outputs: Tensor, mask: Tensor | None = None) -> Tensor:
        batch, steps, _ = outputs.shape
        if mask is None:
            mask = torch.ones(batch, steps, dtype=torch.bool, device=outputs.device)
        if mask.shape != (batch, steps) or mask.dtype != torch.bool:
            raise ValueError(
                f"mask must be a ({batch}, {steps}) bool tensor, True at real steps, got "
                f"{mask.dtype} of shape {tuple(mask.shape)}; from lengths: "
                f"lengths_to_mask(lengths, {steps})"
            )
        if self.kind == "last":
            last = (mask.sum(1) - 1).clamp(min=0)  # each sequence's last real step
            index = last.view(batch, 1, 1).expand(batch, 1, outputs.size(-1))
            features = outputs.gather(1, index).squeeze(1)
            if self.bidirectional:
                half = outputs.size(-1) // 2
                features = torch.cat([features[:, :half], outputs[:, 0, half:]], dim=-1)
            return features
        mask = mask.unsqueeze(-1)  # (B, T, 1)
        if self.kind == "mean":
            total = outputs.masked_fill(~mask, 0.0).sum(1)
            return total / mask.sum(1).clamp(min=1).to(outputs.dtype)  # / (B, 1) lengths
        if self.kind == "max":
            return outputs.masked_fill(~mask, float("-inf")).amax(1)
        scores = self.attention_score(torch.tanh(self.attention_hidden(outputs)))  # (B, T, 1)
        weights = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=1)
        return (weights * outputs.masked_fill(~mask, 0.0)).sum(1)
