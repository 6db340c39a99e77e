"""A limited, ramping, settling positioner built on :class:`ophyd.sim.SynAxis`.

``ophyd.sim.SynAxis`` has no limits and moves instantly.  :class:`SimPositioner`
adds what a real temperature controller, magnet power supply or goniometer has:

* soft limits, exposed as ``.limits`` / ``.low_limit`` / ``.high_limit``; a move
  outside them raises :class:`PositionerLimitError` *before* anything changes
  (it is both a :class:`bluesky_twin.errors.LimitError` and an
  :class:`ophyd.utils.LimitError`, so either ``except`` clause catches it);
* a ramp rate (the ``velocity`` configuration signal, units per second) and a
  settle time, which together give :meth:`SimPositioner.move_time`;
* a stability (standard deviation of the readback around the setpoint once settled);
* a shared :class:`~bluesky_twin.sim.clock.SimClock`: each move advances it by the
  move time, and sleeps for a scaled share of it only when the clock is not in
  zero-delay mode (then the readback ramps in steps in a background thread, so the
  RunEngine is never blocked).
"""

from __future__ import annotations

import math
import threading
import time as ttime
from typing import Any

import numpy as np
from ophyd import Component as Cpt
from ophyd.sim import SynAxis
from ophyd.status import MoveStatus
from ophyd.utils import LimitError as OphydLimitError

from ..errors import LimitError
from .clock import SimClock
from .signals import ConfigSignal

__all__ = ["PositionerLimitError", "SimPositioner"]


class PositionerLimitError(LimitError, OphydLimitError):
    """A move target lies outside a simulated positioner's limits (or is not finite)."""


