r"""Magnetocaloric entropy change from M(T, H) by the Maxwell relation.

.. math::

    \Delta S_M(T, H_0 \to H) = \mu_0 \int_{H_0}^{H}
        \left(\frac{\partial M}{\partial T}\right)_{H'} \mathrm{d}H'

Four entry points share one result type, :class:`EntropyChange`:

* :func:`entropy_change_isofield` -- scattered readings taken as dense
  temperature sweeps at a few fixed fields (the layout of the Terashima et al.
  2023 data).  M(T) of every field is interpolated linearly onto a common T
  grid, differentiated with central differences (:func:`numpy.gradient`,
  second-order one-sided at the ends, no smoothing) and integrated cumulatively over the field with the trapezoid rule.
* :func:`entropy_change_isothermal` -- the forward-difference sum of the
  paper's supporting information on a complete (T, H) grid,
  ``dS(T_i) = sum_j (M(T_{i+1}, H_j) - M(T_i, H_j)) / (T_{i+1} - T_i) * dH_j``.
* :func:`entropy_change_from_twin` -- the measurement simulated with a digital
  twin on any grid, then the isofield (or isothermal) formula, with an
  uncertainty band from the twin's std.
* :func:`entropy_change_twin_corrected` -- the readings' isofield result, with the
  twin correcting only the trapezoid rule between the measured fields.

Units
-----
The field is converted to :math:`\mu_0 H` in tesla first (``Oe``:
``mu0 * H[Oe] * 1e3 / (4 pi) = 1e-4 * H[Oe]`` T; ``A/m``: ``4 pi 1e-7 * H``;
``T``: already :math:`\mu_0 H`), so Oe and T inputs give identical numbers.
Without further information the result is in raw units, *[M] T/K* (the unit of M
times tesla per kelvin).  With ``moment_unit`` and/or ``mass_g`` it is converted
to SI: ``emu`` (1 emu = 1e-3 A m^2) with a mass gives J/(kg K) as
``raw / mass_g``; ``emu/g`` and ``Am2/kg`` are already per mass and give
J/(kg K) directly; ``emu`` or ``Am2`` without a mass give J/K.  ``mass_g`` alone
implies M in emu (the unit of SQUID/VSM magnetometers).

Lowest field
------------
The integral starts at the lowest field present, :math:`H_0`, not at zero: the
paper's scans start at 100 Oe.  The result is :math:`\Delta S_M(T, H_0 \to H)`;
the first row (``H == H_0``) is zero and ``EntropyChange.H_start`` records
:math:`H_0`.  No extrapolation to zero field is made: below the technical
saturation field M(H) of a ferromagnet depends on domains and demagnetisation,
so any guess would add an unknown error.  The missing slice contributes about
``mu0 * H_0 * dM/dT(T, H_0)``, which is small when H_0 is a small fraction of
the top field (100 Oe of 5 T in the paper's ErCo2 data).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np

from bluesky_twin.analysis.protocols import (
    ENSEMBLE_EXPECTED,
    axis_index,
    predict_in_batches,
    smooth_model,
    supports_members,
    x_range_of,
)
from bluesky_twin.errors import InputError
from bluesky_twin.protocols import EnsembleTwin, Twin, TwinLike, require

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = [
    "EntropyChange",
    "entropy_change_isofield",
    "entropy_change_isothermal",
    "entropy_change_from_twin",
    "entropy_change_twin_corrected",
    "field_to_tesla",
    "group_levels",
]

FieldUnit = Literal["Oe", "T", "A/m"]
MomentUnit = Literal["emu", "emu/g", "Am2", "Am2/kg"]

#: mu0 * (1 unit of H) expressed in tesla.
_TESLA_PER_UNIT = {"Oe": 1e-4, "T": 1.0, "A/m": 4e-7 * np.pi}


@dataclass
class EntropyChange:
    """Magnetic entropy change on a (field, temperature) grid.

    Attributes
    ----------
    T
        ``(n_T,)`` temperatures of the curves.
    H
        ``(n_H,)`` upper integration limits in the input field unit; ``dS[k]``
        is the change from ``H_start`` to ``H[k]``.
    dS
        ``(n_H, n_T)`` cumulative entropy change in ``units``.
    units
        Unit of ``dS`` (raw ``"[M]*T/K"`` unless converted).
    field_unit
        Unit of ``H``.
    method
        ``"isofield"``, ``"isothermal"``, or ``"twin-isofield"`` / ``"twin-isothermal"``.
    dS_std
        ``(n_H, n_T)`` uncertainty (twin only) or ``None``.
    std_kind
        How ``dS_std`` was obtained: ``"ensemble"`` (spread over members),
        ``"bound"`` (upper bound from the pointwise std), or ``None``.
    notes
        Free-form remarks (e.g. which conversion was assumed).
    """

    T: np.ndarray
    H: np.ndarray
    dS: np.ndarray
    units: str
    field_unit: str
    method: str
    dS_std: np.ndarray | None = None
    std_kind: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def H_start(self) -> float:
        """Lower limit of the field integral (input unit)."""
        return float(self.H[0])

    @property
    def mu0H(self) -> np.ndarray:
        """Upper limits as mu0*H in tesla."""
        return field_to_tesla(self.H, self.field_unit)

    def curve(self, H_max: float) -> tuple[np.ndarray, np.ndarray | None]:
        """Return ``(dS(T), dS_std(T) or None)`` for the row whose ``H`` is closest to *H_max*."""
        k = int(np.argmin(np.abs(self.H - H_max)))
        return self.dS[k], (None if self.dS_std is None else self.dS_std[k])

    def to_frame(self) -> pd.DataFrame:
        """Long table: one row per (H_max, T) with columns
        ``H_max, mu0H_max_T, T, dS_M, dS_M_std``; units in ``df.attrs``."""
        import pandas as pd

        n_H, n_T = self.dS.shape
        df = pd.DataFrame(
            {
                "H_max": np.repeat(self.H, n_T),
                "mu0H_max_T": np.repeat(self.mu0H, n_T),
                "T": np.tile(self.T, n_H),
                "dS_M": self.dS.reshape(-1),
                "dS_M_std": (self.dS_std.reshape(-1) if self.dS_std is not None else np.full(n_H * n_T, np.nan)),
            }
        )
        df.attrs.update(units=self.units, field_unit=self.field_unit, method=self.method)
        return df

    def summary(self) -> dict:
        """JSON-friendly description (no arrays except the field list)."""
        return {
            "method": self.method,
            "units": self.units,
            "field_unit": self.field_unit,
            "H_start": self.H_start,
            "H": self.H.tolist(),
            "T_range": [float(self.T[0]), float(self.T[-1])],
            "n_T": int(len(self.T)),
            "std_kind": self.std_kind,
            "notes": list(self.notes),
        }


# ----------------------------------------------------------------------------- units


def field_to_tesla(H: np.ndarray | float, field_unit: str) -> np.ndarray:
    """Convert field values to mu0*H in tesla.

    ``H[A/m] = H[Oe] * 1e3 / (4 pi)``, so ``mu0 * H = 1e-4 T`` per oersted.
    """
    try:
        factor = _TESLA_PER_UNIT[field_unit]
    except KeyError:
        raise InputError(f"field unit must be one of {sorted(_TESLA_PER_UNIT)}; got {field_unit!r}") from None
    return np.asarray(H, dtype=float) * factor


def _si_conversion(moment_unit: str | None, mass_g: float | None, y_name: str) -> tuple[float, str, list[str]]:
    """Factor from raw ``[M]*T/K`` to the reported unit, that unit, and notes."""
    notes: list[str] = []
    if mass_g is not None:
        if not np.isfinite(mass_g) or mass_g <= 0:
            raise InputError(f"sample mass must be a positive number of grams; got {mass_g!r}")
        if moment_unit is None:
            moment_unit = "emu"
            notes.append("mass given without a moment unit: M assumed in emu")
    if moment_unit is None:
        return 1.0, f"{y_name}*T/K", ["raw units: unit of the measured moment times tesla per kelvin"]
    if moment_unit in ("emu/g", "Am2/kg"):
        if mass_g is not None:
            raise InputError(f"moment unit {moment_unit} is already per mass; do not also give a mass")
        return 1.0, "J/(kg K)", notes
    if moment_unit == "emu":  # 1 emu = 1e-3 A m^2; A m^2 * T = J
        return (1.0 / mass_g, "J/(kg K)", notes) if mass_g is not None else (1e-3, "J/K", notes)
    if moment_unit == "Am2":
        return (1e3 / mass_g, "J/(kg K)", notes) if mass_g is not None else (1.0, "J/K", notes)
    raise InputError(f"moment unit must be one of emu, emu/g, Am2, Am2/kg; got {moment_unit!r}")


# ----------------------------------------------------------------------------- grouping


def group_levels(values: np.ndarray, *, rtol: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
    """Group nearly equal set-points (e.g. fields that read 49999.8 and 50000.1).

    Parameters
    ----------
    values
        ``(n,)`` readings of a set-point.
    rtol
        Values closer than ``rtol * (max - min)`` to their sorted neighbour share a level.

    Returns
    -------
    levels, labels
        ``levels`` sorted, each the median of its group; ``labels[i]`` is the
        level index of ``values[i]``.
    """
    values = np.asarray(values, dtype=float)
    order = np.argsort(values, kind="stable")
    sv = values[order]
    tol = rtol * (sv[-1] - sv[0]) if len(sv) else 0.0
    breaks = np.flatnonzero(np.diff(sv) > tol) + 1
    group_sorted = np.zeros(len(sv), dtype=int)
    group_sorted[breaks] = 1
    group_sorted = np.cumsum(group_sorted)
    labels = np.empty(len(sv), dtype=int)
    labels[order] = group_sorted
    levels = np.array([np.median(sv[group_sorted == g]) for g in range(group_sorted[-1] + 1)]) if len(sv) else sv
    return levels, labels


def _validated(T, H, M) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    T, H, M = (np.asarray(a, dtype=float).reshape(-1) for a in (T, H, M))
    if not (len(T) == len(H) == len(M)):
        raise InputError(f"T, H and M must have the same length; got {len(T)}, {len(H)}, {len(M)}")
    if not (np.isfinite(T).all() and np.isfinite(H).all() and np.isfinite(M).all()):
        raise InputError("T, H and M must be finite (drop NaN rows first)")
    return T, H, M


# ----------------------------------------------------------------------------- core formulas


def _isofield_from_grid(T: np.ndarray, B: np.ndarray, M: np.ndarray) -> np.ndarray:
    """Cumulative trapezoid over mu0*H (tesla) of dM/dT; ``M`` is ``(n_H, n_T)``."""
    from scipy.integrate import cumulative_trapezoid

    dMdT = _gradient(M, T)
    return cumulative_trapezoid(dMdT, B, axis=-2, initial=0.0)


def _gradient(M: np.ndarray, T: np.ndarray) -> np.ndarray:
    """dM/dT along the last axis: central differences inside, second-order
    one-sided differences at the two ends (no smoothing)."""
    return np.gradient(M, T, axis=-1, edge_order=2)


def _abs_gradient(sigma: np.ndarray, T: np.ndarray) -> np.ndarray:
    """``|G| @ sigma`` along the last axis, where ``G`` is the matrix of
    :func:`_gradient`: the derivative's std bound for any error correlation.

    Interior rows of ``G`` are tridiagonal; they are read off by differentiating
    indicator patterns of period 3, in which each interior row sees exactly one
    non-zero entry.  The two end rows use three points and are done directly.
    """
    n = len(T)
    out = np.zeros_like(sigma)
    idx = np.arange(n)
    for r in range(3):
        pattern = (idx % 3 == r).astype(float)
        coef = _gradient(pattern, T)  # coef[i] = G[i, j] for the j in {i-1, i, i+1} with j % 3 == r
        j = idx + ((r - idx) % 3)  # candidate column >= i with j % 3 == r
        j = np.where(j - idx == 2, j - 3, j)  # must be i-1, i or i+1
        valid = (j >= 0) & (j < n)
        valid[[0, -1]] = False
        out[..., valid] += np.abs(coef[valid]) * sigma[..., j[valid]]
    first = np.abs(_gradient(np.eye(3), T[:3])[:, 0])  # G[0, 0:3]
    last = np.abs(_gradient(np.eye(3), T[-3:])[:, -1])  # G[n-1, n-3:n]
    out[..., 0] = sigma[..., :3] @ first
    out[..., -1] = sigma[..., -3:] @ last
    return out


def _isofield_std_bound(T: np.ndarray, B: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """Upper bound on the std of the isofield result from pointwise stds.

    ``dS = L @ M`` is linear in M, and ``std(sum L_j e_j) <= sum |L_j| std(e_j)``
    for any correlation of the errors (Minkowski).  The trapezoid weights are
    positive, so ``|L| = w (x) |G|``.
    """
    from scipy.integrate import cumulative_trapezoid

    return cumulative_trapezoid(_abs_gradient(sigma, T), B, axis=-2, initial=0.0)


def _isothermal_from_grid(T: np.ndarray, B: np.ndarray, M: np.ndarray) -> np.ndarray:
    """Forward-difference sum, right-point rule in H; ``M`` is ``(n_H, n_T)``.

    Row ``k`` is ``sum_{j=1..k} (M[j, i+1] - M[j, i]) / (T[i+1] - T[i]) * (B[j] - B[j-1])``;
    row 0 is zero.  Columns belong to the interval midpoints.
    """
    dMdT = np.diff(M, axis=-1) / np.diff(T)
    dB = np.diff(B)
    terms = dMdT[..., 1:, :] * dB[:, None]
    zeros = np.zeros(M.shape[:-2] + (1, M.shape[-1] - 1))
    return np.concatenate([zeros, np.cumsum(terms, axis=-2)], axis=-2)


# ----------------------------------------------------------------------------- public API


def entropy_change_isofield(
    T: np.ndarray,
    H: np.ndarray,
    M: np.ndarray,
    *,
    T_grid: np.ndarray | None = None,
    field_unit: FieldUnit = "Oe",
    mass_g: float | None = None,
    moment_unit: MomentUnit | None = None,
    field_rtol: float = 1e-3,
    y_name: str = "M",
) -> EntropyChange:
    """Entropy change from scattered M(T, H) readings taken at a few fixed fields.

    Parameters
    ----------
    T, H, M
        ``(n,)`` readings: temperature (K), field, measured moment (any order).
    T_grid
        Common temperature grid.  Default: the range every field covers, with as
        many points as the median field has readings.  Must lie inside that range
        (no extrapolation).
    field_unit
        ``"Oe"``, ``"T"`` (meaning mu0*H) or ``"A/m"``.
    mass_g, moment_unit
        Optional SI conversion (see module docstring).
    field_rtol
        Readings within ``field_rtol * field span`` belong to the same field.
    y_name
        Name of M used in the raw unit label.

    Returns
    -------
    EntropyChange
        ``dS[k]`` integrates from the lowest field to the ``k``-th field.

    Raises
    ------
    InputError
        Fewer than two fields, fewer than three temperatures in a field, or a
        ``T_grid`` outside the range covered by every field.
    """
    T, H, M = _validated(T, H, M)
    factor, units, notes = _si_conversion(moment_unit, mass_g, y_name)
    B_all = field_to_tesla(H, field_unit)
    levels, labels = group_levels(H, rtol=field_rtol)
    if len(levels) < 2:
        raise InputError(f"need readings at two or more fields to integrate over H; found {len(levels)}")
    curves = []
    for g in range(len(levels)):
        sel = labels == g
        tg, inv = np.unique(T[sel], return_inverse=True)
        mg = np.bincount(inv, weights=M[sel]) / np.bincount(inv)  # average repeated temperatures
        if len(tg) < 3:
            raise InputError(f"field {levels[g]:g} {field_unit} has {len(tg)} distinct temperature(s); need at least 3")
        curves.append((tg, mg))
    lo = max(c[0][0] for c in curves)
    hi = min(c[0][-1] for c in curves)
    if not hi > lo:
        raise InputError("the temperature sweeps of the different fields do not overlap")
    if T_grid is None:
        n = int(np.median([len(c[0]) for c in curves]))
        T_grid = np.linspace(lo, hi, max(n, 3))
    else:
        T_grid = np.asarray(T_grid, dtype=float).reshape(-1)
        span_tol = 1e-9 * (hi - lo)
        if len(T_grid) < 3 or np.any(np.diff(T_grid) <= 0):
            raise InputError("T_grid must be strictly increasing with at least 3 points")
        if T_grid[0] < lo - span_tol or T_grid[-1] > hi + span_tol:
            raise InputError(
                f"T_grid [{T_grid[0]:g}, {T_grid[-1]:g}] leaves the range covered by every field [{lo:g}, {hi:g}]"
            )
    M_grid = np.vstack([np.interp(T_grid, tg, mg) for tg, mg in curves])
    B = np.array([np.median(B_all[labels == g]) for g in range(len(levels))])
    dS = _isofield_from_grid(T_grid, B, M_grid) * factor
    if levels[0] != 0:
        notes.append(f"integral starts at the lowest measured field {levels[0]:g} {field_unit}, not 0")
    return EntropyChange(T=T_grid, H=levels, dS=dS, units=units, field_unit=field_unit, method="isofield", notes=notes)


def _complete_grid(T, H, M, rtol) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Arrange scattered readings that form a complete grid as ``(T_levels, H_levels, M[n_H, n_T])``."""
    t_levels, t_lab = group_levels(T, rtol=rtol)
    h_levels, h_lab = group_levels(H, rtol=rtol)
    grid = np.full((len(h_levels), len(t_levels)), np.nan)
    count = np.zeros_like(grid)
    np.add.at(count, (h_lab, t_lab), 1)
    sums = np.zeros_like(grid)
    np.add.at(sums, (h_lab, t_lab), M)
    missing = int((count == 0).sum())
    if missing:
        raise InputError(
            f"isothermal formula needs a complete (T, H) grid: {missing} of {count.size} "
            f"({len(t_levels)} T x {len(h_levels)} H) cells have no reading"
        )
    grid = sums / count
    return t_levels, h_levels, grid


