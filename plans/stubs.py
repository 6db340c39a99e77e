"""Plan stubs shared by the twin-steered plans: waiting for a twin, positioner limits.

``wait_for_twin`` polls the trainer with ``bps.sleep`` so that the RunEngine's event
loop stays free (pause, resume and Ctrl-C keep working while a refit runs).
``limits_of`` / ``check_limits`` / ``clip_to_limits`` make sure no motor is ever
commanded outside its limits: explicit user values are refused up front with
:class:`~bluesky_twin.errors.LimitError`, model proposals are clipped (or dropped).

``require_int``, ``require_number``, ``require_points``, ``require_devices`` and
``require_common`` check plan arguments before a plan yields its first message: a bad
argument raises :class:`~bluesky_twin.errors.InputError` (one line) and nothing moves.
Devices are checked against bluesky's protocols (:class:`~bluesky.protocols.Readable`,
:class:`~bluesky.protocols.Movable`), the trainer against
:class:`~bluesky_twin.protocols.TwinSource` (:func:`require_source`).
``require_points`` bounds the readings a run (or a model evaluation) implies to
:data:`MAX_POINTS`.

The trust gate: :func:`trust_lines` judges whether a twin may be trusted on proposed
lines (outside its training range, or an ensemble spread above a threshold), and
:func:`require_untrusted` checks what a plan does with an untrusted proposal
(:data:`UNTRUSTED_MODES`).
"""

import hashlib
import logging
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from bluesky.protocols import HasHints, HasName, Movable, NamedMovable, Readable
from bluesky.utils import MsgGenerator

from bluesky_twin.errors import InputError, LimitError
from bluesky_twin.protocols import HasLimits, Twin, TwinSource, require

logger = logging.getLogger(__name__)

__all__ = [
    "MAX_POINTS",
    "RANGE_TOLERANCE",
    "UNTRUSTED_MODES",
    "WAIT_MARGIN_S",
    "TrustVerdict",
    "TwinUnavailableError",
    "bounded_provenance",
    "check_limits",
    "clip_to_limits",
    "fit_budget",
    "limits_of",
    "motor_dimensions",
    "record_decision",
    "require_common",
    "require_devices",
    "require_int",
    "require_number",
    "require_points",
    "require_source",
    "require_untrusted",
    "resolve_named",
    "training_digest",
    "trust_lines",
    "twin_uncertainty",
    "wait_for_twin",
    "with_decision",
]

#: Seconds added to a fit's own budget (``timeout``/``budget`` of its kwargs) when waiting for it.
WAIT_MARGIN_S = 30.0

#: Most readings one run of a plan may imply, and most model evaluations a step study may
#: imply (a 1e-9 T step over 3 T would otherwise ask for billions).
MAX_POINTS = 1_000_000


class TwinUnavailableError(RuntimeError):
    """No (fresh) twin was available within the timeout, or its fit failed."""


def fit_budget(trainer: Any) -> float | None:
    """The longest time budget (s) the trainer gives its fits, or ``None`` if it sets none.

    Read from ``timeout`` or ``budget`` in the trainer's ``fit_kwargs`` and ``refit_kwargs``
    (as :class:`~bluesky_twin.callbacks.TwinTrainer` keeps them).
    """
    budgets = []
    for attr in ("fit_kwargs", "refit_kwargs"):
        kwargs = getattr(trainer, attr, None)
        if not isinstance(kwargs, Mapping):
            continue
        for key in ("timeout", "budget"):
            v = kwargs.get(key)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0:
                budgets.append(float(v))
    return max(budgets) if budgets else None


