"""A Gaussian-process line agent: the peers' baseline behind the twin agent's interface.

bluesky-adaptive's scikit-learn agents and gpCAM steer a measurement with a Gaussian
process: fit it to everything measured so far and measure next where its posterior
variance is largest.  This module gives bluesky-twin that baseline with the same
``suggest`` / ``ingest`` verbs as :class:`~bluesky_twin.agent.TwinLineAgent`, so
:func:`~bluesky_twin.plans.twin_adaptive_scan` drives it unchanged:

* :func:`fit_gp_twin` fits a :class:`GaussianProcessTwin` (scikit-learn's
  :class:`~sklearn.gaussian_process.GaussianProcessRegressor`, an anisotropic RBF
  kernel plus white noise on inputs scaled to the unit box).  Its signature is
  ``DigitalTwin.fit``'s, so it is a :class:`~bluesky_twin.callbacks.TwinTrainer`'s
  ``fit_function``: the trainer refits the process between runs on its worker thread,
  never on the RunEngine's, starting from the previous kernel's hyperparameters.
* :class:`GPLineAgent` scores every candidate line by the process's mean posterior
  variance along it, relative to the variance of the data, and suggests the largest
  (maximum-variance acquisition).

Example::

    trainer = TwinTrainer(["mpms_temperature", "mpms_field"], "mpms_magnetisation",
                          fit_function=fit_gp_twin)
    RE.subscribe(trainer)
    agent = GPLineAgent(trainer, step_axis="mpms_field", line_axis="mpms_temperature",
                        line_points=np.linspace(26, 50, 49), bounds=(0.0, 5.0))
    RE(twin_adaptive_scan([mpms], mpms.temperature, 26, 50, 49, mpms.field, [0, 2.5, 5],
                          trainer=trainer, agent=agent, budget=10))
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from bluesky_twin.agent import TwinLineAgent
from bluesky_twin.errors import InputError
from bluesky_twin.protocols import TwinLike, TwinSource

__all__ = ["GPLineAgent", "GaussianProcessTwin", "fit_gp_twin"]

#: Rows the process is fitted on at most (exact GP regression costs O(n^3)).
DEFAULT_MAX_POINTS = 600


class GaussianProcessTwin:
    """A fitted scikit-learn Gaussian process in the shape of a twin.

    A :class:`~bluesky_twin.protocols.Twin`: ``predict(X) -> (mean, std)`` in the
    measured quantity's unit, ``x_names``, ``y_name``, ``x_range`` and ``version``.
    Build it with :func:`fit_gp_twin`.

    Parameters
    ----------
    regressor
        A fitted :class:`~sklearn.gaussian_process.GaussianProcessRegressor` on inputs
        scaled to ``[0, 1]`` by *x_range*.
    x_names, y_name
        Data keys of the inputs (column order of ``predict``) and of the output.
    x_range
        ``(len(x_names), 2)`` box of the training inputs.
    y_scale
        Standard deviation of the training outputs (the variance scale of the scores).
    version
        Version string (it changes with the training data).
    n_points
        Rows the process was fitted on.
    """

    def __init__(
        self,
        regressor: Any,
        *,
        x_names: Sequence[str],
        y_name: str,
        x_range: np.ndarray,
        y_scale: float,
        version: str,
        n_points: int,
    ) -> None:
        self.regressor = regressor
        self._x_names = [str(n) for n in x_names]
        self._y_name = str(y_name)
        self._x_range = np.asarray(x_range, dtype=float).reshape(len(self._x_names), 2)
        self.y_scale = float(y_scale)
        self._version = str(version)
        self.n_points = int(n_points)
        self.metadata: dict[str, Any] = {"kind": "gaussian_process", "kernel": str(regressor.kernel_)}

    @property
    def x_names(self) -> list[str]:
        """Data keys of the inputs, in column order."""
        return list(self._x_names)

    @property
    def y_name(self) -> str:
        """Data key of the output."""
        return self._y_name

    @property
    def x_range(self) -> np.ndarray:
        """``[low, high]`` of every input over the training data."""
        return self._x_range.copy()

    @property
    def version(self) -> str:
        """Version string of this fit."""
        return self._version

    @property
    def kernel(self) -> Any:
        """The fitted kernel (its hyperparameters seed the next refit)."""
        return self.regressor.kernel_

    def _scaled(self, X: Any) -> np.ndarray:
        X = np.asarray(X, dtype=float)
        if X.ndim != 2 or X.shape[1] != len(self._x_names):
            raise InputError(f"X must have shape (n, {len(self._x_names)}) for inputs {self._x_names}; got {X.shape}")
        low, high = self._x_range[:, 0], self._x_range[:, 1]
        return (X - low) / np.where(high > low, high - low, 1.0)

    def predict(self, X: Any) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and standard deviation at ``X`` (shape ``(n, len(x_names))``)."""
        mean, std = self.regressor.predict(self._scaled(X), return_std=True)
        return np.asarray(mean, dtype=float).reshape(-1), np.asarray(std, dtype=float).reshape(-1)

    def __repr__(self) -> str:
        return f"GaussianProcessTwin({self._x_names} -> {self._y_name!r}, version={self._version!r})"


