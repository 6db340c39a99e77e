"""``coarse_to_fine``: coarse (T, H) grid -> twin -> field-step study -> fine scan -> dS_M check.

The measurement strategy of Terashima et al. (Digital Discovery 2023, 2, 339) as one
Bluesky plan, for a magnetometer with a temperature and a field positioner:

1. **coarse** run: isofield temperature sweeps at a few fields (the MPMS layout);
2. **wait** for the streaming :class:`~bluesky_twin.callbacks.TwinTrainer` to refit on
   it (polling with ``bps.sleep``, with a timeout);
3. **step study** with the twin (:func:`bluesky_twin.analysis.steps.field_step_study`):
   the coarsest field step whose dS_M shows no extrinsic oscillation;
4. **fine** run: isofield sweeps at the proposed step, inside the positioners' limits;
5. **report**: dS_M from the fine measurement against the twin's prediction of it.

The trust gate sits between 3 and 4: where the proposed fine grid lies outside the
twin's training range (or its ensemble spread exceeds ``trust_std``) the fine run's
decision records ``trusted=0`` and why; with ``untrusted="measure"`` the plan first
measures those fields (a ``verify`` run), waits for the refit and studies again.
"""

import logging
from collections.abc import Callable as _Callable
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Any

import numpy as np
from bluesky.protocols import NamedMovable, Readable
from bluesky.utils import MsgGenerator

from bluesky_twin.analysis.config import FieldStepCriteria, FieldTiming, split_options
from bluesky_twin.errors import InputError
from bluesky_twin.protocols import RecordingTwinSource, require

from .stubs import (
    MAX_POINTS,
    TwinUnavailableError,
    bounded_provenance,
    check_limits,
    clip_to_limits,
    limits_of,
    motor_dimensions,
    require_common,
    require_devices,
    require_int,
    require_number,
    require_points,
    require_untrusted,
    resolve_named,
    trust_lines,
    twin_uncertainty,
    wait_for_twin,
    with_decision,
)

logger = logging.getLogger(__name__)

__all__ = ["CoarseToFineResult", "coarse_to_fine"]


@dataclass
class CoarseToFineResult:
    """What :func:`coarse_to_fine` did and found.

    Attributes
    ----------
    coarse_uid, fine_uid
        Run uids.
    proposed_field_step
        Field step of the fine scan (in the field motor's unit).
    proposal_ok
        False when only the finest candidate passed the study (add finer candidates).
    fine_fields, fine_temperatures
        Setpoints of the fine run.
    twin_version
        Version of the twin that proposed the step (and predicted dS_M).
    step_study
        The :class:`~bluesky_twin.analysis.steps.StepStudy`.
    dsm_measured, dsm_predicted
        :class:`~bluesky_twin.analysis.mce.EntropyChange` from the fine data and from the twin on
        the same (T, H) grid; ``None`` if the fine data could not be analysed.
    dsm_rmse_pct
        RMS difference of the two at the highest field, in % of max |dS_M measured|.
    notes
        Anything that went differently from the plan (clipped fields, missing data...).
    trusted
        Whether the twin was trusted on the whole fine grid it proposed (the trust gate;
        after the verify run, when there was one).
    untrusted_lines
        Fine fields where the twin was not trusted when it first proposed the grid.
    verify_uid
        The run that measured the untrusted fields first (``untrusted="measure"``).
    decisions
        The decisions recorded in the runs' ``decisions`` streams (one per run).
    """

    coarse_uid: str
    fine_uid: str | None = None
    proposed_field_step: float | None = None
    proposal_ok: bool | None = None
    fine_fields: list[float] = dc_field(default_factory=list)
    fine_temperatures: list[float] = dc_field(default_factory=list)
    twin_version: str | None = None
    step_study: Any = None
    dsm_measured: Any = None
    dsm_predicted: Any = None
    dsm_rmse_pct: float | None = None
    notes: list[str] = dc_field(default_factory=list)
    trusted: bool | None = None
    untrusted_lines: list[float] = dc_field(default_factory=list)
    verify_uid: str | None = None
    decisions: list[dict[str, Any]] = dc_field(default_factory=list)

    @property
    def run_uids(self) -> list[str]:
        """Uids of the runs taken, in order."""
        return [u for u in (self.coarse_uid, self.verify_uid, self.fine_uid) if u]

    def summary(self) -> dict[str, Any]:
        """JSON-friendly summary."""
        return {
            "runs": self.run_uids,
            "coarse_uid": self.coarse_uid,
            "fine_uid": self.fine_uid,
            "proposed_field_step": self.proposed_field_step,
            "proposal_ok": self.proposal_ok,
            "fine_fields": list(self.fine_fields),
            "n_fine_temperatures": len(self.fine_temperatures),
            "twin_version": self.twin_version,
            "dsm_rmse_pct": self.dsm_rmse_pct,
            "trusted": self.trusted,
            "untrusted_lines": list(self.untrusted_lines),
            "verify_uid": self.verify_uid,
            "notes": list(self.notes),
        }


