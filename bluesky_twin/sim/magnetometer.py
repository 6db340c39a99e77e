"""Simulated SQUID/VSM magnetometer (MPMS/PPMS-like) measuring an ErCo2-like ferrimagnet.

Physics model (see ``docs/instruments.md``)
------------------------------------------
ErCo2 orders ferrimagnetically through a *first-order* transition whose temperature
rises with field (itinerant metamagnetism of the Co 3d band).  With T in kelvin and
the applied field H in tesla (``H >= 0``, the field-increasing branch):

* transition temperature ``Tc(H) = Tc0 + a H / (1 + H / Hs)``
  (32.7 K at 0 T, 35.0 K at 1 T, 39.1 K at 3 T, 43.0 K at 7 T);
* transition width ``w(H) = w0 + w1 H`` (sharp at low field, smeared at high field);
* ordered magnetisation ``M_ord = Ms (1 - b (T/Tc)^2)(1 + chi_hf H) tanh(H / Hd)``
  (domain alignment in the first ~0.1 T, a small high-field susceptibility);
* paramagnetic magnetisation ``M_para = Mp tanh(C H / ((T - theta) Mp))``
  (Curie-Weiss at low field, bounded at high field);
* ``M = f M_ord + (1 - f) M_para`` with the ordered fraction
  ``f = 1 / (1 + exp((T - Tc(H)) / w(H)))``: a steep drop of M at Tc.

The parameters reproduce the shape of the ErCo2 preliminary scans of Terashima et al.
(Digital Discovery 2023, 2, 339; raw magnetometer units, about 0.075 when saturated).

Noise: Gaussian, ``sigma = sigma0 / sqrt(t_avg / 1 s) + rel |M|``.

Time model: ``point_time(a, b)`` = temperature ramp (``|dT| / rate`` + settle)
+ field ramp (``|dH| / rate`` + settle) + averaging time.  Moves are serialised, as an
MPMS sequence does them (stabilise the temperature, then set the field).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from ophyd import Component as Cpt

from ..errors import InputError
from .base import SimInstrument, as_float_array
from .positioner import SimPositioner
from .signals import ConfigSignal, MeasuredSignal

__all__ = ["ErCo2Model", "Magnetometer"]


@dataclass(frozen=True)
class ErCo2Model:
    """Parameters of the ErCo2-like M(T, H) model (T in K, H in T, M in raw units)."""

    tc0: float = 32.7
    tc_slope: float = 2.72
    tc_saturation_field: float = 8.33
    width0: float = 0.25
    width_per_tesla: float = 0.25
    ms: float = 0.0735
    ms_thermal: float = 0.03
    high_field_susceptibility: float = 0.0068
    domain_field: float = 0.08
    curie_constant: float = 0.25
    weiss_temperature: float = 22.0
    para_saturation: float = 0.06

    def transition_temperature(self, field: Any) -> np.ndarray:
        """``Tc(H)`` in kelvin (vectorised)."""
        h = np.abs(as_float_array("field", field))
        return self.tc0 + self.tc_slope * h / (1.0 + h / self.tc_saturation_field)

    def transition_width(self, field: Any) -> np.ndarray:
        """Width ``w(H)`` of the transition in kelvin (vectorised)."""
        return self.width0 + self.width_per_tesla * np.abs(as_float_array("field", field))

    def magnetisation(self, temperature: Any, field: Any) -> np.ndarray:
        """Noiseless M(T, H), broadcasting *temperature* against *field*.

        Raises
        ------
        InputError
            If an input is not finite or a temperature is not positive.
        """
        t = as_float_array("temperature", temperature)
        h_signed = as_float_array("field", field)
        if np.any(t <= 0):
            raise InputError("temperature must be > 0 K")
        h = np.abs(h_signed)
        tc = self.transition_temperature(h)
        width = self.transition_width(h)
        ordered_fraction = 0.5 * (1.0 - np.tanh((t - tc) / (2.0 * width)))
        m_ordered = (
            self.ms
            * (1.0 - self.ms_thermal * (t / tc) ** 2)
            * (1.0 + self.high_field_susceptibility * h)
            * np.tanh(h / self.domain_field)
        )
        reduced = np.maximum(t - self.weiss_temperature, 0.5)
        m_para = self.para_saturation * np.tanh(self.curie_constant * h / (reduced * self.para_saturation))
        return np.sign(h_signed) * (ordered_fraction * m_ordered + (1.0 - ordered_fraction) * m_para)


class Magnetometer(SimInstrument):
    """MPMS-like magnetometer: temperature and field positioners, a magnetisation detector.

    Use it both as detector and through its positioners, exactly like a real device::

        mpms = Magnetometer(name="mpms")
        RE(bp.grid_scan([mpms], mpms.field, 0.1, 2.0, 5, mpms.temperature, 20, 50, 61))

    Data keys: ``mpms_temperature`` (K), ``mpms_field`` (T), ``mpms_magnetisation``
    (raw units, hinted), ``mpms_elapsed`` (simulated seconds so far), plus the setpoints.

    Parameters
    ----------
    name
        Device name.
    model
        The sample's M(T, H) model.
    time_scale
        Wall-clock seconds per simulated second (``0``: zero-delay, the default).
    seed
        Noise seed.
    **kwargs
        Passed to :class:`ophyd.Device`.
    """

    temperature = Cpt(
        SimPositioner,
        limits=(2.0, 400.0),
        value=300.0,
        ramp_rate=10.0 / 60.0,
        settle_time=30.0,
        stability=0.005,
        egu="K",
        precision=4,
        kind="normal",
    )
    field = Cpt(
        SimPositioner,
        limits=(0.0, 7.0),
        value=0.0,
        ramp_rate=0.01,
        settle_time=10.0,
        stability=0.0,
        egu="T",
        precision=5,
        kind="normal",
    )
    magnetisation = Cpt(MeasuredSignal, value=0.0, units="emu (raw)", precision=6, kind="hinted")
    elapsed = Cpt(MeasuredSignal, value=0.0, units="s", precision=1, kind="normal")
    averaging_time = Cpt(ConfigSignal, value=2.0, units="s", kind="config")
    noise_floor = Cpt(ConfigSignal, value=1.5e-4, units="emu (raw)", kind="config")
    relative_noise = Cpt(ConfigSignal, value=1e-3, kind="config")

    def __init__(self, prefix: str = "", *, name: str, model: ErCo2Model | None = None, **kwargs: Any) -> None:
        self.model = model if model is not None else ErCo2Model()
        super().__init__(prefix, name=name, **kwargs)

    # -- ground truth ---------------------------------------------------------------------
    def truth(self, temperature: Any, field: Any) -> np.ndarray:
        """Noiseless magnetisation at (T in K, H in T), vectorised with broadcasting."""
        return self.model.magnetisation(temperature, field)

    def noise_sigma(self, magnetisation: Any) -> np.ndarray:
        """Standard deviation of one reading of true magnetisation *magnetisation*."""
        m = np.abs(as_float_array("magnetisation", magnetisation))
        t_avg = float(self.averaging_time.get())
        return float(self.noise_floor.get()) / np.sqrt(t_avg) + float(self.relative_noise.get()) * m

    def transition_temperature(self, field: Any) -> np.ndarray:
        """The model's Tc(H) in kelvin."""
        return self.model.transition_temperature(field)

    # -- acquisition ----------------------------------------------------------------------
    def acquisition_time(self) -> float:
        """Averaging time of one reading, in seconds."""
        t_avg = float(self.averaging_time.get())
        if not t_avg > 0:
            raise InputError(f"{self.name}: averaging_time must be > 0 s, got {t_avg}")
        return t_avg

    def _acquire(self) -> None:
        true_m = float(self.truth(self.temperature.position, self.field.position))
        reading = true_m + self._rng.normal(0.0, float(self.noise_sigma(true_m)))
        self.magnetisation._record(float(reading))
        self.elapsed._record(self.clock.elapsed + self.acquisition_time())

    def describe_model(self) -> dict[str, float]:
        """The model parameters as a dict (for provenance in start documents)."""
        return asdict(self.model)
