"""Step studies: how coarse can a measurement grid be?

Two studies share one result type, :class:`StepStudy`.

Field step (magnetocaloric)
    For every candidate field step the twin simulates the isofield measurement
    (dense temperature sweeps at fields ``H_min, s, 2s, ..., H_max``), the
    entropy change is integrated with the trapezoid rule, and its top-field curve
    dS_M(T) is compared with the curve of the finest step.  Coarse fields put the
    dM/dT peak of a moving transition at a few discrete temperatures, and the
    trapezoid sum turns into a row of bumps: *extrinsic oscillation*.  It is
    measured by (see :func:`oscillation_metric`)

    * wiggle: the total variation ``TV(y) = sum |y[i+1] - y[i]|`` the curve
      spends going against the reference's up/down pattern, relative to
      TV(ref) -- zero for any curve (even a biased or scaled one) that rises and
      falls where the reference does; every spurious wiggle adds twice its height;
    * excess total variation ``(TV(curve) - TV(ref)) / TV(ref)`` (reported; it
      also contains pure amplitude bias);
    * extra local extrema (prominence above a fraction of the reference's
      range, so numerical jitter does not count);
    * RMS deviation from the reference, relative to ``max |ref|`` (reported,
      not used to decide: it also contains the smooth bias of the trapezoid
      rule, which is not an oscillation).

    A step *passes* if its wiggle is at most ``tolerance`` and it has no
    more than ``extrema_tolerance`` extra extrema.  The proposal is the coarsest
    step such that it **and every finer candidate** pass (a coarse step can pass
    by luck when the ripple period aliases with the temperature grid).

Angle step (2D maps, e.g. ARPES)
    The twin simulates the map with a candidate step along one axis and the
    finest step along the other; the coarse map is linearly interpolated back
    onto the finest grid (what a plot of the coarse measurement shows) and its
    local maxima (above a threshold, with a minimum prominence within their
    neighbourhood) are matched to those of the finest map.  Reported: recall (the
    fraction of reference peaks with a recovered peak within
    ``peak_tolerance``), spurious peaks, the mean height error of matched peaks
    and the normalised RMS map error, both relative to the reference's range.
    A step passes with recall >= ``min_recall``, height error <= ``tolerance`` and
    at most ``max_spurious`` x (reference peaks) spurious peaks (and, if given,
    NRMSE <= ``nrmse_tolerance``); the proposal rule is the same.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from bluesky_twin.analysis.config import AngleStepCriteria, FieldStepCriteria, FieldTiming, LineTiming, split_options
from bluesky_twin.analysis.mce import entropy_change_from_twin, field_to_tesla
from bluesky_twin.analysis.protocols import axis_index, predict_in_batches, smooth_model, x_range_of
from bluesky_twin.errors import InputError
from bluesky_twin.io_utils import finite_json_data
from bluesky_twin.protocols import TwinLike

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = [
    "DEFAULT_FIELD_STEPS_T",
    "DEFAULT_ANGLE_STEPS",
    "AngleStepCriteria",
    "FieldStepCriteria",
    "FieldTiming",
    "LineTiming",
    "OscillationMetric",
    "StepStudy",
    "oscillation_metric",
    "count_extrema",
    "field_levels",
    "find_peaks_2d",
    "field_step_study",
    "angle_step_study",
    "propose_coarsest",
]

#: Candidate field steps in tesla (mu0*H); the finest is the reference.
DEFAULT_FIELD_STEPS_T: tuple[float, ...] = (0.01, 0.02, 0.05, 0.1, 0.2, 0.25, 0.5, 1.0)
#: Candidate angle steps in the axis unit (degrees for ARPES); the finest is the reference.
DEFAULT_ANGLE_STEPS: tuple[float, ...] = (0.1, 0.2, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0)


# ----------------------------------------------------------------------------- metrics


@dataclass(frozen=True)
class OscillationMetric:
    """Extrinsic oscillation of a curve against a reference on the same grid.

    Attributes
    ----------
    wiggle
        Bias-free oscillation (the decision metric): total variation the curve
        spends going against the reference's up/down pattern, relative to TV(ref).
    excess_tv
        ``(TV(curve) - TV(ref)) / TV(ref)``; also grows with a pure amplitude
        bias (a curve 5 % too high has 0.05), so it is reported, not decisive.
    extra_extrema
        Local extrema of the curve minus those of the reference.
    rms
        ``RMS(curve - ref) / max|ref|``.
    n_extrema, n_extrema_ref
        Counted extrema.
    """

    wiggle: float
    excess_tv: float
    extra_extrema: int
    rms: float
    n_extrema: int
    n_extrema_ref: int


def count_extrema(y: np.ndarray, prominence: float) -> int:
    """Number of interior local maxima plus minima with at least *prominence*."""
    from scipy.signal import find_peaks

    y = np.asarray(y, dtype=float)
    return int(len(find_peaks(y, prominence=prominence)[0]) + len(find_peaks(-y, prominence=prominence)[0]))


def _extrema_indices(y: np.ndarray, prominence: float) -> np.ndarray:
    from scipy.signal import find_peaks

    idx = np.concatenate([find_peaks(y, prominence=prominence)[0], find_peaks(-y, prominence=prominence)[0]])
    return np.unique(np.concatenate([[0], idx, [len(y) - 1]]))


def _wiggle(y: np.ndarray, breakpoints: np.ndarray) -> float:
    """TV of *y* minus TV of *y* sampled at *breakpoints*: zero iff *y* is monotone
    between consecutive breakpoints (triangle inequality), whatever its scale."""
    return float(np.abs(np.diff(y)).sum() - np.abs(np.diff(y[breakpoints])).sum())


def oscillation_metric(curve: np.ndarray, reference: np.ndarray, *, prominence_frac: float = 0.01) -> OscillationMetric:
    """Compare a dS_M(T) curve with the finest-step reference on the same T grid.

    Parameters
    ----------
    curve, reference
        ``(n_T,)`` values on the same temperatures.
    prominence_frac
        Extrema count only if their prominence exceeds this fraction of the
        reference's range (peak to peak).

    Returns
    -------
    OscillationMetric
        ``wiggle = (W(curve) - W(ref)) / TV(ref)`` where ``W(y) = TV(y) - TV(y at B)``
        and ``B`` are the reference's significant extrema plus the end points:
        the variation spent against the reference's monotone pattern, zero for
        any curve (biased or scaled) that rises and falls where the reference
        does;
        ``excess_tv = (TV(curve) - TV(ref)) / TV(ref)``;
        ``extra_extrema = n(curve) - n(ref)``; ``rms = RMS(curve - ref) / max|ref|``.
    """
    c = np.asarray(curve, dtype=float).reshape(-1)
    r = np.asarray(reference, dtype=float).reshape(-1)
    if c.shape != r.shape or len(r) < 3:
        raise InputError(f"curve and reference must share a grid of >= 3 points; got {c.shape} and {r.shape}")
    tv_ref = float(np.abs(np.diff(r)).sum())
    if tv_ref == 0:
        raise InputError("the reference curve is constant; the oscillation metric is undefined")
    scale = float(np.max(np.abs(r)))
    prom = prominence_frac * float(np.ptp(r))
    n_c, n_r = count_extrema(c, prom), count_extrema(r, prom)
    breaks = _extrema_indices(r, prom)
    return OscillationMetric(
        wiggle=(_wiggle(c, breaks) - _wiggle(r, breaks)) / tv_ref,
        excess_tv=(float(np.abs(np.diff(c)).sum()) - tv_ref) / tv_ref,
        extra_extrema=n_c - n_r,
        rms=float(np.sqrt(np.mean((c - r) ** 2)) / scale),
        n_extrema=n_c,
        n_extrema_ref=n_r,
    )


def propose_coarsest(steps: np.ndarray, passes: np.ndarray) -> tuple[float, bool]:
    """Coarsest step such that it and every finer step pass.

    Returns ``(step, ok)``; ``ok`` is false when even the second-finest step
    fails, in which case the finest (reference) step is returned.
    """
    order = np.argsort(steps)
    s, p = np.asarray(steps, dtype=float)[order], np.asarray(passes, dtype=bool)[order]
    best = s[0]
    ok = False
    for k in range(1, len(s)):
        if not p[k]:
            break
        best, ok = s[k], True
    return float(best), ok


# ----------------------------------------------------------------------------- result


@dataclass
class StepStudy:
    """Result of a field or angle step study.

    Attributes
    ----------
    kind
        ``"field"`` or ``"angle"``.
    axis
        Name of the stepped axis.
    step_unit
        Unit of ``steps`` (``"T"`` for field studies: mu0*H).
    steps
        Candidate steps, ascending; ``steps[0]`` is the reference.
    rows
        One dict of metrics per step (same order as ``steps``), including
        ``passes`` and ``time_s`` (``nan`` when no timing was given).
    proposed_step
        The coarsest step within tolerance.
    proposal_ok
        False if only the reference step passes (add finer candidates).
    criteria
        The criteria used (:meth:`FieldStepCriteria.to_json_dict` or
        :meth:`AngleStepCriteria.to_json_dict`, defaults resolved).
    curves
        Data to plot: for field studies ``{"T": ..., "dS": (n_steps, n_T), "units": ...}``;
        for angle studies ``{"axis_values", "other_values", "reference", "maps": {step: map}}``.
    meta
        Everything else worth recording (ranges, units, peak lists...).
    """

    kind: str
    axis: str
    step_unit: str
    steps: np.ndarray
    rows: list[dict[str, Any]]
    proposed_step: float
    proposal_ok: bool
    criteria: dict[str, Any]
    curves: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def proposed(self) -> dict[str, Any]:
        """The metrics row of the proposed step."""
        k = int(np.argmin(np.abs(self.steps - self.proposed_step)))
        return self.rows[k]

    def to_frame(self) -> pd.DataFrame:
        """One row per candidate step."""
        import pandas as pd

        df = pd.DataFrame(self.rows)
        df["proposed"] = np.isclose(df["step"].to_numpy(), self.proposed_step)
        return df

    def to_json_dict(self) -> dict[str, Any]:
        """JSON-friendly summary (no maps/curves)."""
        return {
            "kind": self.kind,
            "axis": self.axis,
            "step_unit": self.step_unit,
            "proposed_step": self.proposed_step,
            "proposal_ok": self.proposal_ok,
            "reference_step": float(self.steps[0]),
            "criteria": self.criteria,
            "proposed_metrics": finite_json_data(self.proposed),
            "steps": [finite_json_data(r) for r in self.rows],
            "meta": finite_json_data(self.meta),
        }


def _check_steps(steps: Sequence[float], name: str) -> np.ndarray:
    s = np.asarray(sorted(set(float(v) for v in steps)), dtype=float)
    if len(s) < 2:
        raise InputError(f"{name}: need at least two distinct candidate steps (the finest is the reference)")
    if not (np.isfinite(s).all() and (s > 0).all()):
        raise InputError(f"{name}: steps must be positive numbers; got {list(steps)}")
    return s


# ----------------------------------------------------------------------------- field study


def field_levels(step: float, low: float, high: float) -> np.ndarray:
    """Fields an experimenter would use with *step*: ``low``, then the multiples of
    *step* above ``low``, then ``high`` (all in the same unit).

    With ``low = 0.01 T`` (the paper's 100 Oe), ``high = 5 T`` and ``step = 0.2 T``:
    0.01, 0.2, 0.4, ..., 4.8, 5.0.
    """
    if not high > low:
        raise InputError(f"field range is empty: [{low:g}, {high:g}]")
    k = np.arange(math.floor(low / step) + 1, math.ceil(high / step) + 1)
    inner = k * step
    eps = 1e-9 * step
    inner = inner[(inner > low + eps) & (inner < high - eps)]
    return np.concatenate([[low], inner, [high]])


def field_step_study(
    twin: TwinLike,
    *,
    field_max: float | None = None,
    steps: Sequence[float] = DEFAULT_FIELD_STEPS_T,
    T_grid: np.ndarray | None = None,
    field_min: float | None = None,
    field_unit: str = "Oe",
    T_axis: str | int | None = None,
    H_axis: str | int | None = None,
    mass_g: float | None = None,
    moment_unit: str | None = None,
    criteria: FieldStepCriteria | None = None,
    timing: FieldTiming | None = None,
    **options: Any,
) -> StepStudy:
    """Propose the coarsest field step whose dS_M(T) shows no extrinsic oscillation.

    Parameters
    ----------
    twin
        Model of M(T, H) (``predict`` and ``x_names``; ``x_range`` supplies defaults).
    field_max, field_min
        Integration range as mu0*H in **tesla**.  Defaults: the twin's field range
        (``x_range``); ``field_min`` is the lowest field of every candidate grid.
    steps
        Candidate field steps in tesla; the finest is the reference.
    T_grid
        Temperatures of the simulated sweeps (default: 501 points across the
        twin's temperature range).
    field_unit
        Unit of the twin's field axis (``"Oe"``, ``"T"`` or ``"A/m"``).
    T_axis, H_axis
        Axis names or indices in ``twin.x_names`` (default first = T, second = H).
    mass_g, moment_unit
        SI conversion of dS_M (see :mod:`bluesky_twin.analysis.mce`).
    criteria
        When a step passes (:class:`~bluesky_twin.analysis.config.FieldStepCriteria`:
        ``tolerance``, ``extrema_tolerance``, ``prominence_frac``, ``check_fields``).
    timing
        Time model of the measurement (:class:`~bluesky_twin.analysis.config.FieldTiming`:
        ``time_per_point_s``, ``points_per_field``, ``temperature_rate_K_per_min``,
        ``sweep_rate_T_per_min``, ``settle_s_per_field``).
    **options
        Fields of *criteria* or *timing* as keywords, instead of the objects
        (``tolerance=0.1`` is ``criteria=FieldStepCriteria(tolerance=0.1)``).

    Returns
    -------
    StepStudy
        Rows with ``step, n_fields, deviation, deviation_field_T, deviation_T, wiggle,
        excess_tv, extra_extrema, n_extrema, rms, worst_field_T, passes, time_s``: the
        deviation is the largest over every field of the grid (where and at which T it
        is), the wiggle metrics the worst over the compared fields (see
        :class:`~bluesky_twin.analysis.config.FieldStepCriteria`).  The reference is the finest step with
        every candidate's fields added, so it has a row at each compared field.
    """
    criteria, timing = split_options("field_step_study", options, FieldStepCriteria, criteria, FieldTiming, timing)
    twin = smooth_model(twin)  # the networks alone (see smooth_model)
    s = _check_steps(steps, "field steps")
    it = axis_index(twin, T_axis, 0)
    ih = axis_index(twin, H_axis, 1 if it == 0 else 0)
    to_T = float(field_to_tesla(1.0, field_unit))
    xr = x_range_of(twin)
    if field_max is None:
        if xr is None:
            raise InputError("field_max is required when the twin has no x_range")
        field_max = float(xr[ih, 1]) * to_T
    if field_min is None:
        field_min = max(float(xr[ih, 0]) * to_T, 0.0) if xr is not None else 0.0
    if not field_max > field_min:
        raise InputError(f"field_max ({field_max:g} T) must exceed field_min ({field_min:g} T)")
    if s[0] >= field_max - field_min:
        raise InputError(f"the finest step {s[0]:g} T does not fit in [{field_min:g}, {field_max:g}] T")
    if T_grid is None:
        if xr is None:
            raise InputError("T_grid is required when the twin has no x_range")
        T_grid = np.linspace(xr[it, 0], xr[it, 1], 501)
    T_grid = np.asarray(T_grid, dtype=float)

    def simulate(levels_T: np.ndarray):
        return entropy_change_from_twin(
            twin,
            T_grid,
            levels_T / to_T,
            field_unit=field_unit,  # type: ignore[arg-type]
            mass_g=mass_g,
            moment_unit=moment_unit,  # type: ignore[arg-type]
            T_axis=it,
            H_axis=ih,
            use_members=False,
        )

    levels = {float(step): field_levels(step, field_min, field_max) for step in s}
    # Reference: the finest step plus every field of every candidate, so that the
    # reference has a row at each field a candidate reaches (spacing <= finest step).
    union = np.unique(np.concatenate(list(levels.values())))
    union = union[np.concatenate([[True], np.diff(union) > 1e-9 * s[0]])]
    ref = simulate(union)
    peak = float(np.max(np.abs(ref.dS[-1])))  # the deviation's scale: the top-field peak
    T_span = float(T_grid[-1] - T_grid[0])
    rows, curves = [], []
    for step in s:
        lv = levels[float(step)]
        es = simulate(lv)
        deviation, dev_field, dev_T = _deviation(es.dS, lv, ref.dS, union, T_grid, peak)
        checked = range(1, len(lv)) if criteria.check_fields == "all" else [len(lv) - 1]
        worst: dict[str, Any] = {
            "wiggle": -np.inf,
            "excess_tv": -np.inf,
            "extra_extrema": -(10**9),
            "n_extrema": 0,
            "rms": 0.0,
            "worst_field_T": float(lv[-1]),
        }
        passes = True
        for k in checked:
            r_row = int(np.argmin(np.abs(union - lv[k])))
            reference = ref.dS[r_row]
            if np.abs(np.diff(reference)).sum() <= 1e-12 * np.abs(np.diff(ref.dS[-1])).sum():
                continue  # nothing to compare at this field
            m = oscillation_metric(es.dS[k], reference, prominence_frac=criteria.prominence_frac)
            passes = passes and m.wiggle <= criteria.tolerance and m.extra_extrema <= criteria.extrema_tolerance
            if m.wiggle > worst["wiggle"]:
                worst.update(wiggle=m.wiggle, worst_field_T=float(lv[k]))
            worst["excess_tv"] = max(worst["excess_tv"], m.excess_tv)
            if m.extra_extrema > worst["extra_extrema"]:
                worst.update(extra_extrema=m.extra_extrema, n_extrema=m.n_extrema)
            worst["rms"] = max(worst["rms"], m.rms)
        passes = passes and deviation <= criteria.deviation_limit
        rows.append(
            {
                "step": float(step),
                "n_fields": int(len(lv)),
                "deviation": deviation,
                "deviation_field_T": dev_field,
                "deviation_T": dev_T,
                "wiggle": float(worst["wiggle"]),
                "excess_tv": float(worst["excess_tv"]),
                "extra_extrema": int(worst["extra_extrema"]),
                "n_extrema": int(worst["n_extrema"]),
                "rms": float(worst["rms"]),
                "worst_field_T": worst["worst_field_T"],
                "passes": bool(passes),
                "time_s": timing.time_s(len(lv), len(T_grid), T_span, field_max - field_min),
            }
        )
        curves.append(es.dS[-1])
    ref_std = ref.dS_std[-1] if ref.dS_std is not None else None
    proposed, ok = propose_coarsest(s, np.array([r["passes"] for r in rows]))
    return StepStudy(
        kind="field",
        axis=list(twin.x_names)[ih],
        step_unit="T",
        steps=s,
        rows=rows,
        proposed_step=proposed,
        proposal_ok=ok,
        criteria=criteria.to_json_dict(),
        curves={"T": T_grid, "dS": np.vstack(curves), "dS_ref_std": ref_std, "units": ref.units},
        meta={
            "field_min_T": field_min,
            "field_max_T": field_max,
            "field_unit": field_unit,
            "T_axis": list(twin.x_names)[it],
            "T_range": [float(T_grid[0]), float(T_grid[-1])],
            "n_T": int(len(T_grid)),
            "units": ref.units,
            "timing": dict(timing.to_json_dict(), points_per_field=timing.points_per_field or len(T_grid)),
        },
    )


def _deviation(
    dS: np.ndarray, levels: np.ndarray, ref_dS: np.ndarray, ref_levels: np.ndarray, T: np.ndarray, peak: float
) -> tuple[float, float, float]:
    """Largest |dS(T, H_k) - dS_ref(T, H_k)| over T and the fields ``levels[1:]``, over *peak*.

    Returns ``(deviation, field where it is, temperature where it is)``.
    """
    if not peak > 0:
        return 0.0, float(levels[-1]), float("nan")
    worst, at_field, at_T = 0.0, float(levels[-1]), float("nan")
    for k in range(1, len(levels)):
        err = np.abs(dS[k] - ref_dS[int(np.argmin(np.abs(ref_levels - levels[k])))])
        i = int(np.nanargmax(err)) if np.any(np.isfinite(err)) else 0
        if err[i] / peak > worst:
            worst, at_field, at_T = float(err[i] / peak), float(levels[k]), float(T[i])
    return worst, at_field, at_T


# ----------------------------------------------------------------------------- angle study


def find_peaks_2d(image: np.ndarray, *, size: tuple[int, int], threshold: float, prominence: float = 0.0) -> np.ndarray:
    """Local maxima of a 2D map.

    A pixel is a peak if it equals the maximum of the ``size`` neighbourhood
    around it, exceeds *threshold*, and stands more than *prominence* above the
    minimum of that neighbourhood (so a plateau or a noise ripple on a broad
    band is no peak).  Pixels on the border of the map are never peaks.  Returns ``(n_peaks, 2)`` integer indices.
    """
    from scipy.ndimage import maximum_filter, minimum_filter

    img = np.asarray(image, dtype=float)
    mx = maximum_filter(img, size=size, mode="nearest")
    mn = minimum_filter(img, size=size, mode="nearest")
    mask = (img == mx) & (img > threshold) & (mx - mn > prominence)
    # a maximum on the border may just be a slope that continues outside the map
    mask[[0, -1], :] = False
    mask[:, [0, -1]] = False
    return np.argwhere(mask)


def _match_peaks(ref_xy: np.ndarray, rec_xy: np.ndarray, tol: float) -> np.ndarray:
    """For every reference peak, the index of the nearest recovered peak within *tol* (or -1);
    each recovered peak is used at most once (greedy by distance)."""
    match = np.full(len(ref_xy), -1)
    if len(ref_xy) == 0 or len(rec_xy) == 0:
        return match
    d = np.sqrt(((ref_xy[:, None, :] - rec_xy[None, :, :]) ** 2).sum(-1))
    used = np.zeros(len(rec_xy), dtype=bool)
    for flat in np.argsort(d, axis=None):
        i, j = np.unravel_index(flat, d.shape)
        if d[i, j] > tol:
            break
        if match[i] < 0 and not used[j]:
            match[i], used[j] = j, True
    return match


def angle_step_study(
    twin: TwinLike,
    *,
    axis: str | int = 1,
    steps: Sequence[float] = DEFAULT_ANGLE_STEPS,
    ranges: Sequence[Sequence[float]] | None = None,
    other_step: float | None = None,
    criteria: AngleStepCriteria | None = None,
    timing: LineTiming | None = None,
    **options: Any,
) -> StepStudy:
    """Propose the coarsest step along one axis of a 2D map that keeps its peaks.

    Parameters
    ----------
    twin
        Model of a 2D map (two axes).
    axis
        The stepped axis (name or index in ``twin.x_names``), e.g. ``"theta2"``.
    steps
        Candidate steps along ``axis`` in its unit; the finest is the reference.
    ranges
        ``[[lo, hi], [lo, hi]]`` per twin axis (default ``twin.x_range``).
    other_step
        Grid step along the other axis (default: its range / 400).
    criteria
        When a step passes (:class:`~bluesky_twin.analysis.config.AngleStepCriteria`:
        ``tolerance`` on the mean peak-height error, ``min_recall``, ``max_spurious``,
        ``nrmse_tolerance``, and how peaks are found and matched: ``peak_tolerance``,
        ``peak_threshold``, ``peak_prominence``, ``peak_window``).
    timing
        Time model (:class:`~bluesky_twin.analysis.config.LineTiming`:
        ``n_lines * (points_per_line * time_per_point_s + time_per_line_s)``).
    **options
        Fields of *criteria* or *timing* as keywords, instead of the objects.

    Returns
    -------
    StepStudy
        Rows with ``step, n_lines, recall, n_peaks, n_peaks_ref, spurious,
        height_error, nrmse, passes, time_s``.
    """
    from scipy.interpolate import interp1d

    criteria, timing = split_options("angle_step_study", options, AngleStepCriteria, criteria, LineTiming, timing)
    twin = smooth_model(twin)  # the networks alone (see smooth_model)
    s = _check_steps(steps, "angle steps")
    ia = axis_index(twin, axis, 1)
    if len(twin.x_names) != 2:
        raise InputError(f"the angle study needs a twin of two axes; this one has {list(twin.x_names)}")
    io = 1 - ia
    if ranges is None:
        ranges = x_range_of(twin)
        if ranges is None:
            raise InputError("ranges are required when the twin has no x_range")
    ranges = np.asarray(ranges, dtype=float)
    if ranges.shape != (2, 2) or not np.all(ranges[:, 1] > ranges[:, 0]):
        raise InputError(f"ranges must be [[lo, hi], [lo, hi]] with hi > lo; got {ranges.tolist()}")
    a_lo, a_hi = ranges[ia]
    o_lo, o_hi = ranges[io]
    if s[0] * 2 > a_hi - a_lo:
        raise InputError(f"the finest step {s[0]:g} leaves fewer than 3 points in [{a_lo:g}, {a_hi:g}]")
    if other_step is not None and not (np.isfinite(other_step) and other_step > 0):
        raise InputError(f"other_step must be a positive number; got {other_step!r}")
    n_other = max(2, int(round((o_hi - o_lo) / (other_step or (o_hi - o_lo) / 400))))
    other = np.linspace(o_lo, o_hi, n_other + 1)  # exact end points: no extrapolation
    other_step = float(other[1] - other[0])
    ref_axis = _levels_from_low(s[0], a_lo, a_hi)

    def simulate(levels: np.ndarray) -> np.ndarray:
        AA, OO = np.meshgrid(levels, other, indexing="ij")  # (n_axis, n_other)
        X = np.empty((AA.size, 2))
        X[:, ia], X[:, io] = AA.reshape(-1), OO.reshape(-1)
        mean, _ = predict_in_batches(twin, X)
        return mean.reshape(AA.shape)

    reference = simulate(ref_axis)
    span = float(np.ptp(reference))
    if span == 0:
        raise InputError("the simulated reference map is constant; no peaks to keep")
    # the defaults that depend on the reference step, resolved (and recorded) once
    criteria = replace(
        criteria,
        peak_tolerance=criteria.peak_tolerance or 2.5 * float(s[0]),
        peak_window=criteria.peak_window or 10 * float(s[0]),
    )
    thr = float(reference.min()) + criteria.peak_threshold * span
    window = criteria.peak_window
    prom = criteria.peak_prominence * span
    size = (max(3, int(round(window / s[0])) | 1), max(3, int(round(window / other_step)) | 1))

    def peaks_xy(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        idx = find_peaks_2d(img, size=size, threshold=thr, prominence=prom)
        xy = np.column_stack([ref_axis[idx[:, 0]], other[idx[:, 1]]]) if len(idx) else np.empty((0, 2))
        return idx, xy

    ref_idx, ref_xy = peaks_xy(reference)
    if len(ref_idx) == 0:
        raise InputError("no peaks above the threshold in the reference map; lower peak_threshold")
    ref_heights = reference[ref_idx[:, 0], ref_idx[:, 1]]

    rows, maps = [], {}
    for step in s:
        levels = ref_axis if step == s[0] else _levels_from_low(step, a_lo, a_hi)
        coarse = simulate(levels)
        recon = interp1d(levels, coarse, axis=0, kind="linear", assume_sorted=True)(ref_axis)
        idx, xy = peaks_xy(recon)
        match = _match_peaks(ref_xy, xy, criteria.peak_tolerance)
        found = match >= 0
        if found.any():
            rec_h = recon[idx[match[found], 0], idx[match[found], 1]]
            height_error = float(np.mean(np.abs(rec_h - ref_heights[found])) / span)
        else:
            height_error = float("nan")
        recall = float(found.mean())
        nrmse = float(np.sqrt(np.mean((recon - reference) ** 2)) / span)
        spurious = int(len(idx) - found.sum())
        passes = (
            recall >= criteria.min_recall
            and np.isfinite(height_error)
            and height_error <= criteria.tolerance
            and spurious <= criteria.max_spurious * len(ref_idx)
        )
        if criteria.nrmse_tolerance is not None:
            passes = passes and nrmse <= criteria.nrmse_tolerance
        rows.append(
            {
                "step": float(step),
                "n_lines": int(len(levels)),
                "recall": recall,
                "n_peaks": int(len(idx)),
                "n_peaks_ref": int(len(ref_idx)),
                "spurious": spurious,
                "height_error": height_error,
                "nrmse": nrmse,
                "passes": bool(passes),
                "time_s": timing.time_s(len(levels), len(other)),
            }
        )
        maps[float(step)] = recon
    proposed, ok = propose_coarsest(s, np.array([r["passes"] for r in rows]))
    names = list(twin.x_names)
    return StepStudy(
        kind="angle",
        axis=names[ia],
        step_unit=f"{names[ia]} unit",
        steps=s,
        rows=rows,
        proposed_step=proposed,
        proposal_ok=ok,
        criteria=criteria.to_json_dict(),
        curves={"axis_values": ref_axis, "other_values": other, "reference": reference, "maps": maps},
        meta={
            "other_axis": names[io],
            "ranges": ranges.tolist(),
            "other_step": other_step,
            "reference_peaks": ref_xy.tolist(),
        },
    )


def _levels_from_low(step: float, low: float, high: float) -> np.ndarray:
    """Positions of a scan that starts at ``low`` and moves by *step*; ``high`` is
    appended when the last step does not land on it (the range stays covered)."""
    n = int(math.floor((high - low) / step * (1 + 1e-12)))
    levels = np.minimum(low + step * np.arange(n + 1), high)
    if high - levels[-1] > 1e-9 * step:
        levels = np.append(levels, high)
    return levels