def wait_for_twin(
    trainer: TwinSource | str,
    *,
    run_uid: str | None = None,
    newer_than: str | None = None,
    timeout: float = 60.0,
    poll_interval: float = 0.2,
) -> MsgGenerator[Twin | None]:
    """Wait (inside a plan) until the trainer has a twin trained on *run_uid*.

    Every poll starts with ``bps.checkpoint()``, so a pause requested while waiting
    (Ctrl-C, ``RE.request_pause()``) takes effect at once and ``RE.resume()`` goes on
    waiting.  Time spent paused does not count against *timeout*.

    Parameters
    ----------
    trainer
        A :class:`~bluesky_twin.protocols.TwinSource` (e.g. a
        :class:`~bluesky_twin.callbacks.TwinTrainer` subscribed to the RunEngine), or
        the name it is registered under (:mod:`bluesky_twin.registry`).
    run_uid
        Require a twin whose training data includes this run.
    newer_than
        Require a twin version different from this one.
    timeout
        Seconds to wait at least.  When the trainer's fits have a time budget
        (:func:`fit_budget`), the wait lasts at least that budget plus
        :data:`WAIT_MARGIN_S`.
    poll_interval
        Seconds between polls (each poll is a ``bps.checkpoint`` and a ``bps.sleep``).

    Returns
    -------
    The twin, or ``None`` on timeout or when it can no longer appear (the run was
    rejected or the fit failed: see ``trainer.status``).
    """
    import bluesky.plan_stubs as bps

    trainer = require_source(resolve_named(trainer, "trainer"))
    timeout = require_number("timeout", timeout, minimum=0.0, allow_inf=True)
    poll_interval = require_number("poll_interval", poll_interval, minimum=0.0, strict=True)
    budget = fit_budget(trainer)
    if budget is not None:
        timeout = max(timeout, budget + WAIT_MARGIN_S)
    waited = 0.0
    while True:
        yield from bps.checkpoint()
        done, twin = trainer.poll(newer_than=newer_than, run_uid=run_uid)
        if done:
            if twin is None:
                logger.warning("wait_for_twin: no twin for run %s: %s", run_uid, trainer.status.get("last_error"))
            return twin
        remaining = timeout - waited
        if remaining <= 0:
            logger.warning(
                "wait_for_twin: timed out after %.1f s (trainer status: %s)", timeout, trainer.status.get("state")
            )
            return None
        step = min(poll_interval, remaining)
        t0 = time.monotonic()
        yield from bps.sleep(step)
        elapsed = time.monotonic() - t0
        # a pause (or a resume that replays the sleep) shows up as a long sleep: count the step only
        waited += elapsed if elapsed <= step + 1.0 else step


def limits_of(motor: NamedMovable) -> tuple[float, float] | None:
    """``(low, high)`` of a positioner, or ``None`` if it declares none.

    A positioner declares limits by being a :class:`~bluesky_twin.protocols.HasLimits`;
    ophyd's convention that ``low >= high`` (e.g. ``(0, 0)``) means "no limits" holds.
    """
    if not isinstance(motor, HasLimits):
        return None
    lim = motor.limits
    if lim is None:
        return None
    low, high = float(lim[0]), float(lim[1])
    if not (math.isfinite(low) and math.isfinite(high)) or not low < high:
        return None
    return low, high


def check_limits(motor: NamedMovable, values: Iterable[float], *, what: str = "value") -> np.ndarray:
    """Return *values* as an array, or raise :class:`LimitError` if any lies outside the limits.

    Raises
    ------
    LimitError
        Listing the offending values and the limits; nothing has moved.
    """
    arr = np.asarray(list(values), dtype=float).reshape(-1)
    if not np.isfinite(arr).all():
        raise LimitError(f"{motor.name}: {what}s must be finite; got {arr.tolist()}")
    lim = limits_of(motor)
    if lim is not None:
        bad = arr[(arr < lim[0]) | (arr > lim[1])]
        if len(bad):
            raise LimitError(
                f"{motor.name}: {what}(s) {bad.tolist()} outside the limits [{lim[0]:g}, {lim[1]:g}]; nothing was moved"
            )
    return arr


