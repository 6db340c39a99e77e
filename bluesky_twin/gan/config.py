"""Configuration of an Exp2SimGAN model: one source of truth for fields, defaults and validation.

::

    BuildConfig                    what ``ins train`` builds (``--config FILE`` holds its JSON)
    +-- gan: GanConfig             architecture, stored in the model's metadata.json
    |   +-- resolution: ResolutionConfig | None   Sim2Exp's learnable resolution layer
    +-- train: TrainConfig         optimisation
    |   +-- pseudo_pair: PseudoPairConfig
    +-- data: DataConfig           simulated training data and domain-score sets
    +-- classifiers: ClassifierConfig   the two DUQ classifiers

Every class validates itself once, when it is made (``__post_init__``), and raises
:class:`~bluesky_twin.errors.InputError` with a message that starts with
``ClassName.field``; :func:`check_training` checks what the GAN and the training settings
must agree on.  ``from_dict`` refuses unknown keys and fills missing ones with the
defaults (configuration files); model metadata is complete and versioned
(:mod:`bluesky_twin.gan.checkpoint` migrates older formats explicitly).

This module does not import torch.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bluesky_twin.errors import InputError
from bluesky_twin.ins.resolution_config import ResolutionConfig

__all__ = [
    "BuildConfig",
    "ClassifierConfig",
    "DataConfig",
    "GanConfig",
    "PRESETS",
    "PSEUDO_PAIR_WIDTHS",
    "PseudoPairConfig",
    "ResolutionConfig",
    "TrainConfig",
    "check_training",
    "read_config_file",
    "recipe_from_json",
    "recipe_to_json",
]


def encoder_layer_names(n_blocks: int) -> list[str]:
    """Names of the encoder layers whose outputs a generator can return, in order."""
    return ["stem", "down1", "down2"] + [f"res{i + 1}" for i in range(n_blocks)]


#: Choices of ``PseudoPairConfig.widths``.
PSEUDO_PAIR_WIDTHS = ("learned", "uniform")
#: Frame geometries of the simulated data.
GEOMETRIES = ("cut", "powder")
#: Input scalings of the DUQ classifiers (``None``: the DUQ default).
CLASSIFIER_INPUT_SCALES = ("log", "linear")


def _fail(owner: str, name: str, problem: str) -> InputError:
    return InputError(f"{owner}.{name} {problem}")


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.number)) and not isinstance(value, bool) and math.isfinite(float(value))


def _check_int(owner: str, obj: Any, name: str, lo: int) -> None:
    value = getattr(obj, name)
    if not _is_int(value) or value < lo:
        raise _fail(owner, name, f"must be an integer >= {lo}, got {value!r}")
    object.__setattr__(obj, name, int(value))


def _check_bool(owner: str, obj: Any, name: str) -> None:
    value = getattr(obj, name)
    if not isinstance(value, (bool, np.bool_)):
        raise _fail(owner, name, f"must be true or false, got {value!r}")
    object.__setattr__(obj, name, bool(value))


def _from_mapping(cls: type, d: Any, nested: dict[str, Any] | None = None) -> Any:
    """``cls(**d)`` with unknown keys refused and nested dataclasses built by their ``from_dict``."""
    if not isinstance(d, Mapping):
        raise InputError(f"{cls.__name__} must be an object, got {d!r}")
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = set(d) - set(names)
    if unknown:
        raise InputError(f"unknown {cls.__name__} keys {sorted(unknown)}; valid: {sorted(names)}")
    kwargs = dict(d)
    for key, build in (nested or {}).items():
        if key in kwargs and kwargs[key] is not None:
            kwargs[key] = build(kwargs[key])
    return cls(**kwargs)


# ----------------------------------------------------------------------------- architecture
@dataclass(frozen=True)
class GanConfig:
    """Architecture of an Exp2SimGAN generator pair (stored in the model's metadata).

    Parameters
    ----------
    dims
        2 for frames, 3 for volumes.
    ngf
        Channels after the first generator convolution (doubled at each downsampling).
    n_blocks
        Residual blocks at the bottleneck.
    ndf
        Base channels of the PatchGAN discriminator.
    n_layers_d
        Stride-2 convolutions in the discriminator.
    antialias
        Blur-pool before downsampling and blur after upsampling (the published network).
    nce_layers
        Encoder layers feeding PatchNCE: ``stem``, ``down1``, ``down2``, ``res1`` ...
    nce_dim
        Width of the PatchNCE projection MLPs.
    num_patches
        Spatial positions sampled per layer for PatchNCE.
    resolution
        Give Sim2Exp (``G_B``) the learnable energy-resolution layer
        (:class:`~bluesky_twin.gan.networks.ResolutionResnetGenerator`) with these options;
        ``None`` (default): both generators are plain ResNets.
    """

    dims: int = 2
    ngf: int = 16
    n_blocks: int = 3
    ndf: int = 32
    n_layers_d: int = 2
    antialias: bool = False
    nce_layers: tuple[str, ...] = ("down1", "down2", "res1", "res3")
    nce_dim: int = 128
    num_patches: int = 256
    resolution: ResolutionConfig | None = None

    def __post_init__(self) -> None:
        owner = "GanConfig"
        if self.dims not in (2, 3) or isinstance(self.dims, bool):
            raise _fail(owner, "dims", f"must be 2 or 3, got {self.dims!r}")
        for name in ("ngf", "n_blocks", "ndf", "n_layers_d", "nce_dim", "num_patches"):
            _check_int(owner, self, name, 1)
        _check_bool(owner, self, "antialias")
        if isinstance(self.nce_layers, str) or not all(isinstance(n, str) for n in self.nce_layers):
            raise _fail(owner, "nce_layers", f"must be a list of layer names, got {self.nce_layers!r}")
        object.__setattr__(self, "nce_layers", tuple(self.nce_layers))
        valid = encoder_layer_names(self.n_blocks)
        bad = [name for name in self.nce_layers if name not in valid]
        if bad or not self.nce_layers:
            raise _fail(owner, "nce_layers", f"has unknown layers {bad}; valid: {valid}")
        if self.resolution is not None:
            if not isinstance(self.resolution, ResolutionConfig):
                raise _fail(owner, "resolution", f"must be a ResolutionConfig or None, got {self.resolution!r}")
            if self.resolution.column_terms and self.dims != 2:
                raise InputError("ResolutionConfig.column_terms needs 2D frames (GanConfig.dims=2)")

    @property
    def feature_layer(self) -> str:
        """Encoder layer used for the domain-of-applicability score (after the last downsampling)."""
        return "down2"

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (``resolution`` nested, or ``None``)."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["nce_layers"] = list(self.nce_layers)
        d["resolution"] = None if self.resolution is None else self.resolution.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GanConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise InputError, missing ones take the defaults."""
        return _from_mapping(cls, d, {"resolution": ResolutionConfig.from_dict})

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> GanConfig:
        """A named size preset (``small`` or ``paper``) with optional overrides."""
        try:
            base = dict(PRESETS[name])
        except KeyError:
            raise InputError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}") from None
        base.update(overrides)
        return cls(**base)

    def preset_name(self) -> str | None:
        """The name of the size preset this architecture matches, else ``None``."""
        for name, values in PRESETS.items():
            if all(getattr(self, k) == (tuple(v) if isinstance(v, list) else v) for k, v in values.items()):
                return name
        return None


