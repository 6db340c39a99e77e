"""Inelastic neutron scattering: spin-wave physics, MAPS resolution, frames, DUQ classifier.

Public names are imported lazily, so ``import bluesky_twin.ins`` imports neither torch,
scipy nor resins:

>>> from bluesky_twin.ins import generate_dataset, simulate_frame  # doctest: +SKIP
>>> ds = generate_dataset(2000, seed=0, geometry="cut", n_workers=2)  # doctest: +SKIP
"""

from __future__ import annotations

from bluesky_twin._lazy import lazy_exports

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

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "DUQClassifier": "bluesky_twin.ins.duq",
        "InsDataset": "bluesky_twin.ins.dataset",
        "digits_control": "bluesky_twin.ins.dataset",
        "generate_dataset": "bluesky_twin.ins.dataset",
        "maps_resolution": "bluesky_twin.ins.resolution",
        "near_domain_control": "bluesky_twin.ins.dataset",
        "preprocess_frames": "bluesky_twin.ins.preprocess",
        "simulate_frame": "bluesky_twin.ins.frames",
    },
)
