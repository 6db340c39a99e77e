"""Unconvolved and experiment-like INS frames."""

from __future__ import annotations

import numpy as np
import pytest

from bluesky_twin.errors import InputError
from bluesky_twin.ins import frames as fr
from bluesky_twin.ins import simulate_frame
from bluesky_twin.ins.resolution import maps_resolution
from bluesky_twin.ins.spinwave import dispersion

CLEAN = dict(  # experiment-like recipe without noise, elastic line, background or masks
    counts_scale=1e9,
    elastic_amplitude=0.0,
    background_b0=0.0,
    background_b1=0.0,
    n_stripes=0,
    temperature=5.0,
    e_init=25.0,
)


@pytest.mark.parametrize("geometry", ["cut", "powder"])
def test_shapes_dtype_and_normalisation(geometry: str) -> None:
    unconv = simulate_frame(0.8, 0.1, geometry=geometry, experiment_like=False)
    conv = simulate_frame(0.8, 0.1, geometry=geometry, rng=0, size=48)
    assert unconv.shape == (64, 64) and unconv.dtype == np.float32
    assert conv.shape == (48, 48) and conv.dtype == np.float32
    assert np.isfinite(unconv).all() and unconv.min() >= 0
    assert np.percentile(unconv, 99.5) == pytest.approx(1.0, rel=1e-5)  # never the max
    assert unconv.max() > 1.2  # the zone-centre divergence is not squashed to 1
    assert np.isnan(conv).any() and np.nanmin(conv) >= 0


def test_unconvolved_cut_follows_the_dispersion() -> None:
    j1, j2 = 0.7, -0.12
    size = 64
    frame = simulate_frame(j1, j2, experiment_like=False, size=size)
    geo = fr.make_geometry("cut", size, fr.Recipe())
    e = geo.e_centres
    for col in [0, 5, 12, 20, 44, 58, 63]:
        expected = dispersion(geo.x_centres[col], 0.5, j1, j2)
        assert e[frame[:, col].argmax()] == pytest.approx(expected, abs=0.25)
    # zone boundary (0, 1/2): 4 S (J1 - 2 J2)
    assert e[frame[:, 0].argmax()] == pytest.approx(4 * 2.5 * (j1 - 2 * j2), abs=0.3)


def test_resolution_width_comes_from_resins() -> None:
    j1, j2 = 0.8, 0.05
    frame = simulate_frame(j1, j2, rng=0, **CLEAN).astype(float)
    unconv = simulate_frame(j1, j2, experiment_like=False).astype(float)
    e = fr.make_geometry("cut", 64, fr.Recipe()).e_centres
    col = 0  # flat zone boundary: Q broadening hardly matters there

    def width(profile: np.ndarray) -> tuple[float, float]:
        w = profile / profile.sum()
        mean = float((w * e).sum())
        return mean, float(np.sqrt((w * (e - mean) ** 2).sum()))

    mean_c, sigma_c = width(frame[:, col])
    mean_u, sigma_u = width(unconv[:, col])
    expected_sigma = float(maps_resolution(25.0).sigma(mean_c))
    assert mean_c == pytest.approx(mean_u, abs=0.1)
    assert sigma_u < 0.2
    assert sigma_c == pytest.approx(np.hypot(expected_sigma, 0.25 / np.sqrt(12)), rel=0.12)


def test_bose_factor() -> None:
    kt = fr.K_B_MEV * 10.0
    assert fr.bose_factor(np.array([kt]), 10.0)[0] == pytest.approx(1 / (1 - np.exp(-1)))
    assert fr.bose_factor(np.array([50 * kt]), 10.0)[0] == pytest.approx(1.0)


