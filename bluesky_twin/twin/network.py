"""A batch of independent fully connected networks evaluated as one model.

Training an ensemble member per seed, or one member per cross-validation fold,
costs almost the same as training a single small network when the members are
stacked into one set of batched matrix multiplies: on small data the run time of
a tiny MLP is dominated by per-step Python and dispatch overhead, not arithmetic.
"""
from __future__ import annotations

import math

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
    ) -> None:
        super().__init__()
        if members < 1 or n_layers < 1 or n_units < 1:
            raise ValueError("members, n_layers and n_units must be >= 1")
        self.members = members
        self.n_layers = n_layers
        self.n_units = n_units
        self.dropout = float(dropout)
        self.activation = activation
        widths = [n_in] + [n_units] * n_layers + [n_out]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for fan_in, fan_out in zip(widths[:-1], widths[1:]):
            bound = 1.0 / math.sqrt(fan_in)
            w = torch.empty(members, fan_in, fan_out).uniform_(-bound, bound, generator=generator)
            b = torch.empty(members, 1, fan_out).uniform_(-bound, bound, generator=generator)
            self.weights.append(nn.Parameter(w))
            self.biases.append(nn.Parameter(b))
        self._act = {"relu": torch.relu, "silu": nn.functional.silu, "tanh": torch.tanh}[activation]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = len(self.weights)
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            x = torch.baddbmm(b, x, w)
            if i < n - 1:
                x = self._act(x)
                if self.dropout > 0 and self.training:
                    x = nn.functional.dropout(x, self.dropout, training=True)
        return x

    def select(self, index: int) -> "BatchedMLP":
        """Return a one-member copy of member *index* (used for warm starts)."""
        out = BatchedMLP(1, self.weights[0].shape[1], self.weights[-1].shape[2], self.n_layers,
                         self.n_units, self.dropout, self.activation)
        with torch.no_grad():
            for dst, src in zip(out.weights, self.weights):
                dst.copy_(src[index : index + 1])
            for dst, src in zip(out.biases, self.biases):
                dst.copy_(src[index : index + 1])
        return out

    def load_members_from(self, other: "BatchedMLP") -> None:
        """Initialise every member from *other*'s members, cycling if it has fewer."""
        if (other.n_layers, other.n_units) != (self.n_layers, self.n_units):
            raise ValueError("architectures differ")
        with torch.no_grad():
            for dst, src in list(zip(self.weights, other.weights)) + list(zip(self.biases, other.biases)):
                for m in range(self.members):
                    dst[m].copy_(src[m % other.members])
