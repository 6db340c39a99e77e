"""The measurement twin: an Optuna-tuned ensemble of small fully connected networks.

Method after Terashima et al., Digital Discovery 2023, 2, 339, with two changes a
scan needs:

* **Selection on held-out scan lines.**  A twin is used to predict *between* the
  measured lines (fields, angles).  Each trial is therefore scored by the mean
  squared error on whole interior lines it did not see (3 folds trained as one
  batched model), not by its training R^2, which rewards memorising the lines.
* **An ensemble of the top-k trials.**  The best few configurations (at most
  ``top_k``, each within ``TOP_K_SCORE_RATIO`` of the best validation loss) are
  refitted on all data with a few seeds each; the spread of all members is the
  prediction's standard deviation.  Averaging configurations also damps the noise
  of selecting one winner from a handful of completed trials.

On large two-axis maps a :class:`~bluesky_twin.twin.line_residual.LineResidual`
adds what the networks leave along the measured lines (``TwinSearchSpace.line_residual``).
"""
from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from bluesky_twin.data import ScanTable, load_scan_table
from bluesky_twin.errors import InputError, ModelFileError
from bluesky_twin.twin.line_residual import LineResidual
from bluesky_twin.twin.space import DEFAULT_FINAL_EPOCHS, TwinSearchSpace

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    import torch

    from bluesky_twin.modeldir import ModelVersion
    from bluesky_twin.twin.network import BatchedMLP

logger = logging.getLogger(__name__)

METADATA_FILE = "metadata.json"
WEIGHTS_FILE = "ensemble.pt"
JOURNAL_FILE = "optuna.journal"
LINE_RESIDUAL_FILE = "line_residual.npz"
FORMAT = "bluesky-twin/measurement-twin"
FORMAT_VERSION = 2

#: Members of the final ensemble in all (spread over the top-k configurations).
DEFAULT_ENSEMBLE_SIZE = 6
#: Configurations in the final ensemble, at most.
DEFAULT_TOP_K = 3
#: A configuration joins the ensemble only if its validation loss is at most this
#: multiple of the best one.
TOP_K_SCORE_RATIO = 1.5
#: From this many rows on, a search trial trains one cross-validation fold, not all.
LARGE_DATA_ROWS = 10_000
#: with a budget, the search keeps at least this share of it, however costly the
#: final ensemble looks after the first trials (the final ensemble is shortened instead)
MIN_SEARCH_SHARE = 0.5
#: a time-boxed final-ensemble member trains at least this many epochs
MIN_FINAL_EPOCHS = 20
#: Trials of a warm-start refit when the caller does not say.
DEFAULT_WARM_TRIALS = 4

# Bounds on sizes read from a saved twin's metadata, checked before anything is
# allocated (the search space itself stays far inside them).
MAX_AXES = 16
MAX_ENSEMBLE_MEMBERS = 64
MAX_LAYERS = 64
MAX_UNITS = 4096
MAX_PARAMETERS = 50_000_000


