"""``twin_adaptive_scan``: measure the lines the twin is least sure about, until converged.

Each iteration measures a batch of lines (the line motor swept at fixed values of the
step motor) as one run, waits for the streaming trainer to refit on it, asks the agent
(``suggest(n)``) for the next values of the step motor and tells it what was measured
(``ingest(points)``).  It stops when the line budget is spent, when the best score of
the agent falls below ``tolerance`` (converged), when no new line is left to measure,
or when no twin arrives in time.

Proposals are clipped to (or, with ``out_of_limits="refuse"``, dropped outside) the
step motor's limits and de-duplicated against lines already measured *before* any
move; explicit user values outside the limits are refused with ``LimitError`` before
the first move.  Every run's start document records the twin that steered it.

The trust gate judges every proposal: a line where the twin extrapolates (outside its
training range, or an ensemble spread above ``trust_std``) is recorded as untrusted in
the decision; with ``untrusted="measure"`` the plan measures the untrusted candidate
lines first (and does not stop as converged while any is left) instead of following
the agent's ranking there.
"""

import inspect
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Any

import numpy as np
from bluesky.protocols import NamedMovable, Readable
from bluesky.utils import MsgGenerator

from bluesky_twin.errors import InputError
from bluesky_twin.protocols import AdaptiveAgent, BoundedLineAgent, LineAgent, ScoringLineAgent, TwinSource

