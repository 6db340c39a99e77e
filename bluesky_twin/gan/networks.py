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
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Sequence

import torch
from torch import nn
from torch.nn import functional as F

__all__ = [
    "GanConfig",
    "PRESETS",
    "ResnetGenerator",
    "PatchDiscriminator",
    "PatchSampleMLP",
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

    def __post_init__(self) -> None:
        if self.dims not in (2, 3):
            raise ValueError(f"dims must be 2 or 3, got {self.dims}")
        if self.ngf < 1 or self.n_blocks < 1 or self.ndf < 1 or self.n_layers_d < 1:
            raise ValueError("ngf, n_blocks, ndf and n_layers_d must be positive")
        object.__setattr__(self, "nce_layers", tuple(self.nce_layers))
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
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "GanConfig":
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
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
