"""Simulated instruments: ophyd Devices with realistic physics, noise, limits and a time model.

Each instrument is an :class:`ophyd.Device` whose positioners refuse moves outside
their limits (:class:`~bluesky_twin.sim.positioner.PositionerLimitError`), ramp and
settle on a shared simulated clock, and whose detector signals are ``kind="hinted"``
and noisy.  ``truth(...)`` gives the noiseless ground truth.  Plans written against
them run unchanged on real hardware with the same component names.

:func:`twin_instrument` builds a twin-backed instrument: the same device, whose
detector reads a saved :class:`~bluesky_twin.twin.DigitalTwin` (mean plus noise at the
level of its training residuals), to rehearse a plan on last week's sample.

>>> from bluesky_twin.sim import make_instruments
>>> hw = make_instruments(seed=0)            # doctest: +SKIP
>>> RE(bp.grid_scan([hw.mpms], hw.mpms.field, 0.5, 2, 4, hw.mpms.temperature, 20, 50, 31))  # doctest: +SKIP

The package imports ophyd and numpy (both core dependencies) when imported; the INS
spectrometer loads the spin-wave physics only when it is built.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from bluesky_twin.errors import InputError

from .arpes import ArpesManipulator, ArpesModel
from .base import SimInstrument
from .clock import SimClock
from .ins_spectrometer import InsSpectrometer
from .magnetometer import ErCo2Model, Magnetometer
from .positioner import PositionerLimitError, SimPositioner
from .signals import ConfigSignal, MeasuredSignal
from .transport import PdHModel, TransportCell
from .twin_device import (
    TwinArpesManipulator,
    TwinInstrument,
    TwinMagnetometer,
    TwinTransportCell,
    metadata_noise,
    training_noise,
    twin_instrument,
)

__all__ = [
    "ArpesManipulator",
    "ArpesModel",
    "ConfigSignal",
    "ErCo2Model",
    "InsSpectrometer",
    "Magnetometer",
    "MeasuredSignal",
    "PdHModel",
    "PositionerLimitError",
    "SimClock",
    "SimInstrument",
    "SimPositioner",
    "TransportCell",
    "TwinArpesManipulator",
    "TwinInstrument",
    "TwinMagnetometer",
    "TwinTransportCell",
    "make_instruments",
    "metadata_noise",
    "training_noise",
    "twin_instrument",
]

INSTRUMENT_NAMES = ("mpms", "ppms", "arpes", "ins")


def make_instruments(
    *, seed: int | None = None, time_scale: float = 0.0, include: tuple[str, ...] | None = None
) -> SimpleNamespace:
    """Build the simulated instruments, like ``ophyd.sim.hw()``.

    Parameters
    ----------
    seed
        Base seed; each instrument gets its own stream derived from it.
    time_scale
        Wall-clock seconds per simulated second (``0``: zero-delay mode, nothing sleeps).
    include
        Subset of ``("mpms", "ppms", "arpes", "ins")``; all by default. The INS
        spectrometer computes a spin-wave frame at start-up (about 1-2 s), so leave it
        out where it is not needed.

    Returns
    -------
    types.SimpleNamespace
        Attributes ``mpms`` (:class:`Magnetometer`), ``ppms`` (:class:`TransportCell`),
        ``arpes`` (:class:`ArpesManipulator`), ``ins`` (:class:`InsSpectrometer`); the
        device names equal the attribute names.
    """
    wanted = INSTRUMENT_NAMES if include is None else tuple(include)
    unknown = sorted(set(wanted) - set(INSTRUMENT_NAMES))
    if unknown:
        raise InputError(f"unknown instrument(s) {unknown}; choose from {list(INSTRUMENT_NAMES)}")
    classes = {"mpms": Magnetometer, "ppms": TransportCell, "arpes": ArpesManipulator, "ins": InsSpectrometer}
    seeds = dict(zip(INSTRUMENT_NAMES, np.random.SeedSequence(seed).generate_state(len(INSTRUMENT_NAMES))))
    namespace = SimpleNamespace()
    for key in INSTRUMENT_NAMES:
        if key in wanted:
            setattr(namespace, key, classes[key](name=key, seed=int(seeds[key]), time_scale=time_scale))
    return namespace
