"""Lightning callbacks seqlab adds to a run (``configs/callbacks/``)."""

from __future__ import annotations

from seqlab.callbacks.plots import PlotCallback

__all__ = ["PlotCallback"]