def clip_to_limits(motor: NamedMovable, values: Sequence[float], *, policy: str = "clip") -> np.ndarray:
    """Bring model proposals inside a motor's limits.

    Parameters
    ----------
    motor
        The positioner (its ``.limits`` are read).
    values
        Proposed positions.
    policy
        ``"clip"``: move them onto the nearest limit; ``"refuse"``: drop them.

    Returns
    -------
    numpy.ndarray
        Values that are all within the limits (non-finite proposals are dropped).

    Raises
    ------
    InputError
        An unknown *policy*.
    """
    if policy not in ("clip", "refuse"):
        raise InputError(f"policy must be 'clip' or 'refuse'; got {policy!r}")
    arr = np.asarray(list(values), dtype=float).reshape(-1)
    dropped = arr[~np.isfinite(arr)]
    arr = arr[np.isfinite(arr)]
    lim = limits_of(motor)
    if lim is not None:
        outside = (arr < lim[0]) | (arr > lim[1])
        if outside.any():
            logger.warning(
                "%s: proposals %s outside limits %s were %s",
                motor.name,
                arr[outside].tolist(),
                lim,
                "clipped" if policy == "clip" else "refused",
            )
        arr = np.clip(arr, lim[0], lim[1]) if policy == "clip" else arr[~outside]
    if len(dropped):
        logger.warning("%s: dropped non-finite proposals %s", motor.name, dropped.tolist())
    return arr


def motor_dimensions(motors: Sequence[HasName], stream: str = "primary") -> list[tuple[list[str], str]]:
    """``hints["dimensions"]`` entries for *motors* (their hinted fields, else their names)."""
    dims = []
    for m in motors:
        hinted = m.hints.get("fields", []) if isinstance(m, HasHints) else []
        fields = list(hinted or [m.name])
        dims.append((fields, stream))
    return dims


# ----------------------------------------------------------------------------- argument checks


