"""Inelastic neutron scattering: spin-wave physics, MAPS resolution, frames, DUQ classifier.

Public names are imported lazily, so ``import bluesky_twin.ins`` imports neither torch,
scipy nor resins:

>>> from bluesky_twin.ins import generate_dataset, simulate_frame  # doctest: +SKIP
>>> ds = generate_dataset(2000, seed=0, geometry="cut", n_workers=2)  # doctest: +SKIP
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

__all__ = [
    "DUQClassifier",
    "InsDataset",
    "digits_control",
    "generate_dataset",
    "maps_resolution",
    "near_domain_control",
    "preprocess_frames",
    "simulate_frame",
]

_LAZY = {
    "DUQClassifier": "bluesky_twin.ins.duq",
    "InsDataset": "bluesky_twin.ins.dataset",
    "digits_control": "bluesky_twin.ins.dataset",
    "generate_dataset": "bluesky_twin.ins.dataset",
    "maps_resolution": "bluesky_twin.ins.resolution",
    "near_domain_control": "bluesky_twin.ins.dataset",
    "preprocess_frames": "bluesky_twin.ins.preprocess",
    "simulate_frame": "bluesky_twin.ins.frames",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'bluesky_twin.ins' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
