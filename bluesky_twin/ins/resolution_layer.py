"""Learnable Gaussian energy resolution of INS frames, as a torch layer.

:class:`EnergyResolutionLayer` broadens frames along the energy axis (rows) with a
bin-integrated Gaussian whose width is a smooth learnable function of energy, in linear
intensity, and optionally adds the rest of the experiment-like recipe
(:mod:`bluesky_twin.ins.frames`): Bose factor, elastic line, background and counting
noise, with learnable values.  Its options are those of
:class:`~bluesky_twin.ins.resolution_config.ResolutionConfig`, which validates them;
the Exp2SimGAN's Sim2Exp generator
(:class:`~bluesky_twin.gan.networks.ResolutionResnetGenerator`) builds it with
:meth:`EnergyResolutionLayer.from_config`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from bluesky_twin.errors import InputError
from bluesky_twin.ins.physics import bose_factor
from bluesky_twin.ins.resolution_config import MIN_SIGMA, ResolutionConfig

__all__ = ["EnergyResolutionLayer"]


def _inv_softplus(y: float) -> float:
    return y + math.log(-math.expm1(-y))


class EnergyResolutionLayer(nn.Module):
    """Learnable Gaussian resolution broadening along the energy axis.

    Each source pixel (row ``j`` of the first spatial axis, the energy-transfer axis of
    an INS frame) is spread over the output rows with a bin-integrated Gaussian of
    width ``sigma(E_j)`` pixels -- as the simulator spreads each mode with the MAPS
    width at the mode's energy -- so a delta input becomes a unit-sum Gaussian (up to
    what falls off the frame edge)::

        sigma(t) = MIN_SIGMA + softplus(c_0 + c_1 t + ... + c_d t^d),
        t = 2 (j + 1/2) / H - 1  in [-1, 1]  (row 0: the lowest energy).

    The energy coordinate is the row's position in the *whole* frame, so the layer
    expects whole frames (not random crops).  The broadening acts on linear intensity:
    model-space input is mapped back to frame units (the inverse of
    :class:`bluesky_twin.gan.preprocess.Scaling`), broadened, divided by its
    ``percentile``-th percentile over the measured pixels (the frames' normalisation)
    and mapped to model space again.

    With ``instrument=True`` (and an ``energy_range`` in meV) the broadened intensity is
    multiplied by the Bose factor ``n(E) + 1`` at a learnable temperature before the
    renormalisation, and the rest of the simulator's experiment-like recipe follows
    it, with learnable scalars: an elastic line at E = 0 (the lower
    edge of row 0) of amplitude ``A`` and the resolution width at the lowest row,
    ``A exp(-E^2 / 2 sigma_0^2)`` bin-averaged; a flat background ``b0``; and, in
    training mode, Gaussian counting noise of variance ``lambda / N`` (Poisson at
    ``N`` counts per unit intensity).  In eval mode the layer returns the expected
    frame (no noise), so translation is deterministic.

    Bounded widths (``sigma_bounds``): with per-row bounds ``lower``, ``upper`` (pixels,
    e.g. the instrument's resolution over the incident energies in use) the width is
    ``lower + (upper - lower) sigmoid(c_0 + c_1 t + ...)`` and cannot leave that range;
    it starts in the middle of it (``init_sigma`` is then not used).

    Per-frame sampling (``stochastic=True``): in training mode each frame of a batch
    gets its own width, ``z`` ~ N(0, 1) added to the polynomial with a learnable spread
    ``s_w`` (``c_0 + ... + s_w z``: the width scale is log-normal-like without bounds,
    logit-normal within them), and with the instrument terms its own elastic amplitude,
    background and counts, each the learned value times ``exp(s z)`` with learnable
    spreads ``s`` -- as the experiment-like frames mix incident energies and nuisance
    parameters.  In eval mode (or ``sample=False``) ``z = 0``: the central values,
    deterministic.

    NaN masks: with a validity mask (or NaN in the input) the broadening is a
    normalised convolution -- only measured source pixels contribute, and each output
    pixel is rescaled by the kernel weight its sources would have had without the mask;
    a column with no measured pixel falls back to the plain broadening of its values.

    Parameters
    ----------
    degree
        Polynomial degree of the width's softplus argument.
    init_sigma
        Initial width in pixels (constant in energy).
    scaling_kind, gain, vmax
        The model-space scaling (see ``Scaling``); ``None`` for ``scaling_kind``
        broadens the input values as they are (no linearisation, no renormalisation).
    percentile
        Renormalisation percentile (the simulator's 99.5).
    instrument
        Add the elastic line, background and counting noise (see above).
    init_elastic, init_background, init_counts
        Their initial values (frame units; counts per unit intensity).
    energy_range, init_temperature
        ``(E_min, E_max)`` in meV spanned by the rows (``E_min >= 0``), for the Bose
        factor, and its initial temperature in K.
    sigma_bounds
        ``(lower, upper)`` per-row width bounds in pixels (see above); the layer then
        accepts only frames with that many rows.
    stochastic, init_spread, init_amplitude_spread
        Per-frame sampling in training mode (see above) and the initial spreads of the
        width (in the polynomial's units) and of the instrument amplitudes (log units).
    spread_max
        Cap of the spreads (``spread_max * sigmoid(raw)``); ``None``: ``exp(raw)``, unbounded.
    poisson
        Counting noise with Poisson values, ``Poisson(N lambda) / N``, in the forward pass
        and the Gaussian approximation's gradient in the backward pass (straight-through).
    column_terms
        With the instrument terms, on 2D frames: the elastic line times ``exp(-k u^2)`` and
        the background ``b0 + b1 u^2``, ``u = (column + 1/2) / W`` (``|Q|`` of a powder
        frame, scaled to (0, 1)), with learnable ``k = softplus(.)`` (initially 0.1) and
        ``b1 = softplus(.)`` (initially 0.01); a per-frame background draw scales ``b0``
        and ``b1`` together.
    """

    MIN_SIGMA = MIN_SIGMA

    def __init__(
        self,
        degree: int = 2,
        init_sigma: float = 3.0,
        scaling_kind: str | None = "log1p",
        gain: float = 4.0,
        vmax: float = 4.0,
        percentile: float = 99.5,
        instrument: bool = False,
        init_elastic: float = 1.0,
        init_background: float = 0.02,
        init_counts: float = 100.0,
        energy_range: tuple[float, float] | None = None,
        init_temperature: float = 8.0,
        sigma_bounds: tuple[Sequence[float], Sequence[float]] | None = None,
        stochastic: bool = False,
        init_spread: float = 1.0,
        init_amplitude_spread: float = 0.5,
        poisson: bool = False,
        spread_max: float | None = None,
        column_terms: bool = False,
    ):
        super().__init__()
        # the options are validated once, by ResolutionConfig (InputError)
        config = ResolutionConfig(
            degree=degree,
            init_sigma=init_sigma,
            instrument=instrument,
            energy_range=energy_range,
            sigma_bounds=sigma_bounds,
            stochastic=stochastic,
            poisson=poisson,
            spread_max=spread_max,
            column_terms=column_terms,
        )
        if not config.is_resolved:
            raise InputError(
                "ResolutionConfig.sigma_bounds='maps' / energy_range='recipe' must be resolved "
                "against the training recipe first (ResolutionConfig.resolved)"
            )
        if scaling_kind not in (None, "log1p", "linear"):
            raise InputError(f"unknown scaling kind {scaling_kind!r}")
        if instrument and scaling_kind is None:
            raise InputError("the instrument terms need linear intensity (a scaling_kind)")
        if not (init_spread > 0 and init_amplitude_spread > 0):
            raise InputError("init_spread and init_amplitude_spread must be positive")
        self.spread_max = config.spread_max
        if self.spread_max is not None and not self.spread_max > max(init_spread, init_amplitude_spread):
            raise InputError(f"spread_max ({spread_max}) must exceed the initial spreads")
        degree, init_sigma, sigma_bounds, energy_range = (
            config.degree,
            config.init_sigma,
            config.sigma_bounds,
            config.energy_range,
        )
        coeffs = torch.zeros(int(degree) + 1)
        self.bounded = sigma_bounds is not None
        if self.bounded:  # all coefficients 0: the middle of the range
            lower, upper = sigma_bounds
            self.register_buffer("sigma_lower", torch.tensor(lower), persistent=False)
            self.register_buffer("sigma_upper", torch.tensor(upper), persistent=False)
        else:
            coeffs[0] = _inv_softplus(float(init_sigma) - self.MIN_SIGMA)
        self.coeffs = nn.Parameter(coeffs)
        self.stochastic = bool(stochastic)
        self.poisson = bool(poisson)
        if self.stochastic:
            self.log_spread = nn.Parameter(torch.tensor(self._raw_spread(init_spread)))
        self.instrument = bool(instrument)
        if self.instrument:
            self.elastic_raw = nn.Parameter(torch.tensor(_inv_softplus(init_elastic)))
            self.background_raw = nn.Parameter(torch.tensor(_inv_softplus(init_background)))
            self.log_counts = nn.Parameter(torch.tensor(math.log(init_counts)))
            if self.stochastic:  # elastic, background, counts
                self.log_amplitude_spreads = nn.Parameter(torch.full((3,), self._raw_spread(init_amplitude_spread)))
        self.column_terms = bool(column_terms)
        if self.column_terms:
            self.elastic_decay_raw = nn.Parameter(torch.tensor(_inv_softplus(0.1)))
            self.background_slope_raw = nn.Parameter(torch.tensor(_inv_softplus(0.01)))
        self.energy_range = None if energy_range is None else (float(energy_range[0]), float(energy_range[1]))
        if self.instrument and self.energy_range is not None:
            self.temperature_raw = nn.Parameter(torch.tensor(_inv_softplus(init_temperature)))
        self.scaling_kind = scaling_kind
        self.gain = float(gain)
        self.vmax = float(vmax)
        self.percentile = float(percentile)

    @classmethod
    def from_config(cls, config: ResolutionConfig, scaling: Any = None) -> EnergyResolutionLayer:
        """The layer of a (resolved) :class:`ResolutionConfig`.

        Parameters
        ----------
        config
            The options; ``sigma_bounds`` and ``energy_range`` must be values, not sources.
        scaling
            A :class:`bluesky_twin.gan.preprocess.Scaling` (``kind``, ``gain``, ``vmax``), or
            ``None`` for the default log1p scaling.
        """
        kind, gain, vmax = "log1p", 4.0, 4.0
        if scaling is not None:
            kind, gain, vmax = scaling.kind, scaling.gain, scaling.vmax
        return cls(
            config.degree,
            config.init_sigma,
            scaling_kind=kind,
            gain=gain,
            vmax=vmax,
            instrument=config.instrument,
            energy_range=config.energy_range,
            sigma_bounds=config.sigma_bounds,
            stochastic=config.stochastic,
            poisson=config.poisson,
            spread_max=config.spread_max,
            column_terms=config.column_terms,
        )

    # ------------------------------------------------------------------ width
    def _raw_spread(self, value: float) -> float:
        if self.spread_max is None:
            return math.log(value)
        q = value / self.spread_max
        return math.log(q / (1.0 - q))

    def _spread(self, raw: torch.Tensor) -> torch.Tensor:
        """Spread(s) from the raw parameter: ``exp(raw)``, or ``spread_max * sigmoid(raw)`` with a cap."""
        return torch.exp(raw) if self.spread_max is None else self.spread_max * torch.sigmoid(raw)

    def sigma(self, n_rows: int, z: torch.Tensor | None = None, fraction: torch.Tensor | None = None) -> torch.Tensor:
        """Width in pixels of each of *n_rows* source rows.

        Parameters
        ----------
        n_rows
            Rows of the frame (with ``sigma_bounds``: must be their length).
        z
            Optional per-frame standard-normal draws, shape ``(B,)`` (stochastic layers;
            ``z = 0`` is the central width).
        fraction
            Optional per-frame position in the width bounds, shape ``(B,)`` in [0, 1]
            (bounded layers only): the width is ``lower + (upper - lower) fraction`` in
            every row, whatever was learned -- for pseudo pairs that span the
            instrument's whole resolution range.  Overrides *z*.

        Returns
        -------
        torch.Tensor
            ``(n_rows,)``, or ``(B, n_rows)`` with *z* or *fraction*.
        """
        if fraction is not None:
            if not self.bounded:
                raise InputError("widths given as a fraction of the bounds need a bounded layer (sigma_bounds)")
            position = fraction.to(self.sigma_lower.dtype).clamp(0.0, 1.0)[:, None]
        else:
            t = (torch.arange(n_rows, dtype=self.coeffs.dtype, device=self.coeffs.device) + 0.5) * (2.0 / n_rows) - 1.0
            powers = torch.stack([t**k for k in range(self.coeffs.numel())], dim=0)
            arg = self.coeffs @ powers
            if z is not None:
                if not self.stochastic:
                    raise InputError("per-frame widths need a stochastic layer (stochastic=True)")
                arg = arg[None, :] + self._spread(self.log_spread) * z.to(arg.dtype)[:, None]
            if not self.bounded:
                return self.MIN_SIGMA + F.softplus(arg)
            position = torch.sigmoid(arg)
        if n_rows != self.sigma_lower.numel():
            raise InputError(
                f"the width bounds are for frames of {self.sigma_lower.numel()} energy rows, got {n_rows} rows"
            )
        lo, hi = self.sigma_lower.to(position.dtype), self.sigma_upper.to(position.dtype)
        return lo + (hi - lo) * position

    def kernel(self, n_rows: int, z: torch.Tensor | None = None, fraction: torch.Tensor | None = None) -> torch.Tensor:
        """``K[i, j]``: the share of source row ``j`` landing in output row ``i`` (bin-integrated);
        ``(B, n_rows, n_rows)`` with per-frame draws *z* or *fraction* (see :meth:`sigma`)."""
        sig = self.sigma(n_rows, z, fraction)
        rows = torch.arange(n_rows, dtype=sig.dtype, device=sig.device)
        d = rows[:, None] - rows[None, :]
        s = sig[..., None, :]
        return torch.special.ndtr((d + 0.5) / s) - torch.special.ndtr((d - 0.5) / s)

    # ---------------------------------------------------------------- scaling
    def _to_linear(self, x: torch.Tensor) -> torch.Tensor:
        v = ((x + 1.0) / 2.0).clamp(0.0, 1.0)
        if self.scaling_kind == "linear":
            return v * self.vmax
        return torch.expm1(v * math.log1p(self.gain * self.vmax)) / self.gain

    def _from_linear(self, y: torch.Tensor) -> torch.Tensor:
        y = y.clamp(0.0, self.vmax)
        v = (
            y / self.vmax
            if self.scaling_kind == "linear"
            else torch.log1p(self.gain * y) / math.log1p(self.gain * self.vmax)
        )
        return 2.0 * v - 1.0

    def broaden(
        self,
        x: torch.Tensor,
        valid: torch.Tensor | None = None,
        z: torch.Tensor | None = None,
        fraction: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Broaden *x* (B, C, E, ...) along axis 2 as it is (no scaling), mask-aware.

        Parameters
        ----------
        x
            Values to broaden; NaN counts as masked.
        valid
            Optional mask (bool or float, nonzero: measured) of the same shape.
        z, fraction
            Optional per-frame width draws or positions in the bounds, shape ``(B,)``
            (see :meth:`sigma`).
        """
        K = self.kernel(x.shape[2], z, fraction).to(x.dtype)
        eq = "ij,bcj...->bci..." if K.dim() == 2 else "bij,bcj...->bci..."
        finite = torch.isfinite(x)
        mask = finite if valid is None else (finite & (valid > 0.5))
        x0 = torch.where(finite, x, torch.zeros_like(x))
        full = torch.einsum(eq, K, x0)
        if bool(mask.all()):
            return full
        m = mask.to(x.dtype)
        num = torch.einsum(eq, K, x0 * m)
        den = torch.einsum(eq, K, m)
        row_weight = K.sum(dim=-1)
        row_weight = (
            row_weight.view(-1, *([1] * (x.dim() - 3)))
            if K.dim() == 2
            else row_weight.view(x.shape[0], 1, -1, *([1] * (x.dim() - 3)))
        )
        has_valid = m.sum(dim=2, keepdim=True) > 0
        normalised = num / den.clamp_min(1e-6) * row_weight
        return torch.where(has_valid & (den > 1e-6), normalised, full)

    def forward(
        self,
        x: torch.Tensor,
        valid: torch.Tensor | None = None,
        noise: bool | None = None,
        sample: bool | None = None,
        fraction: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Broaden model-space frames (B, C, E, ...); returns model space.

        Parameters
        ----------
        x
            Model-space frames; NaN counts as masked.
        valid
            Optional validity mask of the same shape (nonzero: measured).
        noise
            Add the counting noise of the instrument terms; ``None``: in training mode only.
        sample
            Draw per-frame widths and amplitudes (stochastic layers only); ``None``: in
            training mode only.
        fraction
            Optional per-frame width as a position in the bounds, shape ``(B,)`` (bounded
            layers; see :meth:`sigma`); the amplitudes are still drawn as *sample* says.
        """
        finite = torch.isfinite(x)
        mask = finite if valid is None else finite & (valid > 0.5)
        draw = self.stochastic and (self.training if sample is None else bool(sample))
        z = torch.randn(x.shape[0], 4, dtype=x.dtype, device=x.device) if draw else None
        zw = None if z is None else z[:, 0]
        if self.scaling_kind is None:
            return self.broaden(x, mask, zw, fraction)
        lin = self.broaden(self._to_linear(torch.where(finite, x, torch.full_like(x, -1.0))), mask, zw, fraction)
        if self.instrument and self.energy_range is not None:
            lin = lin * self.bose_factor(x.shape[2]).to(lin.dtype).view(-1, *([1] * (x.dim() - 3)))
        # renormalise by the percentile over the measured pixels, as the frames are
        flat = lin.flatten(1)
        m = mask.flatten(1)
        if not bool(m.all()):
            flat = torch.where(m, flat, torch.full_like(flat, float("nan")))
        scale = torch.nan_to_num(torch.nanquantile(flat, self.percentile / 100.0, dim=1), nan=1.0).clamp_min(1e-6)
        lin = lin / scale.view(-1, *([1] * (x.dim() - 1)))
        if self.instrument:
            lin = self._add_instrument(
                lin,
                noise=self.training if noise is None else noise,
                z=None if z is None else z[:, 1:],
                sigma0=(None if zw is None and fraction is None else self.sigma(x.shape[2], zw, fraction)[:, 0]),
            )
        return self._from_linear(lin)

    def bose_factor(self, n_rows: int) -> torch.Tensor:
        """``n(E) + 1`` at the row centres and the learned temperature (needs ``energy_range``)."""
        lo, hi = self.energy_range
        e = lo + (torch.arange(n_rows, dtype=self.coeffs.dtype, device=self.coeffs.device) + 0.5) * ((hi - lo) / n_rows)
        return bose_factor(e, 0.1 + F.softplus(self.temperature_raw))

    def instrument_values(self) -> dict[str, float]:
        """Elastic amplitude, background, counts scale and temperature (K, with an energy
        range); empty without instrument terms."""
        if not self.instrument:
            return {}
        with torch.no_grad():
            out = {
                "elastic_amplitude": float(F.softplus(self.elastic_raw)),
                "background": float(F.softplus(self.background_raw)),
                "counts_scale": float(torch.exp(self.log_counts)),
            }
            if self.column_terms:
                out["elastic_decay"] = float(F.softplus(self.elastic_decay_raw))
                out["background_u2"] = float(F.softplus(self.background_slope_raw))
            if self.energy_range is not None:
                out["temperature"] = float(0.1 + F.softplus(self.temperature_raw))
            return out

    def learned_values(self) -> dict[str, float]:
        """:meth:`instrument_values` plus, for a stochastic layer, the spreads
        (``width_spread``; ``elastic_spread``, ``background_spread``, ``counts_spread``
        with the instrument terms)."""
        out = self.instrument_values()
        if self.stochastic:
            with torch.no_grad():
                out["width_spread"] = float(self._spread(self.log_spread))
                if self.instrument:
                    for name, v in zip(
                        ("elastic_spread", "background_spread", "counts_spread"),
                        self._spread(self.log_amplitude_spreads),
                    ):
                        out[name] = float(v)
        return out

    def _add_instrument(
        self, lin: torch.Tensor, noise: bool, z: torch.Tensor | None = None, sigma0: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Elastic line, background and (with *noise*) counting noise.

        *z* ``(B, 3)``: per-frame draws for the elastic amplitude, background and counts
        (``None``: the central values); *sigma0* ``(B,)``: per-frame elastic widths in
        pixels (``None``: the central width at the lowest row).
        """
        n = lin.shape[2]
        tail = [1] * (lin.dim() - 3)
        edges = torch.arange(n + 1, dtype=lin.dtype, device=lin.device)
        elastic = F.softplus(self.elastic_raw)
        background = F.softplus(self.background_raw)
        counts = torch.exp(self.log_counts)
        bg_factor = torch.ones((), dtype=lin.dtype, device=lin.device)
        if z is not None:  # per frame: each amplitude times exp(spread z)
            factors = torch.exp(z * self._spread(self.log_amplitude_spreads).to(lin.dtype))  # (B, 3)
            shape = (lin.shape[0],) + (1,) * (lin.dim() - 1)
            elastic = elastic * factors[:, 0].view(shape)
            bg_factor = factors[:, 1].view(shape)
            background = background * bg_factor
            counts = counts * factors[:, 2].view(shape)
        # bin-averaged exp(-E^2 / 2 sigma(0)^2), E = 0 at the lower edge of row 0
        if sigma0 is None:
            sig0 = self.sigma(n)[0]
            profile = (sig0 * math.sqrt(2 * math.pi) * torch.diff(torch.special.ndtr(edges / sig0))).view(-1, *tail)
        else:
            s0 = sigma0.to(lin.dtype)[:, None]
            profile = s0 * math.sqrt(2 * math.pi) * torch.diff(torch.special.ndtr(edges[None, :] / s0), dim=1)
            profile = profile.view(lin.shape[0], 1, n, *tail)
        if self.column_terms:
            if lin.dim() != 4:
                raise InputError("the column terms need 2D frames (B, C, E, X)")
            w = lin.shape[3]
            u2 = (((torch.arange(w, dtype=lin.dtype, device=lin.device) + 0.5) / w) ** 2).view(1, 1, 1, w)
            profile = profile * torch.exp(-F.softplus(self.elastic_decay_raw) * u2)
            background = background + bg_factor * F.softplus(self.background_slope_raw) * u2
        lam = (lin + elastic * profile + background).clamp_min(0.0)
        if not noise:
            return lam
        gauss = lam + torch.sqrt(lam / counts + 1e-12) * torch.randn_like(lam)
        if not self.poisson:
            return gauss
        with torch.no_grad():
            exact = torch.poisson(lam * counts) / counts
        return gauss + (exact - gauss).detach()  # Poisson values, Gaussian gradient

    def extra_repr(self) -> str:  # noqa: D102
        return (
            f"degree={self.coeffs.numel() - 1}, scaling={self.scaling_kind}, percentile={self.percentile}, "
            f"instrument={self.instrument}, column_terms={self.column_terms}, bounded={self.bounded}, "
            f"stochastic={self.stochastic}, "
            f"poisson={self.poisson}"
        )
