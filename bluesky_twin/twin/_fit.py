"""A whole fit, from data to twin: :func:`fit_twin`.

It standardises the data, splits held-out scan lines into folds, runs the
search (:class:`~bluesky_twin.twin._search.TwinSearch`), trains the final
ensemble (:func:`~bluesky_twin.twin.train_ensemble`), adds a line-residual
correction where the space asks for one, and records everything in the twin's
metadata.  :meth:`DigitalTwin.fit <bluesky_twin.twin.DigitalTwin.fit>` is the
entry point.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import shutil
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from bluesky_twin.data import ScanTable, load_scan_table
from bluesky_twin.errors import InputError
from bluesky_twin.twin._config import LARGE_DATA_ROWS, FitConfig
from bluesky_twin.twin._ensemble import train_ensemble
from bluesky_twin.twin._params import optuna_params
from bluesky_twin.twin._persistence import FORMAT, FORMAT_VERSION, JOURNAL_FILE
from bluesky_twin.twin._scaler import Scaler, canonical_warp, r2
from bluesky_twin.twin._search import SearchData, SearchResult, TwinSearch
from bluesky_twin.twin.line_residual import LineResidual
from bluesky_twin.twin.space import TwinSearchSpace

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from bluesky_twin.twin._predictor import DigitalTwin

    TwinT = TypeVar("TwinT", bound=DigitalTwin)

logger = logging.getLogger(__name__)


def fit_twin(
    twin_class: type[TwinT],
    data: pd.DataFrame | str | os.PathLike | ScanTable,
    x: Sequence[str] | None,
    y: str | None,
    config: FitConfig,
    *,
    warm_start: DigitalTwin | None = None,
    search_space: TwinSearchSpace | None = None,
    trial_callback: Callable[[Any, Any], None] | None = None,
    search_runner: Callable[[TwinSearch], SearchResult] | None = None,
) -> TwinT:
    """Tune, train and return a *twin_class* (see :meth:`DigitalTwin.fit` for the arguments).

    *search_runner*, if given, runs the search instead of :meth:`TwinSearch.run`
    (``bluesky-twin fit --processes`` runs it in worker processes,
    :func:`bluesky_twin.twin.workers.process_search`); the final ensemble is built
    here from the :class:`SearchResult` it returns.
    """
    import optuna

    from bluesky_twin.twin.storage_url import mask_url

    if config.restarts > 1:
        if search_runner is not None:
            raise InputError("restarts > 1 does not combine with a search in worker processes")
        from bluesky_twin.twin._restarts import fit_restarts

        return fit_restarts(
            twin_class,
            data,
            x,
            y,
            config,
            warm_start=warm_start,
            search_space=search_space,
            trial_callback=trial_callback,
        )
    t0 = time.perf_counter()
    x, y, table, space = fit_inputs(data, x, y, warm_start, search_space)
    trials = config.trial_count(warm_start is not None)
    space = resolved_space(space, len(table))
    x_scaler = x_scaler_for(table, space, warm_start)
    y_scaler = warm_start._y_scaler if warm_start is not None else Scaler.fit(table.y, table.y_name)
    line_axis, folds, data_ = search_data(table, x_scaler, y_scaler, config, space)
    Xt, yt = data_.X, data_.y
    prev_models = list(warm_start._models) if warm_start is not None else []
    search = TwinSearch(
        config,
        space,
        data_,
        table,
        trials=trials,
        warm_params=optuna_params(warm_start.best_params) if warm_start is not None else None,
        trial_callback=trial_callback,
    )
    with _one_intra_op_thread():
        result = search.run() if search_runner is None else search_runner(search)
        try:
            if result.complete:
                models, entries = train_ensemble(
                    result.complete,
                    space,
                    Xt,
                    yt,
                    n_train=data_.n_train,
                    seed=config.seed,
                    ensemble_size=config.ensemble_size,
                    top_k=config.top_k,
                    jobs=config.jobs,
                    warm_models=prev_models,
                    precision=space.precision,
                    epoch_scale=result.epoch_scale,
                    deadline=result.final_deadline,
                    width=config.batch_width(),
                    monotone=data_.monotone,
                )
        except BaseException:
            _remove_journal(result.journal)
            raise
    try:
        if not result.complete:
            raise InputError("no Optuna trial completed (all pruned or failed); raise --trials or --timeout")
        states = [t.state for t in result.study.trials]
        parent = warm_start.metadata if warm_start is not None else None
        refit = (int(parent.get("refit_count", 0)) + 1) if parent else 0
        metadata: dict[str, Any] = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "x_names": table.x_names,
            "y_name": table.y_name,
            "x_scaler": x_scaler.to_dict(),
            "y_scaler": y_scaler.to_dict(),
            "x_range": np.column_stack([table.X.min(axis=0), table.X.max(axis=0)]).tolist(),
            "n_points": len(table),
            "n_dropped_nonfinite": table.n_dropped,
            "search_space": space.to_dict(),
            "best_params": entries[0]["params"],
            "best_trial": entries[0]["trial"],
            "best_epoch": entries[0]["epochs"],
            "ensemble": entries,
            "selection": f"mean squared error on held-out interior scan lines (standardised units), {len(folds)}-fold"
            if line_axis >= 0
            else f"mean squared error on random held-out rows, {len(folds)}-fold",
            "selection_score": float(entries[0]["cv_score"]),
            "cv_rmse": float(math.sqrt(entries[0]["cv_score"]) * y_scaler.scale[0]),
            "line_axis": table.x_names[line_axis] if line_axis >= 0 else None,
            "n_trials_complete": states.count(optuna.trial.TrialState.COMPLETE),
            "n_trials_pruned": states.count(optuna.trial.TrialState.PRUNED),
            "n_trials_failed": states.count(optuna.trial.TrialState.FAIL),
            "fit_seconds": time.perf_counter() - t0,
            "budget_seconds": config.budget,
            "final_epoch_scale": result.epoch_scale,
            "training_precision": space.precision,
            "study_name": result.study_name,
            "storage": mask_url(result.storage_url) if config.storage is not None else f"journal:{JOURNAL_FILE}",
            "data_sha256": table.fingerprint(),
            "data_source": table.source,
            "seed": config.seed,
            "jobs": config.jobs,
            "trial_batch": config.batch_width(),
            "reproducible": config.reproducible,
            "ensemble_size": int(sum(m.members for m in models)),
            "top_k": config.top_k,
            "refit_count": refit,
            "restarts": 1,
            "parent_version": parent.get("version") if parent else None,
            "versions": _versions(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "line_residual": None,
        }
        line_residual = finish_metadata(twin_class, models, x_scaler, y_scaler, metadata, table, space, line_axis)
    except BaseException:
        _remove_journal(result.journal)
        raise
    twin = twin_class(models, x_scaler, y_scaler, metadata, journal=result.journal, line_residual=line_residual)
    tie_journal(twin, result.journal)
    return twin


def fit_inputs(
    data: pd.DataFrame | str | os.PathLike | ScanTable,
    x: Sequence[str] | None,
    y: str | None,
    warm_start: DigitalTwin | None,
    search_space: TwinSearchSpace | None,
) -> tuple[Sequence[str], str, ScanTable, TwinSearchSpace]:
    """The column names, the table and the (unresolved) search space of a fit.

    A warm start supplies missing column names and, without *search_space*, the space it
    was fitted with.  Shared by :func:`fit_twin` and
    :func:`bluesky_twin.twin._restarts.fit_restarts`.

    Raises
    ------
    InputError
        The names differ from the warm start's, are missing, or the data cannot be read.
    """
    space = search_space or TwinSearchSpace()
    if warm_start is not None:
        x = list(x) if x is not None else warm_start.x_names
        y = y if y is not None else warm_start.y_name
        if list(x) != warm_start.x_names or y != warm_start.y_name:
            raise InputError(f"warm start twin models {warm_start.y_name}({warm_start.x_names}), not {y}({list(x)})")
        if search_space is None:
            space = TwinSearchSpace.from_dict(warm_start.metadata["search_space"])
    if x is None or y is None:
        raise InputError("x and y column names are required")
    table = data if isinstance(data, ScanTable) else load_scan_table(data, x, y)
    return x, y, table, space


def resolved_space(space: TwinSearchSpace, n_rows: int) -> TwinSearchSpace:
    """*space* with its data-dependent defaults settled for *n_rows* rows (a bad value: :class:`InputError`)."""
    try:
        return space.resolved(n_rows, LARGE_DATA_ROWS)
    except ValueError as exc:
        raise InputError(str(exc)) from None


def x_scaler_for(table: ScanTable, space: TwinSearchSpace, warm_start: DigitalTwin | None = None) -> Scaler:
    """The standardisation of *table*'s axes on the input scales *space* names.

    A warm start keeps its twin's scaler (its networks were trained on it), so *space*
    must ask for the scales it has.

    Raises
    ------
    InputError
        A scale names a column that is not an axis, or differs from the warm start's.
    """
    scales = space.input_scales or {}
    require_axes(scales, table, "input scale")
    warp = canonical_warp([scales.get(name, "linear") for name in table.x_names])
    if warm_start is None:
        return Scaler.fit(table.X, "x", warp)
    if tuple(warm_start._x_scaler.warp) != warp:
        have = dict(zip(table.x_names, warm_start._x_scaler.warp or ("linear",) * len(table.x_names)))
        raise InputError(f"a warm start keeps its twin's input scales {have}; the space asks for {scales}")
    return warm_start._x_scaler


def require_axes(columns: Iterable[str], table: ScanTable, what: str) -> None:
    """Raise :class:`InputError` naming the first of *columns* (a *what*'s keys) that is not an axis of *table*."""
    unknown = sorted(set(columns) - set(table.x_names))
    if unknown:
        raise InputError(f"{what} for {unknown[0]!r}, which is not an axis (axes: {list(table.x_names)})")


def tie_journal(twin: Any, journal: Any) -> None:
    """Remove the study's private *journal* when *twin* goes (``twin.save()`` copies it first).

    The finaliser is kept as ``twin._journal_finalizer`` so that a pool of restarts can
    hand the journal on to the pooled twin.
    """
    twin._journal_finalizer = (
        weakref.finalize(twin, shutil.rmtree, journal.parent, True) if journal is not None else None
    )


def finish_metadata(
    twin_class: type[TwinT],
    models: Any,
    x_scaler: Scaler,
    y_scaler: Scaler,
    metadata: dict[str, Any],
    table: ScanTable,
    space: TwinSearchSpace,
    line_axis: int,
) -> LineResidual | None:
    """Add the line-residual correction the space asks for, the training R^2 and the version.

    Completes *metadata* in place (``line_residual``, ``train_r2``, ``version``) and
    returns the correction (``None``: the networks alone).  Shared by :func:`fit_twin`
    and the pooled restarts of :func:`bluesky_twin.twin._restarts.fit_restarts`.

    Raises
    ------
    InputError
        The networks predict non-finite values on their own data.
    """
    fitted, _ = twin_class(models, x_scaler, y_scaler, metadata).predict(table.X)  # the networks alone
    line_residual = None
    if space.line_residual and line_axis >= 0 and table.X.shape[1] == 2:
        try:
            line_residual = LineResidual.fit(table.X, table.y - fitted, line_axis)
        except ValueError as exc:  # e.g. lines of one or two points: keep the networks alone
            logger.info("no line-residual correction: %s", exc)
        else:
            metadata["line_residual"] = {**line_residual.to_metadata(), "network_train_r2": r2(table.y, fitted)}
            fitted = fitted + line_residual(table.X)
    metadata["train_r2"] = r2(table.y, fitted)
    if not np.all(np.isfinite(fitted)):
        raise InputError(
            "training diverged: the twin predicts non-finite values on its own data "
            "(check the data for absurd readings)"
        )
    metadata["version"] = f"{metadata['refit_count']}-{_weights_hash(models, metadata['data_sha256'])[:8]}"
    return line_residual


def search_data(
    table: ScanTable,
    x_scaler: Scaler,
    y_scaler: Scaler,
    config: FitConfig,
    space: TwinSearchSpace | None = None,
) -> tuple[int, list[np.ndarray], SearchData]:
    """The standardised rows of *table*, the cross-validation folds a search trains on, and its penalty.

    Shared by :func:`fit_twin` and the worker processes of
    :mod:`bluesky_twin.twin.workers`, which must train every trial on the same folds.

    The :class:`~bluesky_twin.twin.training.MonotonePenalty` comes from *space*'s
    :attr:`~TwinSearchSpace.monotone` directions (none without a space).

    Returns
    -------
    line_axis, folds, SearchData
        The axis whose lines are held out (``-1``: random rows), the searched folds'
        held-out row indices, and the tensors.

    Raises
    ------
    InputError
        A value overflows once standardised, or a direction names a column that is
        not an axis.
    """
    import torch

    from bluesky_twin.twin.training import MonotonePenalty, line_folds

    directions = space.monotone if space is not None else {}
    require_axes(directions, table, "monotone direction")

    with np.errstate(over="ignore", invalid="ignore"):
        Xt = torch.from_numpy(x_scaler.transform(table.X).astype(np.float32))
        yt = torch.from_numpy(y_scaler.transform(table.y.reshape(-1, 1)).astype(np.float32))
    if not (bool(torch.isfinite(Xt).all()) and bool(torch.isfinite(yt).all())):
        raise InputError(
            "the data hold values that overflow once standardised (absurd readings, "
            "or far outside a warm-start twin's range)"
        )
    line_axis, folds = line_folds(table.X, config.n_folds, config.seed)
    folds = folds[: config.folds_to_search(len(folds), len(table))]
    all_rows = np.arange(len(table))
    data_ = SearchData(
        Xt,
        yt,
        [torch.from_numpy(np.setdiff1d(all_rows, f)) for f in folds],
        [torch.from_numpy(f) for f in folds],
        MonotonePenalty.over(Xt, table.x_names, directions),
    )
    return line_axis, folds, data_


@contextlib.contextmanager
def _one_intra_op_thread() -> Iterator[None]:
    """Train with one torch intra-op thread, restoring the setting afterwards.

    These networks are far too small for OpenMP to pay off, and on a busy machine
    its spin-waiting makes training an order of magnitude slower.  Parallelism comes
    from ``jobs`` threads instead.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _remove_journal(journal: Any) -> None:
    if journal is not None:
        shutil.rmtree(journal.parent, ignore_errors=True)


def _versions() -> dict[str, str]:
    import optuna
    import torch

    from bluesky_twin import __version__

    return {
        "bluesky_twin": __version__,
        "torch": torch.__version__,
        "optuna": optuna.__version__,
        "numpy": np.__version__,
    }


def _weights_hash(models: Any, salt: str) -> str:
    h = hashlib.sha256(salt.encode())
    for v in models.state_dict().values():
        h.update(v.detach().numpy().tobytes())
    return h.hexdigest()
