"""What the networks leave along the measured lines: kept on the lines, carried between them as far as neighbours agree.

A small network trained for between-line accuracy (its epochs are chosen on
held-out scan lines) does not follow every sharp feature *along* a densely
measured line: on the 30k-point ARPES map it leaves 4-6 % of the variance, far
more than the measurement noise along a line (docs/twin.md, "The line-residual
correction").  Training longer closes that gap but makes the map between lines
worse.  :class:`LineResidual` closes it without touching the networks, in the
manner of regression kriging (a Gaussian-process posterior behaves the same way:
it returns the denoised measurement where one was made and shrinks towards the
trend away from it):

* along each measured line the networks' residual is smoothed with a Gaussian
  kernel, so the correction follows the signal the networks missed, not the
  noise: the width is the larger of the leave-one-out choice and the largest width
  whose fit still leaves the measurement-noise variance (the discrepancy
  principle; the noise is estimated from each point's deviation from the straight
  line through its two neighbours).  Leave-one-out alone under-smooths when the
  noise of neighbouring points is correlated, as in binned detector data;
* on a measured line the twin adds that smoothed residual in full;
* between two lines it adds their linear interpolation (along the line axis)
  scaled by ``w(t) = 1 - (1 - alpha) 4 t (1 - t)``, ``t`` the fractional position
  between the lines: 1 on a line, ``alpha`` half-way.  ``alpha`` in [0, 1] is the
  least-squares coefficient that predicts each interior line's smoothed residual
  from its two neighbours with that line left out, so only the part of the
  residual that carries over from line to line is carried: a leftover private to
  one line (drift, detail finer than the line spacing) gives ``alpha`` near 0, one
  shared by neighbouring lines ``alpha`` near 1.  The left-out line lies a full
  spacing from its neighbours, twice as far as a half-way point from the nearer
  line, so ``alpha`` is a cautious weight for the half-way point.

The leave-one-line-out error of the twin (``benchmarks/bench_twin.py``) tests exactly
the half-way weight; the training R^2 then measures how well the lines are
reproduced, which with this correction is to about the noise level.  The price is a
line-periodic texture: where neighbouring lines disagree, a fine map shows each
line's detail at full strength on the line and weaker between.  The correction is
continuous and costs two table lookups a point.  It cannot tell how fine a step
along the line axis must be, so the step studies (:mod:`bluesky_twin.analysis.steps`)
use the networks alone (``DigitalTwin.networks_only``).  It applies to two-axis
scans with a line structure (see :func:`bluesky_twin.twin.training.line_folds`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

#: candidate smoothing widths, in units of the median point spacing along a line
BANDWIDTHS = (0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0)
#: kernel support, in widths
_SUPPORT = 4.0


@dataclass(frozen=True)
class LineResidual:
    """A fitted line-residual correction (build it with :meth:`fit`).

    Attributes
    ----------
    line_axis, dense_axis
        Column indices of the stepped (line) axis and of the swept axis.
    lines
        ``(L,)`` sorted coordinates of the measured lines.
    grid
        ``(G,)`` uniform grid along the swept axis.
    values
        ``(L, G)`` smoothed residual of each line on the grid (held at the edge
        value beyond the part of the grid the line covers).
    bandwidth
        Width of the Gaussian smoothing kernel, in swept-axis units.
    alpha
        Fraction of the interpolated residual the correction adds half-way between two lines.
    noise_rms
        The measurement noise estimated along the lines (units of the measured quantity).
    """

    line_axis: int
    dense_axis: int
    lines: np.ndarray
    grid: np.ndarray
    values: np.ndarray
    bandwidth: float
    alpha: float
    noise_rms: float = float("nan")

    # ------------------------------------------------------------------ use
    def __call__(self, X: np.ndarray) -> np.ndarray:
        """The correction at points *X* ``(n, 2)`` (original units)."""
        X = np.atleast_2d(np.asarray(X, dtype=float))
        x_line, x_dense = X[:, self.line_axis], X[:, self.dense_axis]
        lines, grid = self.lines, self.grid
        n_grid = len(grid)
        a = np.clip(np.searchsorted(lines, x_line), 1, len(lines) - 1) - 1  # lower neighbouring line
        lo = lines[a]
        t = np.clip((x_line - lo) / (lines[a + 1] - lo), 0.0, 1.0)
        u = np.clip((x_dense - grid[0]) * ((n_grid - 1) / (grid[-1] - grid[0])), 0.0, n_grid - 1.0)
        i0 = np.minimum(u.astype(np.int64), n_grid - 2)
        f = u - i0
        flat = self.values.reshape(-1)
        k = a * n_grid + i0  # flat index of (line a, grid i0); line a + 1 is n_grid further on
        ra = flat.take(k) * (1.0 - f) + flat.take(k + 1) * f
        rb = flat.take(k + n_grid) * (1.0 - f) + flat.take(k + n_grid + 1) * f
        weight = 1.0 - (1.0 - self.alpha) * 4.0 * t * (1.0 - t)
        return weight * (ra + t * (rb - ra))

    # ------------------------------------------------------------------ fitting
    @classmethod
    def fit(
        cls,
        X: np.ndarray,
        residual: np.ndarray,
        line_axis: int,
        *,
        bandwidths: Sequence[float] = BANDWIDTHS,
        max_grid: int = 4096,
    ) -> LineResidual:
        """Fit the correction to the networks' *residual* (measured minus predicted).

        Parameters
        ----------
        X
            ``(n, 2)`` training points (original units).
        residual
            ``(n,)`` measured minus predicted values.
        line_axis
            Column of *X* that steps from line to line.
        bandwidths
            Candidate kernel widths in units of the median point spacing along a line.
        max_grid
            Most grid points along the swept axis.

        Raises
        ------
        ValueError
            Not two axes, fewer than three lines, or lines of fewer than three points.
        """
        X = np.asarray(X, dtype=float)
        residual = np.asarray(residual, dtype=float)
        if X.ndim != 2 or X.shape[1] != 2 or len(residual) != len(X):
            raise ValueError("the line-residual correction needs (n, 2) points and n residuals")
        dense_axis = 1 - int(line_axis)
        lines, inverse = np.unique(X[:, line_axis], return_inverse=True)
        if len(lines) < 3:
            raise ValueError(f"the line-residual correction needs >= 3 lines, got {len(lines)}")
        per_line = []
        for k in range(len(lines)):
            rows = np.flatnonzero(inverse == k)
            order = np.argsort(X[rows, dense_axis], kind="stable")
            per_line.append((X[rows[order], dense_axis], residual[rows[order]]))
        if min(len(x) for x, _ in per_line) < 3:
            raise ValueError("the line-residual correction needs >= 3 points on every line")
        spacing = float(np.median(np.concatenate([np.diff(x) for x, _ in per_line])))
        if not spacing > 0:
            raise ValueError("points along a line share one coordinate; no swept axis to smooth along")
        # smoothing width: leave-one-out, but never below the noise level (discrepancy principle)
        # (in-sample, leave-one-out) squared error per candidate width, summed over the lines
        errors = np.array(
            [np.sum([_smoothing_errors(x, r, h * spacing) for x, r in per_line], axis=0) for h in bandwidths]
        )
        loo = errors[:, 1]
        noise_var = _noise_variance(per_line)
        n = sum(len(x) for x, _ in per_line)
        within_noise = [h for h, (fit_sse, _) in zip(bandwidths, errors) if fit_sse / n <= noise_var]
        bandwidth = max(float(bandwidths[int(np.argmin(loo))]), max(within_noise, default=0.0)) * spacing
        lo, hi = float(X[:, dense_axis].min()), float(X[:, dense_axis].max())
        n_grid = int(min(max_grid, max(16, 2 * np.ceil((hi - lo) / spacing) + 1)))
        grid = np.linspace(lo, hi, n_grid)
        values = np.empty((len(lines), n_grid))
        own = []
        for k, (x, r) in enumerate(per_line):
            inside = (grid >= x[0]) & (grid <= x[-1])
            smooth = _smooth(x, r, grid[inside], bandwidth)
            values[k] = np.interp(grid, grid[inside], smooth) if inside.any() else 0.0
            own.append(_smooth(x, r, x, bandwidth))
        alpha = _between_line_weight(lines, per_line, own, grid, values)
        return cls(int(line_axis), dense_axis, lines, grid, values, bandwidth, alpha, float(np.sqrt(noise_var)))

    # ------------------------------------------------------------------ persistence
    def to_metadata(self) -> dict[str, Any]:
        """The scalar settings, for ``metadata.json`` (the arrays go to :meth:`arrays`)."""
        return {
            "line_axis": self.line_axis,
            "dense_axis": self.dense_axis,
            "bandwidth": self.bandwidth,
            "alpha": self.alpha,
            "noise_rms": self.noise_rms,
            "n_lines": int(len(self.lines)),
            "n_grid": int(len(self.grid)),
        }

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays, for ``numpy.savez``."""
        return {"lines": self.lines, "grid": self.grid, "values": self.values}

    @classmethod
    def from_saved(cls, meta: dict[str, Any], arrays: Any) -> LineResidual:
        """Rebuild from :meth:`to_metadata` and :meth:`arrays` output.

        Raises
        ------
        ValueError
            The arrays do not match each other or the metadata.
        """
        lines = np.asarray(arrays["lines"], dtype=float)
        grid = np.asarray(arrays["grid"], dtype=float)
        values = np.asarray(arrays["values"], dtype=float)
        if (
            values.shape != (len(lines), len(grid))
            or len(lines) != int(meta["n_lines"])
            or len(grid) != int(meta["n_grid"])
            or len(lines) < 2
            or len(grid) < 2
            or not np.all(np.isfinite(values))
        ):
            raise ValueError("line-residual arrays do not match their metadata")
        return cls(
            int(meta["line_axis"]),
            int(meta["dense_axis"]),
            lines,
            grid,
            values,
            float(meta["bandwidth"]),
            float(meta["alpha"]),
            float(meta.get("noise_rms", "nan")),
        )


