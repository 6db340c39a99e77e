"""The measurement twin (Terashima et al., Digital Discovery 2023, 2, 339).

>>> from bluesky_twin.twin import DigitalTwin                     # doctest: +SKIP
>>> twin = DigitalTwin.fit("ErCo2.csv", x=["T", "H"], y="M")      # doctest: +SKIP
>>> mean, std = twin.predict([[35.0, 2e4]])                       # doctest: +SKIP

One concept per module; the public names are re-exported here:

* ``_predictor``: :class:`DigitalTwin`, the trained twin that predicts;
* ``_scaler``: :class:`Scaler`, the standardisation around the networks;
* ``_config``: :class:`FitConfig`, the checked options of a fit;
* ``_search``: the Optuna search of a fit (objective, study, time budget);
* ``_ensemble``: the final ensemble (:func:`plan_ensemble`, :func:`final_epochs`,
  :func:`estimate_final_seconds`, :func:`train_ensemble`, ...);
* ``_persistence``: model directories (:data:`FORMAT`, the file names);
* ``_fit``: one fit from data to twin, composing the above.

Code that only uses a twin types it with :mod:`bluesky_twin.protocols` (``Twin``,
``CorrectedTwin``), which :class:`TabulatedTwin` does too.  The cheap names (no numpy)
are imported eagerly; the others on first use, so that
the CLI's ``--help`` does not pay for numpy.
"""

from __future__ import annotations

from bluesky_twin._lazy import lazy_exports
from bluesky_twin.twin._config import (
    DEFAULT_ENSEMBLE_SIZE,
    DEFAULT_TOP_K,
    DEFAULT_TRIALS,
    DEFAULT_WARM_TRIALS,
    LARGE_DATA_ROWS,
    FitConfig,
)
from bluesky_twin.twin.space import TwinSearchSpace

_LAZY = {
    "DigitalTwin": "bluesky_twin.twin._predictor",
    "Scaler": "bluesky_twin.twin._scaler",
    "TabulatedTwin": "bluesky_twin.twin.tabulated",
    "tabulate": "bluesky_twin.twin.tabulated",
    **{
        name: "bluesky_twin.twin._ensemble"
        for name in (
            "MIN_FINAL_EPOCHS",
            "TOP_K_SCORE_RATIO",
            "estimate_final_seconds",
            "final_epochs",
            "final_schedule",
            "group_count",
            "plan_ensemble",
            "split_groups",
            "train_ensemble",
        )
    },
    "model_params": "bluesky_twin.twin._params",
    **{
        name: "bluesky_twin.twin._persistence"
        for name in ("FORMAT", "FORMAT_VERSION", "JOURNAL_FILE", "LINE_RESIDUAL_FILE", "METADATA_FILE", "WEIGHTS_FILE")
    },
}

__all__ = [
    "DEFAULT_ENSEMBLE_SIZE",
    "DEFAULT_TOP_K",
    "DEFAULT_TRIALS",
    "DEFAULT_WARM_TRIALS",
    "FitConfig",
    "LARGE_DATA_ROWS",
    "TwinSearchSpace",
    *sorted(_LAZY),
]


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