#: Size presets: ``small`` (default, 2 CPU cores) and ``paper`` (the published network).
PRESETS: dict[str, dict[str, Any]] = {
    "small": dict(
        ngf=16,
        n_blocks=3,
        ndf=32,
        n_layers_d=2,
        antialias=False,
        nce_layers=("down1", "down2", "res1", "res3"),
        nce_dim=128,
        num_patches=256,
    ),
    "paper": dict(
        ngf=64,
        n_blocks=9,
        ndf=64,
        n_layers_d=3,
        antialias=True,
        nce_layers=("down1", "down2", "res1", "res5"),
        nce_dim=256,
        num_patches=256,
    ),
}


# ----------------------------------------------------------------------------- training
@dataclass(frozen=True)
class PseudoPairConfig:
    """Pseudo pairs for Exp2Sim: ``L1(G_A(G_B(b).detach()), b)`` on the simulation's measured pixels.

    Exp2Sim learns to undo Sim2Exp's own output, whose ground truth is the simulation it
    came from; no real pair is used.

    Parameters
    ----------
    weight
        Weight of the term in the generator loss during the GAN iterations (0: off).
    widths
        ``"learned"``: the pseudo frame is G_B's output of the step (its learned per-frame
        draws); ``"uniform"``: a second G_B pass with each frame's width drawn uniformly
        across the resolution layer's bounds (needs ``ResolutionConfig.sigma_bounds``).
    finetune
        After the GAN iterations, train Exp2Sim alone for this many steps on pseudo pairs
        of the final Sim2Exp (fresh Adam at constant lr; 0: off).
    """

    weight: float = 0.0
    widths: str = "learned"
    finetune: int = 0

    def __post_init__(self) -> None:
        if not (_is_number(self.weight) and float(self.weight) >= 0):
            raise _fail("PseudoPairConfig", "weight", f"must be >= 0, got {self.weight!r}")
        object.__setattr__(self, "weight", float(self.weight))
        if self.widths not in PSEUDO_PAIR_WIDTHS:
            raise _fail("PseudoPairConfig", "widths", f"must be one of {PSEUDO_PAIR_WIDTHS}, got {self.widths!r}")
        if not _is_int(self.finetune) or self.finetune < 0:
            raise _fail("PseudoPairConfig", "finetune", f"must be >= 0, got {self.finetune!r}")
        object.__setattr__(self, "finetune", int(self.finetune))

    @property
    def enabled(self) -> bool:
        """Whether pseudo pairs are used at all (in the GAN steps or the fine-tune)."""
        return self.weight > 0 or self.finetune > 0

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PseudoPairConfig:
        """From a mapping; unknown keys raise InputError, missing ones take the defaults."""
        return _from_mapping(cls, d)


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings of :func:`~bluesky_twin.gan.train.train_gan`.

    Parameters
    ----------
    iterations
        Total optimiser steps.
    batch_size
        Frames per domain and step (PatchNCE negatives are per image, so the per-sample
        cost stays flat as the batch grows).
    lr
        Adam learning rate (betas 0.5, 0.999) for G, F and D.
    decay_fraction
        Final fraction of the iterations over which lr decays linearly to 0 (the paper:
        200 constant + 200 decaying epochs, i.e. 0.5).
    crop
        Train on random square (cubic) crops of this size (>= 8, divisible by 4);
        ``None`` uses whole frames (needed by the resolution layer).
    tau
        PatchNCE temperature.
    seed
        Seeds torch and numpy: same seed, data and threads give the same losses.
    resolution_lr_scale
        Learning-rate multiplier of the Sim2Exp resolution layer's parameters.
    refill_masked
        Fill each translation at its input's masked pixels with its nearest measured
        pixel, as the real frames are filled, before the discriminators and PatchNCE
        see it.
    pseudo_pair
        Pseudo pairs for Exp2Sim (:class:`PseudoPairConfig`).
    """

    iterations: int = 1500
    batch_size: int = 8
    lr: float = 2e-4
    decay_fraction: float = 0.5
    crop: int | None = None
    tau: float = 0.07
    seed: int = 0
    resolution_lr_scale: float = 50.0
    refill_masked: bool = False
    pseudo_pair: PseudoPairConfig = field(default_factory=PseudoPairConfig)

    def __post_init__(self) -> None:
        owner = "TrainConfig"
        _check_int(owner, self, "iterations", 1)
        _check_int(owner, self, "batch_size", 1)
        _check_int(owner, self, "seed", 0)
        if not (_is_number(self.decay_fraction) and 0.0 <= float(self.decay_fraction) <= 1.0):
            raise _fail(owner, "decay_fraction", f"must be in [0, 1], got {self.decay_fraction!r}")
        if self.crop is not None and (not _is_int(self.crop) or self.crop < 8 or self.crop % 4):
            raise _fail(owner, "crop", f"must be >= 8 and divisible by 4, got {self.crop!r}")
        for name in ("lr", "tau", "resolution_lr_scale"):
            value = getattr(self, name)
            if not (_is_number(value) and float(value) > 0):
                raise _fail(owner, name, f"must be positive, got {value!r}")
            object.__setattr__(self, name, float(value))
        object.__setattr__(self, "decay_fraction", float(self.decay_fraction))
        _check_bool(owner, self, "refill_masked")
        if not isinstance(self.pseudo_pair, PseudoPairConfig):
            raise _fail(owner, "pseudo_pair", f"must be a PseudoPairConfig, got {self.pseudo_pair!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (``pseudo_pair`` nested)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise InputError, missing ones take the defaults."""
        return _from_mapping(cls, d, {"pseudo_pair": PseudoPairConfig.from_dict})


