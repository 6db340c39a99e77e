"""MAPS energy resolution from ``resins`` (ISIS PyChop model).

``resins.Instrument.from_default("MAPS").get_resolution_function("PyChop_fit",
chopper_package="S", e_init=Ei, chopper_frequency=f)`` returns a model whose
``.polynomial`` gives the Gaussian width ``sigma(E)`` in meV (sigma, not FWHM) for
energy transfers ``0 <= E < Ei``.  Building the model costs a few milliseconds after a
1.5 s import of ``resins``; :func:`maps_resolution` caches one object per setting and the
object itself is a small picklable numpy polynomial, so worker processes never import
``resins``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numpy.typing import ArrayLike, NDArray

from bluesky_twin.errors import InputError

#: FWHM / sigma of a Gaussian.
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
#: Fermi-chopper frequencies accepted by the MAPS PyChop model, in Hz.
MAPS_FREQUENCIES = tuple(range(50, 601, 50))


@dataclass(frozen=True, eq=False)
class EnergyResolution:
    """Gaussian energy resolution ``sigma(E)`` of one spectrometer setting.

    Attributes
    ----------
    e_init
        Incident energy in meV.
    chopper_frequency
        Fermi-chopper frequency in Hz.
    chopper_package
        MAPS chopper package name (e.g. ``"S"``).
    polynomial
        ``numpy.polynomial.Polynomial`` giving sigma in meV as a function of energy
        transfer in meV.
    """

    e_init: float
    chopper_frequency: int
    chopper_package: str
    polynomial: np.polynomial.Polynomial

    @property
    def key(self) -> tuple[float, int, str]:
        """``(e_init, chopper_frequency, chopper_package)``: identifies the setting."""
        return (float(self.e_init), int(self.chopper_frequency), str(self.chopper_package))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, EnergyResolution):
            return NotImplemented
        return self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)

    def sigma(self, energy: ArrayLike) -> NDArray[np.float64]:
        """Gaussian sigma in meV at energy transfer ``energy`` (meV).

        Raises
        ------
        InputError
            If any energy lies outside ``[0, Ei)``, where the model is not defined.
        """
        e = np.asarray(energy, dtype=float)
        if e.size and (not np.all(np.isfinite(e)) or e.min() < 0 or e.max() >= self.e_init):
            raise InputError(
                f"MAPS resolution with Ei={self.e_init:g} meV is defined for energy transfers "
                f"in [0, {self.e_init:g}) meV; got values in [{np.nanmin(e):g}, {np.nanmax(e):g}]"
            )
        return np.asarray(self.polynomial(e), dtype=float)

    def fwhm(self, energy: ArrayLike) -> NDArray[np.float64]:
        """Full width at half maximum in meV at energy transfer ``energy``."""
        return FWHM_PER_SIGMA * self.sigma(energy)


def maps_resolution(e_init: float, chopper_frequency: int = 200, chopper_package: str = "S") -> EnergyResolution:
    """MAPS energy resolution for one (Ei, chopper frequency, chopper package) setting.

    Parameters
    ----------
    e_init
        Incident energy in meV (``0 < Ei <= 2000``).
    chopper_frequency
        Fermi-chopper frequency in Hz, a multiple of 50 between 50 and 600.
    chopper_package
        MAPS chopper package (``"S"`` is the sloppy chopper used in the notes).

    Returns
    -------
    EnergyResolution
        Cached per setting.

    Raises
    ------
    InputError
        For a setting outside the model's range, an unknown chopper package, or a setting
        where the Fermi chopper has no transmission.
    """
    try:
        e_init_f = float(e_init)
    except (TypeError, ValueError):
        raise InputError(f"Ei must be a number in meV, got {e_init!r}") from None
    if not math.isfinite(e_init_f) or e_init_f <= 0 or e_init_f > 2000:
        raise InputError(f"Ei must be in (0, 2000] meV for MAPS, got {e_init!r}")
    if isinstance(chopper_frequency, bool) or not isinstance(chopper_frequency, (int, np.integer)):
        if isinstance(chopper_frequency, float) and chopper_frequency.is_integer():
            chopper_frequency = int(chopper_frequency)
        else:
            raise InputError(f"chopper frequency must be an integer number of Hz, got {chopper_frequency!r}")
    freq = int(chopper_frequency)
    if freq not in MAPS_FREQUENCIES:
        raise InputError(f"MAPS chopper frequency must be a multiple of 50 Hz in [50, 600], got {freq}")
    return _cached_resolution(e_init_f, freq, str(chopper_package))


@lru_cache(maxsize=64)
def _cached_resolution(e_init: float, freq: int, package: str) -> EnergyResolution:
    # heavy import (~1.5 s): only when a setting is first used
    from resins.models.model_base import InvalidInputError
    from resins.models.pychop import NoTransmissionError

    instrument = _maps_instrument()
    try:
        model = instrument.get_resolution_function(
            "PyChop_fit", chopper_package=package, e_init=e_init, chopper_frequency=freq
        )
    except NoTransmissionError:
        raise InputError(
            f"MAPS chopper package {package!r} has no transmission at Ei={e_init:g} meV and "
            f"{freq} Hz; choose another Ei or frequency"
        ) from None
    except InvalidInputError as exc:
        raise InputError(f"invalid MAPS setting: {exc}") from None
    except KeyError:
        raise InputError(f"unknown MAPS chopper package {package!r}") from None
    poly = model.polynomial
    sigma0 = float(poly(0.0))
    if not (math.isfinite(sigma0) and sigma0 > 0):
        raise InputError(f"resins returned a non-positive resolution at Ei={e_init:g} meV")
    return EnergyResolution(e_init, freq, package, poly)


@lru_cache(maxsize=1)
def _maps_instrument():  # noqa: ANN202 - resins type, imported lazily
    from resins import Instrument

    return Instrument.from_default("MAPS")
