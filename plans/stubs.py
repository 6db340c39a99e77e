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
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from bluesky.protocols import HasHints, HasName, Movable, NamedMovable, Readable
from bluesky.utils import MsgGenerator

from bluesky_twin.errors import InputError, LimitError
from bluesky_twin.protocols import HasLimits, Twin, TwinSource, require

logger = logging.getLogger(__name__)

__all__ = ["MAX_POINTS", "TwinUnavailableError", "check_limits", "clip_to_limits", "limits_of", "motor_dimensions",
           "require_common", "require_devices", "require_int", "require_number", "require_points", "require_source",
           "wait_for_twin"]

#: Most readings one run of a plan may imply, and most model evaluations a step study may
#: imply (a 1e-9 T step over 3 T would otherwise ask for billions).
MAX_POINTS = 1_000_000


class TwinUnavailableError(RuntimeError):
    """No (fresh) twin was available within the timeout, or its fit failed."""


def wait_for_twin(
    trainer: TwinSource,
    *,
    run_uid: str | None = None,
    newer_than: str | None = None,
    timeout: float = 60.0,
    poll_interval: float = 0.2,
) -> MsgGenerator[Twin | None]:
    """Wait (inside a plan) until the trainer has a twin trained on *run_uid*.

    Parameters
    ----------
    trainer
        A :class:`~bluesky_twin.protocols.TwinSource` (e.g. a
        :class:`~bluesky_twin.callbacks.TwinTrainer` subscribed to the RunEngine).
    run_uid
        Require a twin whose training data includes this run.
    newer_than
        Require a twin version different from this one.
    timeout
        Seconds to wait at most.
    poll_interval
        Seconds between polls (each poll is a ``bps.sleep``).

    Returns
    -------
    The twin, or ``None`` on timeout or when it can no longer appear (the run was
    rejected or the fit failed: see ``trainer.status``).
    """
    import bluesky.plan_stubs as bps

    require_source(trainer)
    require_number("timeout", timeout, minimum=0.0, allow_inf=True)
    require_number("poll_interval", poll_interval, minimum=0.0, strict=True)
    deadline = time.monotonic() + timeout
    while True:
        done, twin = trainer.poll(newer_than=newer_than, run_uid=run_uid)
        if done:
            if twin is None:
                logger.warning("wait_for_twin: no twin for run %s: %s", run_uid, trainer.status.get("last_error"))
            return twin
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            logger.warning("wait_for_twin: timed out after %.1f s (trainer status: %s)", timeout,
                           trainer.status.get("state"))
            return None
        yield from bps.sleep(min(poll_interval, remaining))


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
            logger.warning("%s: proposals %s outside limits %s were %s", motor.name, arr[outside].tolist(), lim,
                           "clipped" if policy == "clip" else "refused")
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


def require_number(name: str, value: Any, *, minimum: float | None = None, strict: bool = False,
                   allow_inf: bool = False, optional: bool = False) -> float | None:
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
    """*trainer* if it is a :class:`~bluesky_twin.protocols.TwinSource`, else a one-line
    :class:`~bluesky_twin.errors.InputError`."""
    return require(trainer, TwinSource, "trainer", "a TwinTrainer or another TwinSource")


def require_common(*, trainer: Any, per_step: Any, md: Any, twin_timeout: Any, poll_interval: Any) -> None:
    """Checks shared by the twin-steered plans: the trainer, ``per_step``, ``md`` and the waits."""
    require_source(trainer)
    if per_step is not None and not callable(per_step):
        raise InputError(f"per_step must be callable or None; got {per_step!r}")
    if md is not None and not isinstance(md, dict):
        raise InputError(f"md must be a dict or None; got {type(md).__name__}")
    require_number("twin_timeout", twin_timeout, minimum=0.0, allow_inf=True)
    require_number("poll_interval", poll_interval, minimum=0.0, strict=True)