def check_training(gan: GanConfig, train: TrainConfig, frame_shape: tuple[int, ...] | None = None) -> None:
    """Check what an architecture and its training settings must agree on.

    Parameters
    ----------
    gan, train
        The configs.
    frame_shape
        Spatial shape of the training frames, when known.

    Raises
    ------
    InputError
        A resolution layer with crops (its width depends on the row's energy in the whole
        frame), uniform pseudo-pair widths without width bounds, width bounds for another
        number of energy rows, or frames not divisible by 4.
    """
    res = gan.resolution
    if res is not None and train.crop is not None:
        raise InputError(
            "the Sim2Exp resolution layer needs whole frames (its width depends on the row's "
            "energy): use crop=None (drop --crop)"
        )
    pseudo = train.pseudo_pair
    if pseudo.enabled and pseudo.widths == "uniform" and (res is None or res.sigma_bounds is None):
        raise InputError(
            "PseudoPairConfig.widths='uniform' draws widths across the Sim2Exp layer's bounds: it "
            "needs GanConfig.resolution with sigma_bounds (ins train --sim2exp-resolution-layer "
            "--resolution-maps-bounds)"
        )
    if frame_shape is not None:
        if train.crop is None and any(int(s) % 4 for s in frame_shape):
            raise InputError(f"frame sizes must be divisible by 4, got {tuple(frame_shape)}")
        if train.crop is not None and any(int(s) < train.crop for s in frame_shape):
            raise InputError(f"crop {train.crop} is larger than the frames {tuple(frame_shape)}")
        if res is not None and isinstance(res.sigma_bounds, tuple) and len(res.sigma_bounds[0]) != frame_shape[0]:
            raise InputError(
                f"ResolutionConfig.sigma_bounds are for {len(res.sigma_bounds[0])} energy rows, the "
                f"frames have {frame_shape[0]}"
            )


