"""Paired INS datasets (unconvolved / experiment-like) and out-of-distribution controls.

``generate_dataset`` draws balanced classes of the J1-J2 Néel antiferromagnet
(label 1: ``J2 > 0``, label 0: ``J2 < 0``) with ``J1 ~ U(0.3, 1.0)`` meV,
``|J2| ~ U(0.02, 0.2)`` meV, rejecting ``J2 >= 0.4 J1``, and simulates for each the
unconvolved map and an experiment-like frame (:mod:`bluesky_twin.ins.frames`).

Every frame gets its own random stream spawned from ``numpy.random.SeedSequence(seed)``,
so a dataset depends on ``seed`` only, not on ``n_workers``.
"""

from __future__ import annotations

import json
import math
import os
import zipfile
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bluesky_twin.errors import InputError
from bluesky_twin.ins.frames import (
    GEOMETRIES,
    Recipe,
    make_geometry,
    resolution_table,
    simulate_pair,
)
from bluesky_twin.io_utils import json_default

#: Bumped when the on-disk layout changes.
FORMAT_VERSION = 1
J1_RANGE = (0.3, 1.0)
ABS_J2_RANGE = (0.02, 0.2)
#: Néel samples with ``J2 >= MAX_J2_OVER_J1 * J1`` are rejected (margin below J1/2).
MAX_J2_OVER_J1 = 0.4
#: Stripe-phase control: ``J2 / J1`` drawn from this range (stable above 1/2).
STRIPE_J2_OVER_J1 = (0.6, 1.0)
NUISANCE_KEYS = (
    "e_init",
    "temperature",
    "elastic_amplitude",
    "background_b0",
    "background_b1",
    "counts_scale",
    "masked_fraction",
)
_AXIS_ARRAYS = ("x", "y", "x_edges", "y_edges")


