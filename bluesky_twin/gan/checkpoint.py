"""Safe on-disk format of a trained Exp2SimGAN model directory.

The directory follows :mod:`bluesky_twin.modeldir` (``CURRENT`` pointer, immutable
checksummed versions).  One version holds::

    metadata.json            format, format_version, GanConfig, preprocessing,
                             domain-score settings and thresholds, training info,
                             sha256 of every file
    generators.pt            {"G_A": state_dict, "G_B": state_dict}  (torch.save)
    domain_reference.npy     training frames (model space, float16) whose encoder
                             features form the domain-score reference bank
    classifier_unconvolved/  optional DUQ classifier trained on unconvolved frames
    classifier_convolved/    optional DUQ classifier trained on convolved frames
    plots/, MODEL_CARD.md    (informational, checksummed like the rest)

Format versions: 1 wrote ``GanConfig`` flat (``sim2exp_resolution``, ``resolution_*``
keys; missing keys meant that version's defaults) and ``TrainConfig`` flat
(``pseudo_pair_*``); 2 writes them nested and complete (``config.resolution``,
``training.train_config.pseudo_pair``).  :func:`check_metadata` reads both: version 1 is
migrated in memory by :func:`migrate_v1` (the files are never rewritten; their checksums
stay valid).

Weights load with ``torch.load(weights_only=True)`` only; there is no pickle
fallback.  Every failure to read or verify a directory raises
:class:`~bluesky_twin.errors.ModelFileError` with the path and the reason.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bluesky_twin.errors import ModelFileError

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "write_model_dir",
    "read_metadata",
    "check_metadata",
    "migrate_v1",
    "read_config",
    "read_generators",
    "read_reference",
]

FORMAT = "bluesky-twin/exp2simgan"
#: Version written; :data:`READABLE_VERSIONS` are read (older ones migrated).
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
GENERATORS_FILE = "generators.pt"
REFERENCE_FILE = "domain_reference.npy"

#: Bounds on the sizes a GAN metadata may ask for (checked before any allocation).
CONFIG_BOUNDS = {
    "dims": (1, 3),
    "ngf": (1, 512),
    "ndf": (1, 512),
    "n_blocks": (0, 64),
    "n_layers_d": (1, 16),
    "nce_dim": (1, 4096),
    "num_patches": (1, 65536),
}
RESOLUTION_BOUNDS = {"degree": (0, 16)}

#: Format 1's GanConfig defaults of the resolution options (a key missing from a version-1
#: ``config`` meant this value).
V1_RESOLUTION_DEFAULTS = {
    "degree": 2,
    "init_sigma": 3.0,
    "instrument": False,
    "residual": True,
    "energy_range": None,
    "sigma_bounds": None,
    "stochastic": False,
    "poisson": False,
    "spread_max": None,
    "column_terms": False,
}
#: Format 1's TrainConfig defaults of the options added after the first models.
V1_TRAIN_DEFAULTS = {"resolution_lr_scale": 50.0, "refill_masked": False}
V1_PSEUDO_PAIR_DEFAULTS = {"weight": 0.0, "widths": "learned", "finetune": 0}
MAX_FRAME_SIDE = 4096
MAX_REFERENCE_FRAMES = 100_000


def write_model_dir(
    path: str | Path,
    state_dicts: dict[str, dict[str, Any]],
    reference: np.ndarray,
    metadata: dict[str, Any],
    extra_writers: dict[str, Callable[[Path], Any]] | None = None,
) -> Path:
    """Publish a new version of a model directory (any previous version stays intact).

    Parameters
    ----------
    path
        The model directory.
    state_dicts
        ``{"G_A": ..., "G_B": ...}``.
    reference
        Domain-score reference frames (model space).
    metadata
        JSON-serialisable metadata; ``format``, ``format_version`` and ``files`` are added.
    extra_writers
        ``{relative_name: callable(tmp_path)}`` for additional content (e.g. classifiers).
    """
    import torch

    from bluesky_twin.modeldir import write_version

    path = Path(path)
    sds = {k: {n: t.detach().cpu() for n, t in sd.items()} for k, sd in state_dicts.items()}
    ref = np.asarray(reference, dtype=np.float16)

    def write_files(tmp: Path) -> None:
        torch.save(sds, tmp / GENERATORS_FILE)
        np.save(tmp / REFERENCE_FILE, ref)
        for name, writer in (extra_writers or {}).items():
            writer(tmp / name)

    meta = {k: v for k, v in metadata.items() if k != "files"}
    meta.update(format=FORMAT, format_version=FORMAT_VERSION)
    write_version(path, meta, write_files)
    return path


def migrate_v1(meta: dict[str, Any]) -> dict[str, Any]:
    """Format-1 metadata as format 2 (a new dict; *meta* is not changed).

    ``config``: ``sim2exp_resolution`` and the flat ``resolution_<name>`` keys become
    ``config.resolution`` (``None`` without the layer), each missing key taking the
    value format 1 gave it (:data:`V1_RESOLUTION_DEFAULTS`), not today's default.
    ``training.train_config``: ``pseudo_pair_<name>`` becomes ``pseudo_pair.<name>``,
    missing keys likewise (:data:`V1_TRAIN_DEFAULTS`, :data:`V1_PSEUDO_PAIR_DEFAULTS`).

    Raises
    ------
    ModelFileError
        On a key format 1 did not have.
    """
    out = dict(meta)
    config = dict(meta["config"])
    flat = {k: config.pop(k) for k in list(config) if k == "sim2exp_resolution" or k.startswith("resolution_")}
    resolution = None
    if flat.pop("sim2exp_resolution", False):
        resolution = dict(V1_RESOLUTION_DEFAULTS)
        for key, value in flat.items():
            name = key[len("resolution_") :]
            if name not in resolution:
                raise ModelFileError(f"format-1 config has an unknown key {key!r}")
            resolution[name] = value
        if not resolution["instrument"]:  # format 1 ignored the energy range without the instrument terms
            resolution["energy_range"] = None
    config["resolution"] = resolution
    out["config"] = config
    training = meta.get("training")
    if isinstance(training, dict) and isinstance(training.get("train_config"), dict):
        tc = dict(training["train_config"])
        pseudo = dict(V1_PSEUDO_PAIR_DEFAULTS)
        for name in list(pseudo):
            if f"pseudo_pair_{name}" in tc:
                pseudo[name] = tc.pop(f"pseudo_pair_{name}")
        tc = {**V1_TRAIN_DEFAULTS, **tc, "pseudo_pair": pseudo}
        out["training"] = {**training, "train_config": tc}
    out["format_version"] = FORMAT_VERSION
    out["migrated_from_format_version"] = 1
    return out


def check_metadata(version: Any) -> dict[str, Any]:
    """Check the metadata of a verified version: format version, entries, size bounds.

    Returns
    -------
    dict
        The metadata in the current format (format 1 migrated by :func:`migrate_v1`).
    """
    from bluesky_twin.modeldir import check_size

    meta = version.metadata
    meta_path = version.path / "metadata.json"
    if meta.get("format_version") not in READABLE_VERSIONS:
        raise ModelFileError(
            f"{meta_path} has format_version {meta.get('format_version')!r}; this version reads "
            f"{', '.join(map(str, READABLE_VERSIONS))}"
        )
    for key in ("config", "preprocessing", "files"):
        if key not in meta:
            raise ModelFileError(f"{meta_path} lacks the '{key}' entry")
    if not isinstance(meta["config"], dict):
        raise ModelFileError(f"{meta_path}: 'config' is not an object")
    if meta["format_version"] == 1:
        try:
            meta = migrate_v1(meta)
        except ModelFileError as exc:
            raise ModelFileError(f"{meta_path}: {exc}") from None
    config = meta["config"]
    for key, (lo, hi) in CONFIG_BOUNDS.items():
        if key in config:
            check_size(f"config.{key}", config[key], lo, hi, source=str(meta_path))
    resolution = config.get("resolution")
    if resolution is not None and not isinstance(resolution, dict):
        raise ModelFileError(f"{meta_path}: 'config.resolution' is not an object or null")
    for key, (lo, hi) in RESOLUTION_BOUNDS.items():
        if resolution and key in resolution:
            check_size(f"config.resolution.{key}", resolution[key], lo, hi, source=str(meta_path))
    return meta


def read_config(meta: dict[str, Any], source: str | Path) -> Any:
    """The :class:`~bluesky_twin.gan.config.GanConfig` of checked metadata (:func:`check_metadata`).

    Format 2 metadata must list every field (nothing is filled from today's defaults).

    Raises
    ------
    ModelFileError
        On a missing or unknown key or an invalid value.
    """
    from bluesky_twin.gan.config import GanConfig, ResolutionConfig

    config = meta["config"]
    expected = set(GanConfig().to_dict())
    missing = sorted(expected - set(config))
    res = config.get("resolution")
    if isinstance(res, dict):
        missing += [f"resolution.{k}" for k in sorted(set(ResolutionConfig().to_dict()) - set(res))]
    if missing:
        raise ModelFileError(f"{source}/metadata.json has an invalid config: missing {missing}")
    try:
        return GanConfig.from_dict(config)
    except (TypeError, ValueError) as exc:
        raise ModelFileError(f"{source}/metadata.json has an invalid config: {exc}") from None


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The verified ``metadata.json`` of the current version of model directory *path*."""
    from bluesky_twin.modeldir import load_model

    return load_model(path, FORMAT, check_metadata)


def read_generators(version: Any) -> dict[str, dict[str, Any]]:
    """Load the generator state dicts (``weights_only=True``) of a verified version."""
    sds = version.torch_load(GENERATORS_FILE)
    if not isinstance(sds, dict) or set(sds) != {"G_A", "G_B"}:
        raise ModelFileError(f"{version.path / GENERATORS_FILE} must hold exactly the state dicts 'G_A' and 'G_B'")
    return sds


def read_reference(version: Any) -> np.ndarray:
    """Load the domain-score reference frames of a verified version as float32."""
    from bluesky_twin.modeldir import check_size

    ref = version.numpy_load(REFERENCE_FILE)
    if not isinstance(ref, np.ndarray) or ref.ndim < 2:
        raise ModelFileError(f"{version.path / REFERENCE_FILE} is not an array of frames")
    src = str(version.path / REFERENCE_FILE)
    check_size("reference frames", ref.shape[0], 1, MAX_REFERENCE_FRAMES, source=src)
    for side in ref.shape[1:]:
        check_size("frame side", side, 1, MAX_FRAME_SIDE, source=src)
    return ref.astype(np.float32)
