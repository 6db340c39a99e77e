"""Common machinery of the simulated instruments: measured signals, clock, trigger.

A simulated instrument is an :class:`ophyd.Device` whose positioners are
:class:`~bluesky_twin.sim.positioner.SimPositioner` components and whose detector
signals are :class:`MeasuredSignal` components of ``kind="hinted"``. Subclasses
implement :meth:`SimInstrument._acquire` (compute noisy readings from the current
positions and write them into the signals) and
:meth:`SimInstrument.acquisition_time`; :meth:`SimInstrument.trigger` does the
rest, so the readings change on every trigger (ophyd's frozen-``SynSignal``
trap cannot happen).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from ophyd import Device
from ophyd.status import DeviceStatus

from ..errors import InputError
from .clock import SimClock
from .positioner import SimPositioner
from .signals import MeasuredSignal

__all__ = ["MeasuredSignal", "SimInstrument", "as_float_array"]


def as_float_array(name: str, value: Any) -> np.ndarray:
    """Convert *value* to a float array, raising :class:`InputError` if it is not finite."""
    try:
        array = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be numeric, got {value!r}") from None
    if not np.all(np.isfinite(array)):
        raise InputError(f"{name} contains NaN or infinite values")
    return array


def finish_after(status: DeviceStatus, wall: float) -> None:
    """Finish *status* at once (``wall <= 0``, zero-delay mode) or after *wall* seconds in a timer thread.

    The wait never happens on the caller's (the RunEngine's) thread.
    """
    if wall <= 0.0:
        status.set_finished()
    else:
        timer = threading.Timer(wall, status.set_finished)
        timer.daemon = True
        timer.start()


class SimInstrument(Device):
    """Base class of the simulated instruments.

    Parameters
    ----------
    prefix
        Unused (ophyd signature compatibility).
    name
        Device name; data keys are ``{name}_{component}``.
    time_scale
        Wall-clock seconds per simulated second (``0``, the default, is zero-delay mode).
    seed
        Seed of the instrument's noise generators (positioner jitter included).
    **kwargs
        Passed to :class:`ophyd.Device`.

    Attributes
    ----------
    clock : SimClock
        Accumulated simulated time of every move and acquisition of this instrument.
    """

    def __init__(
        self, prefix: str = "", *, name: str, time_scale: float = 0.0, seed: int | None = None, **kwargs: Any
    ) -> None:
        self.clock = SimClock(time_scale)
        seeds = np.random.SeedSequence(seed)
        super().__init__(prefix, name=name, **kwargs)
        children = seeds.spawn(len(self.positioners) + 1)
        self._rng = np.random.default_rng(children[0])
        for positioner, child in zip(self.positioners.values(), children[1:]):
            positioner.clock = self.clock
            positioner._rng = np.random.default_rng(child)

    @property
    def positioners(self) -> dict[str, SimPositioner]:
        """The instrument's positioners, by attribute name, in component order."""
        return {
            attr: getattr(self, attr) for attr in self.component_names if isinstance(getattr(self, attr), SimPositioner)
        }

    @property
    def hints(self) -> dict[str, list[str]]:
        """Only the hinted *measured* signals: positions are plotted as dimensions, not as data."""
        from ophyd import Kind

        return {
            "fields": [
                getattr(self, attr).name
                for attr in self.component_names
                if isinstance(getattr(self, attr), MeasuredSignal)
                and (getattr(self, attr).kind & Kind.hinted) == Kind.hinted
            ]
        }

    @property
    def elapsed_time(self) -> float:
        """Simulated seconds spent by this instrument so far (moves + acquisitions)."""
        return self.clock.elapsed

    def _acquire(self) -> None:
        """Compute noisy readings at the current positions and record them."""
        raise NotImplementedError

    def acquisition_time(self) -> float:
        """Simulated seconds one acquisition (one trigger) takes."""
        raise NotImplementedError

    def trigger(self) -> DeviceStatus:
        """Acquire one reading; advances the clock by :meth:`acquisition_time`.

        Returns
        -------
        ophyd.status.DeviceStatus
            Done at once in zero-delay mode, else after the scaled acquisition time
            (waited for in a timer thread, never on the RunEngine's thread).
        """
        self._acquire()
        duration = self.acquisition_time()
        self.clock.advance(duration)
        status = DeviceStatus(self)
        finish_after(status, self.clock.wall_seconds(duration))
        return status

    # -- time model -----------------------------------------------------------------------
    def _as_position(self, point: Any) -> tuple[float, ...]:
        names = list(self.positioners)
        if isinstance(point, Mapping):
            by_name = {**{attr: attr for attr in names}, **{p.name: attr for attr, p in self.positioners.items()}}
            unknown = sorted(set(point) - set(by_name))
            if unknown:
                raise InputError(f"{self.name}: unknown positioner(s) {unknown}; known: {names}")
            values = {by_name[key]: value for key, value in point.items()}
            missing = [attr for attr in names if attr not in values]
            if missing:
                raise InputError(f"{self.name}: point {dict(point)!r} lacks positioner(s) {missing}")
            return tuple(float(values[attr]) for attr in names)
        values = tuple(float(v) for v in point)
        if len(values) != len(names):
            raise InputError(f"{self.name}: expected a point with {len(names)} values {names}, got {point!r}")
        return values

    def current_position(self) -> tuple[float, ...]:
        """Setpoints of the positioners, in :attr:`positioners` order."""
        return tuple(float(p.setpoint.get()) for p in self.positioners.values())

    def point_time(self, start: Any, stop: Any) -> float:
        """Simulated seconds to move from *start* to *stop* and take one reading.

        Moves are serialised (the sum of each positioner's ramp + settle time), then one
        acquisition.

        Parameters
        ----------
        start, stop
            Points as sequences in :attr:`positioners` order (e.g. ``(T, H)``) or as
            mappings keyed by positioner attribute or device name.

        Raises
        ------
        LimitError
            If *stop* lies outside a positioner's limits.
        """
        here, there = self._as_position(start), self._as_position(stop)
        total = self.acquisition_time()
        for positioner, a, b in zip(self.positioners.values(), here, there):
            total += positioner.move_time(a, positioner.check_value(b))
        return total

    def measurement_time(self, points: Iterable[Any], start: Any | None = None) -> float:
        """Simulated seconds to measure *points* in order, starting at *start* (default: setpoints)."""
        here = self._as_position(start) if start is not None else self.current_position()
        total = 0.0
        for point in points:
            there = self._as_position(point)
            total += self.point_time(here, there)
            here = there
        return total

    def stop(self, *, success: bool = False) -> None:
        """Stop every positioner's move."""
        for positioner in self.positioners.values():
            positioner.stop(success=success)