@dataclass
class InsDataset:
    """Paired INS frames with labels and generating parameters.

    Attributes
    ----------
    unconvolved
        ``(n, H, W)`` float32: spin-wave maps without instrument resolution, scaled by
        their 99.5th percentile (so mostly in [0, 1]).
    convolved
        ``(n, H, W)`` float32: experiment-like frames, NaN where masked.
    labels
        ``(n,)`` int64, 0 for ``J2 < 0``, 1 for ``J2 > 0``.
    params
        ``(n,)`` arrays: ``J1``, ``J2`` (meV) and the nuisance parameters of each frame
        (``e_init``, ``temperature``, ``elastic_amplitude``, ``background_b0``,
        ``background_b1``, ``counts_scale``, ``masked_fraction``).
    axes
        ``names`` (``("E", "h")`` or ``("E", "|Q|")``), ``units``, and arrays ``y``
        (energy centres, rows), ``x`` (momentum centres, columns), ``y_edges``,
        ``x_edges``.
    geometry
        ``"cut"`` or ``"powder"``.
    seed
        Seed the dataset was generated from (-1 if unknown).
    recipe
        Recipe overrides the frames were simulated with (JSON-serialisable).
    """

    unconvolved: NDArray[np.float32]
    convolved: NDArray[np.float32]
    labels: NDArray[np.int64]
    params: dict[str, NDArray[np.float64]]
    axes: dict[str, Any]
    geometry: str = "cut"
    seed: int = -1
    recipe: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def validate(self) -> None:
        """Raise :class:`InputError` if the arrays are inconsistent."""
        n = self.labels.shape[0] if self.labels.ndim == 1 else -1
        if n < 0:
            raise InputError(f"labels must be 1-D, got shape {self.labels.shape}")
        for name in ("unconvolved", "convolved"):
            arr = getattr(self, name)
            if arr.ndim != 3 or arr.shape[0] != n:
                raise InputError(f"{name} must have shape (n={n}, H, W), got {arr.shape}")
        if self.unconvolved.shape != self.convolved.shape:
            raise InputError(f"unconvolved {self.unconvolved.shape} and convolved {self.convolved.shape} differ")
        if n and not np.isin(self.labels, (0, 1)).all():
            raise InputError("labels must be 0 (J2 < 0) or 1 (J2 > 0)")
        for key, arr in self.params.items():
            if np.shape(arr) != (n,):
                raise InputError(f"params[{key!r}] must have shape ({n},), got {np.shape(arr)}")
        for key in ("J1", "J2"):
            if key not in self.params:
                raise InputError(f"params lacks {key!r}")
        if self.geometry not in GEOMETRIES:
            raise InputError(f"geometry must be one of {GEOMETRIES}, got {self.geometry!r}")

    def subset(self, index: Any) -> InsDataset:
        """A new dataset with the frames selected by ``index`` (slice, mask or indices)."""
        idx = np.arange(len(self))[index]
        return InsDataset(
            self.unconvolved[idx],
            self.convolved[idx],
            self.labels[idx],
            {k: v[idx] for k, v in self.params.items()},
            dict(self.axes),
            self.geometry,
            self.seed,
            dict(self.recipe),
        )

    def save(self, path: str | os.PathLike) -> Path:
        """Write the dataset to a compressed ``.npz`` file atomically.

        Nothing is pickled: axis names and units are stored as unicode arrays.
        """
        from bluesky_twin.io_utils import atomic_path

        dest = Path(path)
        arrays: dict[str, np.ndarray] = {
            "format_version": np.array(FORMAT_VERSION),
            "unconvolved": self.unconvolved.astype(np.float32, copy=False),
            "convolved": self.convolved.astype(np.float32, copy=False),
            "labels": self.labels.astype(np.int64, copy=False),
            "geometry": np.array(self.geometry),
            "seed": np.array(int(self.seed)),
            "axis_names": np.array(list(self.axes["names"]), dtype=str),
            "axis_units": np.array(list(self.axes["units"]), dtype=str),
            "recipe_json": np.array(json.dumps(self.recipe, sort_keys=True, default=json_default)),
        }
        for key in _AXIS_ARRAYS:
            arrays[f"axis__{key}"] = np.asarray(self.axes[key], dtype=float)
        for key, value in self.params.items():
            arrays[f"param__{key}"] = np.asarray(value, dtype=float)
        with atomic_path(dest) as tmp:
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, **arrays)
        return dest

    @classmethod
    def load(cls, path: str | os.PathLike) -> InsDataset:
        """Read a dataset written by :meth:`save`.

        Raises
        ------
        InputError
            If the file is missing, not a readable ``.npz``, from another format version,
            lacks an array, or holds inconsistent shapes.
        """
        src = Path(path)
        if not src.is_file():
            raise InputError(f"INS dataset file {src} does not exist")
        try:
            with np.load(src, allow_pickle=False) as npz:
                data = {key: npz[key] for key in npz.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:
            raise InputError(f"{src} is not a readable INS dataset (.npz): {exc}") from None
        required = [
            "format_version",
            "unconvolved",
            "convolved",
            "labels",
            "geometry",
            "axis_names",
            "axis_units",
            "param__J1",
            "param__J2",
        ]
        required += [f"axis__{k}" for k in _AXIS_ARRAYS]
        missing = [key for key in required if key not in data]
        if missing:
            raise InputError(f"{src} is not an INS dataset: missing arrays {missing}")
        version = int(data["format_version"])
        if version != FORMAT_VERSION:
            raise InputError(f"{src} has INS dataset format {version}, this version reads {FORMAT_VERSION}")
        axes: dict[str, Any] = {
            "names": tuple(str(v) for v in data["axis_names"]),
            "units": tuple(str(v) for v in data["axis_units"]),
        }
        for key in _AXIS_ARRAYS:
            axes[key] = data[f"axis__{key}"]
        params = {k[len("param__") :]: v for k, v in data.items() if k.startswith("param__")}
        try:
            recipe = json.loads(str(data["recipe_json"])) if "recipe_json" in data else {}
        except json.JSONDecodeError:
            raise InputError(f"{src}: corrupt recipe metadata") from None
        try:
            return cls(
                unconvolved=data["unconvolved"].astype(np.float32, copy=False),
                convolved=data["convolved"].astype(np.float32, copy=False),
                labels=data["labels"].astype(np.int64, copy=False),
                params=params,
                axes=axes,
                geometry=str(data["geometry"]),
                seed=int(data["seed"]) if "seed" in data else -1,
                recipe=recipe,
            )
        except InputError as exc:
            raise InputError(f"{src} holds an inconsistent INS dataset: {exc}") from None


# ------------------------------------------------------------------- parameter draws
def sample_exchange(n: int, rng: np.random.Generator) -> tuple[NDArray, NDArray, NDArray]:
    """Balanced ``(J1, J2, label)`` draws for the Néel phase, in random order.

    ``n // 2`` frames (plus one if ``n`` is odd, chosen at random) have ``J2 > 0``.
    """
    n_pos = n // 2 + (int(rng.integers(2)) if n % 2 else 0)
    labels = np.zeros(n, dtype=np.int64)
    labels[:n_pos] = 1
    rng.shuffle(labels)
    j1 = np.empty(n)
    j2 = np.empty(n)
    for i, lab in enumerate(labels):
        while True:
            a = rng.uniform(*J1_RANGE)
            b = rng.uniform(*ABS_J2_RANGE) * (1.0 if lab else -1.0)
            if b < MAX_J2_OVER_J1 * a:
                break
        j1[i], j2[i] = a, b
    return j1, j2, labels


def _work(task: tuple) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Worker: simulate the frames of one chunk (module-level so it pickles)."""
    (j1, j2, seeds, geometry_kind, size, recipe, resolutions, phase, want_unconv) = task
    try:
        from threadpoolctl import threadpool_limits

        limiter = threadpool_limits(1)  # small matmuls: BLAS threads only add contention
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        limiter = nullcontext()
    with limiter:
        geometry = make_geometry(geometry_kind, size, recipe)
        n = len(j1)
        unconv = np.empty((n, size, size), np.float32) if want_unconv else np.empty((0,))
        conv = np.empty((n, size, size), np.float32)
        nuis = {k: np.empty(n) for k in NUISANCE_KEYS}
        for i in range(n):
            rng = np.random.default_rng(seeds[i])
            u, c, info = simulate_pair(
                float(j1[i]),
                float(j2[i]),
                geometry,
                recipe,
                rng,
                phase=phase,
                resolutions=resolutions,
            )
            if want_unconv:
                unconv[i] = u
            conv[i] = c
            for k in NUISANCE_KEYS:
                nuis[k][i] = info[k]
    return unconv, conv, nuis


def _check_common(n: Any, size: Any, geometry: Any, n_workers: Any) -> None:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise InputError(f"n must be a positive integer, got {n!r}")
    if geometry not in GEOMETRIES:
        raise InputError(f"geometry must be one of {GEOMETRIES}, got {geometry!r}")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not 8 <= size <= 1024:
        raise InputError(f"size must be an integer in [8, 1024], got {size!r}")
    if isinstance(n_workers, bool) or not isinstance(n_workers, (int, np.integer)) or n_workers < 1:
        raise InputError(f"n_workers must be a positive integer, got {n_workers!r}")


def _simulate_many(
    j1: NDArray,
    j2: NDArray,
    seed: int,
    geometry: str,
    size: int,
    n_workers: int,
    recipe: Recipe,
    phase: str,
    want_unconv: bool = True,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    n = len(j1)
    make_geometry(geometry, size, recipe)  # validates before any work starts
    resolutions = resolution_table(recipe)  # resins is imported here only, not in workers
    seeds = np.random.SeedSequence([int(seed), 1]).spawn(n)
    n_chunks = 1 if n_workers == 1 else min(n, n_workers * 4)
    bounds = np.linspace(0, n, n_chunks + 1).astype(int)
    tasks = [
        (j1[a:b], j2[a:b], seeds[a:b], geometry, size, recipe, resolutions, phase, want_unconv)
        for a, b in zip(bounds[:-1], bounds[1:])
        if b > a
    ]
    if n_workers == 1:
        results = [_work(t) for t in _progress(tasks, progress)]
    else:
        ctx = _mp_context()
        env_before = {k: os.environ.get(k) for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")}
        os.environ.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")  # inherited by spawn
        try:
            with ProcessPoolExecutor(max_workers=min(n_workers, len(tasks)), mp_context=ctx) as pool:
                results = list(_progress(pool.map(_work, tasks), progress, total=len(tasks)))
        finally:
            for k, v in env_before.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    unconv = np.concatenate([r[0] for r in results]) if want_unconv else np.empty((0,))
    conv = np.concatenate([r[1] for r in results])
    nuis = {k: np.concatenate([r[2][k] for r in results]) for k in NUISANCE_KEYS}
    return unconv, conv, nuis


def _mp_context() -> Any:
    """``fork`` when this process has a single thread (fast, works from any script);
    ``spawn`` otherwise (a RunEngine or torch thread makes ``fork`` unsafe).  ``spawn``
    re-imports a script's ``__main__``: guard script code with
    ``if __name__ == "__main__":`` (IPython sessions need nothing)."""
    import multiprocessing
    import threading

    if "fork" in multiprocessing.get_all_start_methods() and threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def _progress(iterable: Any, enabled: bool, total: int | None = None) -> Any:
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc="simulating INS chunks", unit="chunk")


def generate_dataset(
    n: int,
    seed: int = 0,
    geometry: str = "cut",
    size: int = 64,
    n_workers: int = 1,
    *,
    progress: bool = False,
    **recipe_overrides: Any,
) -> InsDataset:
    """Simulate ``n`` paired frames of the J1-J2 Néel antiferromagnet.

    Parameters
    ----------
    n
        Number of frames (classes balanced: ``n // 2`` of each, the odd one random).
    seed
        Seed; the result depends on it only (not on ``n_workers``).
    geometry
        ``"cut"`` or ``"powder"``.
    size
        Frames are ``(size, size)``.
    n_workers
        Worker processes (spawned; 1 runs in-process).
    progress
        Show a tqdm bar over chunks.
    **recipe_overrides
        Fields of :class:`~bluesky_twin.ins.frames.Recipe`.

    Returns
    -------
    InsDataset

    Raises
    ------
    InputError
        For a bad count, geometry, size, worker count or recipe parameter.
    """
    _check_common(n, size, geometry, n_workers)
    recipe = Recipe.from_overrides(recipe_overrides)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0]))
    j1, j2, labels = sample_exchange(int(n), rng)
    unconv, conv, nuis = _simulate_many(
        j1, j2, int(seed), geometry, int(size), int(n_workers), recipe, "neel", True, progress
    )
    params = {"J1": j1, "J2": j2, **nuis}
    return InsDataset(
        unconvolved=unconv,
        convolved=conv,
        labels=labels,
        params=params,
        axes=make_geometry(geometry, int(size), recipe).axes(),
        geometry=geometry,
        seed=int(seed),
        recipe={k: v for k, v in recipe_overrides.items()},
    )


def near_domain_control(
    n: int,
    seed: int = 0,
    *,
    geometry: str = "cut",
    size: int = 64,
    experiment_like: bool = True,
    n_workers: int = 1,
    **recipe_overrides: Any,
) -> NDArray[np.float32]:
    """Frames of a different Hamiltonian: the stripe (columnar) phase, ``J2 > J1 / 2``.

    Same lattice, spin, form factor, geometry and recipe as the training data, but the
    collinear stripe order with ordering vector (1/2, 0) (equal twin domains (1/2, 0) and
    (0, 1/2)); ``J1 ~ U(0.3, 1.0)`` meV and ``J2 / J1 ~ U(0.6, 1.0)``.  Closed-form
    linear spin-wave theory, derived in ``docs/ins.md``.

    Returns
    -------
    numpy.ndarray
        ``(n, size, size)`` float32; experiment-like (NaN masked) by default, otherwise
        unconvolved.
    """
    _check_common(n, size, geometry, n_workers)
    recipe = Recipe.from_overrides(recipe_overrides)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 2]))
    j1 = rng.uniform(*J1_RANGE, size=int(n))
    j2 = j1 * rng.uniform(*STRIPE_J2_OVER_J1, size=int(n))
    unconv, conv, _ = _simulate_many(
        j1,
        j2,
        int(seed) + 7919,
        geometry,
        int(size),
        int(n_workers),
        recipe,
        "stripe",
        True,
        False,
    )
    return conv if experiment_like else unconv


def digits_control(n: int, size: int = 64, seed: int = 0) -> NDArray[np.float32]:
    """Far out-of-distribution control: scikit-learn's 8 x 8 digits upsampled to ``size``.

    Digits are drawn at random (with replacement when ``n`` exceeds the 1797 bundled
    images), bilinearly upsampled and scaled to [0, 1].

    Returns
    -------
    numpy.ndarray
        ``(n, size, size)`` float32.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise InputError(f"n must be a positive integer, got {n!r}")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not 8 <= size <= 1024:
        raise InputError(f"size must be an integer in [8, 1024], got {size!r}")
    from scipy.ndimage import zoom
    from sklearn.datasets import load_digits

    images = load_digits().images  # (1797, 8, 8), values 0..16
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 3]))
    idx = rng.choice(len(images), size=int(n), replace=int(n) > len(images))
    factor = int(size) / 8.0
    out = np.stack([zoom(images[i], factor, order=1, grid_mode=True, mode="nearest") for i in idx])
    out = np.clip(out[:, : int(size), : int(size)] / 16.0, 0.0, 1.0)
    return out.astype(np.float32)


def summarize(ds: InsDataset) -> Mapping[str, Any]:
    """Summary of a dataset (counts, geometry, parameter ranges) for logs and reports."""
    summary: dict[str, Any] = {
        "n": len(ds),
        "geometry": ds.geometry,
        "shape": tuple(ds.unconvolved.shape[1:]),
        "n_positive_J2": int(ds.labels.sum()),
        "seed": ds.seed,
        "masked_fraction": float(np.isnan(ds.convolved).mean()) if len(ds) else math.nan,
    }
    for key, arr in ds.params.items():
        summary[f"{key}_range"] = (float(np.min(arr)), float(np.max(arr))) if len(arr) else None
    return summary
