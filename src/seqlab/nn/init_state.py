"""Where an LSTM's (h0, c0) come from: zeros, learned parameters, or training-time noise."""

from __future__ import annotations

import torch
from torch import Tensor, nn

INIT_STATE_KINDS = ("zeros", "learned", "noise")


class InitialState(nn.Module):
    """Builds the (h0, c0) an `nn.LSTM` expects.

    forward(batch_size) -> (h0 (L * dirs, B, Hp), c0 (L * dirs, B, H)), Hp = proj_size or H.

    kind:
        "zeros":   zeros, torch's default.
        "learned": one trainable (h0, c0) per layer and direction, shared by every sequence
                   (broadcast over the batch); starts at zero.
        "noise":   N(0, noise_std^2) states in training, zeros in eval: the network learns not to
                   depend on the exact initial state (Zimmermann et al., 2012).

    A caller-provided `state` (for example the detached final state of the previous chunk in
    stateful truncated BPTT) wins over `kind`: it is shape-checked and returned unchanged.
    """

    def __init__(
        self,
        num_layers: int,
        hidden_size: int,
        *,
        bidirectional: bool = False,
        proj_size: int = 0,
        kind: str = "zeros",
        noise_std: float = 0.1,
    ) -> None:
        super().__init__()
        if kind not in INIT_STATE_KINDS:
            raise ValueError(
                f"init_state kind {kind!r} is not one of {', '.join(map(repr, INIT_STATE_KINDS))}"
            )
        if noise_std < 0:
            raise ValueError(f"noise_std must be >= 0, got {noise_std}")
        self.kind = kind
        self.noise_std = noise_std
        self.num_states = num_layers * (2 if bidirectional else 1)
        self.hidden_size = hidden_size
        self.state_size = proj_size or hidden_size
        if kind == "learned":
            self.h0 = nn.Parameter(torch.zeros(self.num_states, 1, self.state_size))
            self.c0 = nn.Parameter(torch.zeros(self.num_states, 1, hidden_size))
        # Follows .to(device) / .double() so that zeros and noise land where the module lives.
        self.register_buffer("_anchor", torch.empty(0), persistent=False)

    _anchor: Tensor

    def extra_repr(self) -> str:
        noise = f", noise_std={self.noise_std}" if self.kind == "noise" else ""
        return f"kind={self.kind!r}, num_states={self.num_states}, hidden_size={self.hidden_size}{noise}"

    def expected_shapes(self, batch_size: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        return (
            (self.num_states, batch_size, self.state_size),
            (self.num_states, batch_size, self.hidden_size),
        )

    def forward(
        self,
        batch_size: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        state: tuple[Tensor, Tensor] | None = None,
    ) -> tuple[Tensor, Tensor]:
        h_shape, c_shape = self.expected_shapes(batch_size)
        if state is not None:
            h, c = state
            if tuple(h.shape) != h_shape or tuple(c.shape) != c_shape:
                raise ValueError(
                    f"state shapes ({tuple(h.shape)}, {tuple(c.shape)}) do not match the expected "
                    f"({h_shape}, {c_shape}) = ((layers * directions, batch, proj_size or "
                    "hidden_size), (layers * directions, batch, hidden_size))"
                )
            return h, c
        device = self._anchor.device if device is None else device
        dtype = self._anchor.dtype if dtype is None else dtype
        if self.kind == "learned":
            # expand keeps one gradient per layer and direction, summed over the batch.
            h0 = self.h0.to(device=device, dtype=dtype).expand(h_shape).contiguous()
            c0 = self.c0.to(device=device, dtype=dtype).expand(c_shape).contiguous()
            return h0, c0
        if self.kind == "noise" and self.training:
            h0 = torch.randn(h_shape, device=device, dtype=dtype) * self.noise_std
            c0 = torch.randn(c_shape, device=device, dtype=dtype) * self.noise_std
            return h0, c0
        return (
            torch.zeros(h_shape, device=device, dtype=dtype),
            torch.zeros(c_shape, device=device, dtype=dtype),
        )
