"""What code that only *uses* a twin needs from it: :class:`TwinLike`.

:class:`~bluesky_twin.twin.DigitalTwin` and
:class:`~bluesky_twin.twin.TabulatedTwin` both satisfy it, and so does any
stand-in with the same members, so consumers (the tabulated copy, plans, step
studies) depend on this protocol rather than on the fitting code.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from bluesky_twin.twin.line_residual import LineResidual


@runtime_checkable
class TwinLike(Protocol):
    """A model of one measured quantity over named scan axes.

    ``isinstance(obj, TwinLike)`` checks that the members exist, not their types.
    """

    @property
    def x_names(self) -> list[str]:
        """The scan-axis names, in the column order :meth:`predict` expects."""

    @property
    def y_name(self) -> str:
        """The name of the measured quantity."""

    @property
    def x_range(self) -> "np.ndarray":
        """``(d, 2)`` minimum and maximum of the training data per axis."""

    @property
    def version(self) -> str:
        """An identifier that changes whenever the predictions may change."""

    def predict(self, X: Any) -> tuple["np.ndarray", "np.ndarray"]:
        """Mean and standard deviation at the ``(n, d)`` points *X* (original units)."""


@runtime_checkable
class CorrectedTwinLike(TwinLike, Protocol):
    """A :class:`TwinLike` made of networks plus an optional line-residual correction."""

    @property
    def line_residual(self) -> "LineResidual | None":
        """The correction added to the networks (``None``: the networks alone)."""

    def networks_only(self) -> TwinLike:
        """The same twin without its line-residual correction."""
