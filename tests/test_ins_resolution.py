"""MAPS energy resolution through resins."""

from __future__ import annotations

import numpy as np
import pytest

from bluesky_twin.errors import InputError
from bluesky_twin.ins.resolution import FWHM_PER_SIGMA, maps_resolution


@pytest.mark.parametrize("e_init, fwhm0", [(25, 0.92), (35, 1.44), (50, 2.33)])
def test_fwhm_at_elastic_line_matches_note(e_init: float, fwhm0: float) -> None:
    res = maps_resolution(e_init, 200)
    assert float(res.fwhm(0.0)) == pytest.approx(fwhm0, abs=0.01)
    assert float(res.sigma(0.0)) * FWHM_PER_SIGMA == pytest.approx(float(res.fwhm(0.0)))


def test_resolution_sharpens_with_energy_transfer_and_is_cached() -> None:
    res = maps_resolution(25.0)
    sig = res.sigma(np.linspace(0, 16, 17))
    assert np.all(sig > 0) and np.all(np.diff(sig) < 0)
    assert maps_resolution(25, 200, "S") is res  # cached per setting
    assert maps_resolution(35.0) != res


def test_bad_settings_give_clear_errors() -> None:
    with pytest.raises(InputError, match="multiple of 50"):
        maps_resolution(25.0, 210)
    with pytest.raises(InputError, match="no transmission"):
        maps_resolution(25.0, 600)
    with pytest.raises(InputError, match="Ei must be"):
        maps_resolution(-3.0)
    with pytest.raises(InputError, match="Ei must be"):
        maps_resolution(float("nan"))
    with pytest.raises(InputError, match="chopper package"):
        maps_resolution(25.0, 200, "Z")
    with pytest.raises(InputError, match="integer"):
        maps_resolution(25.0, 200.5)
    res = maps_resolution(25.0)
    with pytest.raises(InputError, match=r"\[0, 25\)"):
        res.sigma([1.0, 25.0])
