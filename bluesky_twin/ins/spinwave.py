"""Closed-form linear spin-wave theory of the S = 5/2 square-lattice J1-J2 antiferromagnet.

The model is Rb2MnF4-like: a square lattice (a = 4.2 A) of Mn2+ (S = 5/2) spins with a
nearest-neighbour exchange ``J1`` and a next-nearest-neighbour exchange ``J2``
(``J > 0`` antiferromagnetic, each bond counted once), moments along c.

Néel phase (stable for ``J2 < J1 / 2``), with ``h, k`` in reciprocal-lattice units::

    gamma1 = (cos 2 pi h + cos 2 pi k) / 2
    gamma2 = cos 2 pi h * cos 2 pi k
    A = 4 S [J1 - J2 (1 - gamma2)] + 2 S D
    B = 4 S J1 gamma1
    hbar omega = sqrt(A^2 - B^2)
    weight = S (A - B) / hbar omega * |F_Mn2+(Q)|^2

Both phases below were checked against pyspinw 1.1.0b2 (``tests/test_ins_spinwave.py``,
run when pyspinw is importable): energies agree to 1e-6 and pyspinw's cell-normalised
``Sperp`` of a 2a x 2a cell is exactly twice ``S (A - B) / omega``.  Always tested: the
closed-form checkpoints ``omega(1/2, 0) = 4 S (J1 - 2 J2)`` and
``omega(1/4, 1/4) = 4 S (J1 - J2)``, and an independent numeric two-sublattice
Holstein-Primakoff/Colpa diagonalisation.

Stripe (columnar) phase, used as a near-domain out-of-distribution control, stable for
``J2 > J1 / 2``, ordering vector (1/2, 0).  It follows from the same Holstein-Primakoff
expansion (derivation in ``docs/ins.md``)::

    A = S [2 J1 cos 2 pi k + 4 J2]
    B = S [2 J1 cos 2 pi h + 4 J2 cos 2 pi h cos 2 pi k]

with the same intensity weight ``S (A - B) / omega``.

The single-ion term ``D`` (``H = -D sum (S^z)^2``, easy axis for ``D > 0``; pyspinw
anisotropy matrix ``diag(0, 0, -D)``) enters as ``A += 2 S D``.  It reproduces the
textbook uniaxial-antiferromagnet gap ``sqrt(2 H_E H_A + H_A^2)`` and pyspinw's energies
and intensities (tested); the dataset generators keep ``D = 0`` as in the project's model.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from bluesky_twin.errors import InputError

#: Spin of Mn2+.
SPIN_MN2 = 2.5
#: Square-lattice constant of the Rb2MnF4-like model, in Angstrom.
LATTICE_A = 4.2
#: Mn2+ <j0> magnetic form-factor coefficients (A, a, B, b, C, c, D), International Tables C.
MN2_J0 = (0.4220, 17.6840, 0.5948, 6.0050, 0.0043, -0.6090, -0.0219)

Phase = Literal["neel", "stripe"]
PHASES: tuple[str, ...] = ("neel", "stripe")


def mn2_form_factor(q: ArrayLike) -> NDArray[np.float64]:
    """Dipole magnetic form factor ``<j0>`` of Mn2+.

    Parameters
    ----------
    q
        Momentum transfer ``|Q|`` in 1/A.

    Returns
    -------
    numpy.ndarray
        ``F(Q) = A exp(-a s^2) + B exp(-b s^2) + C exp(-c s^2) + D`` with ``s = Q / 4 pi``;
        ``F(0)`` is 0.9992.
    """
    s2 = (np.asarray(q, dtype=float) / (4.0 * np.pi)) ** 2
    a1, b1, a2, b2, a3, b3, c = MN2_J0
    return a1 * np.exp(-b1 * s2) + a2 * np.exp(-b2 * s2) + a3 * np.exp(-b3 * s2) + c


def q_magnitude(h: ArrayLike, k: ArrayLike, *, a: float = LATTICE_A) -> NDArray[np.float64]:
    """``|Q|`` in 1/A of the in-plane wave vector ``(h, k, 0)`` given in r.l.u."""
    h = np.asarray(h, dtype=float)
    k = np.asarray(k, dtype=float)
    return (2.0 * np.pi / a) * np.sqrt(h * h + k * k)


def check_parameters(j1: float, j2: float, *, phase: str = "neel") -> None:
    """Raise :class:`~bluesky_twin.errors.InputError` unless the ordered phase is stable.

    Parameters
    ----------
    j1, j2
        Exchange constants in meV (``> 0`` antiferromagnetic).
    phase
        ``"neel"`` needs ``0 < J1`` and ``J2 < J1 / 2``; ``"stripe"`` needs ``J2 > J1 / 2``
        and ``J2 > 0``.
    """
    if phase not in PHASES:
        raise InputError(f"phase must be one of {PHASES}, got {phase!r}")
    if not (np.isfinite(j1) and np.isfinite(j2)):
        raise InputError(f"J1 and J2 must be finite, got J1={j1!r}, J2={j2!r}")
    if phase == "neel":
        if j1 <= 0:
            raise InputError(f"Néel order needs an antiferromagnetic J1 > 0, got J1={j1}")
        if j2 >= j1 / 2:
            raise InputError(f"Néel order is unstable for J2 >= J1/2 (J1={j1}, J2={j2})")
    else:
        if j2 <= 0 or j2 <= j1 / 2:
            raise InputError(f"stripe order needs J2 > J1/2 and J2 > 0 (J1={j1}, J2={j2})")


def neel_stable(j1: ArrayLike, j2: ArrayLike) -> NDArray[np.bool_]:
    """Element-wise: is the Néel state linearly stable (``J1 > 0`` and ``J2 < J1 / 2``)?"""
    j1 = np.asarray(j1, dtype=float)
    j2 = np.asarray(j2, dtype=float)
    return (j1 > 0) & (j2 < j1 / 2)


def ab_coefficients(
    cos_h: ArrayLike,
    cos_k: ArrayLike,
    j1: float,
    j2: float,
    *,
    phase: str = "neel",
    spin: float = SPIN_MN2,
    d: float = 0.0,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Bogoliubov coefficients ``A`` and ``B`` from ``cos 2 pi h`` and ``cos 2 pi k``.

    Taking the cosines lets callers precompute them once for a fixed Q grid.

    Returns
    -------
    (A, B)
        Arrays broadcast from ``cos_h`` and ``cos_k``, in meV.
    """
    ch = np.asarray(cos_h, dtype=float)
    ck = np.asarray(cos_k, dtype=float)
    if phase == "neel":
        gamma1 = 0.5 * (ch + ck)
        gamma2 = ch * ck
        a_coef = 4.0 * spin * (j1 - j2 * (1.0 - gamma2)) + 2.0 * spin * d
        b_coef = 4.0 * spin * j1 * gamma1
    elif phase == "stripe":
        a_coef = spin * (2.0 * j1 * ck + 4.0 * j2) + 2.0 * spin * d
        b_coef = spin * (2.0 * j1 * ch + 4.0 * j2 * ch * ck)
    else:
        raise InputError(f"phase must be one of {PHASES}, got {phase!r}")
    return a_coef, b_coef