@dataclass(frozen=True)
class Scaler:
    """Per-column standardisation ``(v - mean) / scale``."""

    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, values: np.ndarray, name: str = "data") -> "Scaler":
        """Standardise each column of *values*.

        Raises
        ------
        InputError
            The mean or spread of a column is not finite (readings so large that their
            variance overflows, e.g. 1e308): nothing can be learned from them.
        """
        values = np.atleast_2d(values.T).T
        with np.errstate(over="ignore", invalid="ignore"):
            mean, scale = values.mean(axis=0), values.std(axis=0)
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(scale))):
            raise InputError(f"the {name} column(s) hold values too large to standardise "
                             f"(mean {np.asarray(mean).tolist()}, spread {np.asarray(scale).tolist()}); "
                             "check the data for absurd readings")
        return cls(mean, np.where(scale > 0, scale, 1.0))

    def transform(self, values: np.ndarray) -> np.ndarray:
        return (values - self.mean) / self.scale

    def inverse(self, values: np.ndarray) -> np.ndarray:
        return values * self.scale + self.mean

    def to_dict(self) -> dict[str, list[float]]:
        return {"mean": self.mean.tolist(), "scale": self.scale.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Scaler":
        return cls(np.asarray(d["mean"], dtype=float), np.asarray(d["scale"], dtype=float))


def as_points(X: Any, x_names: Sequence[str]) -> np.ndarray:
    """Validate prediction points: a finite ``(n, len(x_names))`` float array.

    A 1-D input is one point when there are several axes, else a column of points.
    """
    X = np.asarray(X, dtype=float)
    d = len(x_names)
    if X.ndim == 1:
        X = X.reshape(1, -1) if d > 1 else X.reshape(-1, 1)
    if X.ndim != 2 or X.shape[1] != d:
        raise InputError(f"expected points of shape (n, {d}) for axes {list(x_names)}, got {X.shape}")
    if not np.isfinite(X).all():
        raise InputError("prediction points contain NaN or inf")
    return X


def _versions() -> dict[str, str]:
    import optuna
    import torch

    from bluesky_twin import __version__

    return {"bluesky_twin": __version__, "torch": torch.__version__, "optuna": optuna.__version__,
            "numpy": np.__version__}


class DigitalTwin:
    """A trained measurement twin.

    Build one with :meth:`fit` or :meth:`load`; a twin is immutable afterwards, so
    :meth:`predict` is thread-safe and a refit returns a new object.

    Attributes
    ----------
    x_names, y_name
        The scan-axis and measured column names.
    x_range
        ``(d, 2)`` training minimum and maximum per axis.
    version
        Identifier that changes with every fit, e.g. ``"2-1a2b3c4d"`` (refit count
        and a hash of data and weights).
    metadata
        Everything recorded about the fit (written to ``metadata.json``).
    model_version
        The model-directory version it was loaded from (``"v000003"``), else ``None``.
    """

    def __init__(self, models: "torch.nn.ModuleList", x_scaler: Scaler, y_scaler: Scaler,
                 metadata: dict[str, Any], journal: Path | None = None,
                 line_residual: "LineResidual | None" = None) -> None:
        self._models = models
        self._line_residual = line_residual
        self._x_scaler = x_scaler
        self._y_scaler = y_scaler
        self.metadata = metadata
        self._journal = journal
        self._table: Any = None
        self._table_lock = threading.Lock()
        self.model_version: str | None = None

    # ------------------------------------------------------------------ properties
    @property
    def x_names(self) -> list[str]:
        return list(self.metadata["x_names"])

    @property
    def y_name(self) -> str:
        return str(self.metadata["y_name"])

    @property
    def x_range(self) -> np.ndarray:
        return np.asarray(self.metadata["x_range"], dtype=float)

    @property
    def version(self) -> str:
        return str(self.metadata["version"])

    @property
    def best_params(self) -> dict[str, Any]:
        return dict(self.metadata["best_params"])

    @property
    def study_name(self) -> str:
        return str(self.metadata["study_name"])

    @property
    def ensemble_size(self) -> int:
        return int(sum(m.members for m in self._models))

    def __repr__(self) -> str:
        m = self.metadata
        return (f"<DigitalTwin {self.y_name}({', '.join(self.x_names)}) version={self.version} "
                f"cv_rmse={m.get('selection_score', float('nan')):.3g} train_r2={m.get('train_r2', float('nan')):.4f}>")

    # ------------------------------------------------------------------ prediction
    def predict(self, X: np.ndarray, *, return_members: bool = False, fast: bool = False,
                chunk: int = 200_000) -> tuple[np.ndarray, np.ndarray] | np.ndarray:
        """Predict the measured quantity at *X*.

        Parameters
        ----------
        X
            ``(n, d)`` points in the original units, columns in :attr:`x_names` order
            (a 1-D array is read as one point when ``d > 1``).
        return_members
            Return the ``(members, n)`` per-member predictions instead.
        fast
            Answer from the twin's tabulated copy (built on first use with
            :meth:`tabulate`'s defaults and kept; see :attr:`table`) instead of the
            networks: about 100x faster for many points, with the interpolation
            error the table records.  Points outside the training box still go to
            the networks.

        Returns
        -------
        mean, std
            ``(n,)`` arrays in the units of the measured quantity.
        """
        import torch

        if fast:
            if return_members:
                raise InputError("fast prediction gives the ensemble mean and std, not its members")
            return self.table.predict(X)
        X = as_points(X, self.x_names)
        Xs = self._x_scaler.transform(X).astype(np.float32)
        outs = []
        with torch.inference_mode():
            for s in range(0, len(Xs), chunk):
                xt = torch.from_numpy(Xs[s : s + chunk])
                parts = [m(xt.unsqueeze(0).expand(m.members, -1, -1))[..., 0] for m in self._models]
                outs.append(torch.cat(parts, dim=0).numpy())
        members = np.concatenate(outs, axis=1) if outs else np.zeros((self.ensemble_size, 0), np.float32)
        members = members.astype(float) * self._y_scaler.scale[0] + self._y_scaler.mean[0]
        if self._line_residual is not None and len(X):
            members += self._line_residual(X)[None, :]
        if return_members:
            return members
        return members.mean(axis=0), members.std(axis=0)

    @property
    def line_residual(self) -> LineResidual | None:
        """The line-residual correction :meth:`predict` adds (``None``: the networks alone)."""
        return self._line_residual

    def networks_only(self) -> "DigitalTwin":
        """This twin without its line-residual correction (the twin itself when it has none).

        The step studies simulate with it: the correction is linear between measured
        lines, so it cannot tell how fine a step along the line axis must be.  The
        view shares the networks; its version carries a ``-networks`` suffix.
        """
        if self._line_residual is None:
            return self
        meta = dict(self.metadata, line_residual=None,
                    version=f"{self.metadata.get('version', '')}-networks")
        return DigitalTwin(self._models, self._x_scaler, self._y_scaler, meta, journal=self._journal)

    @property
    def table(self) -> Any:
        """The tabulated copy used by ``predict(fast=True)``, built once on first use."""
        with self._table_lock:
            if self._table is None:
                self._table = self.tabulate()
            return self._table

    def tabulate(self, shape: Sequence[int] | None = None, **kwargs: Any) -> Any:
        """A fast grid-and-spline copy for repeated queries (see :mod:`bluesky_twin.twin.tabulated`)."""
        from bluesky_twin.twin.tabulated import TabulatedTwin

        return TabulatedTwin(self, shape, **kwargs)

    def outside_training_range(self, X: np.ndarray) -> np.ndarray:
        """Boolean mask of points outside the training range on any axis."""
        X = np.atleast_2d(np.asarray(X, dtype=float))
        lo, hi = self.x_range[:, 0], self.x_range[:, 1]
        return ((X < lo) | (X > hi)).any(axis=1)

    def predict_frame(self, points: "pd.DataFrame", *, fast: bool = False) -> "pd.DataFrame":
        """Predict for a table holding the x columns by name (``fast`` as in :meth:`predict`).

        Returns the input columns plus ``y_name``, ``f"{y_name}_std"`` and a boolean
        ``outside_training_range`` column (a warning is logged when any is set).
        """
        table = load_scan_table(points, self.x_names, None, min_points=1)
        if table.n_dropped:
            raise InputError(f"{table.n_dropped} prediction point(s) have NaN/inf coordinates")
        mean, std = self.predict(table.X, fast=fast)
        out = points.copy()
        out[self.y_name] = mean
        out[f"{self.y_name}_std"] = std
        outside = self.outside_training_range(table.X)
        out["outside_training_range"] = outside
        if outside.any():
            logger.warning("%d of %d point(s) lie outside the training range %s",
                           int(outside.sum()), len(outside),
                           dict(zip(self.x_names, self.x_range.tolist())))
        return out

    def score(self, X: np.ndarray, y: np.ndarray) -> float:
        """Coefficient of determination R^2 of the ensemble mean on ``(X, y)``."""
        mean, _ = self.predict(X)
        return _r2(y, mean)

    # ------------------------------------------------------------------ fitting
    @classmethod
    def fit(
        cls,
        data: "pd.DataFrame | str | os.PathLike | ScanTable",
        x: Sequence[str] | None = None,
        y: str | None = None,
        *,
        trials: int | None = None,
        timeout: float | None = None,
        budget: float | None = None,
        jobs: int = 1,
        storage: str | None = None,
        study_name: str | None = None,
        seed: int = 0,
        warm_start: "DigitalTwin | None" = None,
        search_space: TwinSearchSpace | None = None,
        ensemble_size: int = DEFAULT_ENSEMBLE_SIZE,
        top_k: int = DEFAULT_TOP_K,
        n_folds: int = 3,
        search_folds: int | None = None,
        progress: bool = False,
        trial_callback: Callable[[Any, Any], None] | None = None,
    ) -> "DigitalTwin":
        """Tune, train and return a twin.

        Parameters
        ----------
        data
            A DataFrame, a CSV path or a :class:`~bluesky_twin.data.ScanTable`.
        x, y
            Column names (optional for a warm start: taken from *warm_start*).
        trials
            Optuna trials (default 30, or 4 for a warm start).
        timeout
            Seconds for the search: no trial starts after it, and running trials
            stop at it, keeping the best weights they reached (the final ensemble
            is trained after it).
        budget
            Seconds for the whole fit, search and final ensemble together.  After
            every trial the final ensemble's cost is estimated from the measured speed
            of the finished trials, and the search (running trials included) stops
            early enough to leave it that time.
        jobs
            Trials run in parallel threads in this process.
        storage
            Optuna storage URL (see :mod:`bluesky_twin.twin.storage_url`); default a
            journal file that is saved with the model.
        study_name
            Optuna study name (default: generated).  With a shared database storage
            several processes or machines can work on one study.
        seed
            Seed of the sampler, the folds and the network initialisation.
        warm_start
            A previous twin of the same quantity: its best parameters are tried
            first and its weights initialise matching networks; its scalers are kept.
        search_space
            Ranges and schedule (default: the paper's).
        ensemble_size
            Members of the final ensemble in all.
        top_k
            Most configurations in the final ensemble (members are spread over them).
        n_folds
            Cross-validation folds of held-out scan lines.
        search_folds
            How many of the folds each trial trains (default: all of them below
            :data:`LARGE_DATA_ROWS` rows, else one: on a large map one fold of every
            third interior line already holds thousands of validation points, and
            the search costs a third).
        progress
            Show a tqdm progress bar over trials.
        """
        import optuna
        import torch

        t0 = time.perf_counter()
        space = search_space or TwinSearchSpace()
        if warm_start is not None:
            x = list(x) if x is not None else warm_start.x_names
            y = y if y is not None else warm_start.y_name
            if list(x) != warm_start.x_names or y != warm_start.y_name:
                raise InputError(
                    f"warm start twin models {warm_start.y_name}({warm_start.x_names}), "
                    f"not {y}({list(x)})")
            if search_space is None:
                space = TwinSearchSpace.from_dict(warm_start.metadata["search_space"])
        if x is None or y is None:
            raise InputError("x and y column names are required")
        table = data if isinstance(data, ScanTable) else load_scan_table(data, x, y)
        if trials is None:
            trials = DEFAULT_WARM_TRIALS if warm_start is not None else 30
        if trials < 1:
            raise InputError("trials must be >= 1")
        if jobs < 1:
            raise InputError("jobs must be >= 1")
        if budget is not None and not budget > 0:
            raise InputError("budget must be a positive number of seconds")
        if ensemble_size < 1 or top_k < 1:
            raise InputError("ensemble_size and top_k must be >= 1")
        if warm_start is not None:
            x_scaler, y_scaler = warm_start._x_scaler, warm_start._y_scaler
        else:
            x_scaler, y_scaler = Scaler.fit(table.X, "x"), Scaler.fit(table.y, table.y_name)
        try:
            space = space.resolved(len(table), LARGE_DATA_ROWS)
        except ValueError as exc:
            raise InputError(str(exc)) from None
        precision = space.precision
        with np.errstate(over="ignore", invalid="ignore"):
            Xt = torch.from_numpy(x_scaler.transform(table.X).astype(np.float32))
            yt = torch.from_numpy(y_scaler.transform(table.y.reshape(-1, 1)).astype(np.float32))
        if not (bool(torch.isfinite(Xt).all()) and bool(torch.isfinite(yt).all())):
            raise InputError("the data hold values that overflow once standardised (absurd readings, "
                             "or far outside a warm-start twin's range)")
        line_axis, folds = _line_folds(table.X, n_folds, seed)
        if search_folds is None:
            search_folds = len(folds) if len(table) < LARGE_DATA_ROWS else 1
        if search_folds < 1:
            raise InputError("search_folds must be >= 1")
        folds = folds[:search_folds]
        all_rows = np.arange(len(table))
        train_idx = [torch.from_numpy(np.setdiff1d(all_rows, f)) for f in folds]
        val_idx = [torch.from_numpy(f) for f in folds]
        n_train = min(len(t) for t in train_idx)

        tmpdir = None
        if storage is None:
            tmpdir = Path(tempfile.mkdtemp(prefix="bluesky-twin-study-"))
            storage_url = f"journal:{tmpdir / JOURNAL_FILE}"
        else:
            storage_url = storage
        from bluesky_twin.twin.storage_url import mask_url
        from bluesky_twin.twin.study import open_study

        study_name = study_name or f"twin-{table.y_name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(1, trials // 3)),
                                             multivariate=True, constant_liar=jobs > 1)
        pruner = optuna.pruners.SuccessiveHalvingPruner(min_resource=10, reduction_factor=3)
        # one study holds one data set (refused otherwise); a re-run resumes it: the
        # trials this worker already finished count towards `trials`
        study, trials = open_study(storage_url, study_name, table, sampler=sampler, pruner=pruner,
                                   seed=seed, trials=trials)
        prev_models = list(warm_start._models) if warm_start is not None else []
        if warm_start is not None:
            previous = _optuna_params(warm_start.best_params)
            lo, hi = space.batch_bounds(n_train)  # the bounds move with the data size
            if "batch_size" in previous:
                previous["batch_size"] = int(min(max(previous["batch_size"], lo), hi))
            study.enqueue_trial(previous, skip_if_exists=False)

        # One intra-op thread per trial: these networks are far too small for
        # OpenMP to pay off, and on a busy machine its spin-waiting makes training
        # an order of magnitude slower.  Parallelism comes from ``jobs``.
        threads_before = torch.get_num_threads()
        torch.set_num_threads(1)
        mono0 = time.monotonic()
        search_s = min(v for v in (timeout, budget, math.inf) if v is not None)
        limits = {"search": mono0 + search_s}  # moved earlier by the budget as trials finish
        objective = _Objective(space, Xt, yt, train_idx, val_idx, n_train, seed, prev_models,
                               lambda: limits["search"], precision)
        bar = None
        callbacks = []
        if budget is not None:

            def _keep_budget(study: Any, trial: Any) -> None:
                # leave the final ensemble the time the finished trials say it needs
                final_s = _estimate_final_seconds(study, space, ensemble_size, top_k, jobs, n_train, len(table))
                # ... but never before MIN_SEARCH_SHARE of the budget: an expensive first
                # trial must not end the search; the final ensemble is time-boxed instead
                search_end = max(mono0 + MIN_SEARCH_SHARE * budget, mono0 + budget - 1.1 * final_s)
                if final_s:
                    limits["search"] = min(limits["search"], search_end)
                if time.monotonic() >= search_end:
                    study.stop()

            callbacks.append(_keep_budget)
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=trials, desc=f"twin {table.y_name}", unit="trial")

            def _tick(study: Any, trial: Any) -> None:
                bar.update(1)
                try:
                    bar.set_postfix(best=f"{study.best_value:.4g}", refresh=False)
                except ValueError:
                    pass

            callbacks.append(_tick)
        if trial_callback is not None:
            callbacks.append(trial_callback)
        try:
            study.optimize(objective, n_trials=trials, timeout=None if math.isinf(search_s) else search_s,
                           n_jobs=jobs, callbacks=callbacks,
                           gc_after_trial=False, catch=())
            complete_ = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
            epoch_scale, final_deadline = 1.0, None
            if complete_ and budget is not None:
                # time-box the final ensemble to what is left of the budget
                final_deadline = mono0 + budget
                final_s = _estimate_final_seconds(study, space, ensemble_size, top_k, jobs, n_train, len(table))
                left = final_deadline - time.monotonic()
                if final_s > 0 and left < 1.1 * final_s:  # the same margin as the search's stop
                    epoch_scale = max(0.0, left) / (1.1 * final_s)
            if complete_:
                models, entries = _train_final(complete_, space, n_train, seed, ensemble_size, top_k,
                                               Xt, yt, prev_models, jobs, precision, epoch_scale, final_deadline)
        finally:
            if bar is not None:
                bar.close()
            torch.set_num_threads(threads_before)
        states = [t.state for t in study.trials]
        if not complete_:
            raise InputError("no Optuna trial completed (all pruned or failed); raise --trials or --timeout")
        fit_seconds = time.perf_counter() - t0
        parent = warm_start.metadata if warm_start is not None else None
        refit = (int(parent.get("refit_count", 0)) + 1) if parent else 0
        metadata: dict[str, Any] = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "x_names": table.x_names,
            "y_name": table.y_name,
            "x_scaler": x_scaler.to_dict(),
            "y_scaler": y_scaler.to_dict(),
            "x_range": np.column_stack([table.X.min(axis=0), table.X.max(axis=0)]).tolist(),
            "n_points": len(table),
            "n_dropped_nonfinite": table.n_dropped,
            "search_space": space.to_dict(),
            "best_params": entries[0]["params"],
            "best_trial": entries[0]["trial"],
            "best_epoch": entries[0]["epochs"],
            "ensemble": entries,
            "selection": "mean squared error on held-out interior scan lines (standardised units), "
                         f"{len(folds)}-fold" if line_axis >= 0 else
                         f"mean squared error on random held-out rows, {len(folds)}-fold",
            "selection_score": float(entries[0]["cv_score"]),
            "cv_rmse": float(math.sqrt(entries[0]["cv_score"]) * y_scaler.scale[0]),
            "line_axis": table.x_names[line_axis] if line_axis >= 0 else None,
            "n_trials_complete": states.count(optuna.trial.TrialState.COMPLETE),
            "n_trials_pruned": states.count(optuna.trial.TrialState.PRUNED),
            "n_trials_failed": states.count(optuna.trial.TrialState.FAIL),
            "fit_seconds": fit_seconds,
            "budget_seconds": budget,
            "final_epoch_scale": epoch_scale,
            "training_precision": precision,
            "study_name": study_name,
            "storage": mask_url(storage_url) if storage is not None else f"journal:{JOURNAL_FILE}",
            "data_sha256": table.fingerprint(),
            "data_source": table.source,
            "seed": seed,
            "jobs": jobs,
            "ensemble_size": int(sum(m.members for m in models)),
            "top_k": top_k,
            "refit_count": refit,
            "parent_version": parent.get("version") if parent else None,
            "versions": _versions(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        twin = cls(models, x_scaler, y_scaler, metadata,
                   journal=(tmpdir / JOURNAL_FILE) if tmpdir is not None else None)
        if tmpdir is not None:  # the study's journal lives as long as the twin (save() copies it)
            weakref.finalize(twin, shutil.rmtree, tmpdir, True)
        metadata["line_residual"] = None
        fitted, _ = twin.predict(table.X)  # the networks alone so far
        if space.line_residual and line_axis >= 0 and table.X.shape[1] == 2:
            try:
                twin._line_residual = LineResidual.fit(table.X, table.y - fitted, line_axis)
            except ValueError as exc:  # e.g. lines of one or two points: keep the networks alone
                logger.info("no line-residual correction: %s", exc)
            else:
                metadata["line_residual"] = {**twin._line_residual.to_metadata(),
                                             "network_train_r2": _r2(table.y, fitted)}
                fitted = fitted + twin._line_residual(table.X)
        metadata["train_r2"] = _r2(table.y, fitted)
        if not np.all(np.isfinite(fitted)):
            raise InputError("training diverged: the twin predicts non-finite values on its own data "
                             "(check the data for absurd readings)")
        metadata["version"] = f"{refit}-{_weights_hash(models, metadata['data_sha256'])[:8]}"
        return twin

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike, *, keep: int | None = None) -> Path:
        """Publish the twin as a new version of model directory *path*.

        The directory layout is that of :mod:`bluesky_twin.modeldir`: the previous
        versions stay until the new one is complete (the newest ``keep`` are kept), a
        reader always loads one whole version, and every file is checksummed.  A path
        that holds anything but a measurement twin is refused with :class:`InputError`.
        """
        import torch

        from bluesky_twin.modeldir import KEEP_VERSIONS, write_version

        path = Path(path)
        state = {k: v.detach().clone() for k, v in self._models.state_dict().items()}
        meta = dict(self.metadata)
        meta.pop("files", None)
        line_residual = self._line_residual
        journal = self._journal

        def write_files(tmp: Path) -> None:
            torch.save(state, tmp / WEIGHTS_FILE)
            if journal is not None and journal.exists():
                shutil.copyfile(journal, tmp / JOURNAL_FILE)
            if line_residual is not None:
                with open(tmp / LINE_RESIDUAL_FILE, "wb") as fh:
                    np.savez(fh, **line_residual.arrays())

        try:
            self.model_version = write_version(path, meta, write_files, keep=KEEP_VERSIONS if keep is None else keep)
        except ValueError as exc:
            if isinstance(exc, InputError):
                raise
            raise ModelFileError(f"cannot save the twin to {path}: {exc}") from None
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "DigitalTwin":
        """Load the current version of a twin model directory written by :meth:`save`.

        Raises
        ------
        ModelFileError
            The directory is missing or of another format, a file is missing, unlisted
            or does not match its checksum, a size in the metadata is out of bounds,
            or the weights do not match the metadata.
        """
        from bluesky_twin.modeldir import load_model

        return load_model(path, FORMAT, cls._from_version)

    @classmethod
    def _from_version(cls, version: "ModelVersion") -> "DigitalTwin":
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
                raise ModelFileError(f"{meta_path}: the ensemble would hold {n_params:.3g} parameters "
                                     f"(at most {MAX_PARAMETERS:.3g})")
            x_scaler = Scaler.from_dict(meta["x_scaler"])
            y_scaler = Scaler.from_dict(meta["y_scaler"])
            if x_scaler.mean.shape != (n_in,) or y_scaler.mean.shape != (1,):
                raise ValueError("scaler sizes do not match the axes")
            if not (np.all(np.isfinite(x_scaler.scale)) and np.all(np.isfinite(y_scaler.scale))):
                raise ValueError("non-finite scaler statistics")
            models = torch.nn.ModuleList(
                BatchedMLP.from_params(int(e["members"]), n_in, e["params"]) for e in entries)
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
                raise ModelFileError(f"{path / LINE_RESIDUAL_FILE} does not match "
                                     f"{METADATA_FILE}: {exc}") from exc
        journal = None
        if version.has(JOURNAL_FILE):
            # a private copy: optuna may write next to a journal it opens, and a
            # published version never changes
            tmpdir = Path(tempfile.mkdtemp(prefix="bluesky-twin-study-"))
            journal = tmpdir / JOURNAL_FILE
            journal.write_bytes(version.read(JOURNAL_FILE))
        twin = cls(models, x_scaler, y_scaler, meta, journal=journal, line_residual=line_residual)
        if journal is not None:
            weakref.finalize(twin, shutil.rmtree, journal.parent, True)
        twin.model_version = version.name
        return twin

    def storage_url(self, model_dir: str | os.PathLike | None = None) -> str:
        """The Optuna storage URL of the study (a saved journal: the twin's private copy of it)."""
        url = str(self.metadata["storage"])
        if url == f"journal:{JOURNAL_FILE}" and self._journal is not None:
            return f"journal:{self._journal}"
        return url