class SimPositioner(SynAxis):
    """A :class:`~ophyd.sim.SynAxis` with limits, a ramp rate, a settle time and a clock.

    Parameters
    ----------
    name
        Device name; the readback's data key is ``name`` and the setpoint's ``name + "_setpoint"``.
    limits
        ``(low, high)`` soft limits in *egu*; moves outside raise :class:`PositionerLimitError`.
    value
        Initial position (must lie within the limits).
    ramp_rate
        Ramp rate in *egu* per second (stored in the ``velocity`` configuration signal).
    settle_time
        Seconds to wait after a move that changed the setpoint.
    stability
        Standard deviation of the settled readback around the setpoint (``0``: exact).
    egu
        Engineering units, reported as ``units`` in :meth:`describe`.
    clock
        The clock to advance; a private zero-delay clock if omitted.
    seed
        Seed of the readback-jitter random generator.
    ramp_steps
        Minimum readback updates per move when the clock sleeps (progress bars use
        them); there is also one at least every 0.1 s of wall time.
    **kwargs
        Passed to :class:`ophyd.sim.SynAxis` (``parent``, ``kind``, ``labels``, ``precision``).
    """

    settle_time = Cpt(ConfigSignal, value=0.0, units="s", kind="config")
    velocity = Cpt(ConfigSignal, value=1.0, kind="config")
    acceleration = Cpt(ConfigSignal, value=1.0, kind="omitted")

    def __init__(
        self,
        *,
        name: str,
        limits: tuple[float, float],
        value: float | None = None,
        ramp_rate: float = 1.0,
        settle_time: float = 0.0,
        stability: float = 0.0,
        egu: str = "",
        clock: SimClock | None = None,
        seed: int | None = None,
        ramp_steps: int = 10,
        **kwargs: Any,
    ) -> None:
        low, high = (float(v) for v in limits)
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise LimitError(f"{name}: limits must be finite with low < high, got {limits!r}")
        if not (math.isfinite(ramp_rate) and ramp_rate > 0):
            raise LimitError(f"{name}: ramp_rate must be > 0, got {ramp_rate!r}")
        if settle_time < 0 or stability < 0:
            raise LimitError(f"{name}: settle_time and stability must be >= 0")
        self._limits = (low, high)
        self._stability = float(stability)
        self._rng = np.random.default_rng(seed)
        self.clock = clock if clock is not None else SimClock()
        self._ramp_steps = max(1, int(ramp_steps))
        self._stop_requested = threading.Event()  # the event of the move in progress
        value = low if value is None else float(value)
        if not low <= value <= high:
            raise LimitError(f"{name}: initial value {value} outside limits {self._limits}")
        super().__init__(name=name, value=value, egu=egu, readback_func=lambda x: x, **kwargs)
        self.velocity.put(float(ramp_rate))
        self.velocity._units = f"{egu}/s" if egu else ""
        self.settle_time.put(float(settle_time))

    # -- limits ---------------------------------------------------------------------------
    @property
    def limits(self) -> tuple[float, float]:
        """``(low, high)`` soft limits in engineering units."""
        return self._limits

    @property
    def low_limit(self) -> float:
        """Lower soft limit."""
        return self._limits[0]

    @property
    def high_limit(self) -> float:
        """Upper soft limit."""
        return self._limits[1]

    def check_value(self, value: float) -> float:
        """Return *value* as a float, or raise :class:`PositionerLimitError` if it is not allowed.

        Parameters
        ----------
        value
            Proposed target position.
        """
        try:
            target = float(value)
        except (TypeError, ValueError):
            raise PositionerLimitError(f"{self.name}: target {value!r} is not a number") from None
        low, high = self._limits
        if not math.isfinite(target):
            raise PositionerLimitError(f"{self.name}: target {value!r} is not finite")
        if not low <= target <= high:
            raise PositionerLimitError(
                f"{self.name}: target {target:g} {self.egu} is outside the limits [{low:g}, {high:g}] {self.egu}"
            )
        return target

    # -- time model -----------------------------------------------------------------------
    @property
    def ramp_rate(self) -> float:
        """Ramp rate in engineering units per second."""
        return float(self.velocity.get())

    def move_time(self, start: float, target: float) -> float:
        """Simulated seconds to go from *start* to *target*: ``|target - start| / rate + settle``.

        The settle time is only paid when the position changes.
        """
        distance = abs(float(target) - float(start))
        if distance == 0.0:
            return 0.0
        return distance / self.ramp_rate + float(self.settle_time.get())

    # -- motion ---------------------------------------------------------------------------
    def _settled_readback(self, target: float) -> float:
        if self._stability == 0.0:
            return target
        return float(target + self._rng.normal(0.0, self._stability))

    def _publish_readback(self, value: float) -> None:
        old = self.sim_state["readback"]
        self.sim_state["readback"] = value
        self.sim_state["readback_ts"] = ttime.time()
        for obj, sub in ((self.readback, self.readback.SUB_VALUE), (self, self.SUB_READBACK)):
            obj._run_subs(sub_type=sub, old_value=old, value=value, timestamp=self.sim_state["readback_ts"])

    def set(self, value: float) -> MoveStatus:
        """Move to *value*; raises :class:`PositionerLimitError` before moving if it is out of limits.

        Returns
        -------
        ophyd.status.MoveStatus
            Finished immediately in zero-delay mode, otherwise when the ramp and settle are over.
        """
        target = self.check_value(value)
        old_setpoint = float(self.sim_state["setpoint"])
        duration = self.move_time(old_setpoint, target)
        self.sim_state["setpoint"] = target
        self.sim_state["setpoint_ts"] = ttime.time()
        self.setpoint._run_subs(
            sub_type=self.setpoint.SUB_VALUE,
            old_value=old_setpoint,
            value=target,
            timestamp=self.sim_state["setpoint_ts"],
        )
        self.clock.advance(duration)
        status = self._make_status(target=target)
        final = self._settled_readback(target) if duration > 0 else self.sim_state["readback"]
        wall = self.clock.wall_seconds(duration)
        if wall <= 0.0:
            self._publish_readback(final)
            status.set_finished()
            return status
        self._stop_requested.set()  # a new move supersedes one still ramping
        stop_requested = self._stop_requested = threading.Event()
        start = float(self.sim_state["readback"])
        ramp_wall = wall * (abs(target - old_setpoint) / self.ramp_rate) / duration

        # at least `ramp_steps` updates, and one every 0.1 s of wall time (at most 1000)
        steps = int(min(max(self._ramp_steps, math.ceil(ramp_wall / 0.1)), 1000))

        def _ramp() -> None:
            for i in range(1, steps + 1):
                if stop_requested.wait(ramp_wall / steps):
                    status.set_exception(RuntimeError(f"{self.name}: move stopped"))
                    return
                self._publish_readback(start + (target - start) * i / steps)
            if stop_requested.wait(wall - ramp_wall):
                status.set_exception(RuntimeError(f"{self.name}: move stopped while settling"))
                return
            self._publish_readback(final)
            status.set_finished()

        threading.Thread(target=_ramp, name=f"{self.name}-ramp", daemon=True).start()
        return status

    def stop(self, *, success: bool = False) -> None:
        """Interrupt a move in progress (the readback stays where the ramp got to)."""
        self._stop_requested.set()

    def describe(self) -> dict[str, dict[str, Any]]:
        """Data keys of the readback and setpoint, with ``units`` added."""
        description = super().describe()
        for key in description.values():
            key.setdefault("dtype_numpy", np.dtype(float).str)
            if self.egu:
                key["units"] = self.egu
        return description
