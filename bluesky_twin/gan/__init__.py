"""Exp2SimGAN: unpaired translation of INS frames between experiment and simulation.

Public names are imported lazily (``bluesky_twin.gan.cli`` is imported by the command
line's ``--help`` and must not pull in torch):

``Exp2SimModel``, ``default_model_dir`` (:mod:`.model`); ``GanConfig``, ``PRESETS``
(:mod:`.networks`); ``TrainConfig``, ``train_gan`` (:mod:`.train`); ``DomainScorer``
(:mod:`.domain`); ``evaluate_model`` (:mod:`.evaluate`); ``build_model`` (:mod:`.build`).
See ``docs/gan.md``.
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "Exp2SimModel": "model",
    "default_model_dir": "model",
    "GanConfig": "networks",
    "PRESETS": "networks",
    "TrainConfig": "train",
    "train_gan": "train",
    "DomainScorer": "domain",
    "evaluate_model": "evaluate",
    "build_model": "build",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    try:
        module = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'bluesky_twin.gan' has no attribute {name!r}") from None
    return getattr(import_module(f"{__name__}.{module}"), name)
