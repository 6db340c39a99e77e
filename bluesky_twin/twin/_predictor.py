"""The trained measurement twin: :class:`DigitalTwin`.

It holds the networks of the final ensemble, the scalers, an optional
line-residual correction and the metadata of its fit, and predicts.  Fitting
lives in :mod:`bluesky_twin.twin._fit` (search, final ensemble), reading and
writing in :mod:`bluesky_twin.twin._persistence`; :meth:`DigitalTwin.fit`,
:meth:`DigitalTwin.save` and :meth:`DigitalTwin.load` delegate to them.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bluesky_twin.data import ScanTable, load_scan_table
from bluesky_twin.errors import InputError
from bluesky_twin.twin import _persistence
from bluesky_twin.twin._config import DEFAULT_ENSEMBLE_SIZE, DEFAULT_FOLDS, DEFAULT_TOP_K, FitConfig
from bluesky_twin.twin._fit import fit_twin
from bluesky_twin.twin._scaler import Scaler, as_points, r2
from bluesky_twin.twin.line_residual import LineResidual
from bluesky_twin.twin.space import TwinSearchSpace
from bluesky_twin.twin.tabulated import TabulatedTwin

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    import torch

logger = logging.getLogger(__name__)


class DigitalTwin:
    """A trained measurement twin.

    Build one with :meth:`fit` or :meth:`load`.  Its networks, scalers and
    line-residual correction never change afterwards, so :meth:`predict` is
    thread-safe, and a refit returns a new object.

    Parameters
    ----------
    models
        The final ensemble: one :class:`~bluesky_twin.twin.network.BatchedMLP` per
        training group.
    x_scaler, y_scaler
        The standardisation of the axes and of the measured quantity.
    metadata
        Everything recorded about the fit (written to ``metadata.json``).
    journal
        The Optuna journal of the twin's study, if it has a private one.
    line_residual
        The correction :meth:`predict` adds to the networks, if any.
    model_version
        The model-directory version the twin was loaded from.

    Attributes
    ----------
    metadata
        As given (``x_names``, ``y_name``, ``x_range``, ``version``, ``best_params``, ...).
    model_version
        The model-directory version it was loaded from or last saved as
        (``"v000003"``), else ``None``.
    """

    def __init__(
        self,
        models: torch.nn.ModuleList,
        x_scaler: Scaler,
        y_scaler: Scaler,
        metadata: dict[str, Any],
        journal: Path | None = None,
        line_residual: LineResidual | None = None,
        *,
        model_version: str | None = None,
    ) -> None:
        self._models = models
        self._line_residual = line_residual
        self._x_scaler = x_scaler
        self._y_scaler = y_scaler
        self.metadata = metadata
        self._journal = journal
        self._table: TabulatedTwin | None = None
        self._table_lock = threading.Lock()
        self.model_version = model_version

    # ------------------------------------------------------------------ properties
    @property
    def x_names(self) -> list[str]:
        """The scan-axis column names, in the order :meth:`predict` expects."""
        return list(self.metadata["x_names"])

    @property
    def y_name(self) -> str:
        """The measured column's name."""
        return str(self.metadata["y_name"])

    @property
    def x_range(self) -> np.ndarray:
        """``(d, 2)`` training minimum and maximum per axis."""
        return np.asarray(self.metadata["x_range"], dtype=float)

    @property
    def version(self) -> str:
        """Identifier that changes with every fit, e.g. ``"2-1a2b3c4d"`` (refit count and a
        hash of data and weights)."""
        return str(self.metadata["version"])

    @property
    def best_params(self) -> dict[str, Any]:
        """The network parameters of the best configuration."""
        return dict(self.metadata["best_params"])

    @property
    def study_name(self) -> str:
        """The Optuna study the twin was tuned in."""
        return str(self.metadata["study_name"])

    @property
    def ensemble_size(self) -> int:
        """Members of the ensemble in all."""
        return int(sum(m.members for m in self._models))

    @property
    def line_residual(self) -> LineResidual | None:
        """The line-residual correction :meth:`predict` adds (``None``: the networks alone)."""
        return self._line_residual

    def __repr__(self) -> str:
        m = self.metadata
        return (
            f"<DigitalTwin {self.y_name}({', '.join(self.x_names)}) version={self.version} "
            f"cv_rmse={m.get('selection_score', float('nan')):.3g} train_r2={m.get('train_r2', float('nan')):.4f}>"
        )

    # ------------------------------------------------------------------ prediction
    def predict(
        self, X: np.ndarray, *, return_members: bool = False, fast: bool = False, chunk: int = 200_000
    ) -> tuple[np.ndarray, np.ndarray] | np.ndarray:
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
        chunk
            Points evaluated at once.

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

    def networks_only(self) -> DigitalTwin:
        """This twin without its line-residual correction (the twin itself when it has none).

        The step studies simulate with it: the correction is linear between measured
        lines, so it cannot tell how fine a step along the line axis must be.  The
        view shares the networks; its version carries a ``-networks`` suffix.
        """
        if self._line_residual is None:
            return self
        meta = dict(self.metadata, line_residual=None, version=f"{self.metadata.get('version', '')}-networks")
        return type(self)(self._models, self._x_scaler, self._y_scaler, meta, journal=self._journal)

    @property
    def table(self) -> TabulatedTwin:
        """The tabulated copy used by ``predict(fast=True)``, built once on first use."""
        with self._table_lock:
            if self._table is None:
                self._table = self.tabulate()
            return self._table

    def tabulate(self, shape: Sequence[int] | None = None, **kwargs: Any) -> TabulatedTwin:
        """A fast grid-and-spline copy for repeated queries (see :mod:`bluesky_twin.twin.tabulated`)."""
        return TabulatedTwin(self, shape, **kwargs)

    def outside_training_range(self, X: np.ndarray) -> np.ndarray:
        """Boolean mask of points outside the training range on any axis."""
        X = np.atleast_2d(np.asarray(X, dtype=float))
        lo, hi = self.x_range[:, 0], self.x_range[:, 1]
        return ((X < lo) | (X > hi)).any(axis=1)

    def predict_frame(self, points: pd.DataFrame, *, fast: bool = False) -> pd.DataFrame:
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
            logger.warning(
                "%d of %d point(s) lie outside the training range %s",
                int(outside.sum()),
                len(outside),
                dict(zip(self.x_names, self.x_range.tolist(), strict=True)),
            )
        return out

    def score(self, X: np.ndarray, y: np.ndarray) -> float:
        """Coefficient of determination R^2 of the ensemble mean on ``(X, y)``."""
        mean, _ = self.predict(X)
        return r2(y, mean)

    # ------------------------------------------------------------------ fitting
    @classmethod
    def fit(
        cls,
        data: pd.DataFrame | str | os.PathLike | ScanTable,
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
        warm_start: DigitalTwin | None = None,
        search_space: TwinSearchSpace | None = None,
        ensemble_size: int = DEFAULT_ENSEMBLE_SIZE,
        top_k: int = DEFAULT_TOP_K,
        n_folds: int = DEFAULT_FOLDS,
        search_folds: int | None = None,
        progress: bool = False,
        trial_callback: Callable[[Any, Any], None] | None = None,
        trial_batch: int | None = None,
        restarts: int = 1,
    ) -> DigitalTwin:
        """Tune, train and return a twin.

        The options from *trials* to *progress* are those of
        :class:`~bluesky_twin.twin.FitConfig` and are checked there first.

        Parameters
        ----------
        data
            A DataFrame, a CSV path or a :class:`~bluesky_twin.data.ScanTable`.
        x, y
            Column names (optional for a warm start: taken from *warm_start*).
        trials, timeout, budget, jobs, storage, study_name, seed
            Options of the search, as in :class:`~bluesky_twin.twin.FitConfig`
            (default: 30 trials, or 4 for a warm start; no time limit; one thread; a
            journal file saved with the model; a generated study name; seed 0).
        warm_start
            A previous twin of the same quantity: its best parameters are tried
            first (from fresh weights, like every search trial), its weights
            initialise the matching networks of the final ensemble, and its scalers
            are kept.
        search_space
            Ranges and schedule (default: the paper's).
        ensemble_size, top_k, n_folds, search_folds, progress
            Options of the folds and the final ensemble, as in
            :class:`~bluesky_twin.twin.FitConfig` (default: 6 members of at most 3
            configurations; 3 folds, all searched below
            :data:`~bluesky_twin.twin.LARGE_DATA_ROWS` rows, else one; no progress bar).
        trial_callback
            Called as ``trial_callback(study, trial)`` after every trial.
        trial_batch
            Trials asked and told together when there is no time limit (default: the
            larger of 2 and *jobs*).  The result depends on it, never on timing: fits
            with the same seed and batch width are identical whatever *jobs* is.
        restarts
            Independent searches pooled into one twin (default 1): see
            :class:`~bluesky_twin.twin.FitConfig`.  Each costs a whole fit; together they
            make the answer depend less on the seed (docs/twin.md, "Dependence on the seed").

        Raises
        ------
        InputError
            A bad option, unusable data, a study of other data, or no trial completed.
        """
        config = FitConfig(
            trials=trials,
            timeout=timeout,
            budget=budget,
            jobs=jobs,
            storage=storage,
            study_name=study_name,
            seed=seed,
            ensemble_size=ensemble_size,
            top_k=top_k,
            n_folds=n_folds,
            search_folds=search_folds,
            progress=progress,
            trial_batch=trial_batch,
            restarts=restarts,
        )
        return fit_twin(
            cls, data, x, y, config, warm_start=warm_start, search_space=search_space, trial_callback=trial_callback
        )

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike, *, keep: int | None = None) -> Path:
        """Publish the twin as a new version of model directory *path*.

        The directory layout is that of :mod:`bluesky_twin.modeldir`: the previous
        versions stay until the new one is complete (the newest ``keep`` are kept), a
        reader always loads one whole version, and every file is checksummed.  A path
        that holds anything but a measurement twin is refused with :class:`InputError`.
        :attr:`model_version` becomes the new version's name.
        """
        self.model_version = _persistence.save_twin(self, path, keep=keep)
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> DigitalTwin:
        """Load the current version of a twin model directory written by :meth:`save`.

        Raises
        ------
        ModelFileError
            The directory is missing or of another format, a file is missing, unlisted
            or does not match its checksum, a size in the metadata is out of bounds,
            or the weights do not match the metadata.
        """
        return _persistence.load_twin(path, cls)

    def storage_url(self, model_dir: str | os.PathLike | None = None) -> str:
        """The Optuna storage URL of the study (a saved journal: the twin's private copy of it)."""
        url = str(self.metadata["storage"])
        if url == f"journal:{_persistence.JOURNAL_FILE}" and self._journal is not None:
            return f"journal:{self._journal}"
        return url
