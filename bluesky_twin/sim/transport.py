"""Simulated transport (four-probe resistance) platform measuring a PdH-like superconductor.

Physics model (see ``docs/instruments.md``), T in K, H in T, R in ohm:

* upper critical field ``Hc2(T) = Hc2(0) (1 - (T / Tc0)^2)``, hence the transition
  temperature ``Tc(H) = Tc0 sqrt(1 - H / Hc2(0))`` (8.5 K at 0 T; 0 above ``Hc2(0)``);
* transition width ``w(H) = w0 + w1 H`` (field-broadened by vortex motion);
* normal state ``Rn(T, H) = R0 (1 + mr H^2) + A T^2`` (residual resistance, a weak
  phonon term and a small orbital magnetoresistance);
* ``R = Rn * Phi((T - Tc(H)) / w(H))`` with ``Phi`` the standard normal CDF.

Noise: Gaussian, ``sigma = sigma0 / sqrt(t_avg / 1 s)``, about 1 % of Rn as in the PdH
scans of Terashima et al. (2023).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from ophyd import Component as Cpt
from scipy.special import ndtr

from ..errors import InputError
from .base import SimInstrument, as_float_array
from .positioner import SimPositioner
from .signals import ConfigSignal, MeasuredSignal

__all__ = ["PdHModel", "TransportCell"]


@dataclass(frozen=True)
class PdHModel:
    """Parameters of the PdH-like R(T, H) model (T in K, H in T, R in ohm)."""

    tc0: float = 8.5
    hc2_zero: float = 1.0
    width0: float = 0.12
    width_per_tesla: float = 0.6
    residual_resistance: float = 0.066
    phonon_coefficient: float = 2e-6
    magnetoresistance: float = 0.002

    def transition_temperature(self, field: Any) -> np.ndarray:
        """``Tc(H)`` in kelvin (0 above ``Hc2(0)``), vectorised."""
        h = np.abs(as_float_array("field", field))
        return self.tc0 * np.sqrt(np.clip(1.0 - h / self.hc2_zero, 0.0, None))

    def upper_critical_field(self, temperature: Any) -> np.ndarray:
        """``Hc2(T)`` in tesla (0 above Tc0), vectorised."""
        t = as_float_array("temperature", temperature)
        return self.hc2_zero * np.clip(1.0 - (t / self.tc0) ** 2, 0.0, None)

    def normal_resistance(self, temperature: Any, field: Any) -> np.ndarray:
        """Normal-state resistance ``Rn(T, H)``."""
        t = as_float_array("temperature", temperature)
        h = as_float_array("field", field)
        return self.residual_resistance * (1.0 + self.magnetoresistance * h * h) + self.phonon_coefficient * t * t

    def resistance(self, temperature: Any, field: Any) -> np.ndarray:
        """Noiseless R(T, H), broadcasting *temperature* against *field*."""
        t = as_float_array("temperature", temperature)
        h = as_float_array("field", field)
        if np.any(t <= 0):
            raise InputError("temperature must be > 0 K")
        width = self.width0 + self.width_per_tesla * np.abs(h)
        fraction = ndtr((t - self.transition_temperature(h)) / width)
        return self.normal_resistance(t, h) * fraction


class TransportCell(SimInstrument):
    """PPMS-like resistivity option: temperature and field positioners, a resistance detector.

    Data keys: ``ppms_temperature`` (K), ``ppms_field`` (T), ``ppms_resistance`` (ohm,
    hinted), ``ppms_elapsed`` (s), plus the setpoints.

    Parameters
    ----------
    name
        Device name.
    model
        The sample's R(T, H) model.
    **kwargs
        ``time_scale``, ``seed`` and :class:`ophyd.Device` arguments.
    """

    temperature = Cpt(
        SimPositioner,
        limits=(1.8, 400.0),
        value=300.0,
        ramp_rate=12.0 / 60.0,
        settle_time=20.0,
        stability=0.003,
        egu="K",
        precision=4,
        kind="normal",
    )
    field = Cpt(
        SimPositioner,
        limits=(0.0, 9.0),
        value=0.0,
        ramp_rate=0.01,
        settle_time=5.0,
        stability=0.0,
        egu="T",
        precision=5,
        kind="normal",
    )
    resistance = Cpt(MeasuredSignal, value=0.0, units="ohm", precision=6, kind="hinted")
    elapsed = Cpt(MeasuredSignal, value=0.0, units="s", precision=1, kind="normal")
    averaging_time = Cpt(ConfigSignal, value=1.0, units="s", kind="config")
    noise_floor = Cpt(ConfigSignal, value=6e-4, units="ohm", kind="config")

    def __init__(self, prefix: str = "", *, name: str, model: PdHModel | None = None, **kwargs: Any) -> None:
        self.model = model if model is not None else PdHModel()
        super().__init__(prefix, name=name, **kwargs)

    def truth(self, temperature: Any, field: Any) -> np.ndarray:
        """Noiseless resistance at (T in K, H in T), vectorised with broadcasting."""
        return self.model.resistance(temperature, field)

    def transition_temperature(self, field: Any) -> np.ndarray:
        """The model's Tc(H) in kelvin."""
        return self.model.transition_temperature(field)

    def noise_sigma(self) -> float:
        """Standard deviation of one reading, in ohm."""
        return float(self.noise_floor.get()) / float(np.sqrt(self.acquisition_time()))

    def acquisition_time(self) -> float:
        """Averaging time of one reading, in seconds."""
        t_avg = float(self.averaging_time.get())
        if not t_avg > 0:
            raise InputError(f"{self.name}: averaging_time must be > 0 s, got {t_avg}")
        return t_avg

    def _acquire(self) -> None:
        true_r = float(self.truth(self.temperature.position, self.field.position))
        self.resistance._record(float(true_r + self._rng.normal(0.0, self.noise_sigma())))
        self.elapsed._record(self.clock.elapsed + self.acquisition_time())
