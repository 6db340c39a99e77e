"""Reading and validating tabular scan data.

A *scan table* is one reading per row: the scan axes (``x`` columns) and the
measured quantity (``y`` column).  Everything that can be wrong with such a
table produces an :class:`~bluesky_twin.errors.InputError` naming the problem.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from bluesky_twin.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

logger = logging.getLogger(__name__)

#: Fewest valid rows a twin can be trained on.
MIN_POINTS = 10


@dataclass
class ScanTable:
    """Validated scan data.

    Attributes
    ----------
    X
        ``(n, d)`` float64 array of scan-axis values, columns in ``x_names`` order.
    y
        ``(n,)`` float64 array of the measured quantity.
    x_names, y_name
        Column names.
    n_dropped
        Rows dropped because a value was NaN or infinite.
    """

    X: np.ndarray
    y: np.ndarray
    x_names: list[str]
    y_name: str
    n_dropped: int = 0
    source: str = ""

    def __len__(self) -> int:
        return len(self.y)

    def fingerprint(self) -> str:
        """sha256 of the validated numbers and names (stable across file formats)."""
        from bluesky_twin.io_utils import sha256_bytes

        header = ("|".join(self.x_names) + "->" + self.y_name).encode()
        return sha256_bytes(
            header
            + np.ascontiguousarray(self.X, dtype="<f8").tobytes()
            + np.ascontiguousarray(self.y, dtype="<f8").tobytes()
        )


def read_csv(path: str | os.PathLike) -> pd.DataFrame:
    """Read a CSV file with a clear error if it is missing or unreadable."""
    import pandas as pd

    if not os.path.exists(path):
        raise InputError(f"data file not found: {path}")
    try:
        return pd.read_csv(path)
    except Exception as exc:  # pandas raises many types for bad files
        raise InputError(f"cannot read {path} as CSV: {exc}") from exc


def load_scan_table(
    source: str | os.PathLike | pd.DataFrame,
    x: Sequence[str],
    y: str | None,
    *,
    min_points: int = MIN_POINTS,
) -> ScanTable:
    """Load and validate scan data.

    Parameters
    ----------
    source
        A path to a CSV file or a :class:`pandas.DataFrame`.
    x
        Names of the scan-axis columns (at least one).
    y
        Name of the measured column, or ``None`` to load axes only (prediction points).
    min_points
        Fewest valid rows accepted.

    Returns
    -------
    ScanTable

    Raises
    ------
    InputError
        Missing or non-numeric columns, too few valid rows, or a constant axis.
    """
    if y is not None and y in x:
        raise InputError(f"the measured column {y!r} is also given as a scan axis")
    if len(set(x)) != len(list(x)):
        raise InputError(f"a scan-axis column is named twice: {list(x)}")
    import pandas as pd

    name = str(source) if not isinstance(source, pd.DataFrame) else "<DataFrame>"
    df = read_csv(source) if not isinstance(source, pd.DataFrame) else source
    x = list(x)
    if not x:
        raise InputError("at least one x column is required")
    if len(set(x)) != len(x):
        raise InputError(f"x columns repeat: {x}")
    wanted = x + ([y] if y is not None else [])
    missing = [c for c in wanted if c not in df.columns]
    if missing:
        raise InputError(f"{name}: missing column(s) {missing}; available: {list(map(str, df.columns))}")
    values = {}
    for col in wanted:
        converted = pd.to_numeric(df[col], errors="coerce")
        bad = converted.isna() & df[col].notna()
        if bad.any():
            first = df[col][bad].iloc[0]
            raise InputError(f"{name}: column {col!r} is not numeric ({int(bad.sum())} value(s) like {first!r})")
        values[col] = converted.to_numpy(dtype=float)
    X = np.column_stack([values[c] for c in x])
    yv = values[y] if y is not None else np.zeros(len(X))
    finite = np.isfinite(X).all(axis=1) & np.isfinite(yv)
    n_dropped = int((~finite).sum())
    if n_dropped:
        logger.warning("%s: dropped %d row(s) with NaN/inf values", name, n_dropped)
    X, yv = X[finite], yv[finite]
    if len(X) < min_points:
        raise InputError(
            f"{name}: only {len(X)} valid row(s) (after dropping {n_dropped} with NaN/inf); need at least {min_points}"
        )
    if y is not None:
        for j, col in enumerate(x):
            if np.ptp(X[:, j]) == 0:
                raise InputError(f"{name}: axis {col!r} is constant ({X[0, j]!r}); nothing to learn along it")
        if np.ptp(yv) == 0:
            raise InputError(f"{name}: target {y!r} is constant ({yv[0]!r})")
    return ScanTable(X=X, y=yv, x_names=x, y_name=y or "", n_dropped=n_dropped, source=name)
