"""The measurement twin (Terashima et al., Digital Discovery 2023, 2, 339).

>>> from bluesky_twin.twin import DigitalTwin                     # doctest: +SKIP
>>> twin = DigitalTwin.fit("ErCo2.csv", x=["T", "H"], y="M")      # doctest: +SKIP
>>> mean, std = twin.predict([[35.0, 2e4]])                       # doctest: +SKIP

Names are imported lazily so that the CLI's ``--help`` does not pay for numpy.
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

__all__ = ["DigitalTwin", "Scaler", "TabulatedTwin", "TwinSearchSpace", "tabulate"]

_LAZY = {
    "DigitalTwin": "bluesky_twin.twin.model",
    "Scaler": "bluesky_twin.twin.model",
    "TwinSearchSpace": "bluesky_twin.twin.space",
    "TabulatedTwin": "bluesky_twin.twin.tabulated",
    "tabulate": "bluesky_twin.twin.tabulated",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'bluesky_twin.twin' has no attribute {name!r}")