# ----------------------------------------------------------------------------- the build
@dataclass(frozen=True)
class DataConfig:
    """Simulated training data of ``ins train`` and the domain-score sets drawn from it.

    Parameters
    ----------
    n
        Simulated paired frames; a seeded permutation splits them into two disjoint halves
        (domain A: experiment-like frames of the first, domain B: unconvolved maps of the
        second).
    seed
        Simulation, split, calibration and classifier seed.
    size
        Frame side in pixels (divisible by 4).
    geometry
        ``"cut"`` or ``"powder"``.
    recipe
        Overrides of the experiment-like recipe (:class:`bluesky_twin.ins.frames.Recipe`),
        as JSON values, e.g. ``{"e_init": [50, 60, 70], "chopper_frequency": 100}``.
    n_reference, n_calibration
        Domain-score reference bank and calibration set sizes (A frames, >= 20 each).
    """

    n: int = 2000
    seed: int = 0
    size: int = 64
    geometry: str = "cut"
    recipe: Mapping[str, Any] = field(default_factory=dict)
    n_reference: int = 256
    n_calibration: int = 200

    def __post_init__(self) -> None:
        owner = "DataConfig"
        _check_int(owner, self, "n", 1)
        _check_int(owner, self, "seed", 0)
        _check_int(owner, self, "size", 4)
        if self.size % 4:
            raise _fail(owner, "size", f"must be divisible by 4, got {self.size}")
        if self.geometry not in GEOMETRIES:
            raise _fail(owner, "geometry", f"must be one of {GEOMETRIES}, got {self.geometry!r}")
        for name in ("n_reference", "n_calibration"):
            value = getattr(self, name)
            if not _is_int(value) or value < 20:
                raise _fail(owner, name, f"must be >= 20 (20 frames per Sinkhorn repeat), got {value!r}")
        if self.n < 2 * (self.n_reference + self.n_calibration):
            raise _fail(
                owner,
                "n",
                f"is too small ({self.n}): need n >= 2 * (n_reference + n_calibration) = "
                f"{2 * (self.n_reference + self.n_calibration)}",
            )
        if not isinstance(self.recipe, Mapping):
            raise _fail(owner, "recipe", f"must be an object of recipe overrides, got {self.recipe!r}")
        from bluesky_twin.ins.frames import Recipe

        recipe = recipe_to_json(self.recipe)
        Recipe.from_overrides(recipe_from_json(recipe))  # InputError on an unknown key or a bad value
        object.__setattr__(self, "recipe", recipe)

    def recipe_overrides(self) -> dict[str, Any]:
        """The recipe overrides as ``generate_dataset`` takes them (lists become tuples)."""
        return recipe_from_json(self.recipe)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DataConfig:
        """From a mapping; unknown keys raise InputError, missing ones take the defaults."""
        return _from_mapping(cls, d)