from .stubs import (
    TrustVerdict,
    bounded_provenance,
    check_limits,
    clip_to_limits,
    limits_of,
    motor_dimensions,
    record_decision,
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

__all__ = ["AdaptiveScanResult", "twin_adaptive_scan"]


@dataclass
class AdaptiveScanResult:
    """Outcome of :func:`twin_adaptive_scan`.

    Attributes
    ----------
    run_uids
        One run per iteration.
    lines
        Step-motor values measured, per iteration.
    max_scores
        Best acquisition score the agent saw after each iteration.
    twin_versions
        Twin version after each iteration's refit.
    converged
        True if the scores fell below the tolerance.
    reason
        Why the loop stopped: ``"converged"``, ``"budget"``, ``"exhausted"``, ``"no twin"``.
    proposal
        The step-motor values the agent proposed last and that were not measured
        (what it would measure next; empty when the budget ran out first).
    decisions
        Every decision, as recorded in the ``decisions`` streams.
    decision_uid
        The run that records the last decision when no measurement followed it
        (``"converged"``, ``"exhausted"``, ``"no twin"``); ``None`` otherwise.
    """

    run_uids: list[str] = dc_field(default_factory=list)
    lines: list[list[float]] = dc_field(default_factory=list)
    max_scores: list[float] = dc_field(default_factory=list)
    twin_versions: list[str | None] = dc_field(default_factory=list)
    converged: bool = False
    reason: str = ""
    proposal: list[float] = dc_field(default_factory=list)
    decisions: list[dict[str, Any]] = dc_field(default_factory=list)
    decision_uid: str | None = None

    @property
    def measured_lines(self) -> list[float]:
        """All step-motor values measured, in order."""
        return [v for batch in self.lines for v in batch]


def twin_adaptive_scan(
    detectors: Sequence[Readable],
    line_motor: NamedMovable,
    line_start: float,
    line_stop: float,
    line_num: int,
    step_motor: NamedMovable,
    initial_lines: Sequence[float],
    *,
    trainer: TwinSource | str,
    agent: LineAgent | AdaptiveAgent | str | None = None,
    budget: int = 10,
    batch_size: int = 1,
    acquisition: str = "std",
    tolerance: float = 0.02,
    step_range: tuple[float, float] | None = None,
    out_of_limits: str = "clip",
    min_separation: float | None = None,
    untrusted: str = "record",
    trust_std: float | None = None,
    twin_timeout: float = 120.0,
    poll_interval: float = 0.25,
    per_step: Callable | None = None,
    md: dict | None = None,
) -> MsgGenerator[AdaptiveScanResult]:
    """Adaptive line scan steered by the twin's uncertainty (or dS_M error).

    Parameters
    ----------
    detectors
        Readable devices producing the trainer's y field.
    line_motor, line_start, line_stop, line_num
        The swept axis of every line (e.g. temperature).
    step_motor
        The stepped axis (e.g. field); its ``.limits`` bound every proposal.
    initial_lines
        Step-motor values of the first batch (measured before any twin exists);
        values outside the limits raise ``LimitError``.
    trainer
        A :class:`~bluesky_twin.protocols.TwinSource` (e.g. a
        :class:`~bluesky_twin.callbacks.TwinTrainer` subscribed to the RunEngine), or
        the name it is registered under (:func:`bluesky_twin.registry.register`;
        bluesky-queueserver passes names).
    agent
        A :class:`~bluesky_twin.protocols.LineAgent` or blop ``Optimizer``:
        ``suggest(n) -> list[dict]`` keyed by device names (an optional ``"_id"`` is
        passed back to ``ingest``) and ``ingest(list[dict])``; or a bluesky-adaptive
        agent (:class:`~bluesky_twin.protocols.AdaptiveAgent`: ``ingest(x, y)``,
        ``suggest(n) -> (docs, points)``, ``report()``); or a registered name.
        Default: :class:`bluesky_twin.agent.TwinLineAgent`.
    budget
        Total number of lines to measure at most (initial ones included).
    batch_size
        Lines per iteration (one run each iteration).
    acquisition
        For the default agent: ``"std"`` (largest ensemble spread), ``"derived"`` (the
        dS_M error a new line removes) or ``"interp"`` (the error of interpolating between
        lines that a new line removes; maps).
    tolerance
        Converged when the agent's best score is below it (agents that are a
        :class:`~bluesky_twin.protocols.ScoringLineAgent`, as the default one).
    step_range
        ``(low, high)`` for proposals, within the limits (default: the agent's ``bounds``
        for a :class:`~bluesky_twin.protocols.BoundedLineAgent`, else the limits).
    out_of_limits
        ``"clip"`` or ``"refuse"`` proposals outside the limits.
    min_separation
        Lines closer than this to a measured one are not measured again (default: the
        agent's ``min_separation`` for a :class:`~bluesky_twin.protocols.BoundedLineAgent`,
        else 1/200 of ``step_range``).
    untrusted
        The trust gate, applied to every proposal after a refit.  A line is untrusted
        where the twin extrapolates: some point of it lies outside the twin's training
        range, or its ensemble spread exceeds *trust_std*.  ``"record"`` (default):
        record the verdict in the decision and follow the agent.  ``"measure"``: measure
        the untrusted candidate lines first (the agent's ``candidates`` when it has
        them, else its suggestions; the farthest outside the training range first, then
        the largest spread), and do not stop as converged while one is left.
    trust_std
        Largest ensemble spread (in the unit of the trainer's y field) the gate trusts;
        ``None`` (default): judge on the training range alone.
    twin_timeout, poll_interval
        Waiting for each refit.
    per_step
        Passed to :func:`bluesky.plans.scan_nd`.
    md
        Extra metadata for every run.

    Returns
    -------
    AdaptiveScanResult
        The lines measured, why it stopped and the last proposal
        (``RE(..., call_returns_result=True)`` gives it as ``plan_result``).

    Notes
    -----
    Every line run is a ``bp.list_grid_scan`` (``shape``, ``extents``,
    ``hints["gridding"]``, ``plan_pattern`` in the start document, so
    BestEffortCallback draws a LiveGrid) with ``plan_name="twin_adaptive_scan"``, an
    ``adaptive_iteration`` and bounded provenance
    (:func:`~bluesky_twin.plans.stubs.bounded_provenance`).  Each run has a
    ``decisions`` stream, the decision that made it, one event per row (as blop's
    ``read_step``; scalar columns that tiled's SQL tables store): a row per candidate
    of the agent, suggestion or measured line with ``decision_value``,
    ``decision_score``, ``decision_suggested`` and ``decision_proposed`` (0/1), each
    with ``decision_suggestions`` and ``decision_proposed_lines`` (JSON lists: what the
    agent suggested, what was measured after clipping and de-duplication),
    ``decision_max_score``, ``decision_tolerance``,
    ``decision_twin_version``, ``decision_twin_uncertainty`` (mean predicted std over
    the candidate lines; ``_rel``: relative to the spread of the prediction) and
    ``decision_stop_reason`` (``"budget"`` on the last run of a spent budget), and the
    trust gate's verdict: ``decision_line_trusted`` per row (0/1), and for the
    proposal (the lines measured next, else the agent's suggestions)
    ``decision_trusted`` (0/1), ``decision_trust_reason``, ``decision_untrusted_lines``
    (JSON), ``decision_untrusted`` (the mode), ``decision_trust_std`` and
    ``decision_measured_first`` (JSON: the lines the gate put first); NaN and empty for
    the user's initial lines, which no twin proposed.  When
    the loop stops after a refit (``"converged"``, ``"exhausted"``, ``"no twin"``),
    that decision is recorded in a run of its own (``stage="decision"``, no readings).

    Raises
    ------
    InputError
        A bad argument (one line), before the first message: nothing has moved.  This
        includes a scan of more than :data:`~bluesky_twin.plans.stubs.MAX_POINTS`
        readings (``budget * line_num``).  Also raised when the agent's suggestions are malformed
        (not dicts holding the step motor's name, not numbers, not ``(docs, points)``
        for a bluesky-adaptive agent) rather than ending the scan as "exhausted".
    LimitError
        An explicit value (line points, initial lines, ``step_range``) outside the limits.
    """
    import bluesky.plans as bp
    import bluesky.preprocessors as bpp

    # ---- argument checks: all of them before the first message (nothing moves before they pass) ----
    detectors = require_devices(detectors, {"line_motor": line_motor, "step_motor": step_motor})
    trainer = require_common(
        trainer=resolve_named(trainer, "trainer"),
        per_step=per_step,
        md=md,
        twin_timeout=twin_timeout,
        poll_interval=poll_interval,
    )
    agent = resolve_named(agent, "agent")
    line_start = require_number("line_start", line_start)
    line_stop = require_number("line_stop", line_stop)
    if line_start == line_stop:
        raise InputError(f"line_start and line_stop must differ; both are {line_start}")
    line_num = require_int("line_num", line_num, minimum=3)
    budget = require_int("budget", budget, minimum=1)
    batch_size = require_int("batch_size", batch_size, minimum=1)
    require_points(
        "the scan",
        budget * line_num,
        f"a budget of {budget} lines x {line_num} points per line",
        "use a smaller budget or line_num",
    )
    if out_of_limits not in ("clip", "refuse"):
        raise InputError(f"out_of_limits must be 'clip' or 'refuse'; got {out_of_limits!r}")
    if agent is None:
        from bluesky_twin.agent import ACQUISITIONS

        if acquisition not in ACQUISITIONS:
            raise InputError(f"acquisition must be one of {', '.join(map(repr, ACQUISITIONS))}; got {acquisition!r}")
        adaptive_shape = False
    else:
        adaptive_shape = _is_adaptive_shaped(agent)
        if not adaptive_shape and not isinstance(agent, LineAgent):
            raise InputError(
                "agent must have suggest(n) and ingest(points) (a LineAgent, e.g. a blop Optimizer) "
                "or bluesky-adaptive's ingest(x, y), suggest(n) -> (docs, points) and report(); "
                f"got {type(agent).__name__}"
            )
    tolerance = require_number("tolerance", tolerance, minimum=0.0)
    untrusted = require_untrusted(untrusted)
    trust_std = require_number("trust_std", trust_std, minimum=0.0, strict=True, optional=True)
    for m in (line_motor, step_motor):
        if m.name not in trainer.x_fields:
            raise InputError(f"{m.name!r} is not an input of the trainer {trainer.x_fields}")
    if line_motor.name == step_motor.name:
        raise InputError("line_motor and step_motor must be different positioners")
    line_points = check_limits(line_motor, np.linspace(line_start, line_stop, line_num), what="line point")
    if isinstance(initial_lines, (str, bytes)) or not hasattr(initial_lines, "__iter__"):
        raise InputError(f"initial_lines must be a list of {step_motor.name} values; got {initial_lines!r}")
    initial = check_limits(step_motor, [require_number("initial line", v) for v in initial_lines], what="initial line")
    if len(initial) == 0:
        raise InputError("initial_lines must not be empty")
    lim = limits_of(step_motor)
    bounded = isinstance(agent, BoundedLineAgent)
    if step_range is None and bounded:
        step_range = tuple(agent.bounds)  # the agent's own range: its proposals are never refused for it
    if step_range is None:
        if lim is None:
            raise InputError(f"{step_motor.name} has no limits: give step_range=(low, high)")
        step_range = lim
    if isinstance(step_range, (str, bytes)) or not hasattr(step_range, "__iter__") or len(tuple(step_range)) != 2:
        raise InputError(f"step_range must be (low, high); got {step_range!r}")
    step_range = tuple(require_number("step_range end", v) for v in step_range)
    check_limits(step_motor, step_range, what="step_range end")
    if not step_range[0] < step_range[1]:
        raise InputError(f"step_range must have low < high; got {step_range}")
    sep = (
        require_number("min_separation", min_separation, minimum=0.0)
        if min_separation is not None
        else float(agent.min_separation)
        if bounded
        else (step_range[1] - step_range[0]) / 200.0
    )
    if agent is None:
        from bluesky_twin.agent import TwinLineAgent

        agent = TwinLineAgent(
            trainer,
            step_axis=step_motor.name,
            line_axis=line_motor.name,
            line_points=line_points,
            bounds=step_range,
            acquisition=acquisition,
            min_separation=sep,
        )
    name = step_motor.name
    plan_args = {
        "detectors": list(map(repr, detectors)),
        "line_motor": repr(line_motor),
        "line_start": line_start,
        "line_stop": line_stop,
        "line_num": line_num,
        "step_motor": repr(step_motor),
        "initial_lines": initial.tolist(),
        "trainer": repr(trainer),
        "agent": repr(agent),
        "budget": budget,
        "batch_size": batch_size,
        "acquisition": acquisition,
        "tolerance": tolerance,
        "step_range": list(step_range),
        "out_of_limits": out_of_limits,
        "untrusted": untrusted,
        "trust_std": trust_std,
        "per_step": repr(per_step),
    }
    base_md = {
        "detectors": [d.name for d in detectors],
        "motors": [name, line_motor.name],
        "plan_name": "twin_adaptive_scan",
        "plan_args": plan_args,
        "hints": {"dimensions": motor_dimensions([step_motor, line_motor])},
    }
    result = AdaptiveScanResult()
    measured: list[float] = []
    batch = list(dict.fromkeys(initial.tolist()))[:budget]
    ids: dict[float, Any] = {}  # suggestion ids (blop's "_id") of the lines in the batch
    decision = _record(
        0,
        "user",
        [],
        [],
        [],
        batch,
        tolerance,
        trainer.version,
        (np.nan, np.nan),
        "budget" if len(batch) >= budget else "",
    )
    iteration = 0
    while True:
        _md = dict(
            base_md,
            adaptive_iteration=iteration,
            twin_steered=trainer.version is not None,
            **bounded_provenance(trainer),
        )
        _md["hints"] = {"dimensions": base_md["hints"]["dimensions"], "gridding": "rectilinear"}
        _md.update(md or {})
        result.decisions.append(decision)
        uid = yield from with_decision(
            bp.list_grid_scan(
                list(detectors),
                step_motor,
                list(batch),
                line_motor,
                line_points.tolist(),
                snake_axes=False,
                per_step=per_step,
                md=_md,
            ),
            *_split(decision),
        )
        result.run_uids.append(uid)
        result.lines.append(list(batch))
        measured.extend(batch)
        twin = yield from wait_for_twin(trainer, run_uid=uid, timeout=twin_timeout, poll_interval=poll_interval)
        _ingest(agent, adaptive_shape, name, batch, ids, trainer, uid)
        result.twin_versions.append(trainer.version)
        if twin is None:
            result.reason = "no twin"
            break
        if len(measured) >= budget:
            result.reason = "budget"
            break
        n = min(batch_size, budget - len(measured))
        batch, ids = [], {}
        suggested: list[float] = []
        scores = None
        for _attempt in range(3):  # proposals all refused/duplicates: ask again, a few times
            proposals = _suggestions(agent, adaptive_shape, name, n)
            suggested = [v for v, _ in proposals]
            scores = agent.last_scores if isinstance(agent, ScoringLineAgent) else None
            if scores is not None and len(scores):
                result.max_scores.append(float(np.nanmax(scores)))
                if result.max_scores[-1] < tolerance:
                    result.converged, result.reason = True, "converged"
                    break
            kept = clip_to_limits(step_motor, suggested, policy=out_of_limits)
            kept = np.clip(kept, *step_range)
            by_value = dict(proposals)
            for v in kept.tolist():  # de-duplicate against measured lines and the batch
                if all(abs(v - u) >= sep for u in measured + batch):
                    batch.append(v)
                    if by_value.get(v) is not None:
                        ids[v] = by_value[v]
            if batch:
                break
        first: list[float] = []
        if untrusted == "measure":  # measure where the twin extrapolates before trusting it
            first = _untrusted_first(
                twin,
                agent,
                step_motor,
                line_motor.name,
                line_points,
                suggested,
                measured,
                sep,
                n,
                step_range,
                trust_std,
            )
            if first:
                if result.converged:
                    result.converged, result.reason = False, ""
                rest = [v for v in batch if all(abs(v - u) >= sep for u in first)]
                batch = (first + rest)[:n]
                ids = {v: i for v, i in ids.items() if v in batch}
        if not result.converged and not batch:
            result.reason = "exhausted"
        decision = _decision(
            iteration + 1,
            agent,
            name,
            line_motor.name,
            line_points,
            twin,
            suggested,
            scores,
            batch,
            tolerance,
            trainer.version,
            result.reason,
            untrusted=untrusted,
            trust_std=trust_std,
            first=first,
        )
        if result.reason:  # converged or exhausted: no run follows, the decision gets a run of its own
            result.proposal = [v for v in suggested if v not in measured]
            break
        if len(measured) + len(batch) >= budget:
            decision["stop_reason"] = "budget"
        iteration += 1
    if result.reason in ("no twin", "converged", "exhausted"):  # no run follows: the decision gets its own
        if result.reason == "no twin":
            decision = _record(
                iteration + 1, "twin", [], [], [], [], tolerance, trainer.version, (np.nan, np.nan), result.reason
            )
        result.decisions.append(decision)
        stop_md = dict(
            base_md,
            stage="decision",
            adaptive_iteration=iteration + 1,
            twin_steered=trainer.version is not None,
            source_run_uids=list(result.run_uids),
            **bounded_provenance(trainer),
        )
        stop_md["hints"] = {}
        stop_md.update(md or {})
        result.decision_uid = yield from bpp.run_wrapper(record_decision(*_split(decision)), md=stop_md)
    logger.info(
        "twin_adaptive_scan: %d line(s) in %d run(s); stopped: %s", len(measured), len(result.run_uids), result.reason
    )
    return result


def _is_adaptive_shaped(agent: Any) -> bool:
    """True for a bluesky-adaptive agent: ``ingest(independent, dependent)`` takes two required arguments."""
    ingest = getattr(agent, "ingest", None)
    if not callable(ingest) or not callable(getattr(agent, "suggest", None)):
        return False
    try:
        params = inspect.signature(ingest).parameters.values()
    except (TypeError, ValueError):
        return False
    required = [p for p in params if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(required) >= 2


def _number(value: Any, agent: Any, raw: Any) -> float:
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)) and len(value) == 1:
        value = value[0]
    if isinstance(value, np.ndarray) and value.size == 1:
        value = value.reshape(-1)[0]
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InputError(f"the agent {type(agent).__name__} suggested {raw!r}: not a number of the step motor")
    return float(value)