def _window(x: np.ndarray, at: np.ndarray, bandwidth: float) -> tuple[np.ndarray, np.ndarray]:
    """Index matrix ``(len(at), m)`` of the points of sorted *x* within the kernel support of each *at*,
    and its validity."""
    lo = np.searchsorted(x, at - _SUPPORT * bandwidth, side="left")
    hi = np.searchsorted(x, at + _SUPPORT * bandwidth, side="right")
    m = max(1, int((hi - lo).max()))
    idx = lo[:, None] + np.arange(m)[None, :]
    valid = idx < hi[:, None]
    return np.minimum(idx, len(x) - 1), valid


def _kernel(x: np.ndarray, at: np.ndarray, bandwidth: float) -> tuple[np.ndarray, np.ndarray]:
    idx, valid = _window(x, at, bandwidth)
    w = np.exp(-0.5 * ((x[idx] - at[:, None]) / bandwidth) ** 2) * valid
    return idx, w


def _smooth(x: np.ndarray, r: np.ndarray, at: np.ndarray, bandwidth: float) -> np.ndarray:
    """Nadaraya-Watson smoothing of ``r(x)`` (sorted *x*) at *at*."""
    idx, w = _kernel(x, at, bandwidth)
    total = w.sum(axis=1)
    return np.where(total > 0, (w * r[idx]).sum(axis=1) / np.maximum(total, 1e-300), 0.0)


