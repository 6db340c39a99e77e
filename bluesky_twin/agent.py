"""A twin-driven agent that proposes the next measurement lines (``suggest`` / ``ingest``).

The interface follows bluesky-adaptive, blop and Xopt: ``ingest(points)`` records
what was measured and ``suggest(n)`` returns the next ``n`` points, both as lists of
dicts keyed by device names.  Here a *point* is a line: a value of the stepped axis
(e.g. ``{"mpms_field": 1.25}``) along which the line axis (e.g. temperature) is swept.

Acquisition functions
---------------------
``"std"``
    Mean ensemble standard deviation of the twin along the candidate line,
    relative to the spread of the predicted values: where the members disagree most.
``"derived"``
    For the magnetocaloric entropy change, the error that skipping the candidate line
    would make: dS_M integrates dM/dT over the field with the trapezoid rule between
    measured lines, so the score is the mean |dM/dT(c) - linear interpolation of dM/dT
    between the measured lines around c|, relative to the typical |dM/dT|.
    Falls back to ``"std"`` until two lines are measured.

Scores are dimensionless, so one ``tolerance`` serves as a convergence test.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from bluesky_twin.errors import InputError
from bluesky_twin.protocols import TwinLike, TwinSource

__all__ = ["TwinLineAgent"]


class TwinLineAgent:
    """Propose the stepped-axis values of the next lines from a twin.

    A :class:`~bluesky_twin.protocols.ScoringLineAgent` (and so a
    :class:`~bluesky_twin.protocols.LineAgent`).

    Parameters
    ----------
    twin_source
        A :class:`~bluesky_twin.protocols.TwinSource` such as a trainer (its latest
        ``twin`` is used at every suggestion) or a fixed
        :class:`~bluesky_twin.protocols.TwinLike`.
    step_axis
        Name of the stepped input (device name = data key, e.g. ``"mpms_field"``).
    line_axis
        Name of the swept input (e.g. ``"mpms_temperature"``).
    line_points
        Values of the line axis along each line.
    bounds
        ``(low, high)`` of the stepped axis; proposals never leave it.
    candidates
        Number of evenly spaced candidate values in *bounds*, or explicit values.
    acquisition
        ``"std"`` or ``"derived"`` (see the module docstring).
    min_separation
        Candidates closer than this to a measured (or already chosen) line are not
        proposed (default: 1/200 of the bounds' span).
    fixed
        Values of any further twin inputs, ``{name: value}``.

    Raises
    ------
    InputError
        A bad argument (one line).
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
        acquisition: str = "std",
        min_separation: float | None = None,
        fixed: Mapping[str, float] | None = None,
    ) -> None:
        if not isinstance(twin_source, (TwinSource, TwinLike)):
            raise InputError("twin_source must be a TwinSource (e.g. a TwinTrainer) or a twin with predict(X) "
                             f"and x_names; got {type(twin_source).__name__}")
        if acquisition not in ("std", "derived"):
            raise InputError(f"acquisition must be 'std' or 'derived'; got {acquisition!r}")
        low, high = (float(b) for b in bounds)
        if not (np.isfinite(low) and np.isfinite(high) and low < high):
            raise InputError(f"bounds must be finite with low < high; got {bounds!r}")
        line = np.asarray(line_points, dtype=float).reshape(-1)
        if len(line) < 3 or not np.isfinite(line).all():
            raise InputError("line_points must hold at least 3 finite values")
        if isinstance(candidates, (int, np.integer)):
            if candidates < 2:
                raise InputError("candidates must be >= 2")
            cand = np.linspace(low, high, int(candidates))
        else:
            cand = np.asarray(candidates, dtype=float).reshape(-1)
            cand = np.unique(np.clip(cand[np.isfinite(cand)], low, high))
            if len(cand) == 0:
                raise InputError("no finite candidate values")
        self.twin_source = twin_source
        self.step_axis = str(step_axis)
        self.line_axis = str(line_axis)
        self.line_points = np.sort(line)
        self.bounds = (low, high)
        self.candidates = cand
        self.acquisition = acquisition
        self.min_separation = float(min_separation) if min_separation is not None else (high - low) / 200.0
        self.fixed = dict(fixed or {})
        self.measured: list[float] = []
        self.last_scores: np.ndarray | None = None

    # -- the bluesky-adaptive / blop interface ------------------------------------------------
    def ingest(self, points: Sequence[Mapping[str, Any]]) -> None:
        """Record measured lines: dicts holding at least ``{step_axis: value}``."""
        for p in points:
            if self.step_axis not in p:
                raise KeyError(f"ingested point {dict(p)} lacks {self.step_axis!r}")
            v = float(p[self.step_axis])
            if np.isfinite(v):
                self.measured.append(v)

    def suggest(self, num_points: int = 1) -> list[dict[str, float]]:
        """The next *num_points* lines, best first, within bounds and not near measured ones.

        Returns fewer (possibly none) when every candidate is too close to a measured
        line.  Scores of all candidates are kept in :attr:`last_scores`.
        """
        if num_points < 1:
            raise InputError("num_points must be >= 1")
        scores = self.scores()
        order = np.argsort(-scores, kind="stable")
        chosen: list[float] = []
        taken = list(self.measured)
        for k in order:
            c = float(self.candidates[k])
            if not np.isfinite(scores[k]):
                continue
            if taken and np.min(np.abs(np.asarray(taken) - c)) < self.min_separation:
                continue
            chosen.append(c)
            taken.append(c)
            if len(chosen) == num_points:
                break
        return [{self.step_axis: float(np.clip(c, *self.bounds))} for c in chosen]

    # -- scoring ----------------------------------------------------------------------------
    def _twin(self) -> TwinLike:
        source = self.twin_source
        twin = source.twin if isinstance(source, TwinSource) else source
        if twin is None:
            raise RuntimeError("the agent has no twin yet (the trainer has not finished a fit)")
        return twin

    def _predict_lines(self, twin: TwinLike, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        names = list(twin.x_names)
        missing = [n for n in names if n not in (self.step_axis, self.line_axis) and n not in self.fixed]
        if self.step_axis not in names or self.line_axis not in names or missing:
            raise InputError(f"twin inputs {names} need values for {missing or [self.step_axis, self.line_axis]}")
        nv, nl = len(values), len(self.line_points)
        X = np.empty((nv * nl, len(names)))
        for i, n in enumerate(names):
            if n == self.step_axis:
                X[:, i] = np.repeat(values, nl)
            elif n == self.line_axis:
                X[:, i] = np.tile(self.line_points, nv)
            else:
                X[:, i] = float(self.fixed[n])
        mean, std = twin.predict(X)
        return np.asarray(mean, float).reshape(nv, nl), np.asarray(std, float).reshape(nv, nl)

    def scores(self) -> np.ndarray:
        """Acquisition score of every candidate (dimensionless; larger = measure sooner)."""
        twin = self._twin()
        mean, std = self._predict_lines(twin, self.candidates)
        scale = float(np.std(mean))
        scale = scale if scale > 0 else 1.0
        measured = np.unique(np.asarray(self.measured, dtype=float))
        if self.acquisition == "derived" and len(measured) >= 2:
            scores = self._derived_scores(twin, mean, measured)
        else:
            scores = std.mean(axis=1) / scale
        self.last_scores = scores
        return scores

    def _derived_scores(self, twin: TwinLike, mean: np.ndarray, measured: np.ndarray) -> np.ndarray:
        slope = np.gradient(mean, self.line_points, axis=1)  # dM/dT of each candidate line
        m_mean, _ = self._predict_lines(twin, measured)
        m_slope = np.gradient(m_mean, self.line_points, axis=1)
        c = self.candidates
        j = np.clip(np.searchsorted(measured, c), 1, len(measured) - 1)
        lo, hi = measured[j - 1], measured[j]
        w = np.clip((c - lo) / (hi - lo), 0.0, 1.0)[:, None]
        interp = (1 - w) * m_slope[j - 1] + w * m_slope[j]
        # outside the measured range the trapezoid rule has nothing to interpolate from:
        outside = (c < measured[0]) | (c > measured[-1])
        interp[outside] = np.where(c[outside, None] < measured[0], m_slope[0], m_slope[-1])
        typical = float(np.mean(np.abs(slope))) or 1.0
        return np.mean(np.abs(slope - interp), axis=1) / typical
