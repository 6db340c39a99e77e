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
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field as dc_field
from typing import Any, Callable, Sequence

import numpy as np

from .stubs import TwinUnavailableError, check_limits, clip_to_limits, limits_of, motor_dimensions, wait_for_twin

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

    @property
    def run_uids(self) -> list[str]:
        """Uids of the runs taken, in order."""
        return [u for u in (self.coarse_uid, self.fine_uid) if u]

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
            "notes": list(self.notes),
        }


def _grid_cycler(outer: Any, outer_values: Sequence[float], inner: Any, inner_values: Sequence[float]):
    from cycler import cycler

    return cycler(outer, list(map(float, outer_values))) * cycler(inner, list(map(float, inner_values)))


def coarse_to_fine(
    detectors: Sequence[Any],
    temperature: Any,
    t_start: float,
    t_stop: float,
    t_num: int,
    field: Any,
    coarse_fields: Sequence[float],
    *,
    trainer: Any,
    fine_t_num: int | None = None,
    field_min: float | None = None,
    field_max: float | None = None,
    candidate_steps: Sequence[float] | None = None,
    tolerance: float = 0.05,
    field_unit: str = "T",
    mass_g: float | None = None,
    moment_unit: str | None = None,
    twin_timeout: float = 120.0,
    poll_interval: float = 0.25,
    per_step: Callable | None = None,
    md: dict | None = None,
):
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
        A :class:`~bluesky_twin.callbacks.TwinTrainer` subscribed to the RunEngine,
        whose inputs include the temperature and field data keys.
    fine_t_num
        Points per fine sweep (default ``2 * t_num``).
    field_min, field_max
        Field range of the study and the fine scan (default: the coarse fields' range,
        within the field positioner's limits).
    candidate_steps
        Field steps to study, in tesla (default: the analysis module's).
    tolerance
        Largest accepted excess total variation of dS_M (0.05 = 5 %).
    field_unit
        Unit of the field positioner (``"T"``, ``"Oe"``, ``"A/m"``).
    mass_g, moment_unit
        Optional SI conversion of dS_M.
    twin_timeout, poll_interval
        How long to wait for the refit on the coarse run, and how often to look.
    per_step
        Passed to :func:`bluesky.plans.scan_nd` for both runs.
    md
        Extra metadata for both runs.

    Returns
    -------
    CoarseToFineResult

    Raises
    ------
    ValueError, LimitError
        Bad arguments (before anything moves).
    TwinUnavailableError
        The twin did not arrive within *twin_timeout* (after the coarse run).
    """
    import bluesky.plans as bp

    from bluesky_twin.analysis.mce import entropy_change_from_twin, entropy_change_isofield, field_to_tesla
    from bluesky_twin.analysis.steps import DEFAULT_FIELD_STEPS_T, field_levels, field_step_study

    # ---- argument checks (nothing moves before they pass) ----
    if not detectors:
        raise ValueError("detectors must not be empty")
    if int(t_num) < 3:
        raise ValueError(f"t_num must be >= 3; got {t_num}")
    fine_t_num = int(fine_t_num) if fine_t_num is not None else 2 * int(t_num)
    if fine_t_num < 3:
        raise ValueError(f"fine_t_num must be >= 3; got {fine_t_num}")
    if not t_stop > t_start:
        raise ValueError(f"t_stop ({t_stop}) must exceed t_start ({t_start})")
    coarse_fields = sorted({float(h) for h in coarse_fields})
    if len(coarse_fields) < 2:
        raise ValueError("coarse_fields needs at least two distinct fields")
    t_name, h_name = temperature.name, field.name
    for name in (t_name, h_name):
        if name not in trainer.x_fields:
            raise ValueError(f"{name!r} is not an input of the trainer {trainer.x_fields}")
    if not (twin_timeout >= 0 and poll_interval > 0):
        raise ValueError("twin_timeout must be >= 0 and poll_interval > 0")
    coarse_T = check_limits(temperature, np.linspace(t_start, t_stop, int(t_num)), what="temperature")
    check_limits(field, coarse_fields, what="coarse field")
    fine_T = np.linspace(t_start, t_stop, fine_t_num)
    lim = limits_of(field)
    h_lo = coarse_fields[0] if field_min is None else float(field_min)
    h_hi = coarse_fields[-1] if field_max is None else float(field_max)
    check_limits(field, [h_lo, h_hi], what="field range end")
    if not h_hi > h_lo:
        raise ValueError(f"field_max ({h_hi}) must exceed field_min ({h_lo})")
    to_T = float(field_to_tesla(1.0, field_unit))
    steps_T = np.asarray(candidate_steps if candidate_steps is not None else DEFAULT_FIELD_STEPS_T, dtype=float)

    base_md = {"detectors": [d.name for d in detectors], "motors": [h_name, t_name], "plan_name": "coarse_to_fine",
               "twin_x": list(trainer.x_fields), "twin_y": trainer.y_field,
               "hints": {"dimensions": motor_dimensions([field, temperature])}}
    plan_args = {"detectors": list(map(repr, detectors)), "temperature": repr(temperature), "t_start": t_start,
                 "t_stop": t_stop, "t_num": t_num, "field": repr(field), "coarse_fields": list(coarse_fields),
                 "fine_t_num": fine_t_num, "field_min": field_min, "field_max": field_max,
                 "candidate_steps": None if candidate_steps is None else list(map(float, candidate_steps)),
                 "tolerance": tolerance, "field_unit": field_unit, "trainer": repr(trainer),
                 "per_step": repr(per_step)}
    base_md["plan_args"] = plan_args

    # ---- 1. coarse isofield sweeps ----
    coarse_md = dict(base_md, stage="coarse", **{k: v for k, v in trainer.provenance().items() if k not in base_md})
    coarse_md["twin_steered"] = False
    coarse_md.update(md or {})
    coarse_uid = yield from bp.scan_nd(list(detectors), _grid_cycler(field, coarse_fields, temperature, coarse_T),
                                       per_step=per_step, md=coarse_md)
    result = CoarseToFineResult(coarse_uid=coarse_uid)

    # ---- 2. wait for the twin trained on it ----
    twin = yield from wait_for_twin(trainer, run_uid=coarse_uid, timeout=twin_timeout, poll_interval=poll_interval)
    if twin is None:
        raise TwinUnavailableError(
            f"no twin trained on the coarse run {coarse_uid} within {twin_timeout} s "
            f"(trainer: {trainer.status.get('state')}, last error: {trainer.status.get('last_error')})"
        )
    provenance = trainer.provenance()
    result.twin_version = provenance["twin_version"]

    # ---- 3. step study with the twin ----
    study = field_step_study(
        twin, field_max=h_hi * to_T, field_min=h_lo * to_T, steps=steps_T, T_grid=fine_T, field_unit=field_unit,
        T_axis=t_name, H_axis=h_name, tolerance=tolerance, mass_g=mass_g, moment_unit=moment_unit,
    )
    step_T = float(study.proposed_step)
    result.step_study, result.proposal_ok = study, bool(study.proposal_ok)
    result.proposed_field_step = step_T / to_T
    levels = field_levels(step_T, h_lo * to_T, h_hi * to_T) / to_T
    fine_fields = np.unique(clip_to_limits(field, levels, policy="refuse"))
    if len(fine_fields) < len(levels):
        result.notes.append(f"{len(levels) - len(fine_fields)} fine field(s) outside the limits {lim} were dropped")
    result.fine_fields = fine_fields.tolist()
    result.fine_temperatures = fine_T.tolist()

    # ---- 4. fine scan at the proposed step ----
    fine_md = dict(base_md, stage="fine", twin_steered=True, **provenance)
    fine_md.update({"proposed_field_step": result.proposed_field_step, "source_run_uid": coarse_uid,
                    "step_study": study.to_json_dict()})
    fine_md.update(md or {})
    fine_uid = yield from bp.scan_nd(list(detectors), _grid_cycler(field, fine_fields, temperature, fine_T),
                                     per_step=per_step, md=fine_md)
    result.fine_uid = fine_uid

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
        measured = entropy_change_isofield(T, H, data["y"], field_unit=field_unit, mass_g=mass_g,
                                           moment_unit=moment_unit, y_name=trainer.y_field)
        predicted = entropy_change_from_twin(twin, measured.T, measured.H, field_unit=field_unit, mass_g=mass_g,
                                             moment_unit=moment_unit, T_axis=t_name, H_axis=h_name)
    except ValueError as exc:  # InputError: e.g. too few usable readings per field
        result.notes.append(f"dS_M comparison skipped: {exc}")
        return result
    result.dsm_measured, result.dsm_predicted = measured, predicted
    ref = float(np.max(np.abs(measured.dS[-1]))) or 1.0
    result.dsm_rmse_pct = float(np.sqrt(np.mean((predicted.dS[-1] - measured.dS[-1]) ** 2)) / ref * 100.0)
    logger.info("coarse_to_fine: step %.4g, fine run %s, dS_M rmse %.2f %%", result.proposed_field_step, fine_uid,
                result.dsm_rmse_pct)
    return result