def require_int(name: str, value: Any, *, minimum: int = 1, maximum: int = MAX_POINTS) -> int:
    """*value* as an ``int`` in ``[minimum, maximum]``.

    Raises
    ------
    InputError
        Not an integer (``3.5``, ``True``, ``"3"``), or out of range.
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer, float, np.floating)):
        raise InputError(f"{name} must be an integer; got {value!r}")
    if isinstance(value, (float, np.floating)) and not (math.isfinite(value) and float(value).is_integer()):
        raise InputError(f"{name} must be an integer; got {value!r}")
    v = int(value)
    if not minimum <= v <= maximum:
        raise InputError(f"{name} must be between {minimum} and {maximum:,}; got {v}")
    return v


def require_number(
    name: str,
    value: Any,
    *,
    minimum: float | None = None,
    strict: bool = False,
    allow_inf: bool = False,
    optional: bool = False,
) -> float | None:
    """*value* as a finite ``float`` (``>= minimum``, or ``> minimum`` with *strict*).

    Raises
    ------
    InputError
        Not a number, NaN, infinite (unless *allow_inf*), or below the minimum.
    """
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InputError(f"{name} must be a number; got {value!r}")
    v = float(value)
    if math.isnan(v) or (math.isinf(v) and not allow_inf):
        raise InputError(f"{name} must be a finite number; got {value!r}")
    if minimum is not None and (v <= minimum if strict else v < minimum):
        raise InputError(f"{name} must be {'>' if strict else '>='} {minimum:g}; got {value!r}")
    return v


def require_points(what: str, n: float, how: str, advice: str) -> int:
    """Refuse a run or a model evaluation of more than :data:`MAX_POINTS` points.

    Parameters
    ----------
    what
        What the points are for (``"the coarse run"``).
    n
        How many points the arguments imply (may be a huge float).
    how
        How *n* comes about (``"4 fields x 10 temperatures"``).
    advice
        Which arguments to change.
    """
    if not n <= MAX_POINTS:  # also catches inf / nan
        raise InputError(f"{what} would take {n:,.0f} points ({how}); at most {MAX_POINTS:,}: {advice}")
    return int(n)


def require_devices(detectors: Any, motors: Mapping[str, Any]) -> list[Readable]:
    """Check that *detectors* is a non-empty sequence of :class:`~bluesky.protocols.Readable`
    devices and each motor a named :class:`~bluesky.protocols.Movable`.

    Raises
    ------
    InputError
        One line naming the first argument that does not fit.
    """
    if isinstance(detectors, (str, bytes, Mapping)) or not isinstance(detectors, Iterable):
        raise InputError(f"detectors must be a list of readable devices; got {detectors!r}")
    dets = list(detectors)
    if not dets:
        raise InputError("detectors must not be empty")
    for d in dets:
        require(d, Readable, "each detector", "a readable device (bluesky.protocols.Readable)")
    for name, m in motors.items():
        require(m, Movable, name, "a movable device (bluesky.protocols.Movable)")
        require(m, HasName, name, "a named device (bluesky.protocols.HasName)")
    return dets


def require_source(trainer: Any) -> TwinSource:
    """*trainer* (or the trainer registered under that name) if it is a
    :class:`~bluesky_twin.protocols.TwinSource`, else a one-line
    :class:`~bluesky_twin.errors.InputError`."""
    trainer = resolve_named(trainer, "trainer")
    return require(trainer, TwinSource, "trainer", "a TwinTrainer or another TwinSource")


def require_common(*, trainer: Any, per_step: Any, md: Any, twin_timeout: Any, poll_interval: Any) -> TwinSource:
    """Checks shared by the twin-steered plans: the trainer, ``per_step``, ``md`` and the waits.

    Returns the trainer (resolved from its registered name if a string was given).
    """
    trainer = require_source(trainer)
    if per_step is not None and not callable(per_step):
        raise InputError(f"per_step must be callable or None; got {per_step!r}")
    if md is not None and not isinstance(md, dict):
        raise InputError(f"md must be a dict or None; got {type(md).__name__}")
    require_number("twin_timeout", twin_timeout, minimum=0.0, allow_inf=True)
    require_number("poll_interval", poll_interval, minimum=0.0, strict=True)
    return trainer


def resolve_named(value: Any, what: str) -> Any:
    """*value* itself, or the object registered under the name *value* (:mod:`bluesky_twin.registry`).

    bluesky-queueserver passes plan parameters as JSON, so objects that are neither
    devices nor plans (a trainer, an agent) travel by name.  The caller checks the
    object against its protocol afterwards.

    Raises
    ------
    InputError
        *value* is a string that names no registered object.
    """
    if isinstance(value, str):
        from bluesky_twin.registry import resolve

        return resolve(value, None, what)
    return value


# ----------------------------------------------------------------------------- provenance and decisions


def training_digest(run_uids: Iterable[str]) -> str:
    """sha256 (hex) of the training runs' uids, one per line in training order."""
    return hashlib.sha256("\n".join(map(str, run_uids)).encode()).hexdigest()


def bounded_provenance(trainer: TwinSource) -> dict[str, Any]:
    """Start-document provenance of the trainer's current twin, of bounded size.

    ``trainer.provenance()`` with its (ever-growing) ``twin_training_run_uids`` list
    replaced by ``twin_training_runs`` (their count) and ``twin_training_digest``
    (:func:`training_digest` of the list): ``twin_version``, ``twin_study_name``,
    ``twin_x``, ``twin_y``, ``twin_training_runs``, ``twin_training_digest``.
    """
    prov = dict(trainer.provenance())
    uids = list(prov.pop("twin_training_run_uids", None) or [])
    prov["twin_training_runs"] = len(uids)
    prov["twin_training_digest"] = training_digest(uids)
    return prov


def _scalar(value: Any) -> Any:
    """A value an event column can hold in any tiled table storage: a number or a string."""
    if value is None:
        return float("nan")
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, (int, float, str)):
        return value
    if isinstance(value, (list, tuple, np.ndarray)):
        import json

        return json.dumps(np.asarray(value, dtype=float).reshape(-1).tolist())
    return str(value)