def entropy_change_isothermal(
    T: np.ndarray,
    H: np.ndarray,
    M: np.ndarray,
    *,
    field_unit: FieldUnit = "Oe",
    mass_g: float | None = None,
    moment_unit: MomentUnit | None = None,
    position: Literal["midpoint", "left"] = "midpoint",
    grid_rtol: float = 1e-6,
    y_name: str = "M",
) -> EntropyChange:
    """Entropy change by the forward-difference sum of the paper's SI on a complete grid.

    ``dS(T_i, H_k) = sum_{j=1..k} (M(T_{i+1}, H_j) - M(T_i, H_j)) / (T_{i+1} - T_i) * (H_j - H_{j-1})``
    (right-point rule in H, so ``dH_j`` is the step that ends at ``H_j``).

    Parameters
    ----------
    T, H
        Either 1-D grid axes (``(n_T,)``, ``(n_H,)``) with ``M`` of shape
        ``(n_H, n_T)``, or ``(n,)`` scattered readings that together cover every
        (T, H) combination.
    M
        Measured moment.
    field_unit, mass_g, moment_unit
        As in :func:`entropy_change_isofield`.
    position
        Temperature attached to each forward difference: the interval
        ``"midpoint"`` (default; the difference is centred there, second-order
        accurate) or its ``"left"`` end ``T_i`` as written in the SI.
    grid_rtol
        Tolerance for grouping scattered readings into grid levels.
    y_name
        Name of M used in the raw unit label.

    Returns
    -------
    EntropyChange
        ``n_T - 1`` temperatures.
    """
    M = np.asarray(M, dtype=float)
    if M.ndim == 2:
        t_levels = np.asarray(T, dtype=float).reshape(-1)
        h_levels = np.asarray(H, dtype=float).reshape(-1)
        if M.shape != (len(h_levels), len(t_levels)):
            raise InputError(f"M grid must have shape (n_H, n_T) = {(len(h_levels), len(t_levels))}; got {M.shape}")
        if not np.isfinite(M).all():
            raise InputError("M grid contains NaN/inf")
        grid = M
    else:
        T, H, M = _validated(T, H, M)
        t_levels, h_levels, grid = _complete_grid(T, H, M, grid_rtol)
    if len(h_levels) < 2 or len(t_levels) < 2:
        raise InputError("isothermal formula needs at least 2 temperatures and 2 fields")
    if np.any(np.diff(t_levels) <= 0) or np.any(np.diff(h_levels) <= 0):
        raise InputError("grid axes must be strictly increasing")
    if position not in ("midpoint", "left"):
        raise InputError(f"position must be 'midpoint' or 'left'; got {position!r}")
    factor, units, notes = _si_conversion(moment_unit, mass_g, y_name)
    B = field_to_tesla(h_levels, field_unit)
    dS = _isothermal_from_grid(t_levels, B, grid) * factor
    T_out = 0.5 * (t_levels[1:] + t_levels[:-1]) if position == "midpoint" else t_levels[:-1]
    if h_levels[0] != 0:
        notes.append(f"sum starts at the lowest field {h_levels[0]:g} {field_unit}, not 0")
    return EntropyChange(
        T=T_out, H=h_levels, dS=dS, units=units, field_unit=field_unit, method="isothermal", notes=notes
    )