def _check_candidate_steps(steps: Any, low_T: float, high_T: float, fine_t_num: int) -> np.ndarray:
    """The candidate field steps (tesla) as a sorted array, refused unless the study can use them.

    Each step must be a positive finite number, the finest must fit in the field range, and
    the fields they imply (the step study simulates every candidate's fields and the
    finest-step reference, each at *fine_t_num* temperatures) must stay within
    :data:`~bluesky_twin.plans.stubs.MAX_POINTS`.
    """
    if isinstance(steps, (str, bytes)) or not hasattr(steps, "__iter__"):
        raise InputError(f"candidate_steps must be a list of field steps in tesla; got {steps!r}")
    values = sorted({require_number("candidate step", v, minimum=0.0, strict=True) for v in steps})
    if len(values) < 2:
        raise InputError("candidate_steps needs at least two distinct steps (the finest is the reference)")
    span = high_T - low_T
    if values[0] >= span:
        raise InputError(
            f"the finest candidate step {values[0]:g} T does not fit in the field range [{low_T:g}, {high_T:g}] T"
        )
    # fields of one step: low, the multiples of the step inside (low, high), high
    levels = sum(span / v + 3.0 for v in values)
    require_points(
        "the field-step study",
        levels * fine_t_num,
        f"candidate_steps {values[:3]}{'...' if len(values) > 3 else ''} T over {span:g} T imply "
        f"{levels:,.0f} fields x {fine_t_num} temperatures",
        f"use candidate steps of at least {span * fine_t_num * len(values) / MAX_POINTS:.3g} T, "
        "a narrower field range or a smaller fine_t_num",
    )
    return np.asarray(values, dtype=float)


def _grid_scan(
    detectors: Sequence[Readable],
    outer: NamedMovable,
    outer_values: Sequence[float],
    inner: NamedMovable,
    inner_values: Sequence[float],
    *,
    per_step: Any,
    md: dict,
) -> MsgGenerator[str]:
    """``bp.list_grid_scan`` (outer x inner, no snaking): the start document gets ``shape``,
    ``extents``, ``hints.gridding`` and ``plan_pattern`` as bluesky writes them."""
    import bluesky.plans as bp

    return (
        yield from bp.list_grid_scan(
            list(detectors),
            outer,
            list(map(float, outer_values)),
            inner,
            list(map(float, inner_values)),
            snake_axes=False,
            per_step=per_step,
            md=md,
        )
    )


def _thin(values: Sequence[float], most: int) -> list[float]:
    """At most *most* of *values* (sorted), evenly chosen, the first and the last included."""
    ordered = sorted(float(v) for v in values)
    if len(ordered) <= most:
        return ordered
    picks = np.unique(np.round(np.linspace(0, len(ordered) - 1, most)).astype(int))
    return [ordered[i] for i in picks]


