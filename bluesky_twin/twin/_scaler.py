"""The numbers around a twin's networks: the column standardisation :class:`Scaler`,
the point check :func:`as_points` and the fit score :func:`r2`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bluesky_twin.errors import InputError


@dataclass(frozen=True)
class Scaler:
    """Per-column standardisation ``(v - mean) / scale``.

    Attributes
    ----------
    mean, scale
        ``(d,)`` column means and spreads (a zero spread is stored as 1).
    """

    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, values: np.ndarray, name: str = "data") -> Scaler:
        """Standardise each column of *values*.

        Parameters
        ----------
        values
            ``(n,)`` or ``(n, d)`` readings.
        name
            What the columns are, for the error message.

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
            raise InputError(
                f"the {name} column(s) hold values too large to standardise "
                f"(mean {np.asarray(mean).tolist()}, spread {np.asarray(scale).tolist()}); "
                "check the data for absurd readings"
            )
        return cls(mean, np.where(scale > 0, scale, 1.0))

    def transform(self, values: np.ndarray) -> np.ndarray:
        """Standardised *values*: ``(values - mean) / scale``."""
        return (values - self.mean) / self.scale

    def inverse(self, values: np.ndarray) -> np.ndarray:
        """Original units of standardised *values*: ``values * scale + mean``."""
        return values * self.scale + self.mean

    def to_dict(self) -> dict[str, list[float]]:
        """The statistics as JSON-ready lists (read back by :meth:`from_dict`)."""
        return {"mean": self.mean.tolist(), "scale": self.scale.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Scaler:
        """A scaler from :meth:`to_dict`'s output."""
        return cls(np.asarray(d["mean"], dtype=float), np.asarray(d["scale"], dtype=float))


def as_points(X: Any, x_names: Sequence[str]) -> np.ndarray:
    """Validate prediction points: a finite ``(n, len(x_names))`` float array.

    A 1-D input is one point when there are several axes, else a column of points.

    Raises
    ------
    InputError
        The points have the wrong shape or hold NaN or inf.
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


def r2(y: np.ndarray, prediction: np.ndarray) -> float:
    """Coefficient of determination of *prediction* for *y*."""
    y = np.asarray(y, dtype=float)
    return float(1.0 - np.sum((y - prediction) ** 2) / np.sum((y - y.mean()) ** 2))
