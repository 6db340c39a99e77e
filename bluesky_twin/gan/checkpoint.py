"""Safe on-disk format of a trained Exp2SimGAN model directory.

The directory follows :mod:`bluesky_twin.modeldir` (``CURRENT`` pointer, immutable
checksummed versions).  One version holds::

    metadata.json            format, GanConfig, preprocessing, domain-score settings
                             and thresholds, training info, sha256 of every file
    generators.pt            {"G_A": state_dict, "G_B": state_dict}  (torch.save)
    domain_reference.npy     training frames (model space, float16) whose encoder
                             features form the domain-score reference bank
    classifier_unconvolved/  optional DUQ classifier trained on unconvolved frames
    classifier_convolved/    optional DUQ classifier trained on convolved frames
    plots/, MODEL_CARD.md    (informational, checksummed like the rest)

Weights load with ``torch.load(weights_only=True)`` only; there is no pickle
fallback.  Every failure to read or verify a directory raises
:class:`~bluesky_twin.errors.ModelFileError` with the path and the reason.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from bluesky_twin.errors import ModelFileError

__all__ = ["FORMAT", "FORMAT_VERSION", "write_model_dir", "read_metadata", "check_metadata",
           "read_generators", "read_reference"]

FORMAT = "bluesky-twin/exp2simgan"
FORMAT_VERSION = 1
GENERATORS_FILE = "generators.pt"
REFERENCE_FILE = "domain_reference.npy"

#: Bounds on the sizes a GAN metadata may ask for (checked before any allocation).
CONFIG_BOUNDS = {"dims": (1, 3), "ngf": (1, 512), "ndf": (1, 512), "n_blocks": (0, 64),
                 "n_layers_d": (1, 16), "nce_dim": (1, 4096), "num_patches": (1, 65536),
                 "resolution_degree": (0, 16)}
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


def check_metadata(version: Any) -> dict[str, Any]:
    """Check the metadata of a verified version: format version, entries, size bounds."""
    from bluesky_twin.modeldir import check_size

    meta = version.metadata
    meta_path = version.path / "metadata.json"
    if meta.get("format_version") != FORMAT_VERSION:
        raise ModelFileError(
            f"{meta_path} has format_version {meta.get('format_version')!r}; this version reads {FORMAT_VERSION}")
    for key in ("config", "preprocessing", "files"):
        if key not in meta:
            raise ModelFileError(f"{meta_path} lacks the '{key}' entry")
    config = meta["config"]
    if not isinstance(config, dict):
        raise ModelFileError(f"{meta_path}: 'config' is not an object")
    for key, (lo, hi) in CONFIG_BOUNDS.items():
        if key in config:
            check_size(f"config.{key}", config[key], lo, hi, source=str(meta_path))
    return meta


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
