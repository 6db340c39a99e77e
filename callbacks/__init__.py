"""Bluesky callbacks of bluesky-twin (installed as ``bluesky_twin.callbacks``).

* :class:`TwinTrainer` -- collects (x, y) readings run by run and refits the twin
  in a background thread (:mod:`.trainer`).
* :class:`TwinLivePlot` -- measured values against the twin's prediction and its
  +-std band, throttled (:mod:`.live_plot`).
* :class:`TwinStream` -- after every refit, the twin's predictions as a derived run
  (``twin`` stream) for TiledWriter (:mod:`.twin_stream`).
* :class:`TranslationCallback` -- INS frame translation (:mod:`.translation`).

Names resolve lazily, so importing the package does not import bluesky or matplotlib.
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

__all__ = ["RunReport", "TranslationCallback", "TranslationResult", "TwinLivePlot", "TwinStream", "TwinTrainer"]

_LAZY = {
    "TwinTrainer": ".trainer",
    "RunReport": ".trainer",
    "TwinLivePlot": ".live_plot",
    "TwinStream": ".twin_stream",
    "TranslationCallback": ".translation",
    "TranslationResult": ".translation",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