def record_decision(
    fields: Mapping[str, Any],
    rows: Mapping[str, Sequence[Any]] | None = None,
    *,
    stream: str = "decisions",
    signals: dict[str, Any] | None = None,
) -> MsgGenerator[list[dict[str, Any]]]:
    """Record one decision of a twin-steered plan in the *stream* of the open run.

    Like blop's ``read_step``, the decision is a small table: one event per row of
    *rows* (a candidate with its score and flags), each also carrying the scalar
    *fields* (proposal, stop reason, twin version...).  Every value is a scalar (a
    number or a string; a list in *fields* becomes a JSON string, ``None`` NaN,
    booleans 0/1), read from ophyd :class:`~ophyd.Signal` objects named
    ``decision_<key>``, so the stream has an ordinary descriptor and TiledWriter's
    SQL tables store it.  Without rows, one event holds the fields.

    Parameters
    ----------
    fields
        ``{key: value}`` common to the decision.
    rows
        ``{key: sequence}``, all sequences of one length (a row per candidate).
    stream
        Name of the event stream.
    signals
        A dict the plan keeps for the run: the ``decision_<key>`` signals are taken from
        it (and added to it), so that several decisions recorded in one run read the
        same objects, as bluesky requires of one stream.  Every decision of the run
        must then have the same keys.  ``None``: new signals (one decision per run).

    Returns
    -------
    list of dict
        The readings, one per event.
    """
    import bluesky.plan_stubs as bps
    from ophyd import Signal

    rows = {k: list(v) for k, v in (rows or {}).items()}
    lengths = {len(v) for v in rows.values()}
    if len(lengths) > 1:
        raise InputError(f"decision rows of different lengths: { {k: len(v) for k, v in rows.items()} }")
    n = lengths.pop() if lengths else 0
    clash = set(rows) & set(fields)
    if clash:
        raise InputError(f"decision keys both in fields and rows: {sorted(clash)}")
    common = {k: _scalar(v) for k, v in fields.items()}
    cache = signals if signals is not None else {}
    if signals:
        changed = sorted(set(cache) ^ (set(common) | set(rows)))
        if changed:
            raise InputError(f"a decision of this run has other keys than the earlier ones: {changed}")
    for k in list(common) + list(rows):
        if k not in cache:
            cache[k] = Signal(name=f"decision_{k}", value=float("nan"), kind="hinted")
    for k, v in common.items():
        cache[k].put(v)
    signals = {k: cache[k] for k in list(common) + list(rows)}
    readings = []
    for i in range(max(n, 1)):
        for k, col in rows.items():
            signals[k].put(_scalar(col[i]) if n else float("nan"))
        yield from bps.create(stream)
        reading: dict[str, Any] = {}
        for sig in signals.values():
            reading.update((yield from bps.read(sig)) or {})
        yield from bps.save()
        readings.append(reading)
    return readings


def with_decision(
    plan: MsgGenerator[Any],
    fields: Mapping[str, Any],
    rows: Mapping[str, Sequence[Any]] | None = None,
    *,
    stream: str = "decisions",
) -> MsgGenerator[Any]:
    """Run *plan* (one run) with *fields* recorded right after its ``open_run`` (:func:`record_decision`).

    This is how a plan built on ``bp.list_grid_scan`` (or any plan owning its run)
    stores the decision that made it, inside the run it made.  The return value of
    *plan* is passed on.
    """
    import bluesky.preprocessors as bpp

    seen = False

    def insert(msg: Any) -> tuple[Any, Any]:
        nonlocal seen
        if msg.command == "open_run" and not seen:
            seen = True
            return None, record_decision(fields, rows, stream=stream)
        return None, None

    return (yield from bpp.plan_mutator(plan, insert))


