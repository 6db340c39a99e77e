"""Safe on-disk format of a trained Exp2SimGAN model directory.

Layout::

    MODEL_DIR/
        metadata.json            format, GanConfig, preprocessing, domain-score settings
                                 and thresholds, training info, sha256 of every file
        generators.pt            {"G_A": state_dict, "G_B": state_dict}  (torch.save)
        domain_reference.npy     training frames (model space, float16) whose encoder
                                 features form the domain-score reference bank
        classifier_unconvolved/  optional DUQ classifier trained on unconvolved frames
        classifier_convolved/    optional DUQ classifier trained on convolved frames
        loss_*.png, MODEL_CARD.md  (informational)

Weights load with ``torch.load(weights_only=True)`` only; there is no pickle
fallback.  Every failure to read or verify a directory raises
:class:`~bluesky_twin.errors.ModelFileError` with the path and the reason.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from bluesky_twin.errors import ModelFileError

__all__ = ["FORMAT", "FORMAT_VERSION", "write_model_dir", "read_metadata", "read_generators", "read_reference"]

FORMAT = "bluesky-twin/exp2simgan"
FORMAT_VERSION = 1
GENERATORS_FILE = "generators.pt"
REFERENCE_FILE = "domain_reference.npy"


def write_model_dir(
    path: str | Path,
    state_dicts: dict[str, dict[str, Any]],
    reference: np.ndarray,
    metadata: dict[str, Any],
    extra_writers: dict[str, Any] | None = None,
) -> Path:
    """Write a model directory atomically (a crash leaves any previous version intact).

    Parameters
    ----------
    path
        Destination directory (replaced as a whole).
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

    from bluesky_twin.io_utils import atomic_directory, atomic_write_json, sha256_file

    path = Path(path)
    with atomic_directory(path) as tmp:
        torch.save({k: {n: t.detach().cpu() for n, t in sd.items()} for k, sd in state_dicts.items()},
                   tmp / GENERATORS_FILE)
        np.save(tmp / REFERENCE_FILE, np.asarray(reference, dtype=np.float16))
        for name, writer in (extra_writers or {}).items():
            writer(tmp / name)
        files = {name: sha256_file(tmp / name) for name in (GENERATORS_FILE, REFERENCE_FILE)}
        meta = dict(metadata)
        meta.update(format=FORMAT, format_version=FORMAT_VERSION, files=files)
        atomic_write_json(tmp / "metadata.json", meta)
    return path


def read_metadata(path: str | Path) -> dict[str, Any]:
    """Read and check ``metadata.json`` of a model directory."""
    path = Path(path)
    if not path.is_dir():
        raise ModelFileError(f"model directory {path} does not exist")
    meta_path = path / "metadata.json"
    try:
        meta = json.loads(meta_path.read_text())
    except FileNotFoundError:
        raise ModelFileError(f"{path} is not an Exp2SimGAN model directory: metadata.json is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"{meta_path} is corrupt: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelFileError(f"{meta_path} is not an Exp2SimGAN model (format {meta.get('format') if isinstance(meta, dict) else None!r})")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ModelFileError(
            f"{meta_path} has format_version {meta.get('format_version')!r}; this version reads {FORMAT_VERSION}")
    for key in ("config", "preprocessing", "files"):
        if key not in meta:
            raise ModelFileError(f"{meta_path} lacks the '{key}' entry")
    return meta


def _verify(path: Path, name: str, meta: dict[str, Any]) -> Path:
    from bluesky_twin.io_utils import sha256_file

    f = path / name
    if not f.is_file():
        raise ModelFileError(f"{path}: {name} is missing")
    expected = meta["files"].get(name)
    if expected is not None and sha256_file(f) != expected:
        raise ModelFileError(f"{f} does not match the checksum in metadata.json (corrupt or replaced)")
    return f


def read_generators(path: str | Path, meta: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Load the generator state dicts (``weights_only=True``)."""
    import torch

    path = Path(path)
    f = _verify(path, GENERATORS_FILE, meta)
    try:
        sds = torch.load(f, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises various types on corrupt/pickled content
        raise ModelFileError(f"cannot load {f} safely: {type(exc).__name__}: {exc}") from None
    if not isinstance(sds, dict) or set(sds) != {"G_A", "G_B"}:
        raise ModelFileError(f"{f} must hold exactly the state dicts 'G_A' and 'G_B'")
    return sds


def read_reference(path: str | Path, meta: dict[str, Any]) -> np.ndarray:
    """Load the domain-score reference frames as float32."""
    path = Path(path)
    f = _verify(path, REFERENCE_FILE, meta)
    try:
        ref = np.load(f, allow_pickle=False)
    except Exception as exc:
        raise ModelFileError(f"cannot read {f}: {exc}") from None
    return ref.astype(np.float32)
