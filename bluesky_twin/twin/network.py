"""A batch of independent fully connected networks evaluated as one model.

Training an ensemble member per seed, or one member per cross-validation fold,
costs almost the same as training a single small network when the members are
stacked into one set of batched matrix multiplies: on small data the run time of
a tiny MLP is dominated by per-step Python and dispatch overhead, not arithmetic.

An optional random Fourier-feature input encoding (Tancik et al., NeurIPS 2020)
maps the standardised coordinates ``x`` to ``[x, sin(xB), cos(xB)]`` with a fixed
Gaussian matrix ``B`` per member.  A plain MLP on two coordinates learns sharp
structure (ARPES bands, transitions) slowly; the encoding's scale sets how fine a
structure the network can follow, and the twin's search tunes it on held-out scan
lines, so a scale that only memorises the measured lines is not selected.  The scale
may differ per input axis: scan data are dense along the swept axis and coarse along
the stepped one, and the finest structure a network can justify differs accordingly.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn


class BatchedMLP(nn.Module):
    """``members`` independent MLPs with identical architecture.

    Parameters
    ----------
    members
        Number of independent networks.
    n_in, n_out
        Input and output width.
    n_layers
        Number of hidden layers.
    n_units
        Width of each hidden layer.
    dropout
        Dropout probability after each hidden activation.
    activation
        ``"relu"``, ``"silu"`` or ``"tanh"``.
    generator
        Random generator for the initial weights (reproducible and thread-safe).
    fourier_features
        Number of random Fourier frequencies of the input encoding (``0``: none).
    fourier_scale
        Standard deviation of the frequencies, in units of the standardised inputs:
        one value for every axis, or one per input axis (length ``n_in``).

    Notes
    -----
    Input shape is ``(members, batch, n_in)``; output ``(members, batch, n_out)``.
    Weights are initialised like :class:`torch.nn.Linear` (Kaiming-uniform), each
    member independently.
    """

    def __init__(
        self,
        members: int,
        n_in: int,
        n_out: int,
        n_layers: int,
        n_units: int,
        dropout: float = 0.0,
        activation: str = "relu",
        generator: torch.Generator | None = None,
        fourier_features: int = 0,
        fourier_scale: float | Sequence[float] = 0.0,
    ) -> None:
        super().__init__()
        if members < 1 or n_layers < 1 or n_units < 1:
            raise ValueError("members, n_layers and n_units must be >= 1")
        scales = _axis_scales(fourier_scale, n_in)
        if fourier_features < 0 or (fourier_features and not all(v > 0 for v in scales)):
            raise ValueError("fourier_features must be >= 0, with fourier_scale > 0 when used")
        self.members = members
        self.n_in = n_in
        self.n_layers = n_layers
        self.n_units = n_units
        self.dropout = float(dropout)
        self.activation = activation
        self.fourier_features = int(fourier_features)
        #: per-axis scale (a float when every axis has the same one, as in older models)
        self.fourier_scale: float | tuple[float, ...] = (
            (scales[0] if len(set(scales)) == 1 else scales) if fourier_features else 0.0
        )
        if self.fourier_features:
            freqs = torch.randn(members, n_in, self.fourier_features, generator=generator)
            freqs *= torch.tensor(scales, dtype=freqs.dtype)[None, :, None]
            self.register_buffer("fourier_b", freqs)
        else:
            self.fourier_b = None
        widths = [n_in + 2 * self.fourier_features] + [n_units] * n_layers + [n_out]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for fan_in, fan_out in zip(widths[:-1], widths[1:]):
            bound = 1.0 / math.sqrt(fan_in)
            w = torch.empty(members, fan_in, fan_out).uniform_(-bound, bound, generator=generator)
            b = torch.empty(members, 1, fan_out).uniform_(-bound, bound, generator=generator)
            self.weights.append(nn.Parameter(w))
            self.biases.append(nn.Parameter(b))
        self._act = {"relu": torch.relu, "silu": nn.functional.silu, "tanh": torch.tanh}[activation]
        # dropout masks come from the model's own generator, seeded from *generator* after the
        # weights, so that parallel trials never share (and race on) torch's global one
        self._dropout_generator: torch.Generator | None = None
        if self.dropout > 0:
            seed = int(torch.randint(0, 2**62, (1,), generator=generator)) if generator is not None else 0
            self._dropout_generator = torch.Generator().manual_seed(seed)

    @classmethod
    def from_params(
        cls, members: int, n_in: int, params: Mapping[str, Any], generator: torch.Generator | None = None
    ) -> BatchedMLP:
        """Build from a twin parameter dict (``n_layers``, ``n_units``, ``activation``, ...)."""
        return cls(
            members,
            n_in,
            1,
            int(params["n_layers"]),
            int(params["n_units"]),
            float(params.get("dropout", 0.0)),
            str(params.get("activation", "relu")),
            generator=generator,
            fourier_features=int(params.get("fourier_features", 0)),
            fourier_scale=params.get("fourier_scale", 0.0),
        )

    @property
    def architecture(self) -> tuple[Any, ...]:
        """Everything that must match for weights to be shared between two models."""
        return (self.n_in, self.n_layers, self.n_units, self.activation, self.fourier_features, self.fourier_scale)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The input encoding: *x* itself, plus its Fourier features when enabled."""
        if self.fourier_b is None:
            return x
        phase = torch.bmm(x, self.fourier_b)
        return torch.cat([x, torch.sin(phase), torch.cos(phase)], dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.encode(x)
        n = len(self.weights)
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            x = torch.baddbmm(b, x, w)
            if i < n - 1:
                x = self._act(x)
                if self.dropout > 0 and self.training:
                    keep = 1.0 - self.dropout
                    draw = torch.rand(x.shape, generator=self._dropout_generator, device=x.device)
                    mask = (draw < keep).to(x.dtype)
                    x = x * mask / keep
        return x

    def select(self, index: int) -> BatchedMLP:
        """Return a one-member copy of member *index* (used for warm starts)."""
        out = BatchedMLP(
            1,
            self.n_in,
            self.weights[-1].shape[2],
            self.n_layers,
            self.n_units,
            self.dropout,
            self.activation,
            fourier_features=self.fourier_features,
            fourier_scale=self.fourier_scale,
        )
        with torch.no_grad():
            if self.fourier_b is not None:
                out.fourier_b.copy_(self.fourier_b[index : index + 1])
            for dst, src in zip(out.weights, self.weights):
                dst.copy_(src[index : index + 1])
            for dst, src in zip(out.biases, self.biases):
                dst.copy_(src[index : index + 1])
        return out

    def load_members_from(self, other: BatchedMLP) -> None:
        """Initialise every member from *other*'s members, cycling if it has fewer."""
        if other.architecture != self.architecture:
            raise ValueError("architectures differ")
        with torch.no_grad():
            if self.fourier_b is not None:
                for m in range(self.members):
                    self.fourier_b[m].copy_(other.fourier_b[m % other.members])
            for dst, src in list(zip(self.weights, other.weights)) + list(zip(self.biases, other.biases)):
                for m in range(self.members):
                    dst[m].copy_(src[m % other.members])


def _axis_scales(scale: float | Sequence[float], n_in: int) -> tuple[float, ...]:
    """One Fourier scale per input axis from a scalar or a length-``n_in`` sequence."""
    if isinstance(scale, numbers.Real):
        return (float(scale),) * n_in
    values = tuple(float(v) for v in scale)
    if len(values) != n_in:
        raise ValueError(f"fourier_scale needs one value per input axis ({n_in}), got {len(values)}")
    return values
