"""Closed-form linear spin-wave theory of the J1-J2 square-lattice antiferromagnet."""

from __future__ import annotations

import numpy as np
import pytest

from bluesky_twin.errors import InputError
from bluesky_twin.ins import spinwave as sw

S = sw.SPIN_MN2


@pytest.mark.parametrize("j1, j2", [(0.8, 0.1), (0.5, -0.15), (1.0, 0.35), (0.3, -0.2)])
def test_closed_form_checkpoints(j1: float, j2: float) -> None:
    assert sw.dispersion(0.5, 0.0, j1, j2) == pytest.approx(4 * S * (j1 - 2 * j2), rel=1e-12)
    assert sw.dispersion(0.25, 0.25, j1, j2) == pytest.approx(4 * S * (j1 - j2), rel=1e-12)
    # Goldstone modes at Gamma and at the antiferromagnetic zone centre
    assert sw.dispersion(0.0, 0.0, j1, j2) == pytest.approx(0.0, abs=1e-6)
    assert sw.dispersion(0.5, 0.5, j1, j2) == pytest.approx(0.0, abs=1e-6)


def test_dispersion_symmetries_and_vectorisation() -> None:
    rng = np.random.default_rng(0)
    h, k = rng.uniform(-2, 2, (2, 500))
    w = sw.dispersion(h, k, 0.7, 0.1)
    assert w.shape == (500,)
    np.testing.assert_allclose(w, sw.dispersion(k, h, 0.7, 0.1), atol=1e-12)
    np.testing.assert_allclose(w, sw.dispersion(-h, k, 0.7, 0.1), atol=1e-12)
    np.testing.assert_allclose(w, sw.dispersion(h + 1, k, 0.7, 0.1), atol=1e-9)
    assert np.all(w >= 0)


def test_intensity_weight_and_form_factor() -> None:
    assert sw.mn2_form_factor(0.0) == pytest.approx(0.9992, abs=1e-4)
    q = np.linspace(0, 6, 50)
    assert np.all(np.diff(sw.mn2_form_factor(q)) < 0)  # decreasing over this range
    # weight S(A-B)/omega at the zone boundary (1/2, 0): B = 0 so weight = S
    omega, weight = sw.spin_wave(0.5, 0.0, 0.8, 0.1, form_factor=False)
    assert weight == pytest.approx(S, rel=1e-12)
    _, with_ff = sw.spin_wave(0.5, 0.0, 0.8, 0.1)
    q_bz = 2 * np.pi / sw.LATTICE_A * 0.5
    assert with_ff == pytest.approx(S * sw.mn2_form_factor(q_bz) ** 2, rel=1e-12)
    # intensity grows towards the antiferromagnetic zone centre, vanishes at Gamma
    _, near_af = sw.spin_wave(0.49, 0.5, 0.8, 0.1, form_factor=False)
    _, near_gamma = sw.spin_wave(0.01, 0.0, 0.8, 0.1, form_factor=False)
    assert near_af > 20 * S and near_gamma < 0.1


def test_single_ion_gap_matches_uniaxial_antiferromagnet() -> None:
    j1, d = 0.6, 0.05
    h_e, h_a = 4 * S * j1, 2 * S * d
    gap = sw.dispersion(0.5, 0.5, j1, 0.0, d=d)
    assert gap == pytest.approx(np.sqrt(2 * h_e * h_a + h_a**2), rel=1e-12)


def test_stripe_phase_goldstone_modes_and_stability() -> None:
    j1, j2 = 0.6, 0.45
    # Goldstone modes at Gamma and the ordering vector (1/2, 0); the zero at (0, 1/2) is
    # the known accidental LSWT degeneracy of the columnar phase (order by disorder)
    for h, k in [(0, 0), (0.5, 0), (1.5, 1), (0, 0.5)]:
        assert sw.dispersion(h, k, j1, j2, phase="stripe") == pytest.approx(0.0, abs=1e-6)
    # closed form at (1/4, 1/4): A = 4 S J2, B = 0
    assert sw.dispersion(0.25, 0.25, j1, j2, phase="stripe") == pytest.approx(4 * S * j2, rel=1e-12)
    # A >= |B| everywhere for J2 > J1/2, but not below (imaginary modes -> unstable)
    h, k = np.meshgrid(np.linspace(0, 1, 41), np.linspace(0, 1, 41))
    ch, ck = np.cos(2 * np.pi * h), np.cos(2 * np.pi * k)
    a, b = sw.ab_coefficients(ch, ck, j1, j2, phase="stripe")
    assert np.all(a - np.abs(b) >= -1e-9)
    a, b = sw.ab_coefficients(ch, ck, j1, 0.4 * j1, phase="stripe")
    assert np.any(a - np.abs(b) < -1e-6)


