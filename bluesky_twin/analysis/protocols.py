"""What the analyses need from a digital twin, and helpers built on it.

The contracts live in :mod:`bluesky_twin.protocols`; this module re-exports the ones
the analyses use.  Anything that is a :class:`~bluesky_twin.protocols.TwinLike`
(``predict(X) -> (mean, std)`` and ``x_names``) works: the real
:class:`bluesky_twin.twin.DigitalTwin`, or an exact analytic function in a test.
An :class:`~bluesky_twin.protocols.EnsembleTwin` gives ensemble bands; a
:class:`~bluesky_twin.protocols.HasXRange` twin gives default ranges.
"""

from __future__ import annotations

import numpy as np

from bluesky_twin.errors import InputError
from bluesky_twin.protocols import EnsembleTwin, HasNetworksOnly, HasXRange, Twin, TwinLike, require

__all__ = [
    "EnsembleTwin",
    "HasXRange",
    "Twin",
    "TwinLike",
    "axis_index",
    "predict_in_batches",
    "require_twin",
    "smooth_model",
    "supports_members",
    "x_range_of",
]

#: How the errors name an :class:`~bluesky_twin.protocols.EnsembleTwin`.
ENSEMBLE_EXPECTED = "an ensemble twin (ensemble_size and predict(X, return_members=True))"


def require_twin(twin: object) -> TwinLike:
    """*twin* if it is a :class:`~bluesky_twin.protocols.TwinLike`, else a one-line :class:`InputError`."""
    return require(twin, TwinLike, "the twin", "a model with predict(X) -> (mean, std) and x_names")


def supports_members(twin: object) -> bool:
    """True if *twin* is an :class:`~bluesky_twin.protocols.EnsembleTwin`.

    :class:`bluesky_twin.twin.DigitalTwin` is: ``predict(X, return_members=True)``
    returns the ``(ensemble_size, n)`` per-member predictions.  Uncertainty bands are
    then the spread of the analysis result over members instead of a bound from the std.
    """
    return isinstance(twin, EnsembleTwin)


def x_range_of(twin: object) -> np.ndarray | None:
    """The twin's ``(n_axes, 2)`` training box as floats, or ``None`` if it declares none."""
    return np.asarray(twin.x_range, dtype=float) if isinstance(twin, HasXRange) else None


def smooth_model(twin: TwinLike) -> TwinLike:
    """The twin a derived quantity or a step study should use: its networks alone, where it has more.

    A :class:`~bluesky_twin.twin.DigitalTwin` of a large map may add a line-residual
    correction (:mod:`bluesky_twin.twin.line_residual`).  It is linear between the
    measured lines by construction, so a step study (how the quantity varies
    *between* lines) would be biased towards any step that divides the measured
    spacing; and it is smoothed only to the noise level along the lines, so a
    derivative along them (dM/dT of the entropy change) would be noise.  The step
    studies and :func:`~bluesky_twin.analysis.mce.entropy_change_from_twin`
    therefore use ``twin.networks_only()`` when the twin is a
    :class:`~bluesky_twin.protocols.HasNetworksOnly`.  Anything else is returned as
    it is (the callers check the twin contract where they use it).
    """
    return twin.networks_only() if isinstance(twin, HasNetworksOnly) else twin


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
        If true, call ``predict(X, return_members=True)`` and return a ``(k, n)`` array
        (the twin must be an :class:`~bluesky_twin.protocols.EnsembleTwin`).

    Returns
    -------
    (mean, std) or members
    """
    X = np.asarray(X, dtype=float)
    if X.ndim != 2 or X.shape[1] != len(twin.x_names):
        raise InputError(f"points must have shape (n, {len(twin.x_names)}); got {X.shape}")
    chunks = [X[i : i + batch_size] for i in range(0, len(X), batch_size)] or [X]
    if members:
        ensemble = require(twin, EnsembleTwin, "the twin", ENSEMBLE_EXPECTED)
        return np.concatenate(
            [np.asarray(ensemble.predict(c, return_members=True), dtype=float) for c in chunks], axis=1
        )
    means, stds = [], []
    for c in chunks:
        m, s = twin.predict(c)
        means.append(np.asarray(m, dtype=float).reshape(-1))
        stds.append(np.asarray(s, dtype=float).reshape(-1))
    return np.concatenate(means), np.concatenate(stds)