def _suggestions(agent: Any, adaptive_shape: bool, name: str, n: int) -> list[tuple[float, Any]]:
    """Ask *agent* for *n* lines: ``[(step value, suggestion id or None)]``.

    Accepts a :class:`~bluesky_twin.protocols.LineAgent` / blop ``Optimizer`` (a list
    of dicts keyed by device name, with an optional ``"_id"``) and a bluesky-adaptive
    agent (``(docs, points)``, a point being the step value or a one-element
    sequence).  Anything else raises :class:`InputError` rather than ending the scan.
    """
    raw = agent.suggest(n)
    if adaptive_shape:
        if not (isinstance(raw, (tuple, list)) and len(raw) == 2):
            raise InputError(
                f"the agent {type(agent).__name__} is a bluesky-adaptive agent (ingest(x, y)) but "
                f"suggest({n}) returned {raw!r}, not (docs, points)"
            )
        points = raw[1]
        if isinstance(points, np.ndarray):
            points = list(points)
        out = []
        for p in points:
            if isinstance(p, Mapping):
                if name not in p:
                    raise InputError(f"the agent {type(agent).__name__} suggested {dict(p)!r}, which has no {name!r}")
                out.append((_number(p[name], agent, p), p.get("_id")))
            else:
                out.append((_number(p, agent, p), None))
        return out
    if isinstance(raw, (str, bytes, Mapping)) or not isinstance(raw, Sequence):
        raise InputError(
            f"the agent {type(agent).__name__}: suggest({n}) must return a list of dicts keyed by "
            f"device name; got {raw!r}"
        )
    out = []
    for p in raw:
        if not isinstance(p, Mapping) or name not in p:
            raise InputError(
                f"the agent {type(agent).__name__} suggested {p!r}: a suggestion must be a dict holding {name!r}"
            )
        out.append((_number(p[name], agent, p), p.get("_id")))
    return out


