"""Output heads that map encoder features to predictions."""

from __future__ import annotations

from torch import Tensor, nn


class MLPHead(nn.Module):
    """``(..., in_features) -> (..., out_features)``: dropout, an optional hidden layer, linear.

    Works on pooled features ``(B, F)`` and on per-step outputs ``(B, T, F)`` alike.
    """

    def __init__(
        self, in_features: int, out_features: int, hidden_size: int = 0, dropout: float = 0.0
    ) -> None:
        super().__init__()
        if not 0 <= dropout < 1:
            raise ValueError(f"model.head.dropout={dropout}: must be in [0, 1)")
        if hidden_size < 0:
            raise ValueError(f"model.head.hidden_size={hidden_size}: must be >= 0 (0: no layer)")
        layers: list[nn.Module] = [nn.Dropout(dropout)]
        if hidden_size:
            layers += [nn.Linear(in_features, hidden_size), nn.GELU(), nn.Dropout(dropout)]
            in_features = hidden_size
        layers.append(nn.Linear(in_features, out_features))
        self.net = nn.Sequential(*layers)

    def forward(self, features: Tensor) -> Tensor:
        return self.net(features)
