"""Bluesky callbacks of bluesky-twin (installed as ``bluesky_twin.callbacks``).

* :class:`TwinTrainer` -- collects (x, y) readings run by run and refits the twin
  in a background thread (:mod:`.trainer`); a :class:`~bluesky_twin.protocols.TwinSource`.
  :func:`twin_runs_only` is its opt-in trigger condition (``condition=twin_runs_only``).
* :class:`TwinLivePlot` -- measured values against the twin's prediction and its
  +-std band, throttled (:mod:`.live_plot`).
* :class:`TwinStream` -- after every refit, the twin's predictions as a derived run
  (``twin`` stream) for TiledWriter (:mod:`.twin_stream`).
* :class:`TranslationCallback` -- INS frame translation (:mod:`.translation`).

The callbacks import bluesky and numpy; torch, matplotlib and tiled are imported only
where a callback needs them, so this package is imported eagerly.
"""

from __future__ import annotations

from .live_plot import TwinLivePlot
from .trainer import RunReport, TwinTrainer, twin_runs_only
from .translation import TranslationCallback, TranslationResult
from .twin_stream import TwinStream

__all__ = [
    "RunReport",
    "TranslationCallback",
    "TranslationResult",
    "TwinLivePlot",
    "TwinStream",
    "TwinTrainer",
    "twin_runs_only",
]
