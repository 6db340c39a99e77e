"""Exp2SimGAN: unpaired translation of INS frames between experiment and simulation.

Public names are imported lazily (``bluesky_twin.gan.cli`` is imported by the command
line's ``--help`` and must not pull in torch):

``Exp2SimModel``, ``default_model_dir`` (:mod:`.model`); ``BuildConfig``, ``GanConfig``,
``ResolutionConfig``, ``TrainConfig``, ``PseudoPairConfig``, ``DataConfig``,
``ClassifierConfig``, ``PRESETS`` (:mod:`.config`); ``train_gan`` (:mod:`.train`);
``DomainScorer`` (:mod:`.domain`); ``evaluate_model`` (:mod:`.evaluate`); ``build_model``
(:mod:`.build`).
See ``docs/gan.md``.
"""

from __future__ import annotations

from bluesky_twin._lazy import lazy_exports

_EXPORTS = {
    "Exp2SimModel": "model",
    "default_model_dir": "model",
    "BuildConfig": "config",
    "ClassifierConfig": "config",
    "DataConfig": "config",
    "GanConfig": "config",
    "PRESETS": "config",
    "PseudoPairConfig": "config",
    "ResolutionConfig": "config",
    "TrainConfig": "config",
    "train_gan": "train",
    "DomainScorer": "domain",
    "evaluate_model": "evaluate",
    "build_model": "build",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, {name: f".{module}" for name, module in _EXPORTS.items()})