def entropy_change_from_twin(
    twin: TwinLike,
    T_grid: np.ndarray,
    H_grid: np.ndarray,
    *,
    field_unit: FieldUnit = "Oe",
    mass_g: float | None = None,
    moment_unit: MomentUnit | None = None,
    T_axis: str | int | None = None,
    H_axis: str | int | None = None,
    method: Literal["isofield", "isothermal"] = "isofield",
    use_members: bool | None = None,
    batch_size: int = 200_000,
) -> EntropyChange:
    """Simulate M on a (T, H) grid with a twin and compute the entropy change.

    Parameters
    ----------
    twin
        A :class:`~bluesky_twin.protocols.TwinLike` of two axes; an
        :class:`~bluesky_twin.protocols.EnsembleTwin` gives ensemble bands, a
        :class:`~bluesky_twin.protocols.Twin` its ``y_name`` for the units.
    T_grid, H_grid
        Strictly increasing temperatures and fields (field in ``field_unit``,
        which must be the unit the twin was trained in).
    field_unit, mass_g, moment_unit
        As in :func:`entropy_change_isofield`.
    T_axis, H_axis
        Names (or indices) of the temperature and field axes in ``twin.x_names``;
        default the first and the second.
    method
        ``"isofield"`` (central differences + trapezoid) or ``"isothermal"``
        (forward-difference sum).
    use_members
        Uncertainty from the spread (population std, like the twin's own std)
        of dS_M over ensemble members (requires an
        :class:`~bluesky_twin.protocols.EnsembleTwin`).
        ``None``: use them when available.  Otherwise ``dS_std`` is the upper
        bound ``|L| @ std``, where ``dS = L @ M`` is the linear map of the
        method: valid for any correlation of the errors, but loose -- the
        derivative term grows like ``std / dT`` on fine temperature grids.
    batch_size
        Points per ``predict`` call.

    Returns
    -------
    EntropyChange
        With ``dS_std`` and ``std_kind`` (``"ensemble"`` or ``"bound"``).

    Notes
    -----
    A twin's line-residual correction (large maps, see
    :func:`~bluesky_twin.analysis.protocols.smooth_model`) is left out: it is smoothed
    only to the noise level along the lines, so its temperature derivative would be
    noise, and it is linear between measured fields by construction.
    """
    twin = smooth_model(twin)
    names = list(twin.x_names)
    if len(names) != 2:
        raise InputError(f"entropy change needs a twin of exactly two axes (T, H); this one has {names}")
    it = axis_index(twin, T_axis, 0)
    ih = axis_index(twin, H_axis, 1 if it == 0 else 0)
    if it == ih:
        raise InputError("temperature and field axes must differ")
    T_grid = np.asarray(T_grid, dtype=float).reshape(-1)
    H_grid = np.asarray(H_grid, dtype=float).reshape(-1)
    for label, g, need in (("T_grid", T_grid, 3), ("H_grid", H_grid, 2)):
        if len(g) < need or not np.isfinite(g).all() or np.any(np.diff(g) <= 0):
            raise InputError(f"{label} must be finite and strictly increasing with at least {need} points")
    if method not in ("isofield", "isothermal"):
        raise InputError(f"method must be 'isofield' or 'isothermal'; got {method!r}")
    factor, units, notes = _si_conversion(moment_unit, mass_g, (twin.y_name if isinstance(twin, Twin) else "") or "M")
    HH, TT = np.meshgrid(H_grid, T_grid, indexing="ij")  # (n_H, n_T)
    X = np.empty((HH.size, 2))
    X[:, it] = TT.reshape(-1)
    X[:, ih] = HH.reshape(-1)
    B = field_to_tesla(H_grid, field_unit)
    core = _isofield_from_grid if method == "isofield" else _isothermal_from_grid
    if use_members is None:
        use_members = supports_members(twin)
    if use_members:
        require(twin, EnsembleTwin, "with use_members=True the twin", ENSEMBLE_EXPECTED)
        members = predict_in_batches(twin, X, batch_size=batch_size, members=True)
        M_members = members.reshape(members.shape[0], len(H_grid), len(T_grid))
        dS_members = core(T_grid, B, M_members) * factor
        # the twin's mean is the member mean and dS is linear in M
        dS = dS_members.mean(axis=0)
        dS_std = dS_members.std(axis=0)
        std_kind = "ensemble"
    else:
        mean, std = predict_in_batches(twin, X, batch_size=batch_size)
        M_grid = mean.reshape(len(H_grid), len(T_grid))
        S_grid = std.reshape(len(H_grid), len(T_grid))
        dS = core(T_grid, B, M_grid) * factor
        if method == "isofield":
            dS_std = _isofield_std_bound(T_grid, B, S_grid) * abs(factor)
        else:  # |forward difference| weights: (s[i+1] + s[i]) / dT, right-point rule in H
            d = (S_grid[:, 1:] + S_grid[:, :-1]) / np.diff(T_grid)
            dS_std = np.concatenate(
                [np.zeros((1, len(T_grid) - 1)), np.cumsum(d[1:] * np.diff(B)[:, None], axis=0)]
            ) * abs(factor)
        std_kind = "bound"
    T_out = T_grid if method == "isofield" else 0.5 * (T_grid[1:] + T_grid[:-1])
    xr = x_range_of(twin)
    if xr is not None:
        if T_grid[0] < xr[it, 0] or T_grid[-1] > xr[it, 1] or H_grid[0] < xr[ih, 0] or H_grid[-1] > xr[ih, 1]:
            notes.append("grid extends outside the twin's training range (extrapolation)")
    if H_grid[0] != 0:
        notes.append(f"integral starts at {H_grid[0]:g} {field_unit}, not 0")
    return EntropyChange(
        T=T_out,
        H=H_grid,
        dS=dS,
        units=units,
        field_unit=field_unit,
        method=f"twin-{method}",
        dS_std=dS_std,
        std_kind=std_kind,
        notes=notes,
    )