def twin_uncertainty(
    twin: Any, axes: Mapping[str, Sequence[float]], fixed: Mapping[str, float] | None = None
) -> tuple[float, float]:
    """Mean predicted standard deviation of *twin* over the grid of *axes*.

    Returns
    -------
    (absolute, relative)
        The mean ``std`` in the unit of the twin's output, and the same divided by the
        spread (standard deviation) of the predicted means; NaN where the twin cannot
        be evaluated (missing inputs, no twin).
    """
    nan = (float("nan"), float("nan"))
    if twin is None:
        return nan
    try:
        names = list(twin.x_names)
        values = dict(fixed or {})
        grids = np.meshgrid(
            *[np.asarray(axes[n], dtype=float) if n in axes else np.asarray([values[n]], dtype=float) for n in names],
            indexing="ij",
        )
        X = np.column_stack([g.reshape(-1) for g in grids])
        mean, std = twin.predict(X)
    except Exception as exc:  # noqa: BLE001 - a record, never a reason to stop the plan
        logger.debug("twin_uncertainty: %s", exc)
        return nan
    absolute = float(np.nanmean(np.asarray(std, dtype=float)))
    spread = float(np.nanstd(np.asarray(mean, dtype=float)))
    return absolute, (absolute / spread if spread > 0 else float("nan"))


# ----------------------------------------------------------------------------- the trust gate

#: What a twin-steered plan does with a proposal where the twin extrapolates: ``"record"``
#: it in the decisions stream and go on, or ``"measure"`` there first.
UNTRUSTED_MODES = ("record", "measure")

#: Share of an axis' training span by which a proposal may pass the edge of the training
#: range and still count as inside (readbacks scatter around their setpoints).
RANGE_TOLERANCE = 0.01


def require_untrusted(value: Any) -> str:
    """*value* if it is one of :data:`UNTRUSTED_MODES`, else a one-line :class:`InputError`."""
    if not isinstance(value, str) or value not in UNTRUSTED_MODES:
        raise InputError(f"untrusted must be one of {list(UNTRUSTED_MODES)}; got {value!r}")
    return value


@dataclass
class TrustVerdict:
    """Whether a twin may be trusted on each proposed line (:func:`trust_lines`).

    Attributes
    ----------
    values
        The proposals (step-axis values), in the order given.
    trusted
        Per proposal: inside the training range and, with a threshold, an ensemble spread
        no larger than it.
    outside
        Per proposal: some point of the line lies outside the twin's training range.
    max_std
        Per proposal: the largest ensemble spread along the line (NaN if not evaluated).
    reasons
        Per proposal: ``""`` when trusted, else why not (``"outside the training range"``,
        ``"ensemble spread 0.012 > 0.01"``, ``"no twin"``, ``"twin cannot be evaluated: ..."``).
    threshold
        The ensemble-spread threshold used (``None``: none).
    """

    values: list[float]
    trusted: list[bool]
    outside: list[bool]
    max_std: list[float]
    reasons: list[str]
    threshold: float | None = None

    @property
    def all_trusted(self) -> bool:
        """True when every proposal is trusted (also when there is none)."""
        return all(self.trusted)

    @property
    def untrusted(self) -> list[float]:
        """The proposals that are not trusted, in order."""
        return [v for v, ok in zip(self.values, self.trusted) if not ok]

    def reason(self) -> str:
        """One line: ``""`` when all are trusted, else each untrusted value with its reason."""
        return "; ".join(f"{v:g}: {r}" for v, r, ok in zip(self.values, self.reasons, self.trusted) if not ok)

    def fields(self, mode: str) -> dict[str, Any]:
        """The decision fields of the gate: ``trusted`` (0/1), ``trust_reason``, ``untrusted_lines``,
        ``untrusted`` (the mode) and ``trust_std`` (the threshold, NaN for none)."""
        return {
            "trusted": int(self.all_trusted),
            "trust_reason": self.reason(),
            "untrusted_lines": self.untrusted,
            "untrusted": mode,
            "trust_std": float("nan") if self.threshold is None else self.threshold,
        }

    def subset(self, values: Iterable[float]) -> "TrustVerdict":
        """The verdict on *values* only (those it judged), in the order given."""
        index = {v: i for i, v in enumerate(self.values)}
        keep = [index[float(v)] for v in values if float(v) in index]
        return TrustVerdict(
            [self.values[i] for i in keep],
            [self.trusted[i] for i in keep],
            [self.outside[i] for i in keep],
            [self.max_std[i] for i in keep],
            [self.reasons[i] for i in keep],
            self.threshold,
        )

    def of(self, value: float) -> tuple[bool, str]:
        """``(trusted, reason)`` of one proposal (trusted when it was not judged)."""
        for v, ok, r in zip(self.values, self.trusted, self.reasons):
            if v == value:
                return ok, r
        return True, ""


