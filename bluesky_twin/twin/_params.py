"""Between Optuna's suggested parameters and a network's: :func:`model_params`,
:func:`optuna_params` and :func:`matching_model` (warm starts)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from bluesky_twin.twin.space import TwinSearchSpace

if TYPE_CHECKING:  # pragma: no cover
    from bluesky_twin.twin.network import BatchedMLP


def model_params(optuna_params: dict[str, Any], space: TwinSearchSpace, n_train: int) -> dict[str, Any]:
    """The network parameters of a trial (what :meth:`BatchedMLP.from_params` takes).

    Parameters the search did not vary are filled in from *space*: the encoding and
    its features, dropout 0, the first activation and, without a suggested batch
    size, the largest the space allows for *n_train* training rows.  Per-axis Fourier
    scales (``fourier_scale_0``, ...) become one list.

    Parameters
    ----------
    optuna_params
        A trial's ``params``.
    space
        The search space of the fit.
    n_train
        Training rows of a search trial.

    Returns
    -------
    dict
        JSON-ready parameters (numpy scalars become Python numbers).
    """
    p = dict(optuna_params)
    axis_keys = sorted((k for k in p if k.startswith("fourier_scale_")), key=lambda k: int(k.rsplit("_", 1)[1]))
    if axis_keys:  # per-axis scales (TwinSearchSpace.fourier_per_axis)
        p["fourier_scale"] = [float(p.pop(k)) for k in axis_keys]
    p.setdefault("encoding", "fourier" if "fourier_scale" in p else space.encodings[0])
    if p["encoding"] == "fourier":
        p.setdefault("fourier_features", int(space.fourier_features))
    else:
        p.pop("fourier_scale", None)
        p.pop("fourier_features", None)
    p.setdefault("dropout", 0.0)
    p.setdefault("activation", space.activations[0])
    if "batch_size" not in p:
        p["batch_size"] = space.batch_bounds(n_train)[1]
    return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in p.items()}


def optuna_params(params: dict[str, Any]) -> dict[str, Any]:
    """Network parameters (:func:`model_params`) back to the names and values Optuna suggested."""
    out = {k: v for k, v in params.items() if not (k == "dropout" and v == 0.0) and k != "fourier_features"}
    if isinstance(out.get("fourier_scale"), (list, tuple)):
        out.update({f"fourier_scale_{i}": float(v) for i, v in enumerate(out.pop("fourier_scale"))})
    return out


def matching_model(models: Sequence[BatchedMLP], params: dict[str, Any]) -> BatchedMLP | None:
    """The first of *models* with the architecture of *params* (its weights can seed a new one), if any."""
    from bluesky_twin.twin.network import BatchedMLP

    return next((m for m in models if m.architecture == BatchedMLP.from_params(1, m.n_in, params).architecture), None)
