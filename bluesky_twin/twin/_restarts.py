"""Several independent searches pooled into one twin: :func:`fit_restarts`.

A seeded search settles on a few configurations, and on a small scan other seeds
settle on others that fit the measured lines as well but shape a sharp feature
(a first-order transition's step, say) differently.  Averaging the twins of
independent searches averages over that choice: the members of the pooled
ensemble come from every restart's configurations, so its mean depends less on
the seed and its spread covers the configurations' disagreement as well as the
weights'.  Each restart is an ordinary seeded fit (:func:`bluesky_twin.twin._fit.fit_twin`)
with a seed from :meth:`FitConfig.restart_seeds`; the pool is reproducible
whenever they are.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from bluesky_twin.data import ScanTable
from bluesky_twin.twin._config import FitConfig
from bluesky_twin.twin.space import TwinSearchSpace

if TYPE_CHECKING:  # pragma: no cover
    import os

    import pandas as pd

    from bluesky_twin.twin._fit import TwinT
    from bluesky_twin.twin._predictor import DigitalTwin

#: metadata counts that add up over the restarts
_SUMMED = ("n_trials_complete", "n_trials_pruned", "n_trials_failed")


def fit_restarts(
    twin_class: type[TwinT],
    data: pd.DataFrame | str | os.PathLike | ScanTable,
    x: Sequence[str] | None,
    y: str | None,
    config: FitConfig,
    *,
    warm_start: DigitalTwin | None = None,
    search_space: TwinSearchSpace | None = None,
    trial_callback: Callable[[Any, Any], None] | None = None,
) -> TwinT:
    """Fit ``config.restarts`` twins with the restart seeds and pool their ensembles.

    Every restart searches and trains as :meth:`DigitalTwin.fit` does with its own
    seed and the rest of *config*; the line-residual correction, when the space asks
    for one, is fitted once, to the pooled networks.  The pooled metadata are those of
    the restart with the best selection score, with the ensemble of all (each entry
    names its ``restart``), the summed trial counts and the whole fit's time, plus
    ``restarts``, ``restart_seeds`` and ``best_restart``.  A *config* ``study_name`` names
    restart 0's study; restart *k* > 0 appends ``-r{k}``.  The twin keeps that restart's search journal.

    Raises
    ------
    InputError
        As :meth:`DigitalTwin.fit`.
    """
    import torch

    from bluesky_twin.twin._fit import finish_metadata, fit_inputs, fit_twin, resolved_space, tie_journal

    t0 = time.perf_counter()
    x, y, table, space = fit_inputs(data, x, y, warm_start, search_space)
    resolved = resolved_space(space, len(table))
    seeds = config.restart_seeds()
    twins = []
    for k, seed in enumerate(seeds):
        name = f"{config.study_name}-r{k}" if config.study_name and k else config.study_name
        one = dataclasses.replace(config, seed=seed, restarts=1, study_name=name)
        # the correction belongs to the pool: each restart keeps its networks alone
        twins.append(
            fit_twin(
                twin_class,
                table,
                x,
                y,
                one,
                warm_start=warm_start,
                search_space=dataclasses.replace(space, line_residual=False),
                trial_callback=trial_callback,
            )
        )
    best = min(range(len(twins)), key=lambda i: twins[i].metadata["selection_score"])
    metadata = copy.deepcopy(twins[best].metadata)
    metadata["ensemble"] = [{**e, "restart": i} for i, t in enumerate(twins) for e in t.metadata["ensemble"]]
    for key in _SUMMED:
        metadata[key] = sum(int(t.metadata[key]) for t in twins)
    metadata.update(
        seed=config.seed,
        restarts=len(seeds),
        restart_seeds=seeds,
        best_restart=best,
        search_space=resolved.to_dict(),
        ensemble_size=sum(t.ensemble_size for t in twins),
        line_residual=None,
    )
    models = torch.nn.ModuleList([m for t in twins for m in t._models])
    x_names = metadata["x_names"]
    line_axis = x_names.index(metadata["line_axis"]) if metadata.get("line_axis") else -1
    x_scaler, y_scaler = twins[best]._x_scaler, twins[best]._y_scaler
    line_residual = finish_metadata(twin_class, models, x_scaler, y_scaler, metadata, table, resolved, line_axis)
    metadata["fit_seconds"] = time.perf_counter() - t0
    journal = twins[best]._journal
    for twin in twins:  # the other restarts' journals go now; the best one's passes to the pool
        finalizer = getattr(twin, "_journal_finalizer", None)
        if finalizer is not None and twin is twins[best]:
            finalizer.detach()
        elif finalizer is not None:
            finalizer()
    pooled = twin_class(models, x_scaler, y_scaler, metadata, journal=journal, line_residual=line_residual)
    tie_journal(pooled, journal)
    return pooled