def _outside(twin: Any, X: np.ndarray) -> np.ndarray:
    """Points of *X* outside *twin*'s training range (edges widened by :data:`RANGE_TOLERANCE`)."""
    x_range = getattr(twin, "x_range", None)
    if x_range is None:
        return np.zeros(len(X), dtype=bool)
    rng = np.asarray(x_range, dtype=float)
    lo, hi = rng[:, 0], rng[:, 1]
    tol = RANGE_TOLERANCE * (hi - lo)
    near = np.clip(X, lo - tol, hi + tol)
    snapped = np.where(X == near, np.clip(X, lo, hi), X)  # within the tolerance: on the edge
    method = getattr(twin, "outside_training_range", None)
    if callable(method):
        return np.asarray(method(snapped), dtype=bool).reshape(-1)
    return ((snapped < lo) | (snapped > hi)).any(axis=1)


def trust_lines(
    twin: Any,
    step_axis: str,
    values: Sequence[float],
    axes: Mapping[str, Sequence[float]],
    *,
    max_std: float | None = None,
) -> TrustVerdict:
    """Judge whether *twin* may be trusted on each proposed line.

    A line is the step axis at one of *values* with the other inputs over the grid of
    *axes*.  It is untrusted when any of its points lies outside the twin's training
    range (``twin.outside_training_range``, each edge widened by
    :data:`RANGE_TOLERANCE` of the axis span so that readback scatter does not count),
    or when *max_std* is given and the ensemble spread somewhere along it exceeds it.

    Parameters
    ----------
    twin
        The twin (``None``: nothing is trusted).
    step_axis
        The twin input the proposals are values of.
    values
        The proposals.
    axes
        ``{twin input: grid}`` of the other inputs along each line.
    max_std
        Largest ensemble spread (standard deviation, in the twin's output unit) that is
        trusted; ``None`` judges on the training range alone.

    Returns
    -------
    TrustVerdict
    """
    vals = [float(v) for v in values]
    n = len(vals)
    if twin is None:
        return TrustVerdict(vals, [False] * n, [False] * n, [float("nan")] * n, ["no twin"] * n, max_std)
    if not n:
        return TrustVerdict([], [], [], [], [], max_std)
    try:
        names = list(twin.x_names)
        grids = [np.asarray(axes[x], dtype=float).reshape(-1) for x in names if x != step_axis]
        if step_axis not in names:
            raise KeyError(step_axis)
        mesh = np.meshgrid(*grids, indexing="ij") if grids else []
        per_line = int(np.prod([len(g) for g in grids])) if grids else 1
        blocks = []
        for v in vals:
            cols, k = [], 0
            for x in names:
                if x == step_axis:
                    cols.append(np.full(per_line, v))
                else:
                    cols.append(mesh[k].reshape(-1))
                    k += 1
            blocks.append(np.column_stack(cols))
        X = np.concatenate(blocks)
        outside = _outside(twin, X).reshape(n, per_line).any(axis=1)
        _, std = twin.predict(X)
        spread = np.asarray(std, dtype=float).reshape(n, per_line).max(axis=1)
    except Exception as exc:  # noqa: BLE001 - an unusable twin is an untrusted one, never a crash
        reason = f"twin cannot be evaluated: {exc}"
        return TrustVerdict(vals, [False] * n, [False] * n, [float("nan")] * n, [reason] * n, max_std)
    trusted, reasons = [], []
    for out, s in zip(outside.tolist(), spread.tolist()):
        why = []
        if out:
            why.append("outside the training range")
        if max_std is not None and not s <= max_std:
            why.append(f"ensemble spread {s:.3g} > {max_std:.3g}")
        trusted.append(not why)
        reasons.append(", ".join(why))
    return TrustVerdict(vals, trusted, outside.tolist(), spread.tolist(), reasons, max_std)
