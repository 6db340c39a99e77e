"""A tabulated twin: the ensemble sampled once on a grid, evaluated by cubic splines.

An ensemble of up to 10-layer networks costs about a hundred thousand
multiply-adds per point and member, which is seconds for 1e5 points on two cores.
Live plots, adaptive plans and step studies ask for the same smooth surface over
and over, so :func:`tabulate` samples the twin's mean and standard deviation once
on a regular grid over the training box and answers later queries with cubic
B-spline interpolation (:func:`scipy.ndimage.map_coordinates`), which costs a few
tens of operations per point.  Points outside the training box go to the network.
The interpolation error against the network is measured on random points when the
table is built and kept as :attr:`TabulatedTwin.max_abs_error`.  A twin's
line-residual correction (:mod:`bluesky_twin.twin.line_residual`) is a table lookup
already: the grid holds the networks alone and the correction is added exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from bluesky_twin.errors import InputError
from bluesky_twin.protocols import CorrectedTwin, Twin
from bluesky_twin.twin._scaler import as_points


class TabulatedTwin:
    """Grid-and-spline stand-in for a :class:`~bluesky_twin.twin.DigitalTwin`.

    It is itself a :class:`~bluesky_twin.protocols.Twin`.

    Parameters
    ----------
    twin
        The twin to tabulate: any :class:`~bluesky_twin.protocols.Twin`.  When it also
        has a line-residual correction (:class:`~bluesky_twin.protocols.CorrectedTwin`),
        the grid holds its networks alone and the correction is added exactly.
    shape
        Grid points per axis (default 1000 along the first axis, 200 along others; 3-axis twins
        get 200 x 100 x 100).
    n_check
        Random points used to measure the interpolation error.

    Attributes
    ----------
    max_abs_error, rms_error
        Interpolation error of the mean against the network on ``n_check`` random
        points inside the training box, in the units of the measured quantity.
    max_error_over_std
        Largest ratio of that error to the ensemble's own standard deviation at the
        same point: below 1, the table is closer to the network than the network's
        members are to each other, so tabulating adds no error the twin does not
        already admit to.
    """

    def __init__(self, twin: Twin, shape: Sequence[int] | None = None, *, n_check: int = 2000, seed: int = 0) -> None:
        from scipy import ndimage

        d = len(twin.x_names)
        if d > 3:
            raise InputError(f"tabulating a {d}-axis twin needs too large a grid; use the twin itself")
        if shape is None:
            shape = (1000, 200) if d == 2 else (200, 100, 100) if d == 3 else (4000,)
        shape = tuple(shape)
        if len(shape) != d or min(shape) < 4:
            raise InputError(f"shape must give >= 4 points for each of the {d} axes")
        self.twin = twin
        self.shape = shape
        #: added exactly on top of the tabulated networks (None: nothing to add)
        self._line_residual = None
        networks = twin
        if isinstance(twin, CorrectedTwin) and twin.line_residual is not None:
            self._line_residual = twin.line_residual
            networks = twin.networks_only()
        self._lo = twin.x_range[:, 0].astype(float)
        self._hi = twin.x_range[:, 1].astype(float)
        self._step = (self._hi - self._lo) / (np.asarray(shape) - 1)
        axes = [np.linspace(lo, hi, n) for lo, hi, n in zip(self._lo, self._hi, shape, strict=True)]
        mesh = np.meshgrid(*axes, indexing="ij")
        grid_pts = np.column_stack([m.ravel() for m in mesh])
        mean, std = networks.predict(grid_pts)
        self._mean = ndimage.spline_filter(mean.reshape(shape), order=3, mode="nearest")
        self._std = ndimage.spline_filter(std.reshape(shape), order=3, mode="nearest")
        rng = np.random.default_rng(seed)
        check = rng.uniform(self._lo, self._hi, size=(n_check, d))
        net_mean, net_std = networks.predict(check)
        err = self._interp(self._mean, check) - net_mean
        self.max_abs_error = float(np.max(np.abs(err)))
        self.rms_error = float(np.sqrt(np.mean(err**2)))
        tiny = np.finfo(float).tiny
        self.max_error_over_std = float(np.max(np.abs(err) / np.maximum(net_std, tiny)))

    @property
    def x_names(self) -> list[str]:
        return self.twin.x_names

    @property
    def y_name(self) -> str:
        return self.twin.y_name

    @property
    def x_range(self) -> np.ndarray:
        return self.twin.x_range

    @property
    def version(self) -> str:
        return f"{self.twin.version}-tab{'x'.join(map(str, self.shape))}"

    def _interp(self, coef: np.ndarray, X: np.ndarray) -> np.ndarray:
        from scipy import ndimage

        coords = ((X - self._lo) / self._step).T
        return ndimage.map_coordinates(coef, coords, order=3, mode="nearest", prefilter=False)

    def predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean and std at *X* (``(n, d)``, original units); the network answers outside the box."""
        X = as_points(X, self.x_names)
        inside = ((X >= self._lo) & (X <= self._hi)).all(axis=1)
        mean = np.empty(len(X))
        std = np.empty(len(X))
        if inside.any():
            mean[inside] = self._interp(self._mean, X[inside])
            if self._line_residual is not None:
                mean[inside] += self._line_residual(X[inside])
            std[inside] = np.maximum(self._interp(self._std, X[inside]), 0.0)
        if (~inside).any():
            mean[~inside], std[~inside] = self.twin.predict(X[~inside])
        return mean, std


def tabulate(twin: Twin, shape: Sequence[int] | None = None, **kwargs: Any) -> TabulatedTwin:
    """Return a :class:`TabulatedTwin` of *twin* (see the module docstring)."""
    return TabulatedTwin(twin, shape, **kwargs)