def omega_and_weight(
    a_coef: NDArray[np.float64], b_coef: NDArray[np.float64], *, spin: float = SPIN_MN2
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Mode energy ``sqrt(A^2 - B^2)`` and weight ``S (A - B) / omega`` (no form factor).

    Where ``omega`` vanishes (Goldstone points) the weight is set to 0: the divergence at
    the antiferromagnetic zone centre is integrable and only reached on a set of measure
    zero, the Gamma point carries no weight (``A = B``).
    """
    disc = a_coef * a_coef - b_coef * b_coef
    omega = np.sqrt(np.clip(disc, 0.0, None))
    with np.errstate(divide="ignore", invalid="ignore"):
        weight = np.where(omega > 1e-9, spin * (a_coef - b_coef) / omega, 0.0)
    return omega, weight


def dispersion(
    h: ArrayLike,
    k: ArrayLike,
    j1: float,
    j2: float,
    *,
    phase: str = "neel",
    spin: float = SPIN_MN2,
    d: float = 0.0,
) -> NDArray[np.float64]:
    """Spin-wave energy ``hbar omega(h, k)`` in meV.

    Parameters
    ----------
    h, k
        In-plane wave vector in r.l.u. (broadcastable arrays).
    j1, j2
        Exchange constants in meV.
    phase
        ``"neel"`` (default) or ``"stripe"`` (ordering vector (1/2, 0)).
    spin
        Spin length (5/2 for Mn2+).
    d
        Single-ion anisotropy ``D`` in meV (``H_D = -D sum (S^z)^2``).
    """
    ch = np.cos(2.0 * np.pi * np.asarray(h, dtype=float))
    ck = np.cos(2.0 * np.pi * np.asarray(k, dtype=float))
    a_coef, b_coef = ab_coefficients(ch, ck, j1, j2, phase=phase, spin=spin, d=d)
    return omega_and_weight(a_coef, b_coef, spin=spin)[0]


def spin_wave(
    h: ArrayLike,
    k: ArrayLike,
    j1: float,
    j2: float,
    *,
    phase: str = "neel",
    spin: float = SPIN_MN2,
    d: float = 0.0,
    a: float = LATTICE_A,
    form_factor: bool = True,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Mode energy and neutron intensity weight at ``(h, k, 0)``.

    Returns
    -------
    (omega, intensity)
        ``omega`` in meV; ``intensity = S (A - B) / omega * |F_Mn2+(Q)|^2`` (arbitrary
        units; proportional to pyspinw's ``Sperp``).
    """
    h = np.asarray(h, dtype=float)
    k = np.asarray(k, dtype=float)
    ch = np.cos(2.0 * np.pi * h)
    ck = np.cos(2.0 * np.pi * k)
    a_coef, b_coef = ab_coefficients(ch, ck, j1, j2, phase=phase, spin=spin, d=d)
    omega, weight = omega_and_weight(a_coef, b_coef, spin=spin)
    if form_factor:
        weight = weight * mn2_form_factor(q_magnitude(h, k, a=a)) ** 2
    return omega, weight
