"""Plan stubs shared by the twin-steered plans: waiting for a twin, positioner limits.

``wait_for_twin`` polls the trainer with ``bps.sleep`` so that the RunEngine's event
loop stays free (pause, resume and Ctrl-C keep working while a refit runs).
``limits_of`` / ``check_limits`` / ``clip_to_limits`` make sure no motor is ever
commanded outside its limits: explicit user values are refused up front with
:class:`~bluesky_twin.errors.LimitError`, model proposals are clipped (or dropped).
"""
from __future__ import annotations

import logging
import math
import time
from typing import Any, Iterable, Sequence

import numpy as np

from bluesky_twin.errors import LimitError

logger = logging.getLogger(__name__)

__all__ = ["TwinUnavailableError", "check_limits", "clip_to_limits", "limits_of", "motor_dimensions",
           "wait_for_twin"]


class TwinUnavailableError(RuntimeError):
    """No (fresh) twin was available within the timeout, or its fit failed."""


def wait_for_twin(
    trainer: Any,
    *,
    run_uid: str | None = None,
    newer_than: str | None = None,
    timeout: float = 60.0,
    poll_interval: float = 0.2,
):
    """Wait (inside a plan) until the trainer has a twin trained on *run_uid*.

    Parameters
    ----------
    trainer
        A :class:`~bluesky_twin.callbacks.TwinTrainer` subscribed to the RunEngine.
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

    if not (timeout >= 0 and poll_interval > 0):
        raise ValueError("timeout must be >= 0 and poll_interval > 0")
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


def limits_of(motor: Any) -> tuple[float, float] | None:
    """``(low, high)`` of a positioner, or ``None`` if it declares none.

    Follows ophyd's convention that ``low >= high`` (e.g. ``(0, 0)``) means "no limits".
    """
    lim = getattr(motor, "limits", None)
    if lim is None:
        return None
    low, high = float(lim[0]), float(lim[1])
    if not (math.isfinite(low) and math.isfinite(high)) or not low < high:
        return None
    return low, high


def check_limits(motor: Any, values: Iterable[float], *, what: str = "value") -> np.ndarray:
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


def clip_to_limits(motor: Any, values: Sequence[float], *, policy: str = "clip") -> np.ndarray:
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
    """
    if policy not in ("clip", "refuse"):
        raise ValueError(f"policy must be 'clip' or 'refuse'; got {policy!r}")
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


def motor_dimensions(motors: Sequence[Any], stream: str = "primary") -> list[tuple[list[str], str]]:
    """``hints["dimensions"]`` entries for *motors* (their hinted fields, else their names)."""
    dims = []
    for m in motors:
        fields = list(getattr(m, "hints", {}).get("fields", []) or [m.name])
        dims.append((fields, stream))
    return dims