def recipe_to_json(recipe: Mapping[str, Any]) -> dict[str, Any]:
    """Recipe overrides as JSON values (tuples become lists); :func:`recipe_from_json` inverts it."""
    return {str(k): list(v) if isinstance(v, tuple) else v for k, v in recipe.items()}


def recipe_from_json(recipe: Mapping[str, Any]) -> dict[str, Any]:
    """Recipe overrides from JSON values (lists become tuples, as the recipe's ranges are)."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in recipe.items()}


@dataclass(frozen=True)
class ClassifierConfig:
    """The two DUQ classifiers (sign of J2) trained with a model.

    Parameters
    ----------
    epochs
        DUQ epochs; 0 trains no classifiers.
    input_scale
        ``"log"`` or ``"linear"``; ``None``: the DUQ default
        (:data:`bluesky_twin.ins.duq.DEFAULT_INPUT_SCALE`).
    """

    epochs: int = 15
    input_scale: str | None = None

    def __post_init__(self) -> None:
        _check_int("ClassifierConfig", self, "epochs", 0)
        if self.input_scale is not None and self.input_scale not in CLASSIFIER_INPUT_SCALES:
            raise _fail(
                "ClassifierConfig",
                "input_scale",
                f"must be one of {CLASSIFIER_INPUT_SCALES} or null, got {self.input_scale!r}",
            )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ClassifierConfig:
        """From a mapping; unknown keys raise InputError, missing ones take the defaults."""
        return _from_mapping(cls, d)


@dataclass(frozen=True)
class BuildConfig:
    """Everything ``ins train`` (:func:`~bluesky_twin.gan.build.build_model`) needs to build a model.

    Its JSON form (:meth:`to_dict`) is the ``--config FILE`` format; the preset name
    ``{"gan": {"preset": "paper", ...}}`` is accepted there as a base for the other keys.

    Parameters
    ----------
    gan, train, data, classifiers
        The parts (see their classes).
    """

    gan: GanConfig = field(default_factory=GanConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    classifiers: ClassifierConfig = field(default_factory=ClassifierConfig)

    def __post_init__(self) -> None:
        for name, cls in (
            ("gan", GanConfig),
            ("train", TrainConfig),
            ("data", DataConfig),
            ("classifiers", ClassifierConfig),
        ):
            if not isinstance(getattr(self, name), cls):
                raise _fail("BuildConfig", name, f"must be a {cls.__name__}, got {getattr(self, name)!r}")
        check_training(self.gan, self.train, (self.data.size, self.data.size))
        res = self.gan.resolution
        if res is not None:
            res.resolved(self.data.recipe_overrides(), self.data.size)  # the recipe can give the values

    def resolved_gan(self) -> GanConfig:
        """:attr:`gan` with the resolution layer's sources (``"maps"``, ``"recipe"``) resolved
        against the data recipe."""
        if self.gan.resolution is None or self.gan.resolution.is_resolved:
            return self.gan
        res = self.gan.resolution.resolved(self.data.recipe_overrides(), self.data.size)
        return dataclasses.replace(self.gan, resolution=res)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``--config FILE``)."""
        return {
            "gan": self.gan.to_dict(),
            "train": self.train.to_dict(),
            "data": {**dataclasses.asdict(self.data), "recipe": dict(self.data.recipe)},
            "classifiers": dataclasses.asdict(self.classifiers),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> BuildConfig:
        """From the JSON form; unknown keys raise InputError, missing ones take the defaults."""
        if not isinstance(d, Mapping):
            raise InputError(f"a build configuration must be a JSON object, got {type(d).__name__}")
        d = dict(d)
        gan = d.get("gan")
        if isinstance(gan, Mapping) and "preset" in gan:
            gan = dict(gan)
            name = gan.pop("preset")
            if name not in PRESETS:
                raise InputError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
            d["gan"] = {**PRESETS[name], **gan}
        return _from_mapping(
            cls,
            d,
            {
                "gan": GanConfig.from_dict,
                "train": TrainConfig.from_dict,
                "data": DataConfig.from_dict,
                "classifiers": ClassifierConfig.from_dict,
            },
        )


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The JSON object of a ``--config`` file (not yet validated: :meth:`BuildConfig.from_dict`).

    Raises
    ------
    InputError
        If the file is missing, unreadable, not JSON, or not an object.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"config file {path} does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"config file {path} is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InputError(f"config file {path} must hold a JSON object, got {type(data).__name__}")
    return data