def test_poisson_noise_and_reproducibility() -> None:
    a = simulate_frame(0.6, -0.1, rng=42, counts_scale=50.0)
    b = simulate_frame(0.6, -0.1, rng=np.random.default_rng(42), counts_scale=50.0)
    c = simulate_frame(0.6, -0.1, rng=43, counts_scale=50.0)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(np.nan_to_num(a), np.nan_to_num(c))
    counts = a[np.isfinite(a)] * 50.0
    np.testing.assert_allclose(counts, np.round(counts), atol=1e-3)  # integer counts / N


def test_cut_masks_are_detector_gap_stripes() -> None:
    for seed in range(20):
        frame = simulate_frame(0.6, 0.1, rng=seed)
        masked_cols = np.isnan(frame).all(axis=0)
        assert np.array_equal(np.isnan(frame), np.broadcast_to(masked_cols, frame.shape))
        assert 1 <= masked_cols.sum() <= 6
    assert not np.isnan(simulate_frame(0.6, 0.1, rng=0, n_stripes=0)).any()


def test_powder_mask_is_the_two_theta_coverage() -> None:
    frame = simulate_frame(0.6, 0.1, geometry="powder", rng=3, e_init=25.0)
    geo = fr.make_geometry("powder", 64, fr.Recipe())
    expected = fr.powder_coverage_mask(geo, 25.0, (3.0, 60.0))
    np.testing.assert_array_equal(np.isnan(frame), expected)
    e, q = geo.e_centres, geo.x_centres
    assert expected[np.searchsorted(e, 15.0), np.searchsorted(q, 0.4)]  # low Q, high E: no detectors
    assert not expected[np.searchsorted(e, 2.0), np.searchsorted(q, 2.0)]
    # a smaller angular range masks more
    assert fr.powder_coverage_mask(geo, 25.0, (5.0, 40.0)).sum() > expected.sum()


@pytest.mark.parametrize("geometry", ["cut", "powder"])
def test_mask_unconvolved_gives_the_pair_one_mask(geometry: str) -> None:
    geo = fr.make_geometry(geometry, 32, fr.Recipe())
    plain = fr.simulate_pair(0.6, 0.1, geo, fr.Recipe(), np.random.default_rng(4))
    masked = fr.simulate_pair(
        0.6, 0.1, geo, fr.Recipe.from_overrides({"mask_unconvolved": True}), np.random.default_rng(4)
    )
    assert np.isfinite(plain[0]).all() and np.isnan(plain[1]).any()
    np.testing.assert_array_equal(np.isnan(masked[0]), np.isnan(masked[1]))
    np.testing.assert_array_equal(masked[1], plain[1], strict=True)  # same frame, only the map changes
    ok = np.isfinite(masked[0])
    np.testing.assert_array_equal(masked[0][ok], plain[0][ok])
    with pytest.raises(InputError, match="mask_unconvolved must be true or false"):
        fr.Recipe.from_overrides({"mask_unconvolved": "yes"})


def test_stripe_phase_control_differs_from_neel() -> None:
    neel = simulate_frame(0.6, 0.1, experiment_like=False)
    stripe = simulate_frame(0.6, 0.45, experiment_like=False, phase="stripe")
    assert np.isfinite(stripe).all()
    assert np.abs(neel - stripe).mean() > 0.01


def test_bad_inputs_raise_input_error() -> None:
    with pytest.raises(InputError, match="unstable"):
        simulate_frame(0.5, 0.3)
    with pytest.raises(InputError, match="geometry"):
        simulate_frame(0.5, 0.1, geometry="sphere")
    with pytest.raises(InputError, match="size"):
        simulate_frame(0.5, 0.1, size=4)
    with pytest.raises(InputError, match="unknown recipe parameter"):
        simulate_frame(0.5, 0.1, temprature=4.0)
    with pytest.raises(InputError, match="Ei above"):
        simulate_frame(0.5, 0.1, e_init=12.0)
    with pytest.raises(InputError, match="no transmission"):
        simulate_frame(0.5, 0.1, e_init=25.0, chopper_frequency=600)
    with pytest.raises(InputError, match="counts_scale"):
        simulate_frame(0.5, 0.1, counts_scale=-5.0)
