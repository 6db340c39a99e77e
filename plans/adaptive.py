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
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field as dc_field

import numpy as np
from bluesky.protocols import NamedMovable, Readable
from bluesky.utils import MsgGenerator

from bluesky_twin.errors import InputError
from bluesky_twin.protocols import LineAgent, ScoringLineAgent, TwinSource

from .stubs import (
    check_limits,
    clip_to_limits,
    limits_of,
    motor_dimensions,
    require_common,
    require_devices,
    require_int,
    require_number,
    require_points,
    wait_for_twin,
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
    """

    run_uids: list[str] = dc_field(default_factory=list)
    lines: list[list[float]] = dc_field(default_factory=list)
    max_scores: list[float] = dc_field(default_factory=list)
    twin_versions: list[str | None] = dc_field(default_factory=list)
    converged: bool = False
    reason: str = ""

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
    trainer: TwinSource,
    agent: LineAgent | None = None,
    budget: int = 10,
    batch_size: int = 1,
    acquisition: str = "std",
    tolerance: float = 0.02,
    step_range: tuple[float, float] | None = None,
    out_of_limits: str = "clip",
    min_separation: float | None = None,
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
        :class:`~bluesky_twin.callbacks.TwinTrainer` subscribed to the RunEngine).
    agent
        A :class:`~bluesky_twin.protocols.LineAgent`: ``suggest(n) -> list[dict]`` and
        ``ingest(list[dict])`` keyed by device names.  Default:
        :class:`bluesky_twin.agent.TwinLineAgent`.
    budget
        Total number of lines to measure at most (initial ones included).
    batch_size
        Lines per iteration (one run each iteration).
    acquisition
        ``"std"`` or ``"derived"`` for the default agent.
    tolerance
        Converged when the agent's best score is below it (agents that are a
        :class:`~bluesky_twin.protocols.ScoringLineAgent`, as the default one).
    step_range
        ``(low, high)`` for proposals, within the limits (default: the limits).
    out_of_limits
        ``"clip"`` or ``"refuse"`` proposals outside the limits.
    min_separation
        Lines closer than this to a measured one are not measured again.
    twin_timeout, poll_interval
        Waiting for each refit.
    per_step
        Passed to :func:`bluesky.plans.scan_nd`.
    md
        Extra metadata for every run.

    Returns
    -------
    AdaptiveScanResult

    Raises
    ------
    InputError
        A bad argument (one line), before the first message: nothing has moved.  This
        includes a scan of more than :data:`~bluesky_twin.plans.stubs.MAX_POINTS`
        readings (``budget * line_num``).
    LimitError
        An explicit value (line points, initial lines, ``step_range``) outside the limits.
    """
    import bluesky.plans as bp
    from cycler import cycler

    # ---- argument checks: all of them before the first message (nothing moves before they pass) ----
    detectors = require_devices(detectors, {"line_motor": line_motor, "step_motor": step_motor})
    require_common(trainer=trainer, per_step=per_step, md=md, twin_timeout=twin_timeout,
                   poll_interval=poll_interval)
    line_start = require_number("line_start", line_start)
    line_stop = require_number("line_stop", line_stop)
    if line_start == line_stop:
        raise InputError(f"line_start and line_stop must differ; both are {line_start}")
    line_num = require_int("line_num", line_num, minimum=3)
    budget = require_int("budget", budget, minimum=1)
    batch_size = require_int("batch_size", batch_size, minimum=1)
    require_points("the scan", budget * line_num, f"a budget of {budget} lines x {line_num} points per line",
                   "use a smaller budget or line_num")
    if out_of_limits not in ("clip", "refuse"):
        raise InputError(f"out_of_limits must be 'clip' or 'refuse'; got {out_of_limits!r}")
    if agent is None:
        if acquisition not in ("std", "derived"):
            raise InputError(f"acquisition must be 'std' or 'derived'; got {acquisition!r}")
    elif not isinstance(agent, LineAgent):
        raise InputError(f"agent must have suggest(n) and ingest(points) (a LineAgent); got {type(agent).__name__}")
    tolerance = require_number("tolerance", tolerance, minimum=0.0)
    for m in (line_motor, step_motor):
        if m.name not in trainer.x_fields:
            raise InputError(f"{m.name!r} is not an input of the trainer {trainer.x_fields}")
    if line_motor.name == step_motor.name:
        raise InputError("line_motor and step_motor must be different positioners")
    line_points = check_limits(line_motor, np.linspace(line_start, line_stop, line_num), what="line point")
    if isinstance(initial_lines, (str, bytes)) or not hasattr(initial_lines, "__iter__"):
        raise InputError(f"initial_lines must be a list of {step_motor.name} values; got {initial_lines!r}")
    initial = check_limits(step_motor, [require_number("initial line", v) for v in initial_lines],
                           what="initial line")
    if len(initial) == 0:
        raise InputError("initial_lines must not be empty")
    lim = limits_of(step_motor)
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
    sep = (require_number("min_separation", min_separation, minimum=0.0) if min_separation is not None
           else (step_range[1] - step_range[0]) / 200.0)
    if agent is None:
        from bluesky_twin.agent import TwinLineAgent

        agent = TwinLineAgent(trainer, step_axis=step_motor.name, line_axis=line_motor.name,
                              line_points=line_points, bounds=step_range, acquisition=acquisition,
                              min_separation=sep)
    name = step_motor.name
    plan_args = {"detectors": list(map(repr, detectors)), "line_motor": repr(line_motor), "line_start": line_start,
                 "line_stop": line_stop, "line_num": line_num, "step_motor": repr(step_motor),
                 "initial_lines": initial.tolist(), "trainer": repr(trainer), "agent": repr(agent),
                 "budget": budget, "batch_size": batch_size, "acquisition": acquisition, "tolerance": tolerance,
                 "step_range": list(step_range), "out_of_limits": out_of_limits, "per_step": repr(per_step)}
    result = AdaptiveScanResult()
    measured: list[float] = []
    batch = list(dict.fromkeys(initial.tolist()))[:budget]
    iteration = 0
    while True:
        _md = {"detectors": [d.name for d in detectors], "motors": [name, line_motor.name],
               "plan_name": "twin_adaptive_scan", "plan_args": plan_args, "adaptive_iteration": iteration,
               "hints": {"dimensions": motor_dimensions([step_motor, line_motor])},
               "twin_steered": trainer.version is not None, **trainer.provenance()}
        _md.update(md or {})
        uid = yield from bp.scan_nd(list(detectors), cycler(step_motor, batch) * cycler(line_motor, line_points),
                                    per_step=per_step, md=_md)
        result.run_uids.append(uid)
        result.lines.append(list(batch))
        measured.extend(batch)
        agent.ingest([{name: v} for v in batch])
        twin = yield from wait_for_twin(trainer, run_uid=uid, timeout=twin_timeout, poll_interval=poll_interval)
        result.twin_versions.append(trainer.version)
        if twin is None:
            result.reason = "no twin"
            break
        if len(measured) >= budget:
            result.reason = "budget"
            break
        n = min(batch_size, budget - len(measured))
        batch = []
        for _attempt in range(3):  # proposals all refused/duplicates: ask again, a few times
            proposals = [float(p[name]) for p in agent.suggest(n) if name in p]
            scores = agent.last_scores if isinstance(agent, ScoringLineAgent) else None
            if scores is not None and len(scores):
                result.max_scores.append(float(np.nanmax(scores)))
                if result.max_scores[-1] < tolerance:
                    result.converged, result.reason = True, "converged"
                    break
            proposals = clip_to_limits(step_motor, proposals, policy=out_of_limits)
            proposals = np.clip(proposals, *step_range)
            for v in proposals.tolist():  # de-duplicate against measured lines and the batch
                if all(abs(v - u) >= sep for u in measured + batch):
                    batch.append(v)
            if batch:
                break
        if result.converged:
            break
        if not batch:
            result.reason = "exhausted"
            break
        iteration += 1
    logger.info("twin_adaptive_scan: %d line(s) in %d run(s); stopped: %s", len(measured), len(result.run_uids),
                result.reason)
    return result