def entropy_change_twin_corrected(
    T: np.ndarray,
    H: np.ndarray,
    M: np.ndarray,
    twin: TwinLike,
    *,
    T_grid: np.ndarray | None = None,
    subdivisions: int = 20,
    field_unit: FieldUnit = "Oe",
    mass_g: float | None = None,
    moment_unit: MomentUnit | None = None,
    field_rtol: float = 1e-3,
    T_axis: str | int | None = None,
    H_axis: str | int | None = None,
    y_name: str = "M",
) -> EntropyChange:
    """Entropy change from the measured fields, with the twin correcting the trapezoid rule between them.

    The trapezoid rule over a few measured fields misses the curvature of dM/dT in H
    between them, the error that makes the paper ask for a fine field step.  This
    estimator keeps the measured readings as they are and adds only what the twin
    says the coarse rule misses (a control variate):

    ``dS = dS_trapezoid(readings) + [dS_fine(twin) - dS_trapezoid(twin at the measured fields)]``,
    where ``dS_fine`` integrates the twin on ``subdivisions`` steps per measured interval.

    The twin's bias at the measured fields cancels in the bracket, so its error enters
    only through the shape it gives dM/dT between them; the readings' noise enters as
    in :func:`entropy_change_isofield`.

    Parameters
    ----------
    T, H, M
        ``(n,)`` readings at a few fixed fields, as in :func:`entropy_change_isofield`.
    twin
        A two-axis :class:`~bluesky_twin.protocols.TwinLike` trained in the same units
        (field in ``field_unit``); its mean is used.
    T_grid
        As in :func:`entropy_change_isofield`.
    subdivisions
        Fine field steps per interval between measured fields, at least 1 (1: no
        correction).
    field_unit, mass_g, moment_unit, field_rtol, y_name
        As in :func:`entropy_change_isofield`.
    T_axis, H_axis
        As in :func:`entropy_change_from_twin`.

    Returns
    -------
    EntropyChange
        At the measured fields (``H``), method ``"twin-corrected-isofield"``, without
        ``dS_std``.

    Raises
    ------
    InputError
        As :func:`entropy_change_isofield`, or for a twin that is not two-axis or
        ``subdivisions`` below 1.
    """
    if isinstance(subdivisions, bool) or not isinstance(subdivisions, (int, np.integer)) or subdivisions < 1:
        raise InputError(f"subdivisions must be an integer >= 1; got {subdivisions!r}")
    lines = entropy_change_isofield(
        T,
        H,
        M,
        T_grid=T_grid,
        field_unit=field_unit,
        mass_g=mass_g,
        moment_unit=moment_unit,
        field_rtol=field_rtol,
        y_name=y_name,
    )
    levels = np.asarray(lines.H, dtype=float)
    fine = np.unique(
        np.concatenate([np.linspace(a, b, int(subdivisions) + 1) for a, b in zip(levels[:-1], levels[1:])])
    )
    at_levels = np.searchsorted(fine, levels)  # every level is in the fine grid
    kw = dict(field_unit=field_unit, mass_g=mass_g, moment_unit=moment_unit, T_axis=T_axis, H_axis=H_axis)
    ens_fine = entropy_change_from_twin(twin, lines.T, fine, use_members=False, **kw)
    ens_coarse = entropy_change_from_twin(twin, lines.T, levels, use_members=False, **kw)
    correction = ens_fine.dS[at_levels] - ens_coarse.dS
    return EntropyChange(
        T=lines.T,
        H=levels,
        dS=lines.dS + correction,
        units=lines.units,
        field_unit=field_unit,
        method="twin-corrected-isofield",
        notes=[*lines.notes, *(n for n in ens_fine.notes if n not in lines.notes)],
    )
