"""Options of the learnable INS resolution model, and the instrument values they derive from.

:class:`ResolutionConfig` is the single definition (fields, defaults, validation) of the
learnable energy-resolution broadening that
:class:`~bluesky_twin.ins.resolution_layer.EnergyResolutionLayer` implements and that
the Exp2SimGAN's Sim2Exp generator uses (``GanConfig.resolution``).  This module does not
import torch.

Two fields may name a *source* instead of values, resolved against the experiment-like
recipe by :meth:`ResolutionConfig.resolved` (what ``ins train`` does before training):

* ``sigma_bounds="maps"``: per-row width bounds from the MAPS resolution of the recipe's
  incident energies (:func:`maps_sigma_bounds`);
* ``energy_range="recipe"``: the recipe's energy axis, for the Bose factor
  (:func:`recipe_energy_range`).

Configuration errors raise :class:`~bluesky_twin.errors.InputError` whose message starts
with ``ResolutionConfig.<field>``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from bluesky_twin.errors import InputError

__all__ = ["MIN_SIGMA", "ResolutionConfig", "check_sigma_bounds", "maps_sigma_bounds", "recipe_energy_range"]

#: Smallest broadening width in pixels (rows).
MIN_SIGMA = 0.05
#: Largest polynomial degree of the width.
MAX_DEGREE = 6

Bounds = tuple[tuple[float, ...], tuple[float, ...]]


def _fail(field: str, problem: str) -> InputError:
    return InputError(f"ResolutionConfig.{field} {problem}")


@dataclass(frozen=True)
class ResolutionConfig:
    """The learnable Gaussian energy-resolution broadening (and instrument terms) of Sim2Exp.

    The defaults are the best measured settings (instrument terms on, no ResNet
    correction); see ``docs/gan.md``.

    Parameters
    ----------
    degree
        Degree (0..6) of the polynomial, in the normalised energy coordinate, that gives
        the width (through a softplus, or a sigmoid between bounds).
    init_sigma
        Initial width in pixels (rows), the same at every energy; unused with bounds.
    instrument
        Also learn an elastic line, a flat background and (in training) counting noise.
    residual
        Add a gated ResNet correction after the broadening (``b + g R(b)``); ``False``:
        Sim2Exp's output is the broadening alone (the ResNet's encoder still gives its
        PatchNCE features).
    energy_range
        ``(E_min, E_max)`` in meV spanned by the rows: with the instrument terms, a Bose
        factor ``n(E) + 1`` at a learnable temperature; ``"recipe"``: the training
        recipe's energy axis (resolved by :meth:`resolved`); ``None``: no Bose factor.
    sigma_bounds
        ``(lower, upper)`` per-row width bounds in pixels (one value per energy row); the
        width is then ``lower + (upper - lower) sigmoid(poly)``.  ``"maps"``: the MAPS
        resolution range of the training recipe's incident energies (resolved by
        :meth:`resolved`); ``None``: unbounded (``MIN_SIGMA + softplus(poly)``).
    stochastic
        In training, draw a width and instrument amplitudes per frame (learnable spreads
        around the learned values); translation uses the central values.
    poisson
        Poisson-valued counting noise in training (straight-through gradient of the
        Gaussian approximation); needs ``instrument``.
    spread_max
        Cap (> 1) of the learnable spreads (``spread_max * sigmoid(raw)``); needs
        ``stochastic``.  ``None``: ``exp(raw)``, unbounded.
    column_terms
        Elastic line decaying as ``exp(-k u^2)`` and background ``b0 + b1 u^2`` along the
        columns (``u``: column position in (0, 1), ``|Q|`` of a powder frame); needs
        ``instrument`` and 2D frames.
    """

    degree: int = 2
    init_sigma: float = 3.0
    instrument: bool = True
    residual: bool = False
    energy_range: tuple[float, float] | str | None = None
    sigma_bounds: Bounds | str | None = None
    stochastic: bool = False
    poisson: bool = False
    spread_max: float | None = None
    column_terms: bool = False

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if (
            isinstance(self.degree, bool)
            or not isinstance(self.degree, (int, np.integer))
            or not 0 <= int(self.degree) <= MAX_DEGREE
        ):
            raise _fail("degree", f"must be an integer in 0..{MAX_DEGREE}, got {self.degree!r}")
        set_(self, "degree", int(self.degree))
        if not (_is_number(self.init_sigma) and float(self.init_sigma) > MIN_SIGMA):
            raise _fail("init_sigma", f"must exceed {MIN_SIGMA} pixels, got {self.init_sigma!r}")
        set_(self, "init_sigma", float(self.init_sigma))
        for name in ("instrument", "residual", "stochastic", "poisson", "column_terms"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise _fail(name, f"must be true or false, got {getattr(self, name)!r}")
            set_(self, name, bool(getattr(self, name)))
        if self.energy_range is not None and self.energy_range != "recipe":
            try:
                lo, hi = (float(v) for v in self.energy_range)
            except (TypeError, ValueError):
                raise _fail(
                    "energy_range", f"must be (lo, hi) in meV, 'recipe' or null, got {self.energy_range!r}"
                ) from None
            if not (0.0 <= lo < hi and math.isfinite(hi)):
                raise _fail("energy_range", f"must be (lo, hi) with 0 <= lo < hi meV, got {self.energy_range!r}")
            set_(self, "energy_range", (lo, hi))
        if self.sigma_bounds is not None and self.sigma_bounds != "maps":
            set_(self, "sigma_bounds", check_sigma_bounds(self.sigma_bounds))
        if self.poisson and not self.instrument:
            raise _fail("poisson", "needs the instrument terms (instrument=true)")
        if self.energy_range is not None and not self.instrument:
            raise _fail("energy_range", "(the Bose factor) needs the instrument terms (instrument=true)")
        if self.column_terms and not self.instrument:
            raise _fail("column_terms", "needs the instrument terms (instrument=true)")
        if self.spread_max is not None:
            if not self.stochastic:
                raise _fail("spread_max", "needs stochastic=true")
            if not (_is_number(self.spread_max) and float(self.spread_max) > 1.0):
                raise _fail(
                    "spread_max", f"must be a number > 1 (the initial spreads are 1 and 0.5), got {self.spread_max!r}"
                )
            set_(self, "spread_max", float(self.spread_max))

    @property
    def is_resolved(self) -> bool:
        """Whether no field names a source (``"maps"``, ``"recipe"``) still to be resolved."""
        return not isinstance(self.sigma_bounds, str) and not isinstance(self.energy_range, str)

    def resolved(self, recipe: Mapping[str, Any] | None, n_rows: int) -> ResolutionConfig:
        """A copy with ``sigma_bounds="maps"`` and ``energy_range="recipe"`` replaced by values.

        Parameters
        ----------
        recipe
            Experiment-like recipe overrides of the training data (``None``: defaults).
        n_rows
            Energy rows of the frames.
        """
        changes: dict[str, Any] = {}
        if self.sigma_bounds == "maps":
            changes["sigma_bounds"] = maps_sigma_bounds(recipe, n_rows)
        if self.energy_range == "recipe":
            changes["energy_range"] = recipe_energy_range(recipe)
        return dataclasses.replace(self, **changes) if changes else self

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (tuples become lists)."""
        d = dataclasses.asdict(self)
        if isinstance(self.energy_range, tuple):
            d["energy_range"] = list(self.energy_range)
        if isinstance(self.sigma_bounds, tuple):
            d["sigma_bounds"] = [list(b) for b in self.sigma_bounds]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ResolutionConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise InputError, missing ones take the defaults."""
        if not isinstance(d, Mapping):
            raise InputError(f"ResolutionConfig must be an object, got {d!r}")
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise InputError(
                f"unknown ResolutionConfig keys {sorted(unknown)}; valid: "
                f"{sorted(f.name for f in dataclasses.fields(cls))}"
            )
        return cls(**d)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.number)) and not isinstance(value, bool) and math.isfinite(float(value))


def check_sigma_bounds(bounds: Any) -> Bounds:
    """Validate per-row width bounds ``(lower, upper)`` (pixels); return them as float tuples.

    Raises
    ------
    InputError
        Unless there are two equally long, non-empty sequences of finite numbers with
        ``MIN_SIGMA < lower < upper`` in every row.
    """
    try:
        lower, upper = bounds
        lower = tuple(float(v) for v in lower)
        upper = tuple(float(v) for v in upper)
    except (TypeError, ValueError):
        raise _fail(
            "sigma_bounds", f"must be (lower, upper), two sequences of widths in pixels, or 'maps', got {bounds!r}"
        ) from None
    if not lower or len(lower) != len(upper):
        raise _fail(
            "sigma_bounds", f"lower and upper need one width per row each, got {len(lower)} and {len(upper)} values"
        )
    lo, hi = np.asarray(lower), np.asarray(upper)
    if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
        raise _fail("sigma_bounds", "must be finite")
    if np.any(lo <= MIN_SIGMA) or np.any(hi <= lo):
        raise _fail("sigma_bounds", f"need {MIN_SIGMA} < lower < upper in every row (pixels)")
    return lower, upper


def recipe_energy_range(recipe: Mapping[str, Any] | None) -> tuple[float, float]:
    """The energy axis (meV) of frames generated with *recipe* (rows span it evenly)."""
    from bluesky_twin.ins.frames import Recipe

    lo, hi = Recipe.from_overrides(recipe).e_range
    return float(lo), float(hi)


def maps_sigma_bounds(recipe: Mapping[str, Any] | None, n_rows: int, margin: float = 1.0) -> Bounds:
    """Per-row bounds (pixels) of the Sim2Exp broadening width from the instrument's resolution.

    For each energy row of a frame generated with *recipe* (``n_rows`` rows spanning its
    ``e_range``), the MAPS width ``sigma(E)`` of every incident energy in the recipe's
    ``e_init`` at its chopper setting (:func:`bluesky_twin.ins.resolution.maps_resolution`,
    what a user of the instrument knows); the lower bound is the smallest of them divided
    by *margin*, the upper bound the largest times *margin*, both in rows.

    Parameters
    ----------
    recipe
        Experiment-like recipe overrides (``{}`` or ``None``: the defaults).
    n_rows
        Energy rows of the frames.
    margin
        Widening factor (>= 1) of the range on both sides.

    Returns
    -------
    lower, upper
        Tuples of ``n_rows`` widths in pixels (rows), rounded to 5 decimals.

    Raises
    ------
    InputError
        For ``n_rows < 1``, ``margin < 1``, one incident energy with margin 1 (an empty
        range) or a recipe the resolution model rejects.
    """
    from bluesky_twin.ins.frames import Recipe
    from bluesky_twin.ins.resolution import maps_resolution

    if int(n_rows) < 1:
        raise InputError(f"n_rows must be >= 1, got {n_rows}")
    if not (np.isfinite(margin) and margin >= 1.0):
        raise InputError(f"the width-bound margin must be a number >= 1, got {margin!r}")
    rec = Recipe.from_overrides(recipe)
    lo_e, hi_e = rec.e_range
    row = (hi_e - lo_e) / int(n_rows)
    energies = lo_e + (np.arange(int(n_rows)) + 0.5) * row
    sig = (
        np.stack([maps_resolution(ei, rec.chopper_frequency, rec.chopper_package).sigma(energies) for ei in rec.e_init])
        / row
    )
    lower = sig.min(axis=0) / float(margin)
    upper = sig.max(axis=0) * float(margin)
    if len(rec.e_init) == 1 and margin == 1.0:
        raise InputError("one incident energy and margin 1 leave no range for the width; use a margin > 1")
    return tuple(round(float(v), 5) for v in lower), tuple(round(float(v), 5) for v in upper)
