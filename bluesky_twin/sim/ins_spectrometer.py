"""Simulated direct-geometry INS spectrometer (MAPS-like) with a 2D frame detector.

The sample is an S = 5/2 square-lattice J1-J2 antiferromagnet whose exchange constants
are *hidden* from the data (they are not written to any document): recovering them
is the analysis' job.  Frames come from :func:`bluesky_twin.ins.frames.simulate_frame`,
the project's spin-wave + MAPS-resolution simulator.

The instrument fixes what a real setup fixes for a whole experiment: the incident
energy, the elastic-line amplitude, the background and the detector-gap mask (all drawn
once from the instrument's seed).  Per frame only the counting statistics change:

* ``truth()`` is the noiseless expected frame ``lambda(E, h)`` at the sample temperature
  (the recipe evaluated with a very large count scale and the instrument's fixed mask);
* a reading is ``Poisson(N lambda) / N`` with ``N = counts_per_second x counting_time``,
  NaN in the masked detector gaps.

The sample temperature is a :class:`~bluesky_twin.sim.positioner.SimPositioner`
(the Bose factor depends on it).
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
from ophyd import Component as Cpt

from ..errors import InputError
from .base import SimInstrument
from .positioner import SimPositioner
from .signals import ConfigSignal, MeasuredSignal

__all__ = ["InsSpectrometer"]

_TRUTH_COUNTS_SCALE = 1e9


def _simulate_frame(*args: Any, **kwargs: Any) -> np.ndarray:
    from bluesky_twin.ins import simulate_frame

    return simulate_frame(*args, **kwargs)


class InsSpectrometer(SimInstrument):
    """MAPS-like spectrometer measuring ``(size, size)`` (energy x momentum) frames.

    Data keys: ``ins_frame`` (float32 array, shape ``(size, size)``, hinted; rows are
    energy transfer 0..16 meV, columns the cut ``(h, 1/2, 0)``, h 0..1 r.l.u., or
    ``|Q|`` for the powder geometry), ``ins_temperature`` (K), ``ins_elapsed`` (s).

    Parameters
    ----------
    name
        Device name.
    J1, J2
        Hidden exchange constants of the sample in meV (Néel phase: ``J2 < J1 / 2``).
    geometry
        ``"cut"`` or ``"powder"``.
    size
        Frame edge length in pixels.
    e_init
        Incident energy in meV (25-35 meV suits the 0-16 meV window).
    **kwargs
        ``time_scale``, ``seed`` and :class:`ophyd.Device` arguments.
    """

    temperature = Cpt(
        SimPositioner,
        limits=(1.5, 300.0),
        value=5.0,
        ramp_rate=0.05,
        settle_time=120.0,
        stability=0.01,
        egu="K",
        precision=3,
        kind="normal",
    )
    frame = Cpt(MeasuredSignal, value=np.zeros((64, 64), dtype=np.float32), units="arb. units", kind="hinted")
    elapsed = Cpt(MeasuredSignal, value=0.0, units="s", precision=1, kind="normal")
    counting_time = Cpt(ConfigSignal, value=600.0, units="s", kind="config")
    counts_per_second = Cpt(ConfigSignal, value=0.25, units="1/s", kind="config")
    e_init = Cpt(ConfigSignal, value=30.0, units="meV", kind="config")

    def __init__(
        self,
        prefix: str = "",
        *,
        name: str,
        J1: float = 0.65,  # noqa: N803 - physics notation
        J2: float = 0.12,  # noqa: N803
        geometry: str = "cut",
        size: int = 64,
        e_init: float = 30.0,
        **kwargs: Any,
    ) -> None:
        self._j1, self._j2 = float(J1), float(J2)
        self._geometry = geometry
        self._size = int(size)
        super().__init__(prefix, name=name, **kwargs)
        self.e_init.put(float(e_init))
        # Per-experiment constants: drawn once from the instrument's seed.
        setup_rng = np.random.default_rng(self._rng.integers(2**63))
        self._setup = {
            "elastic_amplitude": float(setup_rng.uniform(0.5, 2.0)),
            "background_b0": float(setup_rng.uniform(0.0, 0.05)),
            "background_b1": float(setup_rng.uniform(0.0, 0.005)),
        }
        self._mask_seed = int(setup_rng.integers(2**63))
        self._truth_cache: dict[tuple[float, ...], np.ndarray] = {}
        self._lock = threading.Lock()
        # Validate the hidden sample and record a first (noiseless) frame of the right shape.
        self.frame._record(self.truth(self.temperature.position))

    @property
    def hidden_parameters(self) -> dict[str, float]:
        """The sample's true ``{"J1": ..., "J2": ...}`` in meV (for tests and benchmarks only)."""
        return {"J1": self._j1, "J2": self._j2}

    @property
    def frame_shape(self) -> tuple[int, int]:
        """Shape of one frame."""
        return (self._size, self._size)

    def truth(self, temperature: float | None = None) -> np.ndarray:
        """Noiseless expected frame (float64, NaN in the detector gaps) at *temperature* in K.

        Defaults to the current sample temperature.
        """
        t = float(self.temperature.position if temperature is None else temperature)
        if not np.isfinite(t) or t <= 0:
            raise InputError(f"{self.name}: temperature must be a positive number, got {temperature!r}")
        key = (round(t, 6), float(self.e_init.get()))
        with self._lock:
            cached = self._truth_cache.get(key)
            if cached is None:
                cached = _simulate_frame(
                    self._j1,
                    self._j2,
                    geometry=self._geometry,
                    size=self._size,
                    experiment_like=True,
                    rng=np.random.default_rng(self._mask_seed),
                    temperature=t,
                    e_init=key[1],
                    counts_scale=_TRUTH_COUNTS_SCALE,
                    **self._setup,
                ).astype(np.float64)
                if len(self._truth_cache) > 64:
                    self._truth_cache.clear()
                self._truth_cache[key] = cached
        return cached.copy()

    def counts_scale(self) -> float:
        """``N`` of ``Poisson(N lambda) / N``: counts per unit intensity in one frame."""
        return float(self.counts_per_second.get()) * self.acquisition_time()

    def acquisition_time(self) -> float:
        """Counting time of one frame, in seconds."""
        t_count = float(self.counting_time.get())
        if not t_count > 0:
            raise InputError(f"{self.name}: counting_time must be > 0 s, got {t_count}")
        return t_count

    def _acquire(self) -> None:
        expected = self.truth()
        mask = np.isnan(expected)
        n_counts = self.counts_scale()
        frame = self._rng.poisson(n_counts * np.where(mask, 0.0, expected)) / n_counts
        frame[mask] = np.nan
        self.frame._record(frame.astype(np.float32))
        self.elapsed._record(self.clock.elapsed + self.acquisition_time())