# ---------------------------------------------------------------------- helpers
def _r2(y: np.ndarray, prediction: np.ndarray) -> float:
    """Coefficient of determination of *prediction* for *y*."""
    y = np.asarray(y, dtype=float)
    return float(1.0 - np.sum((y - prediction) ** 2) / np.sum((y - y.mean()) ** 2))


class _Objective:
    """Optuna objective: cross-validated loss of one configuration on held-out lines."""

    def __init__(self, space: TwinSearchSpace, X: "torch.Tensor", y: "torch.Tensor",
                 train_idx: list["torch.Tensor"], val_idx: list["torch.Tensor"], n_train: int,
                 seed: int, prev_models: list["BatchedMLP"],
                 deadline: "float | Callable[[], float | None] | None" = None,
                 precision: str = "float32") -> None:
        self.space, self.X, self.y = space, X, y
        self.train_idx, self.val_idx, self.n_train = train_idx, val_idx, n_train
        self.seed, self.prev_models, self.deadline = seed, prev_models, deadline
        self.precision = precision

    def __call__(self, trial: Any) -> float:
        import optuna
        import torch

        from bluesky_twin.twin.network import BatchedMLP
        from bluesky_twin.twin.training import PruneSignal, deadline_passed, train_members

        params = self.space.suggest(trial, self.n_train, int(self.X.shape[1]))
        if deadline_passed(self.deadline):  # started just as the budget ran out
            raise optuna.TrialPruned("the search's time is up")
        gen = torch.Generator().manual_seed(self.seed * 100_003 + trial.number)
        model = BatchedMLP.from_params(len(self.train_idx), self.X.shape[1], params, generator=gen)
        previous = _matching(self.prev_models, params)
        if previous is not None:
            model.load_members_from(previous)
            trial.set_user_attr("warm_weights", True)

        def report(epoch: int, value: float) -> None:
            trial.report(value, epoch)
            if trial.should_prune():
                raise PruneSignal

        started = time.perf_counter()
        try:
            res = train_members(model, self.X, self.y, self.train_idx, self.val_idx, lr=params["lr"],
                                batch_size=params["batch_size"], weight_decay=params["weight_decay"],
                                max_epochs=self.space.max_epochs, lr_drop_epoch=self.space.lr_drop_epoch,
                                lr_drop_factor=self.space.lr_drop_factor, patience=self.space.patience,
                                generator=gen, report=report,
                                max_steps_per_epoch=self.space.max_steps_per_epoch, deadline=self.deadline,
                                precision=self.precision)
        except PruneSignal:
            raise optuna.TrialPruned() from None
        trial.set_user_attr("best_epoch", res.best_epoch)
        trial.set_user_attr("epochs_run", res.epochs_run)
        trial.set_user_attr("seconds_per_member_epoch",
                            (time.perf_counter() - started) / max(1, res.epochs_run * model.members))
        if res.steps:  # optimiser steps alone: the final ensemble has no validation pass
            trial.set_user_attr("seconds_per_member_step", res.step_seconds / (res.steps * model.members))
        if res.time_limited:  # the study's timeout cut this trial short: keep what it reached
            trial.set_user_attr("time_limited", True)
        with torch.no_grad():  # training-set fit, recorded to compare selection criteria
            pred = model(self.X.unsqueeze(0).expand(model.members, -1, -1))
            train_mse = [float(((pred[m, idx] - self.y[idx]) ** 2).mean()) for m, idx in enumerate(self.train_idx)]
        trial.set_user_attr("train_mse", float(np.mean(train_mse)))
        if not math.isfinite(res.best_val_loss):
            raise optuna.TrialPruned("diverged")
        return res.best_val_loss