def test_neel_stability_checks() -> None:
    assert sw.neel_stable(1.0, 0.49) and not sw.neel_stable(1.0, 0.5)
    # beyond J1/2 the Neel Bogoliubov matrix is not positive definite at (1/2, 0): A < |B|
    a, b = sw.ab_coefficients(np.cos(np.pi), 1.0, 1.0, 0.6)
    assert a < abs(b)
    a, b = sw.ab_coefficients(np.cos(np.pi), 1.0, 1.0, 0.4)
    assert a > abs(b)
    with pytest.raises(InputError, match="unstable"):
        sw.check_parameters(1.0, 0.5)
    with pytest.raises(InputError, match="J1 > 0"):
        sw.check_parameters(-0.5, 0.0)
    with pytest.raises(InputError, match="stripe"):
        sw.check_parameters(1.0, 0.3, phase="stripe")
    with pytest.raises(InputError, match="phase"):
        sw.check_parameters(1.0, 0.1, phase="spiral")
    with pytest.raises(InputError, match="finite"):
        sw.check_parameters(float("nan"), 0.1)


def _numeric_lswt(h: float, k: float, j1: float, j2: float, phase: str) -> np.ndarray:
    """Independent oracle: multi-sublattice Holstein-Primakoff matrix, Colpa eigenvalues.

    Builds the 2-site magnetic cell explicitly (Neel: checkerboard; stripe: spins
    alternating along x), lists every J1/J2 bond once in real space and diagonalises
    g H(k).  Returns the positive eigenvalues (omega of both magnetic branches).
    """
    if phase == "neel":
        sub = lambda x, y: (x + y) % 2  # noqa: E731
        sites = [(0, 0), (1, 0)]
    else:
        sub = lambda x, y: x % 2  # noqa: E731
        sites = [(0, 0), (1, 0)]
    spin_dir = [1, -1]
    bonds = [((1, 0), j1), ((0, 1), j1), ((1, 1), j2), ((1, -1), j2)]
    n = len(sites)
    a_mat = np.zeros((n, n), complex)
    b_mat = np.zeros((n, n), complex)
    for alpha, (x, y) in enumerate(sites):
        for (dx, dy), jval in bonds:
            beta = sub(x + dx, y + dy)
            phase_k = np.exp(2j * np.pi * (h * dx + k * dy))
            if spin_dir[alpha] == spin_dir[beta]:  # parallel: -JS(n_i+n_j) + JS(a_i^+ a_j + h.c.)
                a_mat[alpha, alpha] -= jval * S
                a_mat[beta, beta] -= jval * S
                a_mat[alpha, beta] += jval * S * phase_k
                a_mat[beta, alpha] += jval * S * np.conj(phase_k)
            else:  # antiparallel: +JS(n_i+n_j) + JS(a_i a_j + h.c.)
                a_mat[alpha, alpha] += jval * S
                a_mat[beta, beta] += jval * S
                b_mat[alpha, beta] += jval * S * phase_k
                b_mat[beta, alpha] += jval * S * np.conj(phase_k)
    a_minus = a_mat.conj()  # A(-k) for these real-space bonds
    ham = np.block([[a_mat, b_mat], [b_mat.conj().T, a_minus.T]])
    g = np.diag([1.0] * n + [-1.0] * n)
    ev = np.linalg.eigvals(g @ ham)
    assert np.allclose(ev.imag, 0, atol=1e-8)
    return np.sort(ev.real[ev.real > 0])


