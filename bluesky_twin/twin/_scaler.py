"""The numbers around a twin's networks: the column standardisation :class:`Scaler`
(with its optional per-column input scales), the point check :func:`as_points` and the
fit score :func:`r2`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bluesky_twin.errors import InputError

#: The input scales a column can be read on before it is standardised: ``"linear"`` (the
#: value itself) and ``"sqrt"`` (the signed square root ``sign(v) sqrt(|v|)``).
INPUT_SCALES = ("linear", "sqrt")


def _signed_sqrt(values: np.ndarray) -> np.ndarray:
    return np.sign(values) * np.sqrt(np.abs(values))


def canonical_warp(warp: Sequence[str]) -> tuple[str, ...]:
    """*warp* as a :class:`Scaler` stores it: empty when every column is ``"linear"``."""
    return tuple(warp) if any(w != "linear" for w in warp) else ()


@dataclass(frozen=True)
class Scaler:
    """Per-column standardisation ``(g(v) - mean) / scale``.

    Attributes
    ----------
    mean, scale
        ``(d,)`` column means and spreads of ``g(v)`` (a zero spread is stored as 1).
    warp
        One of :data:`INPUT_SCALES` per column, the ``g`` each is read on first (empty:
        all ``"linear"``, ``g(v) = v``).  ``"sqrt"`` spreads the low end of a column that
        is non-negative by nature, such as a magnetic field, where the data change
        fastest (docs/twin.md, "Input scales").
    """

    mean: np.ndarray
    scale: np.ndarray
    warp: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # all-linear is stored as no warp, so that equal scalers compare and save alike
        object.__setattr__(self, "warp", canonical_warp(self.warp))
        if self.warp and (len(self.warp) != len(np.atleast_1d(self.mean)) or set(self.warp) - set(INPUT_SCALES)):
            raise InputError(
                f"input scales must be one of {list(INPUT_SCALES)} per column, got {list(self.warp)} "
                f"for {len(np.atleast_1d(self.mean))} column(s)"
            )

    @classmethod
    def fit(cls, values: np.ndarray, name: str = "data", warp: tuple[str, ...] = ()) -> Scaler:
        """Standardise each column of *values*, read on its *warp* scale first.

        Parameters
        ----------
        values
            ``(n,)`` or ``(n, d)`` readings.
        name
            What the columns are, for the error message.
        warp
            One of :data:`INPUT_SCALES` per column (empty: all linear).

        Raises
        ------
        InputError
            The mean or spread of a column is not finite (readings so large that their
            variance overflows, e.g. 1e308): nothing can be learned from them; or
            *warp* names an unknown scale or does not have one entry per column.
        """
        values = np.atleast_2d(values.T).T
        values = cls(np.zeros(values.shape[1]), np.ones(values.shape[1]), warp)._warped(values)
        with np.errstate(over="ignore", invalid="ignore"):
            mean, scale = values.mean(axis=0), values.std(axis=0)
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(scale))):
            raise InputError(
                f"the {name} column(s) hold values too large to standardise "
                f"(mean {np.asarray(mean).tolist()}, spread {np.asarray(scale).tolist()}); "
                "check the data for absurd readings"
            )
        return cls(mean, np.where(scale > 0, scale, 1.0), warp)

    def _warped(self, values: np.ndarray) -> np.ndarray:
        if not self.warp:
            return values
        out = np.array(values, dtype=float, copy=True)
        for j, w in enumerate(self.warp):
            if w == "sqrt":
                out[..., j] = _signed_sqrt(out[..., j])
        return out

    def transform(self, values: np.ndarray) -> np.ndarray:
        """Standardised *values*: ``(g(values) - mean) / scale``."""
        return (self._warped(values) - self.mean) / self.scale

    def inverse(self, values: np.ndarray) -> np.ndarray:
        """Original units of standardised *values*: ``g^-1(values * scale + mean)``."""
        out = values * self.scale + self.mean
        for j, w in enumerate(self.warp):
            if w == "sqrt":
                out[..., j] = np.sign(out[..., j]) * out[..., j] ** 2
        return out

    def to_dict(self) -> dict[str, Any]:
        """The statistics as JSON-ready lists (read back by :meth:`from_dict`); ``warp`` only when set."""
        d: dict[str, Any] = {"mean": self.mean.tolist(), "scale": self.scale.tolist()}
        if self.warp:
            d["warp"] = list(self.warp)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Scaler:
        """A scaler from :meth:`to_dict`'s output (a bad ``warp``: :class:`InputError`)."""
        warp = d.get("warp") or ()
        if not isinstance(warp, (list, tuple)) or not all(isinstance(w, str) for w in warp):
            raise InputError(f"input scales must be a list of names, got {warp!r}")
        return cls(np.asarray(d["mean"], dtype=float), np.asarray(d["scale"], dtype=float), tuple(warp))


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