def _train_final(complete: list[Any], space: TwinSearchSpace, n_train: int, seed: int, ensemble_size: int,
                 top_k: int, Xt: "torch.Tensor", yt: "torch.Tensor", prev_models: list["BatchedMLP"],
                 jobs: int = 1, precision: str = "float32", epoch_scale: float = 1.0,
                 deadline: float | None = None) -> tuple["torch.nn.ModuleList", list[dict[str, Any]]]:
    """Refit the top-k configurations on all rows, ``ensemble_size`` members in all.

    The members are split into at least ``jobs`` groups (a configuration's members
    may form several groups) that train in parallel threads, each with its own
    seeded generator, so the result does not depend on thread timing.  An
    ``epoch_scale`` below 1 (a fit's budget) shortens every member's schedule, the
    learning-rate drop included, to that fraction (at least :data:`MIN_FINAL_EPOCHS`
    epochs); *deadline* (:func:`time.monotonic`) stops training outright.
    """
    from concurrent.futures import ThreadPoolExecutor

    import torch

    from bluesky_twin.twin.network import BatchedMLP
    from bluesky_twin.twin.training import train_members

    chosen, shares = _ensemble_plan(complete, ensemble_size, top_k)
    groups = _split_groups(list(zip(chosen, shares)), _group_count(jobs, ensemble_size, len(Xt)))
    full = torch.arange(len(Xt))

    def train_group(index: int) -> tuple["BatchedMLP", dict[str, Any]]:
        trial, members = groups[index]
        gen = torch.Generator().manual_seed(seed * 7919 + 1 + 104_729 * index)
        params = _model_params(trial.params, space, n_train)
        model = BatchedMLP.from_params(members, Xt.shape[1], params, generator=gen)
        previous = _matching(prev_models, params)
        if previous is not None:
            model.load_members_from(previous)
        epochs, _ = _final_schedule(trial, space, int(params["batch_size"]), n_train, len(Xt),
                                    warm=previous is not None)
        lr_drop = space.lr_drop_epoch
        short = max(MIN_FINAL_EPOCHS, math.ceil(epochs * epoch_scale))
        if short < epochs:  # a budget's time box: the whole schedule shrinks, drop included
            lr_drop = max(1, round(lr_drop * short / epochs))
            epochs = short
        train_members(model, Xt, yt, [full] * members, None, lr=params["lr"],
                      batch_size=min(params["batch_size"], len(Xt)), weight_decay=params["weight_decay"],
                      max_epochs=epochs, lr_drop_epoch=lr_drop,
                      lr_drop_factor=space.lr_drop_factor, generator=gen,
                      max_steps_per_epoch=space.final_step_cap, precision=precision, deadline=deadline)
        return model, {"trial": trial.number, "params": params, "members": members, "epochs": epochs,
                       "lr_drop_epoch": lr_drop, "cv_score": float(trial.value)}

    with ThreadPoolExecutor(max_workers=max(1, min(jobs, len(groups)))) as pool:
        results = list(pool.map(train_group, range(len(groups))))
    return torch.nn.ModuleList(m for m, _ in results), [e for _, e in results]