def fit_gp_twin(
    data: Any,
    x: Sequence[str],
    y: str,
    *,
    warm_start: Any = None,
    max_points: int = DEFAULT_MAX_POINTS,
    restarts: int = 1,
    seed: int = 0,
    **_ignored: Any,
) -> GaussianProcessTwin:
    """Fit a :class:`GaussianProcessTwin` to a table of readings.

    The signature is ``DigitalTwin.fit``'s, so it serves as a
    :class:`~bluesky_twin.callbacks.TwinTrainer` ``fit_function``; keyword arguments
    meant for the network fit (``trials``, ``study_name``, ``progress``...) are ignored.

    Parameters
    ----------
    data
        A mapping or :class:`pandas.DataFrame` holding the columns *x* and *y*.
    x, y
        Input column names (in order) and the output column.
    warm_start
        A previous :class:`GaussianProcessTwin`: its fitted kernel is the starting
        point of the hyperparameter search (the refit between runs).
    max_points
        Fit on at most this many rows, an even subsample in reading order.
    restarts
        Extra random starts of the hyperparameter optimiser (first fit only).
    seed
        Seed of those restarts.

    Returns
    -------
    GaussianProcessTwin

    Raises
    ------
    InputError
        Missing columns, fewer than 3 finite rows, or a bad *max_points*.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel

    x = [str(n) for n in x]
    missing = [c for c in [*x, y] if c not in data]
    if missing:
        raise InputError(f"fit_gp_twin: no column(s) {missing} in the data")
    if int(max_points) < 3:
        raise InputError(f"max_points must be >= 3; got {max_points}")
    X = np.column_stack([np.asarray(data[c], dtype=float) for c in x])
    Y = np.asarray(data[y], dtype=float).reshape(-1)
    ok = np.isfinite(X).all(axis=1) & np.isfinite(Y)
    X, Y = X[ok], Y[ok]
    if len(Y) < 3:
        raise InputError(f"fit_gp_twin needs at least 3 finite rows; got {len(Y)}")
    if len(Y) > max_points:
        keep = np.unique(np.linspace(0, len(Y) - 1, int(max_points)).round().astype(int))
        X, Y = X[keep], Y[keep]
    x_range = np.column_stack([X.min(axis=0), X.max(axis=0)])
    span = np.where(x_range[:, 1] > x_range[:, 0], x_range[:, 1] - x_range[:, 0], 1.0)
    Xs = (X - x_range[:, 0]) / span
    y_scale = float(np.std(Y)) or 1.0
    if isinstance(warm_start, GaussianProcessTwin) and warm_start.x_names == x:
        kernel, restarts = warm_start.kernel, 0
    else:
        kernel = ConstantKernel(1.0, (1e-3, 1e5)) * RBF(
            length_scale=np.full(len(x), 0.2), length_scale_bounds=(1e-3, 1e2)
        ) + WhiteKernel(1e-3, (1e-8, 1e0))
    gp = GaussianProcessRegressor(
        kernel=kernel, normalize_y=True, n_restarts_optimizer=int(restarts), random_state=int(seed)
    )
    with warnings.catch_warnings(record=True) as caught:
        # a hyperparameter at its bound is no error: the fit is still the best within the bounds
        warnings.simplefilter("always", ConvergenceWarning)
        gp.fit(Xs, Y)
    notes = [str(w.message) for w in caught if issubclass(w.category, ConvergenceWarning)]
    digest = hashlib.sha256(np.ascontiguousarray(np.column_stack([X, Y])).tobytes()).hexdigest()[:8]
    twin = GaussianProcessTwin(
        gp, x_names=x, y_name=y, x_range=x_range, y_scale=y_scale, version=f"gp-{len(Y)}-{digest}", n_points=len(Y)
    )
    twin.metadata["convergence_warnings"] = notes
    return twin


class GPLineAgent(TwinLineAgent):
    """Suggest the lines where a Gaussian process is least sure (maximum posterior variance).

    The same :class:`~bluesky_twin.protocols.ScoringLineAgent` as
    :class:`~bluesky_twin.agent.TwinLineAgent` (``suggest``, ``ingest``,
    ``get_best_points``, ``should_stop``, ``last_scores``), with one acquisition: the
    mean posterior variance of the process along each candidate line, divided by the
    variance of the data it was fitted on.

    Parameters
    ----------
    twin_source
        A :class:`~bluesky_twin.protocols.TwinSource` whose twin is a
        :class:`GaussianProcessTwin` (a ``TwinTrainer`` with
        ``fit_function=fit_gp_twin``, which refits the process after every run), or a
        fitted :class:`GaussianProcessTwin`.
    step_axis, line_axis, line_points, bounds, candidates, min_separation, fixed, tolerance
        As for :class:`~bluesky_twin.agent.TwinLineAgent`.

    Raises
    ------
    InputError
        A bad argument (one line); at scoring time, a source whose twin is not a
        :class:`GaussianProcessTwin`.
    """

    def __init__(
        self,
        twin_source: TwinSource | TwinLike,
        *,
        step_axis: str,
        line_axis: str,
        line_points: Sequence[float],
        bounds: tuple[float, float],
        candidates: int | Sequence[float] = 201,
        min_separation: float | None = None,
        fixed: Mapping[str, float] | None = None,
        tolerance: float | None = None,
    ) -> None:
        super().__init__(
            twin_source,
            step_axis=step_axis,
            line_axis=line_axis,
            line_points=line_points,
            bounds=bounds,
            candidates=candidates,
            acquisition="std",
            min_separation=min_separation,
            fixed=fixed,
            tolerance=tolerance,
        )
        self.acquisition = "variance"

    def scores(self) -> np.ndarray:
        """Mean posterior variance along every candidate line / variance of the data."""
        twin = self._twin()
        if not isinstance(twin, GaussianProcessTwin):
            raise InputError(
                f"GPLineAgent needs a GaussianProcessTwin (a TwinTrainer with fit_function=fit_gp_twin); "
                f"got {type(twin).__name__}"
            )
        _, std = self._predict_lines(twin, self.candidates)
        scores = np.mean(std**2, axis=1) / twin.y_scale**2
        self.last_scores = scores
        return scores