def _split(decision: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(fields, rows)`` of a decision record (see :func:`~bluesky_twin.plans.stubs.record_decision`)."""
    fields = {k: v for k, v in decision.items() if k != "rows"}
    return fields, decision.get("rows") or {}


def coarse_to_fine(
    detectors: Sequence[Readable],
    temperature: NamedMovable,
    t_start: float,
    t_stop: float,
    t_num: int,
    field: NamedMovable,
    coarse_fields: Sequence[float],
    *,
    trainer: RecordingTwinSource | str,
    fine_t_num: int | None = None,
    field_min: float | None = None,
    field_max: float | None = None,
    candidate_steps: Sequence[float] | None = None,
    tolerance: float | None = None,
    criteria: FieldStepCriteria | None = None,
    timing: FieldTiming | None = None,
    field_unit: str = "T",
    mass_g: float | None = None,
    moment_unit: str | None = None,
    untrusted: str = "record",
    trust_std: float | None = None,
    twin_timeout: float = 120.0,
    poll_interval: float = 0.25,
    per_step: _Callable | None = None,
    md: dict | None = None,
) -> MsgGenerator[CoarseToFineResult]:
    """Coarse grid, twin, field-step study, fine scan at the proposed step, dS_M check.

    Parameters
    ----------
    detectors
        Readable devices; they must produce the trainer's y field.
    temperature, t_start, t_stop, t_num
        Temperature positioner and the sweep of every field line (coarse run).
    field
        Field positioner.
    coarse_fields
        Fields of the coarse isofield sweeps.
    trainer
        A :class:`~bluesky_twin.protocols.RecordingTwinSource` (a
        :class:`~bluesky_twin.callbacks.TwinTrainer` subscribed to the RunEngine),
        whose inputs include the temperature and field data keys, or the name it is
        registered under (:func:`bluesky_twin.registry.register`; bluesky-queueserver
        passes names).
    fine_t_num
        Points per fine sweep (default ``2 * t_num``).
    field_min, field_max
        Field range of the study and the fine scan (default: the coarse fields' range,
        within the field positioner's limits).
    candidate_steps
        Field steps to study, in tesla (default: the analysis module's).
    tolerance
        Shortcut for ``criteria=FieldStepCriteria(tolerance=...)``: the largest accepted
        wiggle of dS_M and deviation from the reference (default 0.02 = 2 %).
    criteria
        When a field step passes the study
        (:class:`~bluesky_twin.analysis.config.FieldStepCriteria`, as ``bluesky-twin steps``).
    timing
        Time model for the study's time estimates and the fine run's start document
        (:class:`~bluesky_twin.analysis.config.FieldTiming`).
    field_unit
        Unit of the field positioner (``"T"``, ``"Oe"``, ``"A/m"``).
    mass_g, moment_unit
        Optional SI conversion of dS_M.
    untrusted
        The trust gate: what to do when the proposed fine grid has fields where the
        twin extrapolates (outside its training range, or an ensemble spread above
        *trust_std* somewhere along the field's temperature sweep).  ``"record"`` (the
        default): record it in the fine run's decision (``trusted=0``,
        ``trust_reason``, ``untrusted_lines``) and scan as proposed.  ``"measure"``:
        measure there first -- a ``verify`` run of those fields (at most as many as
        the coarse run has, evenly chosen, ends included) on the coarse temperature
        sweep -- wait for the refit, study again with the refitted twin and scan at
        its proposal.
    trust_std
        Largest ensemble spread (in the unit of the trainer's y field) the gate trusts;
        ``None`` (default): judge on the training range alone.
    twin_timeout, poll_interval
        How long to wait for the refit on the coarse run (at least the fit's own
        budget plus a margin, see :func:`~bluesky_twin.plans.stubs.wait_for_twin`), and
        how often to look.
    per_step
        Passed to :func:`bluesky.plans.list_grid_scan` for both runs.
    md
        Extra metadata for both runs.

    Returns
    -------
    CoarseToFineResult
        The proposal (``proposed_field_step``, ``fine_fields``) and what came of it
        (``RE(..., call_returns_result=True)`` gives it as ``plan_result``).

    Notes
    -----
    Both runs are ``bp.list_grid_scan`` runs (``shape``, ``extents``,
    ``hints["gridding"]``, ``plan_pattern`` in the start document) with
    ``plan_name="coarse_to_fine"`` and a ``stage`` (``"coarse"``, ``"fine"``).  Each
    has a ``decisions`` stream, one event per row: for the fine run a row per
    candidate step (``decision_value``, tesla; ``decision_score``, its wiggle;
    ``decision_passes``; ``decision_proposed``), each with the proposed step, the fine
    fields (``decision_proposed_lines``, JSON), the twin version and its mean
    uncertainty over the fine grid.
    Start documents carry a bounded provenance record
    (:func:`~bluesky_twin.plans.stubs.bounded_provenance`).  The fine run's decision
    also carries the trust gate's verdict on the grid it scans: ``decision_trusted``
    (0/1), ``decision_trust_reason``, ``decision_untrusted_lines`` (JSON),
    ``decision_untrusted`` (the mode), ``decision_trust_std`` and
    ``decision_verified_lines`` (JSON: the fields measured first).  A verify run
    (``stage="verify"``) records the first verdict, with ``decision_proposed_lines``
    the fields it measures.

    Raises
    ------
    InputError
        A bad argument (one line), before the first message: nothing has moved.  This
        includes candidate steps (or a field range) that imply more than
        :data:`~bluesky_twin.plans.stubs.MAX_POINTS` readings or model evaluations,
        and a bad ``field_unit`` / ``moment_unit`` / ``mass_g``.
    LimitError
        An explicit value (temperatures, coarse fields, field range) outside the limits.
    TwinUnavailableError
        The twin did not arrive within *twin_timeout* (after the coarse run).
    """
    from bluesky_twin.analysis.mce import (
        _si_conversion,
        entropy_change_from_twin,
        entropy_change_isofield,
        field_to_tesla,
    )
    from bluesky_twin.analysis.steps import DEFAULT_FIELD_STEPS_T, field_levels, field_step_study

    # ---- argument checks: all of them before the first message (nothing moves before they pass) ----
    detectors = require_devices(detectors, {"temperature": temperature, "field": field})
    trainer = require_common(
        trainer=resolve_named(trainer, "trainer"),
        per_step=per_step,
        md=md,
        twin_timeout=twin_timeout,
        poll_interval=poll_interval,
    )
    require(trainer, RecordingTwinSource, "trainer", "a TwinTrainer (a TwinSource that keeps its runs' data)")
    t_start = require_number("t_start", t_start)
    t_stop = require_number("t_stop", t_stop)
    if not t_stop > t_start:
        raise InputError(f"t_stop ({t_stop}) must exceed t_start ({t_start})")
    t_num = require_int("t_num", t_num, minimum=3)
    untrusted = require_untrusted(untrusted)
    trust_std = require_number("trust_std", trust_std, minimum=0.0, strict=True, optional=True)
    fine_t_num = require_int("fine_t_num", fine_t_num if fine_t_num is not None else 2 * t_num, minimum=3)
    if isinstance(coarse_fields, (str, bytes)) or not hasattr(coarse_fields, "__iter__"):
        raise InputError(f"coarse_fields must be a list of fields; got {coarse_fields!r}")
    coarse_list = [require_number("coarse field", h) for h in coarse_fields]
    coarse_fields = sorted(set(coarse_list))
    if len(coarse_fields) < 2:
        raise InputError("coarse_fields needs at least two distinct fields")
    require_points(
        "the coarse run",
        len(coarse_fields) * t_num,
        f"{len(coarse_fields)} fields x {t_num} temperatures",
        "use fewer coarse_fields or a smaller t_num",
    )
    t_name, h_name = temperature.name, field.name
    for name in (t_name, h_name):
        if name not in trainer.x_fields:
            raise InputError(f"{name!r} is not an input of the trainer {trainer.x_fields}")
    criteria, timing = split_options(
        "coarse_to_fine",
        {} if tolerance is None else {"tolerance": tolerance},
        FieldStepCriteria,
        criteria,
        FieldTiming,
        timing,
    )
    to_T = float(field_to_tesla(1.0, field_unit))  # InputError for an unknown unit
    _si_conversion(
        moment_unit, require_number("mass_g", mass_g, minimum=0.0, strict=True, optional=True), trainer.y_field
    )  # InputError for a bad unit or mass, now rather than after the scans
    coarse_T = check_limits(temperature, np.linspace(t_start, t_stop, t_num), what="temperature")
    check_limits(field, coarse_fields, what="coarse field")
    fine_T = np.linspace(t_start, t_stop, fine_t_num)
    lim = limits_of(field)
    h_lo = coarse_fields[0] if field_min is None else require_number("field_min", field_min)
    h_hi = coarse_fields[-1] if field_max is None else require_number("field_max", field_max)
    check_limits(field, [h_lo, h_hi], what="field range end")
    if not h_hi > h_lo:
        raise InputError(f"field_max ({h_hi}) must exceed field_min ({h_lo})")
    steps_T = _check_candidate_steps(
        candidate_steps if candidate_steps is not None else DEFAULT_FIELD_STEPS_T, h_lo * to_T, h_hi * to_T, fine_t_num
    )

    base_md = {
        "detectors": [d.name for d in detectors],
        "motors": [h_name, t_name],
        "plan_name": "coarse_to_fine",
        "twin_x": list(trainer.x_fields),
        "twin_y": trainer.y_field,
        "hints": {"dimensions": motor_dimensions([field, temperature]), "gridding": "rectilinear"},
    }
    plan_args = {
        "detectors": list(map(repr, detectors)),
        "temperature": repr(temperature),
        "t_start": t_start,
        "t_stop": t_stop,
        "t_num": t_num,
        "field": repr(field),
        "coarse_fields": list(coarse_fields),
        "fine_t_num": fine_t_num,
        "field_min": field_min,
        "field_max": field_max,
        "candidate_steps": None if candidate_steps is None else list(map(float, candidate_steps)),
        "criteria": criteria.to_json_dict(),
        "timing": timing.to_json_dict(),
        "field_unit": field_unit,
        "untrusted": untrusted,
        "trust_std": trust_std,
        "trainer": repr(trainer),
        "per_step": repr(per_step),
    }
    base_md["plan_args"] = plan_args

    # ---- 1. coarse isofield sweeps ----
    coarse_md = dict(
        base_md, stage="coarse", **{k: v for k, v in bounded_provenance(trainer).items() if k not in base_md}
    )
    coarse_md["twin_steered"] = False
    coarse_md.update(md or {})
    coarse_decision = {
        "stage": "coarse",
        "source": "user",
        "proposed_lines": list(coarse_fields),
        "twin_version": str(trainer.version or ""),
        "stop_reason": "",
        "rows": {"value": list(coarse_fields), "proposed": [1] * len(coarse_fields)},
    }
    coarse_uid = yield from with_decision(
        _grid_scan(detectors, field, coarse_fields, temperature, coarse_T, per_step=per_step, md=coarse_md),
        *_split(coarse_decision),
    )
    result = CoarseToFineResult(coarse_uid=coarse_uid)
    result.decisions.append(coarse_decision)

    # ---- 2. wait for the twin trained on it ----
    twin = yield from wait_for_twin(trainer, run_uid=coarse_uid, timeout=twin_timeout, poll_interval=poll_interval)
    if twin is None:
        raise TwinUnavailableError(
            f"no twin trained on the coarse run {coarse_uid} within {twin_timeout} s "
            f"(trainer: {trainer.status.get('state')}, last error: {trainer.status.get('last_error')})"
        )
    provenance = bounded_provenance(trainer)
    result.twin_version = provenance["twin_version"]

    # ---- 3. step study with the twin ----
    def study_with(twin: Any) -> tuple[Any, float, np.ndarray, np.ndarray]:
        study = field_step_study(
            twin,
            field_max=h_hi * to_T,
            field_min=h_lo * to_T,
            steps=steps_T,
            T_grid=fine_T,
            field_unit=field_unit,
            T_axis=t_name,
            H_axis=h_name,
            mass_g=mass_g,
            moment_unit=moment_unit,
            criteria=criteria,
            timing=timing,
        )
        step = float(study.proposed_step)
        levels = field_levels(step, h_lo * to_T, h_hi * to_T) / to_T
        return study, step, levels, np.unique(clip_to_limits(field, levels, policy="refuse"))

    study, step_T, levels, fine_fields = study_with(twin)

    # ---- 3b. the trust gate: does the twin extrapolate on the grid it proposes? ----
    verdict = trust_lines(twin, h_name, fine_fields, {t_name: fine_T}, max_std=trust_std)
    result.untrusted_lines = verdict.untrusted
    verified: list[float] = []
    if not verdict.all_trusted:
        logger.warning("coarse_to_fine: the twin is not trusted on the proposed grid (%s)", verdict.reason())
    if not verdict.all_trusted and untrusted == "measure":
        verified = _thin(verdict.untrusted, len(coarse_fields))
        verify_md = dict(base_md, stage="verify", twin_steered=True, **provenance)
        verify_md.update({"source_run_uid": coarse_uid, "untrusted_lines": verdict.untrusted})
        verify_md.update(md or {})
        verify_decision = {
            "stage": "verify",
            "source": "trust gate",
            "source_run_uid": coarse_uid,
            "proposed_step": step_T / to_T,
            "proposed_lines": verified,
            "twin_version": str(result.twin_version or ""),
            **verdict.fields(untrusted),
            "stop_reason": "",
            "rows": {
                "value": verdict.values,
                "line_trusted": [int(v) for v in verdict.trusted],
                "outside": [int(v) for v in verdict.outside],
                "score": verdict.max_std,
                "proposed": [int(v in verified) for v in verdict.values],
            },
        }
        result.verify_uid = yield from with_decision(
            _grid_scan(detectors, field, verified, temperature, coarse_T, per_step=per_step, md=verify_md),
            *_split(verify_decision),
        )
        result.decisions.append(verify_decision)
        refit = yield from wait_for_twin(
            trainer, run_uid=result.verify_uid, timeout=twin_timeout, poll_interval=poll_interval
        )
        if refit is None:
            raise TwinUnavailableError(
                f"no twin trained on the verify run {result.verify_uid} within {twin_timeout} s "
                f"(trainer: {trainer.status.get('state')}, last error: {trainer.status.get('last_error')})"
            )
        twin = refit
        provenance = bounded_provenance(trainer)
        result.twin_version = provenance["twin_version"]
        study, step_T, levels, fine_fields = study_with(twin)
        verdict = trust_lines(twin, h_name, fine_fields, {t_name: fine_T}, max_std=trust_std)
    result.trusted = verdict.all_trusted
    result.step_study, result.proposal_ok = study, bool(study.proposal_ok)
    result.proposed_field_step = step_T / to_T
    if len(fine_fields) < len(levels):
        result.notes.append(f"{len(levels) - len(fine_fields)} fine field(s) outside the limits {lim} were dropped")
    result.fine_fields = fine_fields.tolist()
    result.fine_temperatures = fine_T.tolist()

    # ---- 4. fine scan at the proposed step ----
    fine_md = dict(base_md, stage="fine", twin_steered=True, **provenance)
    fine_md.update(
        {
            "proposed_field_step": result.proposed_field_step,
            "source_run_uid": coarse_uid,
            "step_study": study.to_json_dict(),
        }
    )
    fine_md.update(md or {})
    unc_abs, unc_rel = twin_uncertainty(twin, {t_name: fine_T, h_name: fine_fields})
    steps_list = [float(v) for v in study.steps]
    fine_decision = {
        "stage": "fine",
        "source": "twin",
        "source_run_uid": coarse_uid,
        "proposed_step": result.proposed_field_step,
        "proposed_step_T": step_T,
        "proposal_ok": bool(study.proposal_ok),
        "proposed_lines": result.fine_fields,
        "twin_version": str(result.twin_version or ""),
        "twin_uncertainty": unc_abs,
        "twin_uncertainty_rel": unc_rel,
        **verdict.fields(untrusted),
        "verified_lines": verified,
        "stop_reason": "proposal measured",
        "rows": {
            "value": steps_list,  # the candidate steps, in tesla
            "score": [float(r.get("wiggle", np.nan)) for r in study.rows],
            "passes": [int(bool(r.get("passes"))) for r in study.rows],
            "proposed": [int(v == step_T) for v in steps_list],
        },
    }
    fine_uid = yield from with_decision(
        _grid_scan(detectors, field, fine_fields, temperature, fine_T, per_step=per_step, md=fine_md),
        *_split(fine_decision),
    )
    result.fine_uid = fine_uid
    result.decisions.append(fine_decision)

    # ---- 5. measured vs predicted dS_M ----
    try:
        data = trainer.run_data(fine_uid)
    except KeyError:
        result.notes.append(f"the trainer did not accept the fine run: {trainer.runs.get(fine_uid)}")
        return result
    x = data["x"]
    T = x[:, trainer.x_fields.index(t_name)]
    H = x[:, trainer.x_fields.index(h_name)]
    try:
        measured = entropy_change_isofield(
            T, H, data["y"], field_unit=field_unit, mass_g=mass_g, moment_unit=moment_unit, y_name=trainer.y_field
        )
        predicted = entropy_change_from_twin(
            twin,
            measured.T,
            measured.H,
            field_unit=field_unit,
            mass_g=mass_g,
            moment_unit=moment_unit,
            T_axis=t_name,
            H_axis=h_name,
        )
    except InputError as exc:  # e.g. too few usable readings per field
        result.notes.append(f"dS_M comparison skipped: {exc}")
        return result
    result.dsm_measured, result.dsm_predicted = measured, predicted
    ref = float(np.max(np.abs(measured.dS[-1]))) or 1.0
    result.dsm_rmse_pct = float(np.sqrt(np.mean((predicted.dS[-1] - measured.dS[-1]) ** 2)) / ref * 100.0)
    logger.info(
        "coarse_to_fine: step %.4g, fine run %s, dS_M rmse %.2f %%",
        result.proposed_field_step,
        fine_uid,
        result.dsm_rmse_pct,
    )
    return result
