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

Optional physics-informed Sim2Exp generator (``GanConfig(resolution=ResolutionConfig())``):
:class:`ResolutionResnetGenerator` first broadens its input along the energy axis (the
first spatial axis, rows of a frame) with the INS resolution layer
(:class:`bluesky_twin.ins.resolution_layer.EnergyResolutionLayer`) and optionally adds a
gated ResNet correction.  The architecture is :class:`bluesky_twin.gan.config.GanConfig`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from bluesky_twin.errors import InputError
from bluesky_twin.gan.config import PRESETS, GanConfig, encoder_layer_names
from bluesky_twin.ins.resolution_layer import EnergyResolutionLayer

__all__ = [
    "GanConfig",
    "PRESETS",
    "ResnetGenerator",
    "PatchDiscriminator",
    "PatchSampleMLP",
    "ResolutionResnetGenerator",
    "make_generators",
    "layer_types",
    "count_parameters",
]


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
            t["pad"](1),
            t["conv"](channels, channels, 3),
            t["norm"](channels),
            nn.ReLU(True),
            t["pad"](1),
            t["conv"](channels, channels, 3),
            t["norm"](channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return x + self.body(x)


def _down(cin: int, cout: int, dims: int, antialias: bool) -> nn.Sequential:
    t = layer_types(dims)
    if antialias:
        return nn.Sequential(
            t["conv"](cin, cout, 3, padding=1), t["norm"](cout), nn.ReLU(True), Blur(cout, dims, stride=2)
        )
    return nn.Sequential(t["conv"](cin, cout, 3, stride=2, padding=1), t["norm"](cout), nn.ReLU(True))


def _up(cin: int, cout: int, dims: int, antialias: bool) -> nn.Sequential:
    t = layer_types(dims)
    if antialias:
        return nn.Sequential(
            nn.Upsample(scale_factor=2, mode="nearest"),
            Blur(cin, dims),
            t["conv"](cin, cout, 3, padding=1),
            t["norm"](cout),
            nn.ReLU(True),
        )
    return nn.Sequential(
        t["convT"](cin, cout, 3, stride=2, padding=1, output_padding=1), t["norm"](cout), nn.ReLU(True)
    )


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
        return encoder_layer_names(n_blocks)

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
        for name in order[: last + 1]:
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
            layers += [
                t["conv"](ndf * prev, ndf * mult, 4, stride=2, padding=1),
                t["norm"](ndf * mult),
                nn.LeakyReLU(0.2, True),
            ]
        prev, mult = mult, min(2**config.n_layers_d, 8)
        layers += [
            t["conv"](ndf * prev, ndf * mult, 4, stride=1, padding=1),
            t["norm"](ndf * mult),
            nn.LeakyReLU(0.2, True),
            t["conv"](ndf * mult, 2, 4, stride=1, padding=1),
        ]
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


class ResolutionResnetGenerator(ResnetGenerator):
    """Sim2Exp generator with an explicit resolution broadening: ``y = b + g * R(b)``.

    ``b = EnergyResolutionLayer(x)`` is the input broadened along energy, ``R`` the
    usual ResNet encoder-decoder (same layer names, so PatchNCE and the state-dict keys
    of the ResNet part are unchanged) and ``g`` a learnable scalar gate initialised to
    0, so the untrained generator *is* the broadening and the ResNet learns only a
    correction (background, elastic line, noise texture).  The output is clamped to
    the model range [-1, 1].  With ``config.resolution.residual=False`` there is no
    correction (``y = b``; ``gate`` is a zero buffer) and the ResNet's decoder is unused.

    :meth:`encode` and :meth:`forward_with_features` return the encoder activations
    of the broadened input ``b`` (the representation the output is built from).
    ``forward(x, broaden=False)`` skips the broadening (``x + g R(x)``): the identity
    map for frames that already carry the resolution.

    Parameters
    ----------
    config
        Architecture; ``config.resolution`` (resolved: no ``"maps"``/``"recipe"`` sources)
        gives the broadening layer.
    scaling
        A :class:`bluesky_twin.gan.preprocess.Scaling` (or ``None`` for the default);
        the broadening works in its linear frame units.
    """

    def __init__(self, config: GanConfig, scaling: Any = None, in_channels: int = 1, out_channels: int = 1):
        if config.resolution is None:
            raise InputError("ResolutionResnetGenerator needs GanConfig.resolution")
        super().__init__(config, in_channels, out_channels)
        self.resolution = EnergyResolutionLayer.from_config(config.resolution, scaling)
        self.residual = config.resolution.residual
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

    def forward_with_features(
        self, x: torch.Tensor, layers: Sequence[str], valid: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Translate *x* (broadening with the validity mask *valid*) and return encoder features of ``b``."""
        b = self.resolution(x, valid)
        if not self.residual:
            return b.clamp(-1.0, 1.0), super().encode(b, layers)
        r, feats = super().forward_with_features(b, layers)
        return self._correct(b, r), feats

    def forward(
        self,
        x: torch.Tensor,
        valid: torch.Tensor | None = None,
        broaden: bool = True,
        fraction: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Translate *x*; *fraction* (B,) fixes each frame's width in the bounds (see
        :meth:`EnergyResolutionLayer.sigma`)."""
        _check_spatial(x, self.config.dims)
        b = self.resolution(x, valid, fraction=fraction) if broaden else x
        if not self.residual:
            return b.clamp(-1.0, 1.0)
        return self._correct(b, super().forward(b))


def make_generators(config: GanConfig, scaling: Any = None) -> tuple[ResnetGenerator, ResnetGenerator]:
    """``(G_A, G_B)`` for *config*: G_B is a :class:`ResolutionResnetGenerator` if
    ``config.resolution`` is set, else both are plain :class:`ResnetGenerator`."""
    G_A = ResnetGenerator(config)
    G_B = ResolutionResnetGenerator(config, scaling) if config.resolution is not None else ResnetGenerator(config)
    return G_A, G_B