def _final_epochs(trial: Any, space: TwinSearchSpace, warm: bool, search_steps: int = 1,
                  final_steps: int = 1) -> int:
    """Epochs of a final-ensemble member: the search's best epoch, with a floor.

    Starting from trained weights (*warm*) the floor is a third of a cold start's.
    When a final epoch is capped differently from a search epoch
    (:attr:`TwinSearchSpace.final_steps_per_epoch`, e.g. full passes), the
    search's best epoch is converted to the same number of optimiser steps
    (*search_steps* and *final_steps* per epoch), so a trial that needed 500 short
    epochs does not become 500 full passes.
    """
    base = space.min_final_epochs if space.min_final_epochs is not None else DEFAULT_FINAL_EPOCHS
    floor = base // 3 if warm else base
    best = int(trial.user_attrs.get("best_epoch", space.max_epochs))
    if space.final_step_cap != space.max_steps_per_epoch:
        best = math.ceil(best * search_steps / max(1, final_steps))
    return int(max(best, floor))


def _final_schedule(trial: Any, space: TwinSearchSpace, batch: int, n_train: int, n_all: int,
                    warm: bool = False) -> tuple[int, int]:
    """Epochs of a final member of *trial*'s configuration, and optimiser steps per epoch.

    A final epoch runs over all *n_all* rows (capped by
    :attr:`TwinSearchSpace.final_step_cap`), a search epoch ran over *n_train*.
    """
    from bluesky_twin.twin.training import steps_per_epoch

    final_steps = steps_per_epoch(n_all, min(batch, n_all), space.final_step_cap)
    search_steps = steps_per_epoch(n_train, batch, space.max_steps_per_epoch)
    return _final_epochs(trial, space, warm, search_steps, final_steps), final_steps


