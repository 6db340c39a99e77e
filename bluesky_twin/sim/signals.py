"""Signals of the simulated instruments that describe themselves fully.

``MeasuredSignal`` holds a detector reading written by its instrument's ``trigger()``;
``ConfigSignal`` a configuration value. Both report ``dtype_numpy`` (and units) in
``describe()``, so the descriptors that TiledWriter stores and replays are the
descriptors the RunEngine emitted, field for field.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from ophyd import Signal
from ophyd.utils import ReadOnlyError

__all__ = ["ConfigSignal", "MeasuredSignal"]


class ConfigSignal(Signal):
    """A configuration :class:`ophyd.Signal` whose ``describe()`` includes ``dtype_numpy`` and units.

    Parameters
    ----------
    units
        Engineering units reported in :meth:`describe`.
    """

    def __init__(self, *args: Any, units: str = "", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._units = units

    def describe(self) -> dict[str, dict[str, Any]]:
        """Data key with ``dtype_numpy`` and ``units``."""
        description = super().describe()
        key = description[self.name]
        key.setdefault("dtype_numpy", np.asarray(self.get()).dtype.str)
        if self._units:
            key["units"] = self._units
        return description


class MeasuredSignal(Signal):
    """A detector signal written by its instrument's ``trigger()``; read-only for users.

    Parameters
    ----------
    units
        Engineering units reported in :meth:`describe`.
    precision
        Display precision reported in :meth:`describe` (scalars only).
    """

    def __init__(self, *args: Any, units: str = "", precision: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._units = units
        self._precision = precision

    def _record(self, value: Any) -> None:
        """Store a new measured value (used by the owning instrument)."""
        super().put(value)

    def put(self, value: Any, **kwargs: Any) -> None:  # noqa: D102 - documented in Signal
        raise ReadOnlyError(f"{self.name} is a measured value; trigger the instrument instead")

    def set(self, value: Any, **kwargs: Any) -> Any:  # noqa: D102
        raise ReadOnlyError(f"{self.name} is a measured value; trigger the instrument instead")

    def describe(self) -> dict[str, dict[str, Any]]:
        """Data key with ``units`` (and ``precision`` for scalars)."""
        description = super().describe()
        key = description[self.name]
        key.setdefault("dtype_numpy", np.asarray(self.get()).dtype.str)
        if self._units:
            key["units"] = self._units
        if self._precision is not None and not key.get("shape"):
            key["precision"] = self._precision
        return description
