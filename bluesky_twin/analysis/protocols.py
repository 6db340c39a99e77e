"""The small interface the analyses need from a digital twin.

Anything with ``predict(X) -> (mean, std)`` and ``x_names`` works: the real
:class:`bluesky_twin.twin.DigitalTwin`, or an exact analytic function in a test.
"""
from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

import numpy as np

from bluesky_twin.errors import InputError

__all__ = ["TwinLike", "supports_members", "predict_in_batches", "axis_index", "smooth_model"]


@runtime_checkable
class TwinLike(Protocol):
    """A model of one measured quantity over scan axes.

    Attributes
    ----------
    x_names
        Names of the scan axes, in the column order ``predict`` expects.
    """

    x_names: Sequence[str]

    def predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(mean, std)``, each ``(n,)``, for ``X`` of shape ``(n, len(x_names))``."""
        ...


def supports_members(twin: object) -> bool:
    """True if ``twin.predict`` accepts ``return_members=True`` (an ensemble twin).

    :class:`bluesky_twin.twin.DigitalTwin` does: ``predict(X, return_members=True)``
    returns the ``(k, n)`` per-member predictions.  Uncertainty bands are then the
    spread of the analysis result over members instead of a bound from the std.
    """
    import inspect

    predict = getattr(twin, "predict", None)
    if predict is None:
        return False
    try:
        params = inspect.signature(predict).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins / C callables
        return False
    return "return_members" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def smooth_model(twin: TwinLike) -> TwinLike:
    """The twin a derived quantity or a step study should use: its networks alone, where it has more.

    A :class:`~bluesky_twin.twin.DigitalTwin` of a large map may add a line-residual
    correction (:mod:`bluesky_twin.twin.line_residual`).  It is linear between the
    measured lines by construction, so a step study (how the quantity varies
    *between* lines) would be biased towards any step that divides the measured
    spacing; and it is smoothed only to the noise level along the lines, so a
    derivative along them (dM/dT of the entropy change) would be noise.  The step
    studies and :func:`~bluesky_twin.analysis.mce.entropy_change_from_twin`
    therefore call ``twin.networks_only()`` when the twin has it.  Other twins are
    returned as they are.
    """
    networks_only = getattr(twin, "networks_only", None)
    return networks_only() if callable(networks_only) else twin


def axis_index(twin: TwinLike, name: str | int | None, default: int) -> int:
    """Position of scan axis *name* (a column name or an index) in ``twin.x_names``."""
    names = list(twin.x_names)
    if name is None:
        if default >= len(names):
            raise InputError(f"the twin has {len(names)} axis/axes {names}; need at least {default + 1}")
        return default
    if isinstance(name, (int, np.integer)):
        if not 0 <= int(name) < len(names):
            raise InputError(f"axis index {name} out of range for twin axes {names}")
        return int(name)
    if name not in names:
        raise InputError(f"axis {name!r} is not one of the twin's axes {names}")
    return names.index(name)


def predict_in_batches(
    twin: TwinLike, X: np.ndarray, *, batch_size: int = 200_000, members: bool = False
) -> tuple[np.ndarray, np.ndarray] | np.ndarray:
    """Evaluate the twin on many points without building one huge batch.

    Parameters
    ----------
    twin
        The model.
    X
        ``(n, d)`` points in the twin's original units and column order.
    batch_size
        Points per call.
    members
        If true, call ``predict(X, return_members=True)`` and return a ``(k, n)`` array.

    Returns
    -------
    (mean, std) or members
    """
    X = np.asarray(X, dtype=float)
    if X.ndim != 2 or X.shape[1] != len(twin.x_names):
        raise InputError(f"points must have shape (n, {len(twin.x_names)}); got {X.shape}")
    chunks = [X[i : i + batch_size] for i in range(0, len(X), batch_size)] or [X]
    if members:
        return np.concatenate([np.asarray(twin.predict(c, return_members=True), dtype=float) for c in chunks], axis=1)  # type: ignore[attr-defined]
    means, stds = [], []
    for c in chunks:
        m, s = twin.predict(c)
        means.append(np.asarray(m, dtype=float).reshape(-1))
        stds.append(np.asarray(s, dtype=float).reshape(-1))
    return np.concatenate(means), np.concatenate(stds)
