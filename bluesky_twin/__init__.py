"""bluesky-twin: machine-learned digital twins that steer Bluesky experiments.

The public entry points are imported lazily so that ``import bluesky_twin`` and
``bluesky-twin --help`` stay fast (torch, optuna and tiled are heavy).

>>> from bluesky_twin import DigitalTwin  # doctest: +SKIP
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

__all__ = ["DigitalTwin", "TwinSearchSpace", "__version__"]

_LAZY = {
    "DigitalTwin": "bluesky_twin.twin",
    "TwinSearchSpace": "bluesky_twin.twin",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'bluesky_twin' has no attribute {name!r}")