def _ensemble_plan(complete: list[Any], ensemble_size: int, top_k: int) -> tuple[list[Any], list[int]]:
    """The configurations of the final ensemble and the members each gets.

    The best ``top_k`` complete trials within :data:`TOP_K_SCORE_RATIO` of the best
    validation loss; ``ensemble_size`` members dealt out as evenly as possible.
    """
    ranked = sorted(complete, key=lambda t: t.value)
    chosen = [t for t in ranked[: max(1, min(top_k, ensemble_size))] if t.value <= TOP_K_SCORE_RATIO * ranked[0].value]
    shares = [ensemble_size // len(chosen) + (1 if i < ensemble_size % len(chosen) else 0) for i in range(len(chosen))]
    return chosen, shares


def _estimate_final_seconds(study: Any, space: TwinSearchSpace, ensemble_size: int, top_k: int, jobs: int,
                            n_train: int, n_all: int) -> float:
    """Wall seconds the final ensemble would take if the search stopped now.

    Uses each chosen trial's measured seconds per member and optimiser step (older
    trials: per member-epoch, scaled by the steps of a final epoch against a search
    epoch), the steps of a final epoch (:attr:`TwinSearchSpace.final_step_cap`) and
    the epochs :func:`_train_final` would run; the member groups are then packed onto
    ``jobs`` threads as :func:`_train_final` runs them (three equal groups on two
    threads take two groups' time, not one and a half).  ``0`` before any trial has
    completed.
    """
    import optuna

    from bluesky_twin.twin.training import steps_per_epoch

    complete = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
                if "seconds_per_member_epoch" in t.user_attrs]
    if not complete:
        return 0.0
    chosen, shares = _ensemble_plan(complete, ensemble_size, top_k)
    member_seconds: dict[int, float] = {}
    for t in chosen:
        batch = int(_model_params(t.params, space, n_train)["batch_size"])
        # a cold start's floor: the larger estimate
        epochs, final_steps = _final_schedule(t, space, batch, n_train, n_all)
        if "seconds_per_member_step" in t.user_attrs:
            per_epoch = final_steps * float(t.user_attrs["seconds_per_member_step"])
        else:  # trials recorded before step timing: whole epochs, validation included
            per_epoch = (float(t.user_attrs["seconds_per_member_epoch"]) * final_steps
                         / steps_per_epoch(n_train, batch, space.max_steps_per_epoch))
        member_seconds[id(t)] = epochs * per_epoch
    # the groups _train_final will run, longest first onto the least busy of `jobs` threads
    loads = [0.0] * max(1, jobs)
    for t, members in sorted(_split_groups(list(zip(chosen, shares)), _group_count(jobs, ensemble_size, n_all)),
                             key=lambda g: -g[1] * member_seconds[id(g[0])]):
        loads[loads.index(min(loads))] += members * member_seconds[id(t)]
    return max(loads)


