"""Compatibility module: the names that ``bluesky_twin.twin.model`` held before the
twin was split into one module per concept.

New code imports from :mod:`bluesky_twin.twin`.  The method is that of Terashima
et al., Digital Discovery 2023, 2, 339, with two changes a scan needs:

* **Selection on held-out scan lines.**  A twin is used to predict *between* the
  measured lines (fields, angles).  Each trial is therefore scored by the mean
  squared error on whole interior lines it did not see (3 folds trained as one
  batched model), not by its training R^2, which rewards memorising the lines.
* **An ensemble of the top-k trials.**  The best few configurations (at most
  ``top_k``, each within ``TOP_K_SCORE_RATIO`` of the best validation loss) are
  refitted on all data with a few seeds each; the spread of all members is the
  prediction's standard deviation.

On large two-axis maps a :class:`~bluesky_twin.twin.line_residual.LineResidual`
adds what the networks leave along the measured lines (``TwinSearchSpace.line_residual``).
"""

from __future__ import annotations

from bluesky_twin.twin import *  # noqa: F403  (the package's public names)
from bluesky_twin.twin import __all__ as _public
from bluesky_twin.twin._persistence import MAX_AXES, MAX_ENSEMBLE_MEMBERS, MAX_LAYERS, MAX_PARAMETERS, MAX_UNITS
from bluesky_twin.twin._scaler import as_points
from bluesky_twin.twin._search import MIN_SEARCH_SHARE

__all__ = [
    *_public,
    "MAX_AXES",
    "MAX_ENSEMBLE_MEMBERS",
    "MAX_LAYERS",
    "MAX_PARAMETERS",
    "MAX_UNITS",
    "MIN_SEARCH_SHARE",
    "as_points",
]