def _ingest(
    agent: Any,
    adaptive_shape: bool,
    name: str,
    batch: Sequence[float],
    ids: Mapping[float, Any],
    trainer: TwinSource,
    uid: str,
) -> None:
    """Tell *agent* which lines were measured (with their readings when the trainer kept them)."""
    from bluesky_twin.protocols import RecordingTwinSource

    y_by_line: dict[float, list[float]] = {}
    if isinstance(trainer, RecordingTwinSource):
        try:
            data = trainer.run_data(uid)
            column = np.asarray(data["x"])[:, list(trainer.x_fields).index(name)]
            for v in batch:
                y_by_line[v] = np.asarray(data["y"])[np.isclose(column, v)].tolist()
        except (KeyError, ValueError, IndexError):
            y_by_line = {}
    y_name = trainer.y_field
    if adaptive_shape:
        for v in batch:
            agent.ingest(v, y_by_line.get(v, []))
        return
    points = []
    for v in batch:
        point: dict[str, Any] = {name: v}
        if ids.get(v) is not None:
            point["_id"] = ids[v]
        if y_by_line.get(v):
            point[f"{y_name}_mean"] = float(np.mean(y_by_line[v]))
        points.append(point)
    agent.ingest(points)


def _split(decision: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(fields, rows)`` of a decision record (see :func:`~bluesky_twin.plans.stubs.record_decision`)."""
    return {k: v for k, v in decision.items() if k != "rows"}, decision.get("rows") or {}


def _record(
    iteration: int,
    source: str,
    candidates: Sequence[float],
    scores: Sequence[float],
    suggested: Sequence[float],
    batch: Sequence[float],
    tolerance: float,
    version: str | None,
    uncertainty: tuple[float, float],
    stop_reason: str,
    max_score: float | None = None,
    gate: TrustVerdict | None = None,
    untrusted: str = "record",
    first: Sequence[float] = (),
) -> dict[str, Any]:
    """A decision record: scalar fields plus a row per candidate (*scores* matches
    *candidates*), suggestion or proposed line; *gate* is the trust gate's verdict on
    the rows (``None``: not judged, e.g. the user's lines)."""
    values, score_col = list(candidates), list(scores)
    if max_score is None:
        max_score = float(np.nanmax(scores)) if len(scores) else float("nan")
    for v in list(suggested) + list(batch):
        if v not in values:
            values.append(v)
            score_col.append(float("nan"))
    proposal = list(batch) or list(suggested)
    if gate is None:
        trust: dict[str, Any] = {
            "trusted": None,
            "trust_reason": "",
            "untrusted_lines": [],
            "untrusted": untrusted,
            "trust_std": None,
        }
        line_trusted: list[Any] = [None] * len(values)
    else:
        trust = gate.subset(proposal).fields(untrusted)
        line_trusted = [int(gate.of(v)[0]) for v in values]
    return {
        "iteration": iteration,
        "source": source,
        "n_candidates": len(candidates),
        "suggestions": list(suggested),
        "proposed_lines": list(batch),
        "max_score": max_score,
        "tolerance": tolerance,
        "twin_version": str(version or ""),
        "twin_uncertainty": uncertainty[0],
        "twin_uncertainty_rel": uncertainty[1],
        "stop_reason": stop_reason,
        **trust,
        "measured_first": list(first),
        "rows": {
            "value": values,
            "score": score_col,
            "suggested": [int(v in suggested) for v in values],
            "proposed": [int(v in batch) for v in values],
            "line_trusted": line_trusted,
        },
    }


def _decision(
    iteration: int,
    agent: Any,
    name: str,
    line_name: str,
    line_points: np.ndarray,
    twin: Any,
    suggested: Sequence[float],
    scores: Any,
    batch: Sequence[float],
    tolerance: float,
    version: str | None,
    stop_reason: str,
    *,
    untrusted: str = "record",
    trust_std: float | None = None,
    first: Sequence[float] = (),
) -> dict[str, Any]:
    """The record of one decision (see :func:`twin_adaptive_scan`, Notes)."""
    candidates = getattr(agent, "candidates", None)
    score_list = [] if scores is None else np.asarray(scores, dtype=float).reshape(-1).tolist()
    cand_list = (
        []
        if candidates is None or len(np.asarray(candidates).reshape(-1)) != len(score_list)
        else np.asarray(candidates, dtype=float).reshape(-1).tolist()
    )
    grid = cand_list or list(suggested) or list(batch)
    unc = twin_uncertainty(twin, {name: grid, line_name: line_points}) if grid else (np.nan, np.nan)
    best = float(np.nanmax(score_list)) if score_list else float("nan")
    judged = list(dict.fromkeys([*cand_list, *suggested, *batch]))
    gate = trust_lines(twin, name, judged, {line_name: line_points}, max_std=trust_std)
    return _record(
        iteration,
        "agent",
        cand_list,
        score_list if cand_list else [],
        suggested,
        batch,
        tolerance,
        version,
        unc,
        stop_reason,
        max_score=best,
        gate=gate,
        untrusted=untrusted,
        first=first,
    )


def _untrusted_first(
    twin: Any,
    agent: Any,
    step_motor: NamedMovable,
    line_name: str,
    line_points: np.ndarray,
    suggested: Sequence[float],
    measured: Sequence[float],
    sep: float,
    n: int,
    step_range: tuple[float, float],
    trust_std: float | None,
) -> list[float]:
    """Up to *n* lines where the twin is not trusted, to measure before following the agent.

    The pool is the agent's ``candidates`` (else its suggestions) inside the limits and
    *step_range*, away from measured lines.  Lines outside the training range come
    first, the farthest from it first (the most extrapolated), then lines whose
    ensemble spread exceeds *trust_std*, the largest first.
    """
    if twin is None:
        return []
    name = step_motor.name
    candidates = getattr(agent, "candidates", None)
    pool = np.asarray(candidates if candidates is not None else list(suggested), dtype=float).reshape(-1)
    pool = np.clip(clip_to_limits(step_motor, pool, policy="refuse"), *step_range)
    pool = [float(v) for v in dict.fromkeys(pool.tolist()) if all(abs(v - u) >= sep for u in measured)]
    verdict = trust_lines(twin, name, pool, {line_name: line_points}, max_std=trust_std)
    if verdict.all_trusted or any(r.startswith(("no twin", "twin cannot")) for r in verdict.reasons):
        return []
    names = list(twin.x_names)
    lo, hi = np.asarray(twin.x_range, dtype=float)[names.index(name)] if hasattr(twin, "x_range") else (-np.inf, np.inf)

    def rank(i: int) -> tuple[int, float]:
        v = verdict.values[i]
        if verdict.outside[i]:
            return 0, -max(lo - v, v - hi, 0.0)
        return 1, -float(verdict.max_std[i])

    order = sorted((i for i, ok in enumerate(verdict.trusted) if not ok), key=rank)
    chosen: list[float] = []
    for i in order:
        v = verdict.values[i]
        if all(abs(v - u) >= sep for u in chosen):
            chosen.append(v)
        if len(chosen) == n:
            break
    return chosen