def _group_count(jobs: int, ensemble_size: int, n_rows: int) -> int:
    """How many training groups the final ensemble's members form.

    Small data: ``jobs`` groups, because batching members into one model is nearly
    free where per-step overhead dominates.  Large maps are compute-bound, so batching
    saves nothing and one member per group packs best onto the threads (6 members on
    2 threads: 3 member-times, against 4 for three groups of 2).
    """
    return max(jobs, ensemble_size) if n_rows >= LARGE_DATA_ROWS else jobs


def _split_groups(shares: list[tuple[Any, int]], jobs: int) -> list[tuple[Any, int]]:
    """Split ``(config, members)`` shares until there are ``jobs`` groups (or one member each)."""
    groups = list(shares)
    while len(groups) < jobs:
        i = max(range(len(groups)), key=lambda k: groups[k][1])
        config, members = groups[i]
        if members < 2:
            break
        groups[i : i + 1] = [(config, members - members // 2), (config, members // 2)]
    return groups


def _matching(models: list["BatchedMLP"], params: dict[str, Any]) -> "BatchedMLP | None":
    """The first of *models* with the architecture of *params*, if any."""
    return next((m for m in models if _same_arch(m, params)), None)


def _line_folds(X: np.ndarray, n_folds: int, seed: int) -> tuple[int, list[np.ndarray]]:
    from bluesky_twin.twin.training import line_folds

    return line_folds(X, n_folds, seed)


def _model_params(optuna_params: dict[str, Any], space: TwinSearchSpace, n_train: int) -> dict[str, Any]:
    p = dict(optuna_params)
    axis_keys = sorted((k for k in p if k.startswith("fourier_scale_")), key=lambda k: int(k.rsplit("_", 1)[1]))
    if axis_keys:  # per-axis scales (TwinSearchSpace.fourier_per_axis)
        p["fourier_scale"] = [float(p.pop(k)) for k in axis_keys]
    p.setdefault("encoding", "fourier" if "fourier_scale" in p else space.encodings[0])
    if p["encoding"] == "fourier":
        p.setdefault("fourier_features", int(space.fourier_features))
    else:
        p.pop("fourier_scale", None)
        p.pop("fourier_features", None)
    p.setdefault("dropout", 0.0)
    p.setdefault("activation", space.activations[0])
    if "batch_size" not in p:
        p["batch_size"] = space.batch_bounds(n_train)[1]
    return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in p.items()}


def _optuna_params(params: dict[str, Any]) -> dict[str, Any]:
    """Twin parameters back to the names and values Optuna suggested."""
    out = {k: v for k, v in params.items()
           if not (k == "dropout" and v == 0.0) and k != "fourier_features"}
    if isinstance(out.get("fourier_scale"), (list, tuple)):
        out.update({f"fourier_scale_{i}": float(v) for i, v in enumerate(out.pop("fourier_scale"))})
    return out


def _same_arch(model: "BatchedMLP", params: dict[str, Any]) -> bool:
    from bluesky_twin.twin.network import BatchedMLP

    return model.architecture == BatchedMLP.from_params(1, model.n_in, params).architecture


def _weights_hash(models: Any, salt: str) -> str:
    import hashlib

    h = hashlib.sha256(salt.encode())
    for v in models.state_dict().values():
        h.update(v.detach().numpy().tobytes())
    return h.hexdigest()
