"""Physical constants and the thermal (Bose) factor of INS spectra, written once.

Used by the simulator (:mod:`bluesky_twin.ins.frames`, numpy) and by the learnable
resolution layer (:mod:`bluesky_twin.ins.resolution_layer`, torch): :func:`bose_factor`
takes either numpy arrays or torch tensors.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["K_B_MEV", "E_PER_K2", "bose_factor"]

#: Boltzmann constant in meV/K.
K_B_MEV = 0.08617333262
#: ``E = 2.0721 k^2`` (meV, 1/A) for neutrons.
E_PER_K2 = 2.0721


def bose_factor(energy: Any, temperature: Any) -> Any:
    """``n(E) + 1 = 1 / (1 - exp(-E / k_B T))`` for energy transfers ``E > 0``.

    Parameters
    ----------
    energy
        Energy transfers in meV: a numpy array (or anything ``numpy.asarray`` takes), or a
        torch tensor.
    temperature
        Sample temperature in K: a number, or a torch tensor (gradients flow through it).

    Returns
    -------
    numpy.ndarray or torch.Tensor
        float64 numpy array for numpy input; a tensor when *energy* or *temperature* is one.
    """
    if _is_tensor(energy) or _is_tensor(temperature):
        import torch

        return 1.0 / -torch.expm1(-energy / (K_B_MEV * temperature))
    x = np.asarray(energy, dtype=float) / (K_B_MEV * float(temperature))
    return 1.0 / -np.expm1(-x)


def _is_tensor(value: Any) -> bool:
    """Whether *value* is a torch tensor, without importing torch when it is not loaded."""
    import sys

    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)
