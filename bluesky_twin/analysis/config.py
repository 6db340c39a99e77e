"""Criteria and timing models of the step studies, validated once.

The same objects serve :func:`~bluesky_twin.analysis.steps.field_step_study`,
:func:`~bluesky_twin.analysis.steps.angle_step_study`, ``bluesky-twin steps`` and the
plan :func:`~bluesky_twin.plans.coarse_to_fine`: build one, and a bad value is refused
with one :class:`~bluesky_twin.errors.InputError` line before anything runs.

>>> criteria = FieldStepCriteria(tolerance=0.02, check_fields="all")
>>> timing = FieldTiming(time_per_point_s=2.0, settle_s_per_field=60.0)
>>> study = field_step_study(twin, criteria=criteria, timing=timing)  # doctest: +SKIP

This module imports neither numpy nor scipy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from numbers import Integral, Real
from typing import Any, Literal, TypeVar

from bluesky_twin.errors import InputError

__all__ = ["AngleStepCriteria", "FieldStepCriteria", "FieldTiming", "LineTiming", "split_options"]

C = TypeVar("C")
D = TypeVar("D")


def _number(
    name: str,
    value: Any,
    *,
    positive: bool = False,
    optional: bool = False,
    integer: bool = False,
    at_most: float | None = None,
) -> None:
    """Refuse *value* unless it is a finite number ``>= 0`` (``> 0`` with *positive*)."""
    if value is None and optional:
        return
    kind = Integral if integer else Real
    if isinstance(value, bool) or not isinstance(value, kind):
        raise InputError(f"{name} must be {'an integer' if integer else 'a number'}; got {value!r}")
    if not math.isfinite(value):
        raise InputError(f"{name} must be a finite number; got {value!r}")
    if positive and not value > 0:
        raise InputError(f"{name} must be a positive number; got {value!r}")
    if value < 0:
        raise InputError(f"{name} must be >= 0; got {value!r}")
    if at_most is not None and value > at_most:
        raise InputError(f"{name} must be <= {at_most:g}; got {value!r}")


class _Config:
    """Shared behaviour of the frozen config dataclasses below."""

    def to_json_dict(self) -> dict[str, Any]:
        """The fields as a JSON-friendly dict (what the study records)."""
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """Names of the fields (the keyword shortcuts the studies accept)."""
        return tuple(f.name for f in fields(cls))  # type: ignore[arg-type]


@dataclass(frozen=True)
class FieldStepCriteria(_Config):
    """When a field step passes the field-step study.

    A step passes when, against the reference (the finest step), both hold:

    * **deviation** <= ``deviation_tolerance``: the largest difference of the simulated
      dS_M(T, H_k) from the reference, over T and over *every* field H_k of the
      candidate grid, divided by the top-field peak max|dS_M(T, H_max)|.  Coarse steps
      first go wrong at low field, where the dM/dT peak moves fastest with field, and
      the error is carried into every higher-field curve; on a slope it shows as a
      shoulder, not as an oscillation.
    * **wiggle** <= ``tolerance`` and no extra local extrema (``check_fields`` decides
      which curves): the extrinsic oscillation of the trapezoid sum.

    With the defaults the study reproduces the field steps Terashima et al. (2023) found
    necessary on their preliminary data: below 0.2 T for ErCo2 and below 0.1 T for Fe3Ga4
    (``benchmarks/bench_steps.py``, docs/analysis.md).

    Attributes
    ----------
    tolerance
        Largest accepted wiggle (bias-free excess total variation of dS_M(T); 0.02 = 2 %),
        and the deviation tolerance unless ``deviation_tolerance`` is given.
    deviation_tolerance
        Largest accepted deviation (a fraction of the top-field peak); ``None``: ``tolerance``;
        ``math.inf``: the wiggle alone decides.
    extrema_tolerance
        Largest accepted number of extra local extrema.
    prominence_frac
        Extrema smaller than this fraction of the reference's range are ignored.
    check_fields
        Which curves the wiggle looks at: ``"top"``, the top field only; ``"all"``, every
        field of the candidate grid (the worst counts).  The deviation always looks at all.
    """

    tolerance: float = 0.02
    deviation_tolerance: float | None = None
    extrema_tolerance: int = 0
    prominence_frac: float = 0.01
    check_fields: Literal["top", "all"] = "top"

    @property
    def deviation_limit(self) -> float:
        """The deviation tolerance in force."""
        return self.tolerance if self.deviation_tolerance is None else self.deviation_tolerance

    def __post_init__(self) -> None:
        _number("tolerance", self.tolerance)
        if self.deviation_tolerance is not None and self.deviation_tolerance != math.inf:
            _number("deviation_tolerance", self.deviation_tolerance)
        _number("extrema_tolerance", self.extrema_tolerance, integer=True)
        _number("prominence_frac", self.prominence_frac)
        if self.check_fields not in ("top", "all"):
            raise InputError(f"check_fields must be 'top' or 'all'; got {self.check_fields!r}")

    def to_json_dict(self) -> dict[str, Any]:
        """As recorded in :attr:`StepStudy.criteria` (``tolerance`` as ``tolerance_wiggle``)."""
        d = asdict(self)
        d["deviation_tolerance"] = self.deviation_limit
        return {"tolerance_wiggle": d.pop("tolerance"), **d}


@dataclass(frozen=True)
class FieldTiming(_Config):
    """Time model of isofield temperature sweeps (the magnetometer layout).

    Each part is added when given; with none, the time is unknown (``nan``).

    Attributes
    ----------
    time_per_point_s, points_per_field
        Readings: ``n_fields * points_per_field * time_per_point_s`` (``points_per_field``
        defaults to the number of simulated temperatures).
    temperature_rate_K_per_min
        Sweeps: ``n_fields * T span / rate``.
    sweep_rate_T_per_min
        Field ramp: ``(field_max - field_min) / rate`` (one up-ramp).
    settle_s_per_field
        Added per field when any of the above is given.
    """

    time_per_point_s: float | None = None
    points_per_field: int | None = None
    temperature_rate_K_per_min: float | None = None
    sweep_rate_T_per_min: float | None = None
    settle_s_per_field: float = 0.0

    def __post_init__(self) -> None:
        for name in ("time_per_point_s", "points_per_field", "temperature_rate_K_per_min", "sweep_rate_T_per_min"):
            _number(name, getattr(self, name), positive=True, optional=True, integer=name == "points_per_field")
        _number("settle_s_per_field", self.settle_s_per_field)

    def time_s(self, n_fields: int, n_temperatures: int, T_span: float, field_span_T: float) -> float:
        """Seconds to measure *n_fields* sweeps (``nan`` when no timing is given)."""
        parts = []
        if self.time_per_point_s is not None:
            parts.append(n_fields * (self.points_per_field or n_temperatures) * self.time_per_point_s)
        if self.temperature_rate_K_per_min is not None:
            parts.append(n_fields * T_span / self.temperature_rate_K_per_min * 60.0)
        if self.sweep_rate_T_per_min is not None:
            parts.append(field_span_T / self.sweep_rate_T_per_min * 60.0)
        if not parts:
            return float("nan")
        return float(sum(parts) + n_fields * self.settle_s_per_field)


@dataclass(frozen=True)
class AngleStepCriteria(_Config):
    """When a step along one axis of a 2D map passes the angle-step study.

    Attributes
    ----------
    tolerance
        Largest accepted mean peak-height error, relative to the reference map's range.
    min_recall
        Smallest accepted fraction of reference peaks recovered within ``peak_tolerance``.
    max_spurious
        Largest accepted number of spurious peaks, as a fraction of the reference's peaks.
    nrmse_tolerance
        Optional cap on the map's RMS error relative to the reference's range.
    peak_tolerance
        Distance (axis units, Euclidean) within which a peak counts as recovered;
        default 2.5 reference steps.
    peak_threshold
        Peaks must exceed ``min + peak_threshold * (max - min)`` of the reference map.
    peak_prominence
        Peaks must stand this fraction of the reference's range above the lowest value
        of their neighbourhood.
    peak_window
        Side of the local-maximum neighbourhood in axis units (default 10 reference steps).
    """

    tolerance: float = 0.05
    min_recall: float = 0.9
    max_spurious: float = 0.1
    nrmse_tolerance: float | None = None
    peak_tolerance: float | None = None
    peak_threshold: float = 0.2
    peak_prominence: float = 0.05
    peak_window: float | None = None

    def __post_init__(self) -> None:
        _number("tolerance", self.tolerance)
        _number("min_recall", self.min_recall, positive=True, at_most=1.0)
        _number("max_spurious", self.max_spurious)
        _number("nrmse_tolerance", self.nrmse_tolerance, optional=True)
        _number("peak_tolerance", self.peak_tolerance, positive=True, optional=True)
        _number("peak_threshold", self.peak_threshold)
        _number("peak_prominence", self.peak_prominence)
        _number("peak_window", self.peak_window, positive=True, optional=True)

    def to_json_dict(self) -> dict[str, Any]:
        """As recorded in :attr:`StepStudy.criteria` (``tolerance`` as ``tolerance_height_error``)."""
        d = asdict(self)
        return {"tolerance_height_error": d.pop("tolerance"), **d}


@dataclass(frozen=True)
class LineTiming(_Config):
    """Time model of a map measured line by line: ``n_lines * (points_per_line *
    time_per_point_s + time_per_line_s)`` (``nan`` when neither is given).

    Attributes
    ----------
    time_per_point_s
        Seconds per reading.
    time_per_line_s
        Overhead seconds per line.
    """

    time_per_point_s: float | None = None
    time_per_line_s: float | None = None

    def __post_init__(self) -> None:
        _number("time_per_point_s", self.time_per_point_s, positive=True, optional=True)
        _number("time_per_line_s", self.time_per_line_s, optional=True)

    def time_s(self, n_lines: int, points_per_line: int) -> float:
        """Seconds to measure *n_lines* lines of *points_per_line* readings."""
        if self.time_per_point_s is None and self.time_per_line_s is None:
            return float("nan")
        return float(n_lines * (points_per_line * (self.time_per_point_s or 0.0) + (self.time_per_line_s or 0.0)))


def split_options(
    caller: str,
    options: Mapping[str, Any],
    criteria_type: type[C],
    criteria: C | None,
    timing_type: type[D],
    timing: D | None,
) -> tuple[C, D]:
    """Build a study's criteria and timing from keyword shortcuts.

    ``field_step_study(twin, tolerance=0.1)`` is ``field_step_study(twin,
    criteria=FieldStepCriteria(tolerance=0.1))``: each keyword goes to the config
    that has a field of that name.

    Parameters
    ----------
    caller
        Name of the study, for the messages.
    options
        The keyword shortcuts.
    criteria_type, criteria, timing_type, timing
        The config classes and the objects given (``None``: built from *options*).

    Raises
    ------
    TypeError
        An unknown keyword (as Python does for a bad keyword argument).
    InputError
        A keyword given next to the config object it belongs to, or a bad value.
    """
    parts: list[Any] = []
    taken: set[str] = set()
    for kind, given, label in ((criteria_type, criteria, "criteria"), (timing_type, timing, "timing")):
        names = kind.field_names()  # type: ignore[attr-defined]
        mine = {k: v for k, v in options.items() if k in names}
        taken.update(mine)
        if given is None:
            parts.append(kind(**mine))
            continue
        if not isinstance(given, kind):
            raise InputError(f"{caller}: {label} must be a {kind.__name__}; got {type(given).__name__}")
        if mine:
            raise InputError(f"{caller}: give {', '.join(sorted(mine))} in {label}= or as keywords, not both")
        parts.append(given)
    unknown = sorted(set(options) - taken)
    if unknown:
        raise TypeError(f"{caller}() got an unexpected keyword argument {unknown[0]!r}")
    return parts[0], parts[1]
