"""Simulated instrument time.

Every simulated instrument owns a :class:`SimClock`. Moves and acquisitions
*advance* it by the time the real instrument would need (ramp + settle,
averaging), so the cost of a measurement can be estimated without waiting for it.
With ``time_scale=0`` (the default) nothing sleeps: the zero-delay mode used by
tests and benchmarks.  With ``time_scale=s > 0`` every simulated second costs
``s`` wall-clock seconds (``1.0`` is real time, ``1e-3`` a 1000x fast-forward).
"""

from __future__ import annotations

import math
import threading

from ..errors import InputError

__all__ = ["SimClock"]


class SimClock:
    """Accumulates simulated instrument time, and optionally sleeps for a scaled share of it.

    Parameters
    ----------
    time_scale
        Wall-clock seconds slept per simulated second. ``0`` disables sleeping.

    Notes
    -----
    Thread-safe: positioners advance the clock from their move threads.
    """

    def __init__(self, time_scale: float = 0.0) -> None:
        self._lock = threading.Lock()
        self._elapsed = 0.0
        self.time_scale = time_scale

    @property
    def time_scale(self) -> float:
        """Wall-clock seconds per simulated second (``0``: zero-delay mode)."""
        return self._time_scale

    @time_scale.setter
    def time_scale(self, value: float) -> None:
        value = float(value)
        if not math.isfinite(value) or value < 0:
            raise InputError(f"time_scale must be a finite number >= 0, got {value!r}")
        self._time_scale = value

    @property
    def zero_delay(self) -> bool:
        """True when the clock never sleeps."""
        return self._time_scale == 0.0

    @property
    def elapsed(self) -> float:
        """Simulated seconds accumulated since creation or the last :meth:`reset`."""
        with self._lock:
            return self._elapsed

    def advance(self, seconds: float) -> None:
        """Add *seconds* of simulated time (does not sleep; see :meth:`wall_seconds`)."""
        seconds = float(seconds)
        if not math.isfinite(seconds) or seconds < 0:
            raise InputError(f"cannot advance a clock by {seconds!r} s")
        with self._lock:
            self._elapsed += seconds

    def wall_seconds(self, seconds: float) -> float:
        """Wall-clock seconds that *seconds* of simulated time take at this time scale."""
        return float(seconds) * self._time_scale

    def reset(self) -> None:
        """Set the accumulated time back to zero."""
        with self._lock:
            self._elapsed = 0.0

    def __repr__(self) -> str:
        return f"SimClock(time_scale={self._time_scale!r}, elapsed={self.elapsed:.1f} s)"