@pytest.mark.parametrize(
    "phase, j1, j2, q_order",
    [
        ("neel", 0.8, 0.15, (0.5, 0.5)),
        ("neel", 0.6, -0.2, (0.5, 0.5)),
        ("stripe", 0.5, 0.4, (0.5, 0.0)),
        ("stripe", 0.9, 0.6, (0.5, 0.0)),
    ],
)
def test_closed_form_matches_numeric_multisublattice_lswt(phase, j1, j2, q_order) -> None:
    rng = np.random.default_rng(1)
    for h, k in rng.uniform(-1, 1, (12, 2)):
        numeric = _numeric_lswt(h, k, j1, j2, phase)
        closed = np.sort(
            [
                sw.dispersion(h, k, j1, j2, phase=phase),
                sw.dispersion(h + q_order[0], k + q_order[1], j1, j2, phase=phase),
            ]
        )
        np.testing.assert_allclose(numeric, closed, rtol=1e-9, atol=1e-9)


def _pyspinw_hamiltonian(pyspinw, j1: float, j2: float, phase: str, d: float = 0.0):  # noqa: ANN001, ANN202
    """2a x 2a cell with 4 Mn sites, every J1/J2 bond listed once, H_D = -D (S^z)^2."""
    a = sw.LATTICE_A
    cell = pyspinw.UnitCell(2 * a, 2 * a, 10.0)
    pos = [(0, 0), (1, 0), (0, 1), (1, 1)]
    up = (lambda x, y: (x + y) % 2 == 0) if phase == "neel" else (lambda x, y: x % 2 == 0)
    sites = [pyspinw.Site(x / 2, y / 2, 0, 0, 0, S if up(x, y) else -S, name=f"Mn{x}{y}") for x, y in pos]
    index = dict(zip(pos, sites))
    exchanges = []
    for (x, y), site in index.items():
        for (dx, dy), jval in [((1, 0), j1), ((0, 1), j1), ((1, 1), j2), ((1, -1), j2)]:
            tx, ty = x + dx, y + dy
            exchanges.append(
                pyspinw.HeisenbergExchange(site, index[(tx % 2, ty % 2)], j=jval, cell_offset=(tx // 2, ty // 2, 0))
            )
    anisotropies = [pyspinw.Anisotropy(site, np.diag([0.0, 0.0, -d])) for site in sites] if d else None
    return pyspinw.Hamiltonian(pyspinw.Structure(sites, cell), exchanges, anisotropies)


@pytest.mark.parametrize(
    "phase, j1, j2, d",
    [("neel", 0.8, -0.15, 0.0), ("neel", 0.5, 0.2, 0.0), ("stripe", 0.5, 0.4, 0.0), ("neel", 0.6, 0.1, 0.05)],
)
def test_against_pyspinw_if_installed(phase: str, j1: float, j2: float, d: float, monkeypatch) -> None:
    """Optional oracle: pyspinw 1.1.0b2 (pulls in PySide6, so not a hard dependency).

    Checked here (with pyspinw on PYTHONPATH): energies agree to 1e-6 and pyspinw's
    cell-normalised S_perp of the 4-site cell is exactly 2 x S (A - B) / omega, with no
    intensity in the other (folded) modes.
    """
    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")
    pyspinw = pytest.importorskip("pyspinw")
    ham = _pyspinw_hamiltonian(pyspinw, j1, j2, phase, d)
    hk = np.random.default_rng(1).uniform(-1, 1, (8, 2))
    q = np.column_stack([2 * hk[:, 0], 2 * hk[:, 1], np.zeros(len(hk))])  # r.l.u. of the 2a cell
    energies, intensities = ham._energies_and_intensities(q)
    energies = np.real(np.asarray(energies))
    intensities = np.real(np.asarray(intensities))
    for row, (h, k) in enumerate(hk):
        omega, weight = sw.spin_wave(h, k, j1, j2, phase=phase, d=d, form_factor=False)
        same = np.abs(energies[row] - omega) < 1e-6
        assert same.sum() == 2  # two degenerate modes of the 4-site cell carry omega(h, k)
        assert intensities[row][same].sum() == pytest.approx(2 * weight, rel=1e-6)
        others = (energies[row] > 1e-6) & ~same
        assert np.abs(intensities[row][others]).sum() == pytest.approx(0.0, abs=1e-8)
