"""Exp2SimGAN networks: ResNet generators, PatchGAN discriminators, PatchNCE MLPs.

One implementation serves 2D frames and 3D volumes: every layer is looked up
through :func:`layer_types` with ``dims`` = 2 or 3.  All networks are fully
convolutional, so a model trained on 64x64 patches runs unchanged on larger
frames (any size divisible by 4).

Size presets (see :data:`PRESETS`):

``small`` (default, fits 2 CPU cores)
    ngf 16, 3 residual blocks, ndf 32 with 2 stride-2 discriminator layers;
    ~0.27 M parameters per generator, ~0.17 M per discriminator (2D).
``paper``
    ngf 64, 9 residual blocks, ndf 64 with 3 stride-2 layers, anti-aliased
    down/up-sampling; ~11.4 M parameters per generator (2D, without anti-aliasing).

Optional physics-informed Sim2Exp generator (``GanConfig(sim2exp_resolution=True)``):
:class:`ResolutionResnetGenerator` first broadens its input along the energy axis (the
first spatial axis, rows of a frame) with :class:`EnergyResolutionLayer` -- a Gaussian
whose width is a smooth learnable function of energy, applied in linear intensity --
and then adds a gated ResNet correction.  Options: width bounds per energy row (e.g. the
instrument's resolution range, ``GanConfig.resolution_sigma_bounds``) and per-frame
random widths and instrument amplitudes in training (``resolution_stochastic``).  Off by
default (the shipped model is a pair of plain :class:`ResnetGenerator`).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

__all__ = [
    "GanConfig",
    "PRESETS",
    "ResnetGenerator",
    "PatchDiscriminator",
    "PatchSampleMLP",
    "EnergyResolutionLayer",
    "ResolutionResnetGenerator",
    "make_generators",
    "layer_types",
    "count_parameters",
]


@dataclass(frozen=True)
class GanConfig:
    """Architecture of an Exp2SimGAN generator pair.

    Parameters
    ----------
    dims
        2 for frames, 3 for volumes.
    ngf
        Channels after the first generator convolution (doubled at each downsampling).
    n_blocks
        Residual blocks at the bottleneck.
    ndf
        Base channels of the PatchGAN discriminator.
    n_layers_d
        Stride-2 convolutions in the discriminator.
    antialias
        Blur-pool before downsampling and blur after upsampling (the published network).
    nce_layers
        Encoder layers feeding PatchNCE; names from :meth:`ResnetGenerator.layer_names`.
    nce_dim
        Width of the PatchNCE projection MLPs.
    num_patches
        Spatial positions sampled per layer for PatchNCE.
    sim2exp_resolution
        Make Sim2Exp (``G_B``) a :class:`ResolutionResnetGenerator`: an explicit,
        learnable Gaussian broadening along energy followed by a gated ResNet
        correction.  ``False`` (default): both generators are :class:`ResnetGenerator`.
    resolution_degree
        Degree of the polynomial (in the normalised energy coordinate) whose softplus
        is the broadening width.
    resolution_init_sigma
        Initial width in pixels (rows), the same at every energy.
    resolution_instrument
        The resolution layer also adds a learnable elastic line, flat background and
        (in training) counting noise (:class:`EnergyResolutionLayer` ``instrument``).
    resolution_residual
        Add the gated ResNet correction to the broadened frame (``b + g R(b)``);
        ``False``: Sim2Exp's output is the resolution layer's alone (the ResNet's
        encoder still provides G_B's PatchNCE features).
    resolution_energy_range
        ``(E_min, E_max)`` in meV spanned by the rows; with the instrument terms it
        adds a Bose factor ``n(E) + 1`` at a learnable temperature.  ``None``: no Bose factor.
    resolution_sigma_bounds
        ``(lower, upper)``: per-row bounds (pixels) of the broadening width, one value per
        energy row of the frames (e.g. the instrument's resolution over the incident
        energies used, :func:`bluesky_twin.gan.build.maps_sigma_bounds`); the width is
        then ``lower + (upper - lower) sigmoid(poly)``.  ``None`` (default): unbounded
        (``MIN_SIGMA + softplus(poly)``).
    resolution_stochastic
        In training mode, draw a width and instrument amplitudes per frame (learnable
        log-normal / logit-normal spreads around the learned values); eval mode uses the
        central values, so translation stays deterministic.  ``False`` (default): one
        deterministic width for all frames.
    resolution_poisson
        With the instrument terms, the training-time counting noise takes Poisson values
        ``Poisson(N lambda) / N`` (as the experiment-like frames do) and passes the
        gradient of the Gaussian approximation (straight-through); ``False`` (default):
        Gaussian noise of variance ``lambda / N``.
    resolution_spread_max
        With ``resolution_stochastic``: cap every learnable spread at this value
        (``spread_max * sigmoid(raw)``), so none can run away; ``None`` (default): ``exp(raw)``,
        unbounded.
    resolution_column_terms
        With the instrument terms (2D frames): the elastic line decays along the columns
        as ``exp(-k u^2)`` and the background rises as ``b0 + b1 u^2`` (``u`` in (0, 1),
        the column position; ``|Q|`` for powder frames), with learnable ``k, b1 >= 0`` --
        the recipe's ``exp(-0.05 Q^2)`` elastic line and ``b0 + b1 Q^2`` background.
        ``False`` (default): flat in the columns.
    """

    dims: int = 2
    ngf: int = 16
    n_blocks: int = 3
    ndf: int = 32
    n_layers_d: int = 2
    antialias: bool = False
    nce_layers: tuple[str, ...] = ("down1", "down2", "res1", "res3")
    nce_dim: int = 128
    num_patches: int = 256
    sim2exp_resolution: bool = False
    resolution_degree: int = 2
    resolution_init_sigma: float = 3.0
    resolution_instrument: bool = False
    resolution_residual: bool = True
    resolution_energy_range: tuple[float, float] | None = None
    resolution_sigma_bounds: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    resolution_stochastic: bool = False
    resolution_poisson: bool = False
    resolution_spread_max: float | None = None
    resolution_column_terms: bool = False

    def __post_init__(self) -> None:
        if self.dims not in (2, 3):
            raise ValueError(f"dims must be 2 or 3, got {self.dims}")
        if not 0 <= int(self.resolution_degree) <= 6:
            raise ValueError(f"resolution_degree must be in 0..6, got {self.resolution_degree}")
        if not self.resolution_init_sigma > EnergyResolutionLayer.MIN_SIGMA:
            raise ValueError(f"resolution_init_sigma must exceed {EnergyResolutionLayer.MIN_SIGMA} pixels, "
                             f"got {self.resolution_init_sigma}")
        if self.ngf < 1 or self.n_blocks < 1 or self.ndf < 1 or self.n_layers_d < 1:
            raise ValueError("ngf, n_blocks, ndf and n_layers_d must be positive")
        object.__setattr__(self, "nce_layers", tuple(self.nce_layers))
        if self.resolution_energy_range is not None:
            lo, hi = (float(v) for v in self.resolution_energy_range)
            if not (0.0 <= lo < hi):
                raise ValueError(f"resolution_energy_range must be (lo, hi) with 0 <= lo < hi meV, got "
                                 f"{self.resolution_energy_range}")
            object.__setattr__(self, "resolution_energy_range", (lo, hi))
        if self.resolution_sigma_bounds is not None:
            lower, upper = _check_sigma_bounds(self.resolution_sigma_bounds)
            object.__setattr__(self, "resolution_sigma_bounds", (lower, upper))
        object.__setattr__(self, "resolution_stochastic", bool(self.resolution_stochastic))
        object.__setattr__(self, "resolution_poisson", bool(self.resolution_poisson))
        if self.resolution_poisson and not self.resolution_instrument:
            raise ValueError("resolution_poisson needs resolution_instrument")
        if self.resolution_spread_max is not None:
            if not self.resolution_stochastic:
                raise ValueError("resolution_spread_max needs resolution_stochastic")
            if not (math.isfinite(float(self.resolution_spread_max)) and float(self.resolution_spread_max) > 1.0):
                raise ValueError(f"resolution_spread_max must be a number > 1 (the initial spreads are 1 and 0.5), "
                                 f"got {self.resolution_spread_max!r}")
            object.__setattr__(self, "resolution_spread_max", float(self.resolution_spread_max))
        object.__setattr__(self, "resolution_column_terms", bool(self.resolution_column_terms))
        if self.resolution_column_terms and not (self.resolution_instrument and self.dims == 2):
            raise ValueError("resolution_column_terms needs resolution_instrument and 2D frames")
        valid = set(ResnetGenerator.layer_names(self.n_blocks))
        bad = [name for name in self.nce_layers if name not in valid]
        if bad:
            raise ValueError(f"unknown nce_layers {bad}; valid: {sorted(valid)}")

    @property
    def feature_layer(self) -> str:
        """Encoder layer used for the domain-of-applicability score (after the last downsampling)."""
        return "down2"

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        d = asdict(self)
        d["nce_layers"] = list(self.nce_layers)
        if self.resolution_energy_range is not None:
            d["resolution_energy_range"] = list(self.resolution_energy_range)
        if self.resolution_sigma_bounds is not None:
            d["resolution_sigma_bounds"] = [list(b) for b in self.resolution_sigma_bounds]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "GanConfig":
        """Inverse of :meth:`to_dict`; unknown keys are an error, missing ones take their defaults
        (so metadata written before an option existed loads with the option off)."""
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown GanConfig keys: {sorted(unknown)}")
        return cls(**d)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "GanConfig":
        """A named size preset (``small`` or ``paper``) with optional overrides."""
        try:
            base = dict(PRESETS[name])
        except KeyError:
            raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}") from None
        base.update(overrides)
        return cls(**base)


PRESETS: dict[str, dict[str, Any]] = {
    "small": dict(ngf=16, n_blocks=3, ndf=32, n_layers_d=2, antialias=False,
                  nce_layers=("down1", "down2", "res1", "res3"), nce_dim=128, num_patches=256),
    "paper": dict(ngf=64, n_blocks=9, ndf=64, n_layers_d=3, antialias=True,
                  nce_layers=("down1", "down2", "res1", "res5"), nce_dim=256, num_patches=256),
}


def layer_types(dims: int) -> dict[str, type[nn.Module]]:
    """Convolution, transposed convolution, instance norm and reflection pad for *dims*."""
    if dims == 2:
        return dict(conv=nn.Conv2d, convT=nn.ConvTranspose2d, norm=nn.InstanceNorm2d, pad=nn.ReflectionPad2d)
    if dims == 3:
        return dict(conv=nn.Conv3d, convT=nn.ConvTranspose3d, norm=nn.InstanceNorm3d, pad=nn.ReflectionPad3d)
    raise ValueError(f"dims must be 2 or 3, got {dims}")


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


class Blur(nn.Module):
    """Fixed [1, 2, 1] binomial blur (separable, per channel), optionally with stride 2."""

    def __init__(self, channels: int, dims: int, stride: int = 1):
        super().__init__()
        k1 = torch.tensor([1.0, 2.0, 1.0])
        kernel = k1
        for _ in range(dims - 1):
            kernel = kernel[..., None] * k1
        kernel = kernel / kernel.sum()
        self.register_buffer("kernel", kernel.expand(channels, 1, *([3] * dims)).clone(), persistent=False)
        self.pad = layer_types(dims)["pad"](1)
        self.stride = stride
        self.dims = dims
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        conv = F.conv2d if self.dims == 2 else F.conv3d
        return conv(self.pad(x), self.kernel, stride=self.stride, groups=self.channels)


class ResnetBlock(nn.Module):
    """Two 3x3 convolutions with reflection padding and instance norm, plus a skip."""

    def __init__(self, channels: int, dims: int):
        super().__init__()
        t = layer_types(dims)
        self.body = nn.Sequential(
            t["pad"](1), t["conv"](channels, channels, 3), t["norm"](channels), nn.ReLU(True),
            t["pad"](1), t["conv"](channels, channels, 3), t["norm"](channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return x + self.body(x)


def _down(cin: int, cout: int, dims: int, antialias: bool) -> nn.Sequential:
    t = layer_types(dims)
    if antialias:
        return nn.Sequential(t["conv"](cin, cout, 3, padding=1), t["norm"](cout), nn.ReLU(True),
                             Blur(cout, dims, stride=2))
    return nn.Sequential(t["conv"](cin, cout, 3, stride=2, padding=1), t["norm"](cout), nn.ReLU(True))


def _up(cin: int, cout: int, dims: int, antialias: bool) -> nn.Sequential:
    t = layer_types(dims)
    if antialias:
        return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), Blur(cin, dims),
                             t["conv"](cin, cout, 3, padding=1), t["norm"](cout), nn.ReLU(True))
    return nn.Sequential(t["convT"](cin, cout, 3, stride=2, padding=1, output_padding=1),
                         t["norm"](cout), nn.ReLU(True))


class ResnetGenerator(nn.Module):
    """ResNet encoder-decoder: 7x7 conv, 2 stride-2 downsamplings, residual blocks,
    2 upsamplings, 7x7 conv, tanh.

    Parameters
    ----------
    config
        Architecture (``dims``, ``ngf``, ``n_blocks``, ``antialias`` are used).
    in_channels, out_channels
        Image channels (1 for INS frames).
    """

    def __init__(self, config: GanConfig, in_channels: int = 1, out_channels: int = 1):
        super().__init__()
        t = layer_types(config.dims)
        ngf, dims, aa = config.ngf, config.dims, config.antialias
        self.config = config
        self.stem = nn.Sequential(t["pad"](3), t["conv"](in_channels, ngf, 7), t["norm"](ngf), nn.ReLU(True))
        self.down1 = _down(ngf, 2 * ngf, dims, aa)
        self.down2 = _down(2 * ngf, 4 * ngf, dims, aa)
        self.blocks = nn.ModuleList(ResnetBlock(4 * ngf, dims) for _ in range(config.n_blocks))
        self.up1 = _up(4 * ngf, 2 * ngf, dims, aa)
        self.up2 = _up(2 * ngf, ngf, dims, aa)
        self.head = nn.Sequential(t["pad"](3), t["conv"](ngf, out_channels, 7), nn.Tanh())

    @staticmethod
    def layer_names(n_blocks: int) -> list[str]:
        """Names of the encoder layers whose outputs :meth:`encode` can return, in order."""
        return ["stem", "down1", "down2"] + [f"res{i + 1}" for i in range(n_blocks)]

    def layer_channels(self, names: Sequence[str]) -> list[int]:
        """Channel count of each named encoder layer."""
        ngf = self.config.ngf
        chans = {"stem": ngf, "down1": 2 * ngf, "down2": 4 * ngf}
        return [chans.get(n, 4 * ngf) for n in names]

    def encode(self, x: torch.Tensor, layers: Sequence[str]) -> list[torch.Tensor]:
        """Encoder activations at *layers* (in the order given); stops after the deepest needed."""
        order = self.layer_names(self.config.n_blocks)
        unknown = [n for n in layers if n not in order]
        if unknown:
            raise ValueError(f"unknown encoder layers {unknown}")
        last = max(order.index(n) for n in layers)
        out: dict[str, torch.Tensor] = {}
        h = x
        for i, name in enumerate(order[: last + 1]):
            if name == "stem":
                h = self.stem(h)
            elif name == "down1":
                h = self.down1(h)
            elif name == "down2":
                h = self.down2(h)
            else:
                h = self.blocks[int(name[3:]) - 1](h)
            out[name] = h
        return [out[n] for n in layers]

    def forward_with_features(self, x: torch.Tensor, layers: Sequence[str]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Translate *x* and return the encoder activations at *layers* from the same pass."""
        wanted = set(layers)
        out: dict[str, torch.Tensor] = {}
        h = self.stem(x)
        out["stem"] = h
        h = self.down1(h)
        out["down1"] = h
        h = self.down2(h)
        out["down2"] = h
        for i, block in enumerate(self.blocks):
            h = block(h)
            if f"res{i + 1}" in wanted:
                out[f"res{i + 1}"] = h
        y = self.head(self.up2(self.up1(h)))
        return y, [out[n] for n in layers]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        _check_spatial(x, self.config.dims)
        h = self.down2(self.down1(self.stem(x)))
        for block in self.blocks:
            h = block(h)
        return self.head(self.up2(self.up1(h)))


def _check_spatial(x: torch.Tensor, dims: int) -> None:
    if x.dim() != dims + 2:
        raise ValueError(f"expected a {dims + 2}-D tensor (batch, channel, {dims} spatial), got shape {tuple(x.shape)}")
    if any(s % 4 for s in x.shape[2:]):
        raise ValueError(f"spatial sizes must be divisible by 4, got {tuple(x.shape[2:])}")


class PatchDiscriminator(nn.Module):
    """PatchGAN discriminator whose last convolution has 2 channels.

    Channel 0 is the real/fake (GAN) head, channel 1 the auxiliary head.
    """

    def __init__(self, config: GanConfig, in_channels: int = 1):
        super().__init__()
        t = layer_types(config.dims)
        ndf = config.ndf
        layers: list[nn.Module] = [t["conv"](in_channels, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, config.n_layers_d):
            prev, mult = mult, min(2**n, 8)
            layers += [t["conv"](ndf * prev, ndf * mult, 4, stride=2, padding=1), t["norm"](ndf * mult),
                       nn.LeakyReLU(0.2, True)]
        prev, mult = mult, min(2**config.n_layers_d, 8)
        layers += [t["conv"](ndf * prev, ndf * mult, 4, stride=1, padding=1), t["norm"](ndf * mult),
                   nn.LeakyReLU(0.2, True), t["conv"](ndf * mult, 2, 4, stride=1, padding=1)]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (gan_logits, aux_output), each of shape (batch, 1, *patch_grid)."""
        out = self.model(x)
        return out[:, :1], out[:, 1:]


class PatchSampleMLP(nn.Module):
    """Per-layer projection MLPs (Linear, ReLU, Linear, L2-normalise) for PatchNCE.

    Parameters
    ----------
    in_channels
        Channel count of each encoder layer.
    dim
        Output width of each MLP.
    """

    def __init__(self, in_channels: Sequence[int], dim: int = 128):
        super().__init__()
        self.mlps = nn.ModuleList(
            nn.Sequential(nn.Linear(c, dim), nn.ReLU(True), nn.Linear(dim, dim)) for c in in_channels
        )

    def forward(
        self,
        features: Sequence[torch.Tensor],
        num_patches: int,
        patch_ids: Sequence[torch.Tensor] | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Sample positions and project.

        Parameters
        ----------
        features
            Encoder activations, each (B, C, *spatial).
        num_patches
            Positions per layer (all positions if the layer has fewer).
        patch_ids
            Reuse these positions (from the key pass) instead of sampling.
        generator
            Random generator for the position sampling (determinism).

        Returns
        -------
        projected, ids
            Per layer, (B, P, dim) unit vectors and the (P,) flat position indices.
        """
        projected, ids = [], []
        for i, (feat, mlp) in enumerate(zip(features, self.mlps)):
            flat = feat.flatten(2).transpose(1, 2)  # (B, S, C)
            if patch_ids is not None:
                idx = patch_ids[i]
            else:
                n_pos = flat.shape[1]
                idx = torch.randperm(n_pos, generator=generator, device=feat.device)[: min(num_patches, n_pos)]
            sample = flat[:, idx, :]
            projected.append(F.normalize(mlp(sample), dim=-1))
            ids.append(idx)
        return projected, ids


def init_weights(module: nn.Module, gain: float = 0.02) -> None:
    """Normal(0, gain) initialisation of conv/linear weights, zero biases (CUT/DCLGAN default)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


#: Boltzmann constant in meV/K.
K_B_MEV = 0.08617333262


def _inv_softplus(y: float) -> float:
    return y + math.log(-math.expm1(-y))


def _check_sigma_bounds(bounds: Any) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Validate per-row width bounds ``(lower, upper)`` (pixels); return them as float tuples.

    Raises
    ------
    ValueError
        Unless there are two equally long, non-empty sequences of finite numbers with
        ``MIN_SIGMA < lower < upper`` in every row.
    """
    try:
        lower, upper = bounds
        lower = tuple(float(v) for v in lower)
        upper = tuple(float(v) for v in upper)
    except (TypeError, ValueError):
        raise ValueError("resolution_sigma_bounds must be (lower, upper), two sequences of widths in pixels, "
                         f"got {bounds!r}") from None
    if not lower or len(lower) != len(upper):
        raise ValueError(f"resolution_sigma_bounds: lower and upper need one width per row each, got "
                         f"{len(lower)} and {len(upper)} values")
    lo, hi = np.asarray(lower), np.asarray(upper)
    if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
        raise ValueError("resolution_sigma_bounds must be finite")
    if np.any(lo <= EnergyResolutionLayer.MIN_SIGMA) or np.any(hi <= lo):
        raise ValueError(f"resolution_sigma_bounds need {EnergyResolutionLayer.MIN_SIGMA} < lower < upper in every "
                         f"row (pixels)")
    return lower, upper


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

    MIN_SIGMA = 0.05

    def __init__(self, degree: int = 2, init_sigma: float = 3.0, scaling_kind: str | None = "log1p",
                 gain: float = 4.0, vmax: float = 4.0, percentile: float = 99.5, instrument: bool = False,
                 init_elastic: float = 1.0, init_background: float = 0.02, init_counts: float = 100.0,
                 energy_range: tuple[float, float] | None = None, init_temperature: float = 8.0,
                 sigma_bounds: tuple[Sequence[float], Sequence[float]] | None = None, stochastic: bool = False,
                 init_spread: float = 1.0, init_amplitude_spread: float = 0.5, poisson: bool = False,
                 spread_max: float | None = None, column_terms: bool = False):
        super().__init__()
        if init_sigma <= self.MIN_SIGMA:
            raise ValueError(f"init_sigma must exceed {self.MIN_SIGMA}")
        if scaling_kind not in (None, "log1p", "linear"):
            raise ValueError(f"unknown scaling kind {scaling_kind!r}")
        if instrument and scaling_kind is None:
            raise ValueError("the instrument terms need linear intensity (a scaling_kind)")
        if not (init_spread > 0 and init_amplitude_spread > 0):
            raise ValueError("init_spread and init_amplitude_spread must be positive")
        if poisson and not instrument:
            raise ValueError("Poisson counting noise needs the instrument terms (instrument=True)")
        if column_terms and not instrument:
            raise ValueError("column terms need the instrument terms (instrument=True)")
        self.spread_max = None if spread_max is None else float(spread_max)
        if self.spread_max is not None and not self.spread_max > max(init_spread, init_amplitude_spread):
            raise ValueError(f"spread_max ({spread_max}) must exceed the initial spreads")
        coeffs = torch.zeros(int(degree) + 1)
        self.bounded = sigma_bounds is not None
        if self.bounded:  # all coefficients 0: the middle of the range
            lower, upper = _check_sigma_bounds(sigma_bounds)
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

    # ------------------------------------------------------------------ width
    def _raw_spread(self, value: float) -> float:
        if self.spread_max is None:
            return math.log(value)
        q = value / self.spread_max
        return math.log(q / (1.0 - q))

    def _spread(self, raw: torch.Tensor) -> torch.Tensor:
        """Spread(s) from the raw parameter: ``exp(raw)``, or ``spread_max * sigmoid(raw)`` with a cap."""
        return torch.exp(raw) if self.spread_max is None else self.spread_max * torch.sigmoid(raw)

    def sigma(self, n_rows: int, z: torch.Tensor | None = None,
              fraction: torch.Tensor | None = None) -> torch.Tensor:
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
                raise ValueError("widths given as a fraction of the bounds need a bounded layer (sigma_bounds)")
            position = fraction.to(self.sigma_lower.dtype).clamp(0.0, 1.0)[:, None]
        else:
            t = (torch.arange(n_rows, dtype=self.coeffs.dtype, device=self.coeffs.device) + 0.5) * (2.0 / n_rows) - 1.0
            powers = torch.stack([t**k for k in range(self.coeffs.numel())], dim=0)
            arg = self.coeffs @ powers
            if z is not None:
                if not self.stochastic:
                    raise ValueError("per-frame widths need a stochastic layer (stochastic=True)")
                arg = arg[None, :] + self._spread(self.log_spread) * z.to(arg.dtype)[:, None]
            if not self.bounded:
                return self.MIN_SIGMA + F.softplus(arg)
            position = torch.sigmoid(arg)
        if n_rows != self.sigma_lower.numel():
            raise ValueError(f"the width bounds are for frames of {self.sigma_lower.numel()} energy rows, "
                             f"got {n_rows} rows")
        lo, hi = self.sigma_lower.to(position.dtype), self.sigma_upper.to(position.dtype)
        return lo + (hi - lo) * position

    def kernel(self, n_rows: int, z: torch.Tensor | None = None,
               fraction: torch.Tensor | None = None) -> torch.Tensor:
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
        v = y / self.vmax if self.scaling_kind == "linear" else torch.log1p(self.gain * y) / math.log1p(self.gain * self.vmax)
        return 2.0 * v - 1.0

    def broaden(self, x: torch.Tensor, valid: torch.Tensor | None = None,
                z: torch.Tensor | None = None, fraction: torch.Tensor | None = None) -> torch.Tensor:
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
        row_weight = (row_weight.view(-1, *([1] * (x.dim() - 3))) if K.dim() == 2
                      else row_weight.view(x.shape[0], 1, -1, *([1] * (x.dim() - 3))))
        has_valid = (m.sum(dim=2, keepdim=True) > 0)
        normalised = num / den.clamp_min(1e-6) * row_weight
        return torch.where(has_valid & (den > 1e-6), normalised, full)

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None, noise: bool | None = None,
                sample: bool | None = None, fraction: torch.Tensor | None = None) -> torch.Tensor:
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
            lin = self._add_instrument(lin, noise=self.training if noise is None else noise,
                                       z=None if z is None else z[:, 1:],
                                       sigma0=(None if zw is None and fraction is None
                                               else self.sigma(x.shape[2], zw, fraction)[:, 0]))
        return self._from_linear(lin)

    def bose_factor(self, n_rows: int) -> torch.Tensor:
        """``n(E) + 1`` at the row centres and the learned temperature (needs ``energy_range``)."""
        lo, hi = self.energy_range
        e = lo + (torch.arange(n_rows, dtype=self.coeffs.dtype, device=self.coeffs.device) + 0.5) * ((hi - lo) / n_rows)
        kt = K_B_MEV * (0.1 + F.softplus(self.temperature_raw))
        return 1.0 / -torch.expm1(-e / kt)

    def instrument_values(self) -> dict[str, float]:
        """Elastic amplitude, background, counts scale and temperature (K, with an energy
        range); empty without instrument terms."""
        if not self.instrument:
            return {}
        with torch.no_grad():
            out = {"elastic_amplitude": float(F.softplus(self.elastic_raw)),
                   "background": float(F.softplus(self.background_raw)),
                   "counts_scale": float(torch.exp(self.log_counts))}
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
                    for name, v in zip(("elastic_spread", "background_spread", "counts_spread"),
                                       self._spread(self.log_amplitude_spreads)):
                        out[name] = float(v)
        return out

    def _add_instrument(self, lin: torch.Tensor, noise: bool, z: torch.Tensor | None = None,
                        sigma0: torch.Tensor | None = None) -> torch.Tensor:
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
                raise ValueError("the column terms need 2D frames (B, C, E, X)")
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
        return (f"degree={self.coeffs.numel() - 1}, scaling={self.scaling_kind}, percentile={self.percentile}, "
                f"instrument={self.instrument}, column_terms={self.column_terms}, bounded={self.bounded}, "
                f"stochastic={self.stochastic}, "
                f"poisson={self.poisson}")


class ResolutionResnetGenerator(ResnetGenerator):
    """Sim2Exp generator with an explicit resolution broadening: ``y = b + g * R(b)``.

    ``b = EnergyResolutionLayer(x)`` is the input broadened along energy, ``R`` the
    usual ResNet encoder-decoder (same layer names, so PatchNCE and the state-dict keys
    of the ResNet part are unchanged) and ``g`` a learnable scalar gate initialised to
    0, so the untrained generator *is* the broadening and the ResNet learns only a
    correction (background, elastic line, noise texture).  The output is clamped to
    the model range [-1, 1].  With ``config.resolution_residual=False`` there is no
    correction (``y = b``; ``gate`` is a zero buffer) and the ResNet's decoder is unused.

    :meth:`encode` and :meth:`forward_with_features` return the encoder activations
    of the broadened input ``b`` (the representation the output is built from).
    ``forward(x, broaden=False)`` skips the broadening (``x + g R(x)``): the identity
    map for frames that already carry the resolution.

    Parameters
    ----------
    config
        Architecture (``resolution_degree``, ``resolution_init_sigma`` are used too).
    scaling
        A :class:`bluesky_twin.gan.preprocess.Scaling` (or ``None`` for the default);
        the broadening works in its linear frame units.
    """

    def __init__(self, config: GanConfig, scaling: Any = None, in_channels: int = 1, out_channels: int = 1):
        super().__init__(config, in_channels, out_channels)
        kind, gain, vmax = "log1p", 4.0, 4.0
        if scaling is not None:
            kind, gain, vmax = scaling.kind, scaling.gain, scaling.vmax
        self.resolution = EnergyResolutionLayer(config.resolution_degree, config.resolution_init_sigma,
                                                scaling_kind=kind, gain=gain, vmax=vmax,
                                                instrument=config.resolution_instrument,
                                                energy_range=config.resolution_energy_range,
                                                sigma_bounds=config.resolution_sigma_bounds,
                                                stochastic=config.resolution_stochastic,
                                                poisson=config.resolution_poisson,
                                                spread_max=config.resolution_spread_max,
                                                column_terms=config.resolution_column_terms)
        self.residual = bool(config.resolution_residual)
        if self.residual:
            self.gate = nn.Parameter(torch.zeros(()))
        else:
            self.register_buffer("gate", torch.zeros(()))

    def width_parameters(self) -> list[nn.Parameter]:
        """The broadening layer's parameters (widths and instrument terms; trained by the
        adversarial loss only, see ``train``)."""
        return list(self.resolution.parameters())

    def residual_parameters(self) -> list[nn.Parameter]:
        """Every parameter except the broadening's."""
        ids = {id(p) for p in self.width_parameters()}
        return [p for p in self.parameters() if id(p) not in ids]

    def _correct(self, b: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        return (b + self.gate * r).clamp(-1.0, 1.0)

    def encode(self, x: torch.Tensor, layers: Sequence[str]) -> list[torch.Tensor]:  # noqa: D102
        return super().encode(self.resolution(x, noise=False, sample=False), layers)

    def forward_with_features(self, x: torch.Tensor, layers: Sequence[str],
                              valid: torch.Tensor | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Translate *x* (broadening with the validity mask *valid*) and return encoder features of ``b``."""
        b = self.resolution(x, valid)
        if not self.residual:
            return b.clamp(-1.0, 1.0), super().encode(b, layers)
        r, feats = super().forward_with_features(b, layers)
        return self._correct(b, r), feats

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None, broaden: bool = True,
                fraction: torch.Tensor | None = None) -> torch.Tensor:
        """Translate *x*; *fraction* (B,) fixes each frame's width in the bounds (see
        :meth:`EnergyResolutionLayer.sigma`)."""
        _check_spatial(x, self.config.dims)
        b = self.resolution(x, valid, fraction=fraction) if broaden else x
        if not self.residual:
            return b.clamp(-1.0, 1.0)
        return self._correct(b, super().forward(b))


def make_generators(config: GanConfig, scaling: Any = None) -> tuple[ResnetGenerator, ResnetGenerator]:
    """``(G_A, G_B)`` for *config*: G_B is a :class:`ResolutionResnetGenerator` if
    ``config.sim2exp_resolution``, else both are plain :class:`ResnetGenerator`."""
    G_A = ResnetGenerator(config)
    G_B = ResolutionResnetGenerator(config, scaling) if config.sim2exp_resolution else ResnetGenerator(config)
    return G_A, G_B
