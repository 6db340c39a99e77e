"""A twin-driven agent that proposes the next measurement lines (``suggest`` / ``ingest``).

The interface is blop's ``Optimizer`` protocol (also the verbs of Xopt and of
bluesky-adaptive since its 'tell/ask' rename): ``suggest(n)`` returns the next ``n``
points as dicts keyed by device names, each with a unique ``"_id"``, and
``ingest(points)`` records what was measured (dicts with the device keys, or only the
``"_id"`` of an earlier suggestion, plus any outcomes); ``get_best_points()`` and
``should_stop()`` complete blop's protocols.  Here a *point* is a line: a value of the
stepped axis (e.g. ``{"mpms_field": 1.25}``) along which the line axis (e.g.
temperature) is swept.  :class:`BlueskyAdaptiveAgent` wraps it in bluesky-adaptive's
shape: ``ingest(independent, dependent)``, ``suggest(batch_size) -> (docs, points)``,
``report()``.

Acquisition functions
---------------------
``"std"``
    Mean ensemble standard deviation of the twin along the candidate line,
    relative to the spread of the predicted values: where the members disagree most.
``"derived"``
    For the magnetocaloric entropy change: how much measuring the candidate line
    would reduce the error of dS_M.  dS_M integrates dM/dT over the field with the
    trapezoid rule between measured lines; with the twin's dM/dT on the fine grid of
    candidates as the reference, the trapezoid error of an interval ``(a, b)`` between
    neighbouring measured lines is ``e_ab(T) = (b - a) (g_a + g_b) / 2 - int_a^b g``
    (``g = dM/dT``), and a candidate ``c`` inside it scores
    ``(||e_ab|| - ||e_ac|| - ||e_cb||) / peak``: RMS over the line axis, relative to the
    twin's peak |dS_M| over the bounds.  Outside the measured range the error is the
    part of the integral not covered at all.  The interval's width weighs in: a line in
    a wide interval removes more error than one with the same local curvature in a
    narrow one.  Norms of the intervals add (rather than their signed errors) so that
    the choice does not rely on errors of the twin cancelling.
    Falls back to ``"std"`` until two lines are measured.
``"interp"``
    For a map read by interpolating between measured lines (an ARPES map): how much
    measuring the candidate line would reduce the error of linear interpolation
    between the measured lines, with the twin's prediction on the fine grid of
    candidates as the reference.  The squared interpolation error integrated over an
    interval ``(a, b)`` is ``E_ab``; a candidate inside scores
    ``(E_ab - E_ac - E_cb) / (var * span)`` (the map's variance and the bounds' span):
    the fraction of the map's mean squared error it removes.  Outside the measured
    range the map is taken as the nearest measured line.  Falls back to ``"std"``
    until two lines are measured.

Both model-based scores average over the members of an ensemble twin
(:class:`~bluesky_twin.protocols.EnsembleTwin`): where members disagree about a
feature, the mean prediction smooths away what a line would resolve.

Scores are dimensionless, so one ``tolerance`` serves as a convergence test.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from bluesky_twin.errors import InputError
from bluesky_twin.protocols import EnsembleTwin, TwinLike, TwinSource

__all__ = ["BlueskyAdaptiveAgent", "TwinLineAgent"]

ID_KEY = "_id"
#: Acquisition functions of :class:`TwinLineAgent` (see the module docstring).
ACQUISITIONS = ("std", "derived", "interp")
_ids = itertools.count(1)


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
    tolerance
        :meth:`should_stop` says stop once the best score of the last suggestion is
        below it (``None``: never).

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
        tolerance: float | None = None,
    ) -> None:
        if not isinstance(twin_source, (TwinSource, TwinLike)):
            raise InputError(
                "twin_source must be a TwinSource (e.g. a TwinTrainer) or a twin with predict(X) "
                f"and x_names; got {type(twin_source).__name__}"
            )
        if acquisition not in ACQUISITIONS:
            raise InputError(f"acquisition must be one of {', '.join(map(repr, ACQUISITIONS))}; got {acquisition!r}")
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
        self.tolerance = None if tolerance is None else float(tolerance)
        self.measured: list[float] = []
        self.last_scores: np.ndarray | None = None
        #: Suggestions not yet ingested, by ``"_id"``.
        self.pending: dict[Any, dict[str, Any]] = {}
        #: ``(_id, parameters, outcomes)`` of every ingested point, in order.
        self.observations: list[tuple[Any, dict[str, Any], dict[str, Any]]] = []

    # -- blop's Optimizer protocol (the verbs of bluesky-adaptive and Xopt too) -------------------
    def ingest(self, points: Sequence[Mapping[str, Any]]) -> None:
        """Record measured lines.

        Each point holds ``{step_axis: value}``, or the ``"_id"`` of an earlier
        suggestion (its value is then taken from that suggestion); other keys are kept
        as the line's outcomes (:attr:`observations`).

        Raises
        ------
        KeyError
            A point with neither the step axis nor the ``"_id"`` of a pending suggestion.
        """
        for p in points:
            pid = p.get(ID_KEY)
            if self.step_axis in p:
                v = float(p[self.step_axis])
            elif pid is not None and pid in self.pending:
                v = float(self.pending[pid][self.step_axis])
            else:
                raise KeyError(f"ingested point {dict(p)} lacks {self.step_axis!r} (and the _id of a suggestion)")
            self.pending.pop(pid, None)
            outcomes = {k: val for k, val in p.items() if k not in (ID_KEY, self.step_axis)}
            self.observations.append((pid, {self.step_axis: v}, outcomes))
            if np.isfinite(v):
                self.measured.append(v)

    def suggest(self, num_points: int | None = 1) -> list[dict[str, Any]]:
        """The next *num_points* lines, best first, within bounds and not near measured ones.

        Each suggestion is ``{step_axis: value, "_id": id}`` with a unique id (blop
        ingests outcomes by it).  Returns fewer (possibly none) when every candidate is
        too close to a measured line.  Scores of all candidates are kept in
        :attr:`last_scores`.
        """
        num_points = 1 if num_points is None else num_points
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
        out = []
        for c in chosen:
            point = {self.step_axis: float(np.clip(c, *self.bounds)), ID_KEY: f"line-{next(_ids)}"}
            self.pending[point[ID_KEY]] = point
            out.append(point)
        return out

    def get_best_points(self) -> list[tuple[Any, dict[str, Any], dict[str, Any]]]:
        """The line most worth measuring now: ``[(None, {step_axis: value}, {"score": s})]``.

        This agent maps uncertainty rather than optimising an objective, so its "best"
        point is the highest-scoring candidate not near a measured line (empty when
        none is left).  Unlike :meth:`suggest` it registers no suggestion.
        """
        scores = self.scores()
        taken = np.asarray(self.measured, dtype=float)
        for k in np.argsort(-scores, kind="stable"):
            c = float(self.candidates[k])
            if not np.isfinite(scores[k]) or (len(taken) and np.min(np.abs(taken - c)) < self.min_separation):
                continue
            return [(None, {self.step_axis: c}, {"score": float(scores[k])})]
        return []

    def should_stop(self) -> tuple[bool, str | None]:
        """blop's ``SupportsStoppingCriteria``: stop once the best last score is below :attr:`tolerance`."""
        if self.tolerance is None or self.last_scores is None or not len(self.last_scores):
            return False, None
        best = float(np.nanmax(self.last_scores))
        if best < self.tolerance:
            return True, f"converged: best score {best:.3g} < tolerance {self.tolerance:.3g}"
        return False, None

    # -- scoring ----------------------------------------------------------------------------
    def _twin(self) -> TwinLike:
        source = self.twin_source
        twin = source.twin if isinstance(source, TwinSource) else source
        if twin is None:
            raise RuntimeError("the agent has no twin yet (the trainer has not finished a fit)")
        return twin

    def _line_inputs(self, twin: TwinLike, values: np.ndarray) -> np.ndarray:
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
        return X

    def _predict_lines(self, twin: TwinLike, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        nv, nl = len(values), len(self.line_points)
        mean, std = twin.predict(self._line_inputs(twin, values))
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
        elif self.acquisition == "interp" and len(measured) >= 2:
            scores = self._interp_scores(twin, measured)
        else:
            scores = std.mean(axis=1) / scale
        self.last_scores = scores
        return scores

    def _members_on(self, twin: TwinLike, grid: np.ndarray) -> np.ndarray:
        """``(members, len(grid), len(line_points))`` predictions (one "member" for a plain twin)."""
        nv, nl = len(grid), len(self.line_points)
        if isinstance(twin, EnsembleTwin) and int(twin.ensemble_size) > 1:
            members = np.asarray(twin.predict(self._line_inputs(twin, grid), return_members=True), dtype=float)
            return members.reshape(len(members), nv, nl)
        return self._predict_lines(twin, grid)[0][None]

    def _interp_scores(self, twin: TwinLike, measured: np.ndarray) -> np.ndarray:
        grid = np.union1d(self.candidates, measured)
        values = self._members_on(twin, grid)
        # weight of each grid line: half the spacing to each neighbour (trapezoid)
        d = np.diff(grid)
        w = np.concatenate([[d[0] / 2], (d[:-1] + d[1:]) / 2, [d[-1] / 2]]) if len(grid) > 1 else np.ones(1)
        im = np.searchsorted(grid, measured)
        lo, hi = np.searchsorted(grid, self.bounds[0]), len(grid) - 1
        span = float(grid[hi] - grid[lo]) or 1.0
        out = np.zeros((len(values), len(self.candidates)))
        for m, V in enumerate(values):
            per_line = np.mean((V - V.mean()) ** 2)

            def lerp_err(ia: int, ib: int, V: np.ndarray = V) -> float:
                if ib - ia < 2:
                    return 0.0
                t = ((grid[ia + 1 : ib] - grid[ia]) / (grid[ib] - grid[ia]))[:, None]
                err = V[ia + 1 : ib] - ((1 - t) * V[ia] + t * V[ib])
                return float(np.sum(w[ia + 1 : ib] * np.mean(err**2, axis=1)))

            def flat_err(i0: int, i1: int, at: int, V: np.ndarray = V) -> float:
                rows = slice(i0, i1 + 1)
                return float(np.sum(w[rows] * np.mean((V[rows] - V[at]) ** 2, axis=1)))

            for j, c in enumerate(self.candidates):
                ic = int(np.searchsorted(grid, c))
                k = int(np.searchsorted(measured, c))
                if k < len(measured) and measured[k] == c:
                    continue
                if 0 < k < len(measured):
                    ia, ib = int(im[k - 1]), int(im[k])
                    gain = lerp_err(ia, ib) - lerp_err(ia, ic) - lerp_err(ic, ib)
                elif k == 0:
                    i0 = int(im[0])
                    gain = flat_err(lo, i0 - 1, i0) - flat_err(lo, ic - 1, ic) - lerp_err(ic, i0)
                else:
                    i1 = int(im[-1])
                    gain = flat_err(i1 + 1, hi, i1) - flat_err(ic + 1, hi, ic) - lerp_err(i1, ic)
                out[m, j] = max(gain, 0.0) / ((per_line or 1.0) * span)
        return out.mean(axis=0)

    def _derived_scores(self, twin: TwinLike, mean: np.ndarray, measured: np.ndarray) -> np.ndarray:
        grid = np.union1d(self.candidates, measured)
        # the expected score over the ensemble's members: where they disagree about the
        # shape of dM/dT, the mean prediction smooths the feature a line would resolve
        values = self._members_on(twin, grid)
        raw = [self._derived_from(v, grid, measured) for v in values]
        peak = float(np.mean([p for _, p in raw])) or 1.0
        return np.mean([r for r, _ in raw], axis=0) / peak

    def _derived_from(self, g_mean: np.ndarray, grid: np.ndarray, measured: np.ndarray) -> tuple[np.ndarray, float]:
        """Unnormalised derived scores of the candidates for one prediction on *grid*, and its peak |dS_M|."""
        c = self.candidates
        g = np.gradient(g_mean, self.line_points, axis=1)  # dM/dT on every grid line
        # cumulative trapezoid integral of dM/dT over the step axis, per line point
        cum = np.vstack([np.zeros((1, g.shape[1])), np.cumsum(0.5 * (g[1:] + g[:-1]) * np.diff(grid)[:, None], axis=0)])
        nl = g.shape[1]

        def rms(e: np.ndarray) -> np.ndarray:
            return np.sqrt(np.sum(e**2, axis=-1) / nl)

        def trap_err(ia: np.ndarray, ib: np.ndarray) -> np.ndarray:
            width = (grid[ib] - grid[ia])[:, None]
            return 0.5 * (g[ia] + g[ib]) * width - (cum[ib] - cum[ia])

        ic = np.searchsorted(grid, c)
        im = np.searchsorted(grid, measured)
        k = np.searchsorted(measured, c)  # measured[k - 1] < c <= measured[k]
        scores = np.zeros(len(c))
        inside = (k > 0) & (k < len(measured))
        if inside.any():
            ia, ib, icc = im[k[inside] - 1], im[k[inside]], ic[inside]
            scores[inside] = rms(trap_err(ia, ib)) - rms(trap_err(ia, icc)) - rms(trap_err(icc, ib))
        low, high = np.searchsorted(grid, self.bounds[0]), len(grid) - 1
        below = k == 0
        if below.any():  # the integral from the lower bound to the first measured line is missing
            icc, i0 = ic[below], np.full(below.sum(), im[0])
            missing = rms(cum[i0] - cum[low]) - rms(cum[icc] - cum[low])
            scores[below] = missing - rms(trap_err(icc, i0))
        above = k == len(measured)
        if above.any():  # the integral from the last measured line to the upper bound is missing
            icc, i1 = ic[above], np.full(above.sum(), im[-1])
            missing = rms(cum[high] - cum[i1]) - rms(cum[high] - cum[icc])
            scores[above] = missing - rms(trap_err(i1, icc))
        scores[np.isin(c, measured)] = 0.0
        return np.maximum(scores, 0.0), float(np.max(np.abs(cum[high] - cum[low])))


class BlueskyAdaptiveAgent:
    """A line agent (e.g. :class:`TwinLineAgent`) in bluesky-adaptive's shape.

    A :class:`~bluesky_twin.protocols.AdaptiveAgent`: ``ingest(independent,
    dependent)`` records one measured line, ``suggest(batch_size)`` returns
    ``(docs, points)`` (a document and a one-element point ``[value]`` per line) and
    ``report()`` a summary.  :func:`~bluesky_twin.plans.twin_adaptive_scan` accepts it
    as well as the wrapped agent.

    Parameters
    ----------
    agent
        A :class:`~bluesky_twin.protocols.LineAgent` with a ``step_axis``.
    """

    def __init__(self, agent: Any) -> None:
        from bluesky_twin.protocols import LineAgent

        if not isinstance(agent, LineAgent) or not isinstance(getattr(agent, "step_axis", None), str):
            raise InputError(f"agent must be a LineAgent with a step_axis; got {type(agent).__name__}")
        self.agent = agent
        self.step_axis: str = agent.step_axis
        self.independent: list[float] = []
        self.dependent: list[Any] = []

    def ingest(self, independent_variable: Any, dependent_variable: Any) -> dict[str, Any]:
        """Record the line at *independent_variable* (the step value, or a one-element
        sequence) and what was read along it; returns the ingested point."""
        x = float(np.asarray(independent_variable, dtype=float).reshape(-1)[0])
        self.agent.ingest([{self.step_axis: x}])
        self.independent.append(x)
        self.dependent.append(dependent_variable)
        return {self.step_axis: x}

    def suggest(self, batch_size: int = 1) -> tuple[list[dict[str, Any]], list[list[float]]]:
        """``(docs, points)`` for the next *batch_size* lines."""
        suggestions = self.agent.suggest(batch_size)
        scores = getattr(self.agent, "last_scores", None)
        best = float(np.nanmax(scores)) if scores is not None and len(scores) else float("nan")
        docs = [{"suggestion": dict(p), "max_score": best} for p in suggestions]
        points = [[float(p[self.step_axis])] for p in suggestions]
        return docs, points

    def report(self) -> dict[str, Any]:
        """A summary: lines measured, the best last score, the twin version (if any)."""
        scores = getattr(self.agent, "last_scores", None)
        source = getattr(self.agent, "twin_source", None)
        return {
            "step_axis": self.step_axis,
            "measured": list(self.independent),
            "max_score": float(np.nanmax(scores)) if scores is not None and len(scores) else None,
            "twin_version": getattr(source, "version", None),
        }