def _smoothing_errors(x: np.ndarray, r: np.ndarray, bandwidth: float) -> tuple[float, float]:
    """In-sample and leave-one-out squared error of :func:`_smooth` on one line, from one kernel."""
    idx, w = _kernel(x, x, bandwidth)  # each point lies in its own window with weight exp(0) = 1
    total = w.sum(axis=1)
    weighted = (w * r[idx]).sum(axis=1)
    fit = weighted / total
    loo_total = total - 1.0
    loo = np.where(loo_total > 1e-12, (weighted - r) / np.maximum(loo_total, 1e-300), 0.0)
    return float(np.sum((r - fit) ** 2)), float(np.sum((r - loo) ** 2))


def _noise_variance(per_line: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """White-noise variance from each point's deviation from the line through its two neighbours.

    For noise of variance ``s2`` the deviation ``r_i - (w1 r_{i-1} + w2 r_{i+1})`` has
    variance ``s2 (1 + w1^2 + w2^2)``; signal curvature adds to it, so this is an
    upper estimate when the signal varies on the scale of the point spacing.
    """
    sse = weight = 0.0
    for x, r in per_line:
        span = x[2:] - x[:-2]
        ok = span > 0
        w2 = np.where(ok, (x[1:-1] - x[:-2]) / np.where(ok, span, 1.0), 0.5)
        w1 = 1.0 - w2
        dev = r[1:-1] - (w1 * r[:-2] + w2 * r[2:])
        sse += float(np.sum(dev[ok] ** 2))
        weight += float(np.sum((1.0 + w1**2 + w2**2)[ok]))
    return sse / weight if weight > 0 else 0.0


def _between_line_weight(
    lines: np.ndarray,
    per_line: list[tuple[np.ndarray, np.ndarray]],
    own: list[np.ndarray],
    grid: np.ndarray,
    values: np.ndarray,
) -> float:
    """Least-squares ``alpha`` predicting each interior line's smoothed residual from its neighbours.

    This is the correction's half-way weight: a left-out line lies at ``t = 1/2``
    (for evenly spaced lines) between its neighbours.
    """
    num = den = 0.0
    for k in range(1, len(lines) - 1):
        x, _ = per_line[k]
        t = (lines[k] - lines[k - 1]) / (lines[k + 1] - lines[k - 1])
        interp = (1.0 - t) * np.interp(x, grid, values[k - 1]) + t * np.interp(x, grid, values[k + 1])
        num += float(np.dot(own[k], interp))
        den += float(np.dot(interp, interp))
    return float(np.clip(num / den, 0.0, 1.0)) if den > 0 else 0.0
