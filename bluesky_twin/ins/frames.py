"""Unconvolved and experiment-like INS frames of the J1-J2 spin-wave model.

A frame is a 2D ``(n_E, n_x)`` array: rows are energy-transfer bins (row 0 is the lowest
energy), columns are momentum bins, either along the cut ``(h, 1/2, 0)`` (geometry
``"cut"``) or powder-averaged ``|Q|`` (geometry ``"powder"``).

The *unconvolved* map is the spin-wave spectrum without instrument resolution: each mode
is binned in energy with a small intrinsic Gaussian (``intrinsic_sigma_e``, default
0.1 meV, below the 0.25 meV bin width of a 64-bin 0-16 meV axis) so that lines do not
alias on bin edges; it is scaled by its 99.5th percentile.

The *experiment-like* frame follows the recipe of the project's INS note:

1. Q broadening by a Gaussian of ``sigma_q`` (0.03 1/A): 5 x 3 Gauss-Hermite points along
   and across a cut, 5 along ``|Q|`` for powder;
2. each mode spread in energy with a bin-integrated Gaussian of the MAPS width
   ``sigma(omega)`` from ``resins`` (:mod:`bluesky_twin.ins.resolution`);
3. Bose factor ``n(E) + 1`` at the sample temperature;
4. division by the 99.5th percentile (never by the maximum: the antiferromagnetic zone
   centre diverges);
5. elastic line ``A_el exp(-E^2 / 2 sigma(0)^2) exp(-0.05 Q^2)`` (bin-averaged) and
   background ``b0 + b1 Q^2``;
6. Poisson counting noise ``Poisson(N lambda) / N`` with ``N ~ U(30, 300)``;
7. NaN masks: 1-3 stripes of 1-2 detector-gap columns for cuts, pixels outside the MAPS
   2theta coverage (3-60 degrees) for powder.

Energy spreading is done by histogramming the modes on a fine energy grid (1/8 bin, with
linear sharing between neighbouring fine bins) and multiplying by a cached
fine-grid-to-bin spreading matrix, which makes a 64 x 64 cut pair cost about a
millisecond.

Limitation: energy and Q resolution are separate Gaussians, so the tilted resolution
ellipsoid that Horace/Tobyfit capture is missed.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bluesky_twin.errors import InputError
from bluesky_twin.ins.physics import E_PER_K2, K_B_MEV, bose_factor
from bluesky_twin.ins.resolution import EnergyResolution, maps_resolution
from bluesky_twin.ins.spinwave import (
    LATTICE_A,
    PHASES,
    SPIN_MN2,
    ab_coefficients,
    check_parameters,
    mn2_form_factor,
    omega_and_weight,
    q_magnitude,
)

GEOMETRIES: tuple[str, ...] = ("cut", "powder")
#: Fine energy sub-bins per output energy bin used for the spreading matrix.
FINE_PER_BIN = 8

Range = tuple[float, float]


@dataclass(frozen=True)
class Recipe:
    """Parameters of the experiment-like recipe.

    A two-element tuple means "draw uniformly from this range for each frame", a scalar
    fixes the value.  ``e_init`` is a tuple of choices (or one value).  Integer ranges
    (``n_stripes``, ``stripe_width``) are inclusive.

    Attributes
    ----------
    sigma_q
        Gaussian Q broadening in 1/A.
    n_gh_along, n_gh_across
        Gauss-Hermite points along / across the cut (along ``|Q|`` for powder).
    e_init
        Incident energies (meV) to choose from; only 25-35 meV suits a 0-16 meV window.
    chopper_frequency, chopper_package
        MAPS Fermi-chopper setting.
    temperature
        Sample temperature in K (Bose factor).
    percentile
        Normalisation percentile.
    elastic_amplitude, background_b0, background_b1
        Elastic-line amplitude and background ``b0 + b1 Q^2`` relative to the normalised
        inelastic signal.
    counts_scale
        ``N`` in ``Poisson(N lambda) / N``.
    n_stripes, stripe_width
        Masked detector-gap stripes of a cut.
    two_theta_range
        MAPS scattering-angle coverage in degrees (powder mask).
    mask_unconvolved
        Give the unconvolved map the NaN mask of its experiment-like frame (powder
        kinematic coverage, or detector stripes of a cut).  The simulation is then
        restricted to what the instrument measures, so the two domains differ by
        resolution, counting and background only, not by coverage.
    intrinsic_sigma_e
        Energy width (meV) used to bin the unconvolved map.
    n_u, n_phi
        Gauss-Legendre points over ``u = cos theta`` in [0, 1] and the in-plane azimuth in
        [0, pi/2] for the powder average (the spectrum is even in u and has the square
        lattice's mirror symmetries).
    e_range, h_range, k_cut, q_range
        Frame axes: energy in meV, cut ``h`` in r.l.u. at ``k = k_cut``, powder ``|Q|`` in
        1/A.
    """

    sigma_q: float = 0.03
    n_gh_along: int = 5
    n_gh_across: int = 3
    e_init: tuple[float, ...] = (25.0, 30.0, 35.0)
    chopper_frequency: int = 200
    chopper_package: str = "S"
    temperature: float | Range = (2.0, 15.0)
    percentile: float = 99.5
    elastic_amplitude: float | Range = (0.5, 2.0)
    background_b0: float | Range = (0.0, 0.05)
    background_b1: float | Range = (0.0, 0.005)
    counts_scale: float | Range = (30.0, 300.0)
    n_stripes: int | tuple[int, int] = (1, 3)
    stripe_width: int | tuple[int, int] = (1, 2)
    two_theta_range: Range = (3.0, 60.0)
    mask_unconvolved: bool = False
    intrinsic_sigma_e: float = 0.1
    n_u: int = 64
    n_phi: int = 192
    e_range: Range = (0.0, 16.0)
    h_range: Range = (0.0, 1.0)
    k_cut: float = 0.5
    q_range: Range = (0.2, 3.0)

    @classmethod
    def from_overrides(cls, overrides: Mapping[str, Any] | None = None) -> Recipe:
        """Default recipe with validated ``overrides`` applied.

        Raises
        ------
        InputError
            On an unknown key or an invalid value.
        """
        overrides = dict(overrides or {})
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise InputError(f"unknown recipe parameter(s) {unknown}; valid: {sorted(names)}")
        if "e_init" in overrides:
            ei = overrides["e_init"]
            overrides["e_init"] = tuple(float(v) for v in np.atleast_1d(ei))
        for key in ("two_theta_range", "e_range", "h_range", "q_range"):
            if key in overrides:
                overrides[key] = tuple(float(v) for v in overrides[key])
        recipe = dataclasses.replace(cls(), **overrides)
        recipe.validate()
        return recipe

    def validate(self) -> None:
        """Raise :class:`InputError` if a parameter is out of its physical range."""

        def positive(name: str, value: float) -> None:
            if not (isinstance(value, (int, float, np.number)) and math.isfinite(value) and value > 0):
                raise InputError(f"recipe parameter {name} must be a positive number, got {value!r}")

        def range_ok(name: str, value: Any, lo: float, integer: bool = False) -> None:
            vals = np.atleast_1d(np.asarray(value, dtype=float))
            if vals.size not in (1, 2) or not np.all(np.isfinite(vals)) or vals.min() < lo:
                raise InputError(
                    f"recipe parameter {name} must be a number >= {lo} or a (low, high) pair, got {value!r}"
                )
            if vals.size == 2 and vals[0] > vals[1]:
                raise InputError(f"recipe parameter {name}: low > high in {value!r}")
            if integer and not np.all(vals == np.round(vals)):
                raise InputError(f"recipe parameter {name} must be integer(s), got {value!r}")

        if not isinstance(self.mask_unconvolved, (bool, np.bool_)):
            raise InputError(f"recipe parameter mask_unconvolved must be true or false, got {self.mask_unconvolved!r}")
        positive("sigma_q", self.sigma_q)
        positive("intrinsic_sigma_e", self.intrinsic_sigma_e)
        for name in ("n_gh_along", "n_gh_across", "n_u", "n_phi"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or not 1 <= value <= 256:
                raise InputError(f"recipe parameter {name} must be an integer in [1, 256], got {value!r}")
        if not self.e_init or any(not math.isfinite(e) or e <= 0 for e in self.e_init):
            raise InputError(f"recipe parameter e_init must be positive energies, got {self.e_init!r}")
        positive("temperature", np.min(self.temperature))
        if not 50.0 <= float(self.percentile) <= 100.0:
            raise InputError(f"recipe parameter percentile must be in [50, 100], got {self.percentile!r}")
        range_ok("elastic_amplitude", self.elastic_amplitude, 0.0)
        range_ok("background_b0", self.background_b0, 0.0)
        range_ok("background_b1", self.background_b1, 0.0)
        range_ok("counts_scale", self.counts_scale, 1e-6)
        positive("counts_scale", float(np.min(self.counts_scale)))
        range_ok("n_stripes", self.n_stripes, 0, integer=True)
        range_ok("stripe_width", self.stripe_width, 1, integer=True)
        for name, lo_min in (("two_theta_range", 0.0), ("e_range", 0.0), ("h_range", -10.0), ("q_range", 0.0)):
            lo, hi = getattr(self, name)
            if not (math.isfinite(lo) and math.isfinite(hi) and lo_min <= lo < hi):
                raise InputError(f"recipe parameter {name} must be an increasing pair >= {lo_min}, got {(lo, hi)}")
        if self.two_theta_range[1] > 180:
            raise InputError(f"two_theta_range must lie within [0, 180] degrees, got {self.two_theta_range}")
        if max(self.e_range) >= min(self.e_init):
            raise InputError(
                f"the energy window {self.e_range} meV needs every Ei above {self.e_range[1]} meV, "
                f"got e_init={self.e_init}"
            )


@dataclass(frozen=True)
class Geometry:
    """Binning of a frame: ``size`` momentum columns x ``size`` energy rows."""

    kind: str
    size: int
    x_edges: NDArray[np.float64]
    e_edges: NDArray[np.float64]
    k_cut: float = 0.5

    @property
    def x_centres(self) -> NDArray[np.float64]:
        """Momentum bin centres (r.l.u. ``h`` for cuts, ``|Q|`` in 1/A for powder)."""
        return 0.5 * (self.x_edges[1:] + self.x_edges[:-1])

    @property
    def e_centres(self) -> NDArray[np.float64]:
        """Energy bin centres in meV."""
        return 0.5 * (self.e_edges[1:] + self.e_edges[:-1])

    @property
    def q_columns(self) -> NDArray[np.float64]:
        """``|Q|`` (1/A) at each momentum column centre."""
        if self.kind == "cut":
            return q_magnitude(self.x_centres, self.k_cut)
        return self.x_centres

    def axes(self) -> dict[str, Any]:
        """Axis description stored with datasets (names, units, centres, edges)."""
        x_name, x_unit = ("h", "r.l.u.") if self.kind == "cut" else ("|Q|", "1/A")
        return {
            "names": ("E", x_name),
            "units": ("meV", x_unit),
            "y": self.e_centres,
            "x": self.x_centres,
            "y_edges": self.e_edges,
            "x_edges": self.x_edges,
        }


def make_geometry(kind: str, size: int, recipe: Recipe) -> Geometry:
    """Build the frame binning for ``kind`` (``"cut"`` or ``"powder"``) and ``size``."""
    if kind not in GEOMETRIES:
        raise InputError(f"geometry must be one of {GEOMETRIES}, got {kind!r}")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not 8 <= size <= 1024:
        raise InputError(f"frame size must be an integer in [8, 1024], got {size!r}")
    x_range = recipe.h_range if kind == "cut" else recipe.q_range
    return Geometry(
        kind=kind,
        size=int(size),
        x_edges=np.linspace(*x_range, int(size) + 1),
        e_edges=np.linspace(*recipe.e_range, int(size) + 1),
        k_cut=recipe.k_cut,
    )


# --------------------------------------------------------------------------- quadrature
@dataclass(frozen=True)
class _Points:
    """In-plane Q points and how their energy histograms map onto momentum columns.

    ``cos_h``/``cos_k``/``weight`` have shape ``(n_rows, m)``: ``m`` points per row.  For a
    cut each row is a momentum column.  For powder each row is an in-plane radius
    ``|q_ip|`` (azimuthal points per row) and ``projection`` ``(n_x, n_rows)`` sums the
    radial histograms into ``|Q|`` columns (the u = cos(theta) integral, polarisation
    factor, form factor and Q sampling are folded into it).
    """

    cos_h: NDArray[np.float64]
    cos_k: NDArray[np.float64]
    weight: NDArray[np.float64]
    projection: NDArray[np.float64] | None = None


def _gauss_hermite(n: int) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Probabilists' Gauss-Hermite nodes and weights normalised to sum 1."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(n)
    return nodes, weights / weights.sum()


def _gauss_legendre(n: int, lo: float, hi: float) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Gauss-Legendre nodes on [lo, hi] with weights normalised to sum 1."""
    nodes, weights = np.polynomial.legendre.leggauss(n)
    return lo + (hi - lo) * (nodes + 1) / 2, weights / weights.sum()


#: Gauss-Legendre points across one momentum bin for the unconvolved powder map.
POWDER_BIN_POINTS = 4
#: In-plane radii per 1/A on which the powder average is tabulated.
POWDER_RADII_PER_INV_A = 128


@lru_cache(maxsize=16)
def _points(
    kind: str,
    size: int,
    x_range: Range,
    k_cut: float,
    sigma_q: float,
    n_along: int,
    n_across: int,
    n_u: int,
    n_phi: int,
    broadened: bool,
) -> _Points:
    edges = np.linspace(*x_range, size + 1)
    centres = 0.5 * (edges[1:] + edges[:-1])
    if kind == "cut":
        if broadened:
            sigma_rlu = sigma_q * LATTICE_A / (2 * np.pi)
            xa, wa = _gauss_hermite(n_along)
            xc, wc = _gauss_hermite(n_across)
            dh = np.repeat(sigma_rlu * xa, len(xc))
            dk = np.tile(sigma_rlu * xc, len(xa))
            w = np.outer(wa, wc).ravel()
            h = centres[:, None] + dh[None, :]
            k = k_cut + np.broadcast_to(dk[None, :], h.shape)
        else:
            h = centres[:, None]
            k = np.full_like(h, k_cut)
            w = np.ones(1)
        weight = w[None, :] * mn2_form_factor(q_magnitude(h, k)) ** 2
        return _Points(np.cos(2 * np.pi * h), np.cos(2 * np.pi * k), weight)

    # Powder.  The 2D spin-wave spectrum depends on the in-plane wave vector only, so
    # tabulate azimuthal averages on a grid of in-plane radii r, then integrate over
    # u = cos(theta) (Q_inplane = Q sqrt(1 - u^2)) by linear interpolation in r.
    if broadened:  # Gaussian Q resolution: Gauss-Hermite points around each bin centre
        xq, wq = _gauss_hermite(n_along)
        q_sub = centres[:, None] + sigma_q * xq[None, :]
    else:  # no resolution: integrate across the bin
        xb, wq = _gauss_legendre(POWDER_BIN_POINTS, -0.5, 0.5)
        q_sub = centres[:, None] + (edges[1] - edges[0]) * xb[None, :]
    q_sub = np.abs(q_sub)
    r_max = float(q_sub.max()) * 1.0001
    n_r = max(int(math.ceil(r_max * POWDER_RADII_PER_INV_A)), 8) + 1
    radii = np.linspace(0.0, r_max, n_r)
    u, wu = _gauss_legendre(n_u, 0.0, 1.0)
    polarisation = (1 + u * u) / 2
    r_pts = q_sub[:, :, None] * np.sqrt(1 - u * u)[None, None, :]  # (n_x, n_sub, n_u)
    w_pts = (wq[None, :, None] * (wu * polarisation)[None, None, :]) * (mn2_form_factor(q_sub) ** 2)[:, :, None]
    pos = r_pts / (radii[1] - radii[0])
    i0 = np.minimum(np.floor(pos).astype(np.int64), n_r - 2)
    frac = pos - i0
    projection = np.zeros((size, n_r))
    rows = np.broadcast_to(np.arange(size)[:, None, None], r_pts.shape)
    np.add.at(projection, (rows, i0), w_pts * (1 - frac))
    np.add.at(projection, (rows, i0 + 1), w_pts * frac)

    phi, wphi = _gauss_legendre(n_phi, 0.0, np.pi / 2)
    r_rlu = radii[:, None] * LATTICE_A / (2 * np.pi)
    h = r_rlu * np.cos(phi)[None, :]
    k = r_rlu * np.sin(phi)[None, :]
    weight = np.broadcast_to(wphi[None, :], h.shape).copy()
    return _Points(np.cos(2 * np.pi * h), np.cos(2 * np.pi * k), weight, projection)


def _points_for(geometry: Geometry, recipe: Recipe, broadened: bool) -> _Points:
    x_range = (float(geometry.x_edges[0]), float(geometry.x_edges[-1]))
    return _points(
        geometry.kind,
        geometry.size,
        x_range,
        float(geometry.k_cut),
        float(recipe.sigma_q),
        int(recipe.n_gh_along),
        int(recipe.n_gh_across),
        int(recipe.n_u),
        int(recipe.n_phi),
        broadened,
    )


# ------------------------------------------------------------------ energy spreading
@dataclass(frozen=True)
class _Spreader:
    """Fine energy grid and the matrix mapping it to bin-integrated Gaussians."""

    fine_width: float
    n_fine: int
    matrix: NDArray[np.float64]  # (n_fine, n_E)


@lru_cache(maxsize=32)
def _spreader(e_lo: float, e_hi: float, n_e: int, sigma_key: tuple) -> _Spreader:
    from scipy.special import ndtr

    edges = np.linspace(e_lo, e_hi, n_e + 1)
    bin_width = (e_hi - e_lo) / n_e
    fine_width = bin_width / FINE_PER_BIN
    if sigma_key[0] == "const":
        sigma_const = float(sigma_key[1])
        top = e_hi + 6 * sigma_const
        n_fine = int(math.ceil(top / fine_width))
        fine_centres = (np.arange(n_fine) + 0.5) * fine_width
        sigma = np.full_like(fine_centres, sigma_const)
    else:
        resolution: EnergyResolution = sigma_key[1]
        e_cap = resolution.e_init * 0.999
        probe = np.linspace(0, min(e_hi, e_cap), 64)
        top = min(e_hi + 6 * float(resolution.sigma(probe).max()), e_cap)
        n_fine = int(math.ceil(top / fine_width))
        fine_centres = (np.arange(n_fine) + 0.5) * fine_width
        sigma = resolution.sigma(np.minimum(fine_centres, e_cap))
    cdf = ndtr((edges[None, :] - fine_centres[:, None]) / sigma[:, None])
    matrix = np.diff(cdf, axis=1) / bin_width
    matrix[np.abs(matrix) < 1e-12] = 0.0  # no denormals: they make BLAS crawl
    return _Spreader(fine_width, n_fine, np.ascontiguousarray(matrix))


def _histogram(omega: NDArray, weight: NDArray, spreader: _Spreader) -> NDArray[np.float64]:
    """Histogram modes ``(n_rows, m)`` on the fine energy grid: returns ``(n_rows, n_fine)``.

    Each mode is shared linearly between the two nearest fine-bin centres; modes above
    the fine grid (far above the energy window) are dropped.
    """
    n_rows = omega.shape[0]
    pos = omega / spreader.fine_width - 0.5
    j0 = np.floor(pos)
    frac = pos - j0
    j0 = j0.astype(np.int64)
    below = j0 < 0
    frac[below] = 0.0
    j0[below] = 0
    keep = j0 < spreader.n_fine - 1
    rows = np.broadcast_to(np.arange(n_rows)[:, None], omega.shape)
    base = rows[keep] * spreader.n_fine + j0[keep]
    w = weight[keep]
    f = frac[keep]
    total = n_rows * spreader.n_fine
    hist = np.bincount(base, weights=w * (1 - f), minlength=total)
    hist += np.bincount(base + 1, weights=w * f, minlength=total)
    return hist.reshape(n_rows, spreader.n_fine)


def _spectrum(j1: float, j2: float, points: _Points, spreader: _Spreader, phase: str) -> NDArray[np.float64]:
    """Spin-wave intensity ``(n_E, n_x)`` for one parameter set."""
    domains = [(points.cos_h, points.cos_k)]
    if phase == "stripe":  # twinned sample: (1/2, 0) and (0, 1/2) domains in equal parts
        domains.append((points.cos_k, points.cos_h))
    hist = None
    for ch, ck in domains:
        a_coef, b_coef = ab_coefficients(ch, ck, j1, j2, phase=phase)
        omega, weight = omega_and_weight(a_coef, b_coef, spin=SPIN_MN2)
        part = _histogram(omega, weight * points.weight / len(domains), spreader)
        hist = part if hist is None else hist + part
    if points.projection is not None:
        hist = points.projection @ hist
    return (hist @ spreader.matrix).T


# ---------------------------------------------------------------------- recipe steps
def percentile_normalise(frame: NDArray, percentile: float = 99.5) -> NDArray:
    """Divide by the ``percentile``-th percentile of the finite values (never the max).

    A frame whose percentile is not positive is scaled by its largest positive value, or
    returned unchanged if it has none.
    """
    finite = frame[np.isfinite(frame)]
    if finite.size == 0:
        return frame
    scale = float(np.percentile(finite, percentile))
    if not scale > 0:
        scale = float(finite.max())
        if not scale > 0:
            return frame
    return frame / scale


def _draw(value: Any, rng: np.random.Generator) -> float:
    vals = np.atleast_1d(np.asarray(value, dtype=float))
    return float(vals[0]) if vals.size == 1 else float(rng.uniform(vals[0], vals[1]))


def _draw_int(value: Any, rng: np.random.Generator) -> int:
    vals = np.atleast_1d(np.asarray(value, dtype=int))
    return int(vals[0]) if vals.size == 1 else int(rng.integers(vals[0], vals[1] + 1))


def sample_nuisance(recipe: Recipe, rng: np.random.Generator) -> dict[str, float]:
    """Draw the per-frame nuisance parameters of the experiment-like recipe."""
    return {
        "e_init": float(recipe.e_init[int(rng.integers(len(recipe.e_init)))]),
        "temperature": _draw(recipe.temperature, rng),
        "elastic_amplitude": _draw(recipe.elastic_amplitude, rng),
        "background_b0": _draw(recipe.background_b0, rng),
        "background_b1": _draw(recipe.background_b1, rng),
        "counts_scale": _draw(recipe.counts_scale, rng),
    }


def powder_coverage_mask(geometry: Geometry, e_init: float, two_theta_range: Range) -> NDArray[np.bool_]:
    """True where a powder pixel (E, |Q|) lies outside the detector 2theta coverage.

    ``Q^2 = ki^2 + kf^2 - 2 ki kf cos 2theta`` with ``k = sqrt(E / 2.0721)``.
    """
    e = geometry.e_centres[:, None]
    q = geometry.x_centres[None, :]
    ki = math.sqrt(e_init / E_PER_K2)
    kf = np.sqrt(np.clip(e_init - e, 0, None) / E_PER_K2)
    with np.errstate(divide="ignore", invalid="ignore"):
        cos2t = (ki * ki + kf * kf - q * q) / (2 * ki * kf)
    lo, hi = np.deg2rad(two_theta_range)
    inside = (cos2t <= math.cos(lo)) & (cos2t >= math.cos(hi)) & (kf > 0)
    return ~inside


def stripe_mask(size: tuple[int, int], recipe: Recipe, rng: np.random.Generator) -> NDArray[np.bool_]:
    """True in 1-3 randomly placed detector-gap stripes (whole columns) of 1-2 pixels."""
    n_e, n_x = size
    mask = np.zeros(size, dtype=bool)
    for _ in range(_draw_int(recipe.n_stripes, rng)):
        width = _draw_int(recipe.stripe_width, rng)
        start = int(rng.integers(0, max(n_x - width, 0) + 1))
        mask[:, start : start + width] = True
    return mask


def _resolution_for(recipe: Recipe, e_init: float, table: Mapping | None) -> EnergyResolution:
    key = (float(e_init), int(recipe.chopper_frequency), str(recipe.chopper_package))
    if table is not None and key in table:
        return table[key]
    return maps_resolution(*key)


def resolution_table(recipe: Recipe) -> dict[tuple, EnergyResolution]:
    """Resolution objects for every Ei of ``recipe`` (picklable; send to workers)."""
    return {
        (float(ei), int(recipe.chopper_frequency), str(recipe.chopper_package)): maps_resolution(
            ei, recipe.chopper_frequency, recipe.chopper_package
        )
        for ei in recipe.e_init
    }


# ------------------------------------------------------------------------ public API
def unconvolved_map(
    j1: float, j2: float, geometry: Geometry, recipe: Recipe, *, phase: str = "neel"
) -> NDArray[np.float64]:
    """Spin-wave map without instrument resolution, scaled by its 99.5th percentile."""
    points = _points_for(geometry, recipe, broadened=False)
    spreader = _spreader(
        float(geometry.e_edges[0]),
        float(geometry.e_edges[-1]),
        geometry.size,
        ("const", float(recipe.intrinsic_sigma_e)),
    )
    return percentile_normalise(_spectrum(j1, j2, points, spreader, phase), recipe.percentile)


def experiment_like_frame(
    j1: float,
    j2: float,
    geometry: Geometry,
    recipe: Recipe,
    rng: np.random.Generator,
    *,
    phase: str = "neel",
    resolutions: Mapping | None = None,
) -> tuple[NDArray[np.float64], dict[str, float]]:
    """One experiment-like frame and the nuisance parameters drawn for it.

    Returns
    -------
    (frame, nuisance)
        ``frame`` is ``(size, size)`` float64 with NaN where masked.
    """
    nuisance = sample_nuisance(recipe, rng)
    resolution = _resolution_for(recipe, nuisance["e_init"], resolutions)
    points = _points_for(geometry, recipe, broadened=True)
    spreader = _spreader(float(geometry.e_edges[0]), float(geometry.e_edges[-1]), geometry.size, ("maps", resolution))
    e = geometry.e_centres
    signal = _spectrum(j1, j2, points, spreader, phase)
    signal *= bose_factor(e, nuisance["temperature"])[:, None]
    signal = percentile_normalise(signal, recipe.percentile)

    from scipy.special import ndtr

    sigma0 = float(resolution.sigma(0.0))
    edges = geometry.e_edges
    bin_width = edges[1] - edges[0]
    elastic_e = (sigma0 * math.sqrt(2 * math.pi) / bin_width) * np.diff(ndtr(edges / sigma0))
    q = geometry.q_columns
    lam = (
        signal
        + nuisance["elastic_amplitude"] * elastic_e[:, None] * np.exp(-0.05 * q * q)[None, :]
        + (nuisance["background_b0"] + nuisance["background_b1"] * q * q)[None, :]
    )
    lam = np.clip(lam, 0.0, None)
    n_counts = nuisance["counts_scale"]
    frame = rng.poisson(n_counts * lam) / n_counts

    if geometry.kind == "cut":
        mask = stripe_mask(frame.shape, recipe, rng)
    else:
        mask = powder_coverage_mask(geometry, nuisance["e_init"], recipe.two_theta_range)
    frame[mask] = np.nan
    nuisance["masked_fraction"] = float(mask.mean())
    return frame, nuisance


def simulate_pair(
    j1: float,
    j2: float,
    geometry: Geometry,
    recipe: Recipe,
    rng: np.random.Generator,
    *,
    phase: str = "neel",
    resolutions: Mapping | None = None,
) -> tuple[NDArray[np.float32], NDArray[np.float32], dict[str, float]]:
    """Unconvolved map and experiment-like frame for the same ``(J1, J2)``.

    With ``recipe.mask_unconvolved`` the unconvolved map carries the frame's NaN mask.
    """
    unconv = unconvolved_map(j1, j2, geometry, recipe, phase=phase)
    conv, nuisance = experiment_like_frame(j1, j2, geometry, recipe, rng, phase=phase, resolutions=resolutions)
    if recipe.mask_unconvolved:
        unconv[np.isnan(conv)] = np.nan
    return unconv.astype(np.float32), conv.astype(np.float32), nuisance


def simulate_frame(
    J1: float,  # noqa: N803 - physics notation
    J2: float,  # noqa: N803
    *,
    geometry: str = "cut",
    size: int = 64,
    experiment_like: bool = True,
    rng: np.random.Generator | int | None = None,
    phase: str = "neel",
    **recipe_overrides: Any,
) -> NDArray[np.float32]:
    """Simulate one INS frame of the J1-J2 square-lattice antiferromagnet.

    Parameters
    ----------
    J1, J2
        Exchange constants in meV (Néel phase needs ``J1 > 0`` and ``J2 < J1 / 2``).
    geometry
        ``"cut"`` (along ``(h, 1/2, 0)``, h 0..1) or ``"powder"`` (``|Q|`` 0.2..3 1/A).
    size
        Frame is ``(size, size)``: energy rows (0..16 meV, row 0 lowest) x momentum columns.
    experiment_like
        If True apply the MAPS recipe (resolution, Bose factor, elastic line, background,
        Poisson noise, NaN masks); otherwise return the unconvolved map.
    rng
        Random generator or seed for the nuisance parameters, noise and masks.
    phase
        ``"neel"`` (default) or ``"stripe"`` (``J2 > J1/2``, out-of-distribution control).
    **recipe_overrides
        Fields of :class:`Recipe`, e.g. ``e_init=25.0``, ``temperature=5.0``,
        ``counts_scale=100.0``.

    Returns
    -------
    numpy.ndarray
        ``(size, size)`` float32, NaN where masked when ``experiment_like``.

    Raises
    ------
    InputError
        For unstable exchange parameters, an unknown geometry, size or recipe parameter,
        or an invalid MAPS setting.
    """
    check_parameters(float(J1), float(J2), phase=phase)
    recipe = Recipe.from_overrides(recipe_overrides)
    geo = make_geometry(geometry, size, recipe)
    if not experiment_like:
        return unconvolved_map(float(J1), float(J2), geo, recipe, phase=phase).astype(np.float32)
    generator = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    frame, _ = experiment_like_frame(float(J1), float(J2), geo, recipe, generator, phase=phase)
    return frame.astype(np.float32)


__all__ = [
    "E_PER_K2",
    "GEOMETRIES",
    "K_B_MEV",
    "PHASES",
    "Geometry",
    "Recipe",
    "bose_factor",
    "experiment_like_frame",
    "make_geometry",
    "percentile_normalise",
    "powder_coverage_mask",
    "resolution_table",
    "sample_nuisance",
    "simulate_frame",
    "simulate_pair",
    "stripe_mask",
    "unconvolved_map",
]
