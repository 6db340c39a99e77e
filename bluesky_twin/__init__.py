"""bluesky-twin: machine-learned digital twins that steer Bluesky experiments.

``DigitalTwin`` and ``TwinSearchSpace`` import torch and optuna, so they resolve on
first use (:func:`bluesky_twin._lazy.lazy_exports`) and ``import bluesky_twin`` /
``bluesky-twin --help`` stay fast.  The typed contracts are in
:mod:`bluesky_twin.protocols`.

>>> from bluesky_twin import DigitalTwin  # doctest: +SKIP
"""

from __future__ import annotations

from bluesky_twin._lazy import lazy_exports

__version__ = "0.1.0"

__all__ = ["DigitalTwin", "TwinSearchSpace", "__version__"]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "DigitalTwin": "bluesky_twin.twin",  # torch
        "TwinSearchSpace": "bluesky_twin.twin",  # optuna
    },
)
