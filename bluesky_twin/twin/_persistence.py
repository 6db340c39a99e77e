"""A twin on disk: :func:`save_twin`, :func:`load_twin` and the builder :func:`twin_from_version`.

A twin is one version of a :mod:`bluesky_twin.modeldir` model directory of format
:data:`FORMAT`: ``metadata.json`` (everything about the fit, the network
parameters included), ``ensemble.pt`` (a state dict), the Optuna journal of its
study when it used the default storage, and ``line_residual.npz`` when it has a
line-residual correction.  Sizes read from the metadata are checked against the
``MAX_*`` bounds before anything is allocated.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from bluesky_twin.errors import InputError, ModelFileError
from bluesky_twin.twin._scaler import Scaler
from bluesky_twin.twin.line_residual import LineResidual

if TYPE_CHECKING:  # pragma: no cover
    from bluesky_twin.modeldir import ModelVersion
    from bluesky_twin.twin._predictor import DigitalTwin

    TwinT = TypeVar("TwinT", bound=DigitalTwin)

METADATA_FILE = "metadata.json"
WEIGHTS_FILE = "ensemble.pt"
JOURNAL_FILE = "optuna.journal"
LINE_RESIDUAL_FILE = "line_residual.npz"
FORMAT = "bluesky-twin/measurement-twin"
FORMAT_VERSION = 2

# Bounds on sizes read from a saved twin's metadata, checked before anything is
# allocated (the search space itself stays far inside them).
MAX_AXES = 16
MAX_ENSEMBLE_MEMBERS = 64
MAX_LAYERS = 64
MAX_UNITS = 4096
MAX_PARAMETERS = 50_000_000


def save_twin(twin: DigitalTwin, path: str | os.PathLike, *, keep: int | None = None) -> str:
    """Publish *twin* as a new version of model directory *path*.

    Parameters
    ----------
    twin
        The twin to write.
    path
        The model directory (created if missing).
    keep
        Newest versions to keep (default :data:`bluesky_twin.modeldir.KEEP_VERSIONS`).

    Returns
    -------
    str
        The name of the new version (``"v000003"``).

    Raises
    ------
    InputError
        *path* holds something other than a measurement twin.
    ModelFileError
        The version cannot be written.
    """
    import torch

    from bluesky_twin.modeldir import KEEP_VERSIONS, write_version

    path = Path(path)
    state = {k: v.detach().clone() for k, v in twin._models.state_dict().items()}
    meta = dict(twin.metadata)
    meta.pop("files", None)
    line_residual = twin._line_residual
    journal = twin._journal

    def write_files(tmp: Path) -> None:
        torch.save(state, tmp / WEIGHTS_FILE)
        if journal is not None and journal.exists():
            shutil.copyfile(journal, tmp / JOURNAL_FILE)
        if line_residual is not None:
            with open(tmp / LINE_RESIDUAL_FILE, "wb") as fh:
                np.savez(fh, **line_residual.arrays())

    try:
        return write_version(path, meta, write_files, keep=KEEP_VERSIONS if keep is None else keep)
    except ValueError as exc:
        if isinstance(exc, InputError):
            raise
        raise ModelFileError(f"cannot save the twin to {path}: {exc}") from None


def load_twin(path: str | os.PathLike, twin_class: type[TwinT]) -> TwinT:
    """Load the current version of the twin model directory *path* as a *twin_class*.

    Raises
    ------
    ModelFileError
        As for :func:`twin_from_version`, or the directory is missing, of another
        format, or a file is missing, unlisted or does not match its checksum.
    """
    from bluesky_twin.modeldir import load_model

    return load_model(path, FORMAT, lambda version: twin_from_version(version, twin_class))


def twin_from_version(version: ModelVersion, twin_class: type[TwinT]) -> TwinT:
    """Build a twin from a verified model-directory version.

    The Optuna journal, if saved, is copied to a private temporary directory that
    lives as long as the twin (optuna may write next to a journal it opens, and a
    published version never changes).

    Raises
    ------
    ModelFileError
        The format version is not :data:`FORMAT_VERSION`, a size in the metadata is
        out of the ``MAX_*`` bounds, the metadata are incomplete, or the weights or
        the line-residual arrays do not match them.
    """
    import torch

    from bluesky_twin.modeldir import check_size
    from bluesky_twin.twin.network import BatchedMLP

    path, meta = version.path, version.metadata
    meta_path = path / METADATA_FILE
    if int(meta.get("format_version", -1)) > FORMAT_VERSION:
        raise ModelFileError(f"{path} was written by a newer bluesky-twin (format {meta['format_version']})")
    if int(meta.get("format_version", -1)) < FORMAT_VERSION:
        raise ModelFileError(f"{path} uses the old twin format {meta.get('format_version')}; refit it")
    try:
        n_in = check_size("number of x axes", len(meta["x_names"]), 1, MAX_AXES)
        entries = meta["ensemble"]
        check_size("ensemble entries", len(entries), 1, MAX_ENSEMBLE_MEMBERS)
        n_params = 0
        for e in entries:
            p = e["params"]
            members = check_size("ensemble members", e["members"], 1, MAX_ENSEMBLE_MEMBERS)
            layers = check_size("n_layers", p["n_layers"], 1, MAX_LAYERS)
            units = check_size("n_units", p["n_units"], 1, MAX_UNITS)
            feats = check_size("fourier_features", p.get("fourier_features", 0), 0, MAX_UNITS)
            width_in = n_in + 2 * feats
            n_params += members * (width_in * units + (layers - 1) * units * units + units)
        if n_params > MAX_PARAMETERS:
            raise ModelFileError(
                f"{meta_path}: the ensemble would hold {n_params:.3g} parameters (at most {MAX_PARAMETERS:.3g})"
            )
        x_scaler = Scaler.from_dict(meta["x_scaler"])
        y_scaler = Scaler.from_dict(meta["y_scaler"])
        if x_scaler.mean.shape != (n_in,) or y_scaler.mean.shape != (1,):
            raise ValueError("scaler sizes do not match the axes")
        if not (np.all(np.isfinite(x_scaler.scale)) and np.all(np.isfinite(y_scaler.scale))):
            raise ValueError("non-finite scaler statistics")
        models = torch.nn.ModuleList(BatchedMLP.from_params(int(e["members"]), n_in, e["params"]) for e in entries)
    except ModelFileError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(f"{meta_path} is incomplete or inconsistent: {exc!r}") from exc
    state = version.torch_load(WEIGHTS_FILE)
    try:
        models.load_state_dict(state, strict=True)
    except Exception as exc:  # shape/key errors of many kinds
        raise ModelFileError(f"{path / WEIGHTS_FILE} does not match {METADATA_FILE}: {exc}") from exc
    models.eval()
    line_residual = None
    if meta.get("line_residual"):
        arrays = version.numpy_load(LINE_RESIDUAL_FILE)
        try:
            line_residual = LineResidual.from_saved(meta["line_residual"], arrays)
        except Exception as exc:  # format/shape errors of many kinds
            raise ModelFileError(f"{path / LINE_RESIDUAL_FILE} does not match {METADATA_FILE}: {exc}") from exc
    journal = None
    if version.has(JOURNAL_FILE):
        tmpdir = Path(tempfile.mkdtemp(prefix="bluesky-twin-study-"))
        journal = tmpdir / JOURNAL_FILE
        journal.write_bytes(version.read(JOURNAL_FILE))
    twin = twin_class(
        models, x_scaler, y_scaler, meta, journal=journal, line_residual=line_residual, model_version=version.name
    )
    if journal is not None:
        weakref.finalize(twin, shutil.rmtree, journal.parent, True)
    return twin
