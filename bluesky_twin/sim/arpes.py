"""Simulated ARPES manipulator and analyser: intensity at the Fermi level versus two angles.

Physics model (see ``docs/instruments.md``), angles in degrees, intensity in counts:

* **Fermi-surface features** as Lorentzian ridges ``A / (1 + (d / gamma)^2)`` of the distance
  ``d`` (in degrees) from a contour: two electron pockets (ellipses centred at
  ``theta1 = +-10.5``), two flatter pockets at ``theta2 = +-12`` and one straight Fermi
  line ``theta1 = 4 + 0.15 theta2`` (a La(O,F)BiS2-like map).
* **Edge sensitivity**: the analyser/sample acceptance is an ellipse
  ``(theta1 / 19.5)^2 + (theta2 / 26)^2 < 1``; the intensity drops from the in-acceptance
  background to a dark level across a 0.25-degree edge, and a sharp Gaussian ridge
  (0.4-degree wide) sits on the edge itself, as in the measured map of Terashima et al.
* Rates are counts per second; a reading is ``Poisson(rate * dwell_time)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from ophyd import Component as Cpt

from ..errors import InputError
from .base import SimInstrument, as_float_array
from .positioner import SimPositioner
from .signals import ConfigSignal, MeasuredSignal

__all__ = ["ArpesModel", "ArpesManipulator"]


@dataclass(frozen=True)
class ArpesModel:
    """Parameters of the angle-space intensity model (angles in degrees, rates in counts/s)."""

    pockets: tuple[tuple[float, float, float, float, float], ...] = (
        # centre theta1, centre theta2, semi-axis theta1, semi-axis theta2, amplitude
        (-10.5, 0.0, 2.5, 7.0, 260.0),
        (10.5, 0.0, 2.5, 7.0, 240.0),
        (0.0, -12.0, 6.0, 2.5, 180.0),
        (0.0, 12.0, 6.0, 2.5, 200.0),
    )
    pocket_width: float = 0.7
    line_offset: float = 4.0
    line_slope: float = 0.15
    line_amplitude: float = 150.0
    line_width: float = 1.0
    acceptance: tuple[float, float] = (19.5, 26.0)
    edge_width: float = 0.25
    edge_amplitude: float = 550.0
    edge_ridge_width: float = 0.4
    background: float = 200.0
    background_tilt: float = 2.0
    dark_rate: float = 4.0

    def rate(self, theta1: Any, theta2: Any) -> np.ndarray:
        """Noiseless count rate (counts/s) at the angles, broadcasting *theta1* against *theta2*."""
        t1 = as_float_array("theta1", theta1)
        t2 = as_float_array("theta2", theta2)
        t1, t2 = np.broadcast_arrays(t1, t2)
        features = np.zeros(t1.shape)
        for c1, c2, a1, a2, amplitude in self.pockets:
            radius = np.hypot((t1 - c1) / a1, (t2 - c2) / a2)
            distance = (radius - 1.0) * np.sqrt(a1 * a2)
            features += amplitude / (1.0 + (distance / self.pocket_width) ** 2)
        line_distance = (t1 - self.line_offset - self.line_slope * t2) / np.hypot(1.0, self.line_slope)
        features += self.line_amplitude / (1.0 + (line_distance / self.line_width) ** 2)
        a1, a2 = self.acceptance
        edge_radius = np.hypot(t1 / a1, t2 / a2)
        edge_distance = (edge_radius - 1.0) * np.sqrt(a1 * a2)
        inside = 0.5 * (1.0 - np.tanh(edge_distance / self.edge_width))
        ridge = self.edge_amplitude * np.exp(-0.5 * (edge_distance / self.edge_ridge_width) ** 2)
        inner = self.background * (1.0 + self.background_tilt * 0.01 * t1) + features
        return self.dark_rate + inside * inner + ridge


class ArpesManipulator(SimInstrument):
    """Two-angle ARPES manipulator with the analyser's Fermi-level intensity as detector.

    Data keys: ``arpes_theta1``, ``arpes_theta2`` (deg), ``arpes_intensity`` (counts,
    hinted), ``arpes_elapsed`` (s), plus the setpoints.

    Parameters
    ----------
    name
        Device name.
    model
        The sample's intensity map.
    **kwargs
        ``time_scale``, ``seed`` and :class:`ophyd.Device` arguments.
    """

    theta1 = Cpt(
        SimPositioner,
        limits=(-25.0, 25.0),
        value=0.0,
        ramp_rate=2.0,
        settle_time=0.5,
        stability=0.002,
        egu="deg",
        precision=4,
        kind="normal",
    )
    theta2 = Cpt(
        SimPositioner,
        limits=(-15.0, 15.0),
        value=0.0,
        ramp_rate=1.0,
        settle_time=1.0,
        stability=0.002,
        egu="deg",
        precision=4,
        kind="normal",
    )
    intensity = Cpt(MeasuredSignal, value=0, units="counts", kind="hinted")
    elapsed = Cpt(MeasuredSignal, value=0.0, units="s", precision=1, kind="normal")
    dwell_time = Cpt(ConfigSignal, value=1.0, units="s", kind="config")

    def __init__(self, prefix: str = "", *, name: str, model: ArpesModel | None = None, **kwargs: Any) -> None:
        self.model = model if model is not None else ArpesModel()
        super().__init__(prefix, name=name, **kwargs)

    def truth(self, theta1: Any, theta2: Any) -> np.ndarray:
        """Expected counts per reading (rate x dwell time) at the angles, vectorised."""
        return self.model.rate(theta1, theta2) * self.acquisition_time()

    def acquisition_time(self) -> float:
        """Dwell time of one reading, in seconds."""
        dwell = float(self.dwell_time.get())
        if not dwell > 0:
            raise InputError(f"{self.name}: dwell_time must be > 0 s, got {dwell}")
        return dwell

    def _acquire(self) -> None:
        expected = float(self.truth(self.theta1.position, self.theta2.position))
        self.intensity._record(int(self._rng.poisson(expected)))
        self.elapsed._record(self.clock.elapsed + self.acquisition_time())
