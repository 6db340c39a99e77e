"""The hyper-parameter search of a fit: :class:`TwinSearch`.

Each Optuna trial (:class:`_Objective`) trains one configuration on the
cross-validation folds at once (one batched model) and is scored by the mean
squared error on the rows it did not see (whole interior scan lines).  The study
comes from :func:`bluesky_twin.twin.study.open_study`.  :class:`_Clock` holds the
time limits: a ``timeout`` ends the search, and a ``budget`` for the whole fit
ends it early enough to leave the final ensemble the time it needs
(:func:`~bluesky_twin.twin.estimate_final_seconds`), then time-boxes the final
ensemble to what is left.

Without a time limit the search is reproducible (:meth:`TwinSearch._run_batches`):
it runs in synchronous batches of :meth:`FitConfig.batch_width` trials, asked one
after the other with their parameters drawn at once, trained in up to ``jobs``
threads, and told in trial-number order; a trial's pruning decisions compare it with
the trials of earlier batches only (:class:`_BatchPruner`).  So neither thread
timing nor ``jobs`` (up to the batch width) changes the twin.  With a time limit,
Optuna's own ``optimize`` runs the trials as threads free it, and the clock decides.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bluesky_twin.twin._config import FitConfig
from bluesky_twin.twin._ensemble import estimate_final_seconds
from bluesky_twin.twin._persistence import JOURNAL_FILE
from bluesky_twin.twin.space import TwinSearchSpace

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from bluesky_twin.data import ScanTable
    from bluesky_twin.twin.training import MonotonePenalty

logger = logging.getLogger(__name__)

#: With a budget, the search keeps at least this share of it, however costly the
#: final ensemble looks after the first trials (the final ensemble is shortened instead).
MIN_SEARCH_SHARE = 0.5


@dataclass(frozen=True)
class SearchData:
    """The standardised rows of a fit and its cross-validation folds.

    Attributes
    ----------
    X, y
        ``(n, d)`` and ``(n, 1)`` float32 tensors.
    train_idx, val_idx
        Per searched fold, the row indices trained on and held out.
    monotone
        The penalty every network of the fit trains with (``None``: none).
    """

    X: torch.Tensor
    y: torch.Tensor
    train_idx: list[torch.Tensor]
    val_idx: list[torch.Tensor]
    monotone: MonotonePenalty | None = None

    @property
    def n_train(self) -> int:
        """Training rows of the smallest fold (batch-size bounds and epoch lengths)."""
        return min(len(t) for t in self.train_idx)

    @property
    def n_rows(self) -> int:
        """All rows."""
        return len(self.X)


@dataclass
class SearchResult:
    """What :meth:`TwinSearch.run` leaves for the final ensemble.

    Attributes
    ----------
    study
        The Optuna study.
    complete
        Its completed trials.
    storage_url
        The storage URL the study lives in (unmasked).
    study_name
        The study's name.
    journal
        The temporary journal file of the default storage (``None`` with a given
        storage); its directory is the caller's to remove.
    epoch_scale
        Fraction of its schedule each final member may train (1: all of it).
    final_deadline
        :func:`time.monotonic` time at which final training stops (``None``: no budget).
    """

    study: Any
    complete: list[Any]
    storage_url: str
    study_name: str
    journal: Path | None
    epoch_scale: float = 1.0
    final_deadline: float | None = None


class _Clock:
    """The search's time limits, moved earlier by a budget as trials finish.

    Parameters
    ----------
    config
        The fit's options (``timeout``, ``budget``, ``ensemble_size``, ``top_k``, ``jobs``).
    space
        The resolved search space.
    n_train, n_rows
        Training rows of a trial, and all rows.
    """

    def __init__(self, config: FitConfig, space: TwinSearchSpace, n_train: int, n_rows: int) -> None:
        self.config, self.space, self.n_train, self.n_rows = config, space, n_train, n_rows
        self.start = time.monotonic()
        self.search_seconds = config.search_seconds()
        self.search_end = self.start + self.search_seconds

    def deadline(self) -> float:
        """When running trials must stop (:func:`time.monotonic`)."""
        return self.search_end

    def final_seconds(self, study: Any) -> float:
        """The final ensemble's estimated cost now (see :func:`estimate_final_seconds`)."""
        c = self.config
        return estimate_final_seconds(
            study, self.space, c.ensemble_size, c.top_k, c.jobs, self.n_train, self.n_rows, c.batch_width()
        )

    def keep_budget(self, study: Any, trial: Any) -> None:
        """Optuna callback: leave the final ensemble the time the finished trials say it needs."""
        budget = self.config.budget
        assert budget is not None
        final_s = self.final_seconds(study)
        # ... but never before MIN_SEARCH_SHARE of the budget: an expensive first
        # trial must not end the search; the final ensemble is time-boxed instead
        search_end = max(self.start + MIN_SEARCH_SHARE * budget, self.start + budget - 1.1 * final_s)
        if final_s:
            self.search_end = min(self.search_end, search_end)
        if time.monotonic() >= search_end:
            study.stop()

    def final_time_box(self, study: Any) -> tuple[float, float | None]:
        """The final ensemble's epoch scale and deadline: what is left of the budget.

        Returns
        -------
        epoch_scale, deadline
            ``(1.0, None)`` without a budget.
        """
        if self.config.budget is None:
            return 1.0, None
        deadline = self.start + self.config.budget
        final_s = self.final_seconds(study)
        left = deadline - time.monotonic()
        if final_s > 0 and left < 1.1 * final_s:  # the same margin as the search's stop
            return max(0.0, left) / (1.1 * final_s), deadline
        return 1.0, deadline


class _Objective:
    """Optuna objective: cross-validated loss of one configuration on held-out lines."""

    def __init__(
        self,
        space: TwinSearchSpace,
        data: SearchData,
        seed: int,
        deadline: float | Callable[[], float | None] | None = None,
        precision: str = "float32",
    ) -> None:
        self.space, self.data, self.seed = space, data, seed
        self.deadline, self.precision = deadline, precision

    def suggest(self, trial: Any) -> dict[str, Any]:
        """Draw (or, once drawn, read back) *trial*'s configuration."""
        return self.space.suggest(trial, self.data.n_train, int(self.data.X.shape[1]))

    def __call__(self, trial: Any) -> float:
        import optuna
        import torch

        from bluesky_twin.twin.network import BatchedMLP
        from bluesky_twin.twin.training import PruneSignal, deadline_passed, train_members

        X, y, train_idx = self.data.X, self.data.y, self.data.train_idx
        params = self.suggest(trial)
        if deadline_passed(self.deadline):  # started just as the budget ran out
            raise optuna.TrialPruned("the search's time is up")
        gen = torch.Generator().manual_seed(self.seed * 100_003 + trial.number)
        # always from fresh weights, also in a warm-start refit: the previous twin was
        # trained on every row, those of the held-out lines included, so its weights
        # would score a configuration on lines it has already seen
        model = BatchedMLP.from_params(len(train_idx), X.shape[1], params, generator=gen)

        def report(epoch: int, value: float) -> None:
            trial.report(value, epoch)
            if trial.should_prune():
                raise PruneSignal

        started = time.perf_counter()
        try:
            res = train_members(
                model,
                X,
                y,
                train_idx,
                self.data.val_idx,
                lr=params["lr"],
                batch_size=params["batch_size"],
                weight_decay=params["weight_decay"],
                max_epochs=self.space.max_epochs,
                lr_drop_epoch=self.space.lr_drop_epoch,
                lr_drop_factor=self.space.lr_drop_factor,
                patience=self.space.patience,
                generator=gen,
                report=report,
                max_steps_per_epoch=self.space.max_steps_per_epoch,
                deadline=self.deadline,
                precision=self.precision,
                monotone=self.data.monotone,
            )
        except PruneSignal:
            raise optuna.TrialPruned() from None
        trial.set_user_attr("best_epoch", res.best_epoch)
        trial.set_user_attr("epochs_run", res.epochs_run)
        trial.set_user_attr(
            "seconds_per_member_epoch", (time.perf_counter() - started) / max(1, res.epochs_run * model.members)
        )
        if res.steps:  # optimiser steps alone: the final ensemble has no validation pass
            trial.set_user_attr("seconds_per_member_step", res.step_seconds / (res.steps * model.members))
        if res.time_limited:  # the study's timeout cut this trial short: keep what it reached
            trial.set_user_attr("time_limited", True)
        with torch.no_grad():  # training-set fit, recorded to compare selection criteria
            pred = model(X.unsqueeze(0).expand(model.members, -1, -1))
            train_mse = [float(((pred[m, idx] - y[idx]) ** 2).mean()) for m, idx in enumerate(train_idx)]
        trial.set_user_attr("train_mse", float(np.mean(train_mse)))
        if not math.isfinite(res.best_val_loss):
            raise optuna.TrialPruned("diverged")
        return res.best_val_loss


class _StudyView:
    """A study as one trial of a synchronous batch may see it: earlier batches and itself.

    Parameters
    ----------
    study
        The Optuna study.
    before
        The batch's first trial number: trials numbered below it are seen.
    number
        The trial judged (seen as well).
    """

    def __init__(self, study: Any, before: int, number: int) -> None:
        self._study, self._before, self._number = study, before, number

    def get_trials(self, deepcopy: bool = True, states: Any = None) -> list[Any]:
        """The study's trials numbered below the batch, and the judged trial."""
        trials = self._study.get_trials(deepcopy=deepcopy, states=states)
        return [t for t in trials if t.number < self._before or t.number == self._number]

    @property
    def trials(self) -> list[Any]:
        """As :meth:`get_trials`, deep-copied."""
        return self.get_trials()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)


class _BatchPruner:
    """Pruner wrapper: a batch's trial is judged against earlier batches only.

    Optuna's :class:`~optuna.pruners.SuccessiveHalvingPruner` compares a trial with
    every trial that reached the same rung, so trials running side by side would see
    each other or not as their threads happen to run.  Here a trial of a batch
    registered with :meth:`start_batch` sees the study through a :class:`_StudyView`;
    any other trial (a search with a time limit) sees the whole study.

    Parameters
    ----------
    pruner
        The Optuna pruner wrapped.
    """

    def __init__(self, pruner: Any) -> None:
        self.pruner = pruner
        self._first: dict[int, int] = {}

    def start_batch(self, numbers: Sequence[int]) -> None:
        """Register a batch's trial numbers before its trials run."""
        first = min(numbers)
        self._first.update(dict.fromkeys(numbers, first))

    def prune(self, study: Any, trial: Any) -> bool:
        """Whether to prune *trial* (an :class:`optuna.trial.FrozenTrial`) now."""
        first = self._first.get(trial.number)
        return self.pruner.prune(study if first is None else _StudyView(study, first, trial.number), trial)


class TwinSearch:
    """One fit's Optuna search over :class:`~bluesky_twin.twin.TwinSearchSpace`.

    Parameters
    ----------
    config
        The fit's options.
    space
        The search space, resolved for the data (see :meth:`TwinSearchSpace.resolved`).
    data
        The standardised rows and the folds to search on.
    table
        The scan table the rows come from (the study records its identity, and a
        resumed study must hold the same data).
    trials
        Trials this worker should have finished in all (see :meth:`FitConfig.trial_count`).
    warm_params
        A previous twin's best parameters in Optuna's names: tried first.  Every
        trial trains from fresh weights; a previous twin's weights only seed the
        final ensemble (see :func:`~bluesky_twin.twin._ensemble.train_ensemble`).
    trial_callback
        Called as ``trial_callback(study, trial)`` after every trial.
    """

    def __init__(
        self,
        config: FitConfig,
        space: TwinSearchSpace,
        data: SearchData,
        table: ScanTable,
        *,
        trials: int,
        warm_params: dict[str, Any] | None = None,
        trial_callback: Callable[[Any, Any], None] | None = None,
    ) -> None:
        self.config, self.space, self.data, self.table = config, space, data, table
        self.trials, self.warm_params = trials, warm_params
        self.trial_callback = trial_callback

    def _open_study(self, storage_url: str, study_name: str) -> tuple[Any, int]:
        import optuna

        from bluesky_twin.twin.study import open_study

        c = self.config
        parallel = c.batch_width() > 1 if c.reproducible else c.jobs > 1
        sampler = optuna.samplers.TPESampler(
            seed=c.seed, n_startup_trials=min(10, max(1, self.trials // 3)), multivariate=True, constant_liar=parallel
        )
        pruner = _BatchPruner(optuna.pruners.SuccessiveHalvingPruner(min_resource=10, reduction_factor=3))
        # one study holds one data set (refused otherwise); a re-run resumes it: the
        # trials this worker already finished count towards `trials`
        study, trials = open_study(
            storage_url, study_name, self.table, sampler=sampler, pruner=pruner, seed=c.seed, trials=self.trials
        )
        if self.warm_params is not None:
            previous = dict(self.warm_params)
            lo, hi = self.space.batch_bounds(self.data.n_train)  # the bounds move with the data size
            if "batch_size" in previous:
                previous["batch_size"] = int(min(max(previous["batch_size"], lo), hi))
            study.enqueue_trial(previous, skip_if_exists=False)
        return study, trials

    def run(self) -> SearchResult:
        """Run the search (torch should use one intra-op thread meanwhile).

        Returns
        -------
        SearchResult
            With no completed trial, ``complete`` is empty and nothing is time-boxed.
            Should the search raise, its temporary journal is removed.
        """
        c = self.config
        if c.storage is not None:
            return self._run(c.storage, None)
        journal = Path(tempfile.mkdtemp(prefix="bluesky-twin-study-")) / JOURNAL_FILE
        try:
            return self._run(f"journal:{journal}", journal)
        except BaseException:
            shutil.rmtree(journal.parent, ignore_errors=True)
            raise

    def _run(self, storage_url: str, journal: Path | None) -> SearchResult:
        import optuna

        c = self.config
        study_name = c.study_name or f"twin-{self.table.y_name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        study, trials = self._open_study(storage_url, study_name)
        clock = _Clock(c, self.space, self.data.n_train, self.data.n_rows)
        objective = _Objective(self.space, self.data, c.seed, clock.deadline, self.space.precision)
        callbacks: list[Callable[[Any, Any], None]] = []
        if c.budget is not None:
            callbacks.append(clock.keep_budget)
        bar = None
        if c.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=trials, desc=f"twin {self.table.y_name}", unit="trial")

            def _tick(study: Any, trial: Any) -> None:
                bar.update(1)
                try:
                    bar.set_postfix(best=f"{study.best_value:.4g}", refresh=False)
                except ValueError:
                    pass

            callbacks.append(_tick)
        if self.trial_callback is not None:
            callbacks.append(self.trial_callback)
        try:
            if c.reproducible:
                self._run_batches(study, objective, trials, callbacks, storage_url)
            else:
                study.optimize(
                    objective,
                    n_trials=trials,
                    timeout=None if math.isinf(clock.search_seconds) else clock.search_seconds,
                    n_jobs=c.jobs,
                    callbacks=callbacks,
                    gc_after_trial=False,
                    catch=(),
                )
        finally:
            if bar is not None:
                bar.close()
        complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        result = SearchResult(study, complete, storage_url, study_name, journal)
        if complete:
            result.epoch_scale, result.final_deadline = clock.final_time_box(study)
        return result

    def _run_batches(
        self,
        study: Any,
        objective: _Objective,
        trials: int,
        callbacks: Sequence[Callable[[Any, Any], None]],
        storage_url: str,
    ) -> None:
        """Run *trials* trials in synchronous batches: the same twin whatever the timing.

        Each batch asks :meth:`FitConfig.batch_width` trials one after the other and
        draws all their parameters at once, so the seeded sampler sees the same history
        every time (finished batches, and the batch's earlier trials as running ones
        under ``constant_liar``).  Up to ``jobs`` threads then train them, and they are
        told (and the callbacks called) in trial-number order as they finish; a callback
        that calls ``study.stop()`` ends the search after the batch.  Should a
        trial fail, the rest of its batch stops at its next epoch and is told failed,
        and the failure is raised (as Optuna's ``optimize`` does with ``catch=()``).

        Parameters
        ----------
        study
            The study (from :func:`~bluesky_twin.twin.study.open_study`).
        objective
            The trial objective.
        trials
            Trials to run.
        callbacks
            Called as ``callback(study, frozen_trial)`` after each trial is told.
        storage_url
            The study's storage URL (for one-line storage errors).
        """
        from concurrent.futures import Future, ThreadPoolExecutor, wait

        import optuna
        from optuna.storages._heartbeat import get_heartbeat_thread, is_heartbeat_enabled

        from bluesky_twin.twin.study import storage_errors

        state = optuna.trial.TrialState
        optuna_log = optuna.logging.get_logger("optuna.study")  # where Optuna's optimize logs trials
        width = self.config.batch_width()
        workers = min(self.config.jobs, width)
        pruner = study.pruner
        halt = threading.Event()
        deadline = objective.deadline
        # a failure or Ctrl-C stops the batch's other trials at their next epoch
        objective.deadline = lambda: -math.inf if halt.is_set() else _limit(deadline)

        def run(trial: Any) -> tuple[float | None, Any, BaseException | None]:
            if halt.is_set():
                return None, state.FAIL, None
            with get_heartbeat_thread(trial._trial_id, study._storage):
                try:
                    return objective(trial), None, None
                except optuna.TrialPruned as exc:
                    return None, state.PRUNED, exc
                except Exception as exc:
                    return None, state.FAIL, exc

        done = getattr(study, "_finished", None)
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="twin-trial") if workers > 1 else None
        told = 0
        # as inside Optuna's optimize: ask() expects heartbeats, a callback may call study.stop()
        study._thread_local.in_optimize_loop, study._stop_flag = True, False
        try:
            with storage_errors(storage_url, study.study_name, done):
                while told < trials and not study._stop_flag:
                    if is_heartbeat_enabled(study._storage):
                        with warnings.catch_warnings():  # as Optuna's optimize does
                            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                            optuna.storages.fail_stale_trials(study)
                    batch = []
                    for _ in range(min(width, trials - told)):
                        trial = study.ask()
                        batch.append(trial)
                        objective.suggest(trial)  # drawn here, in order: the threads only read them
                    if isinstance(pruner, _BatchPruner):
                        pruner.start_batch([t.number for t in batch])
                    futures: list[Future] = [pool.submit(run, t) for t in batch] if pool is not None else []
                    pending = list(batch)
                    error: BaseException | None = None
                    try:
                        for i, trial in enumerate(batch):
                            value, end, exc = futures[i].result() if futures else run(trial)
                            pending.remove(trial)
                            if error is not None:  # abandoned after an earlier failure
                                value, end = None, state.FAIL
                            frozen = study.tell(trial, value) if end is None else study.tell(trial, state=end)
                            told += 1
                            if frozen.state == state.COMPLETE:
                                study._log_completed_trial(frozen.values, frozen.number, frozen.params)
                            elif frozen.state == state.PRUNED:
                                optuna_log.info("Trial %d pruned. %s", frozen.number, exc or "")
                            elif exc is not None:
                                optuna_log.warning("Trial %d failed: %r", frozen.number, exc)
                            if end == state.FAIL and exc is not None and error is None:
                                error = exc
                                halt.set()
                            if frozen.state in (state.COMPLETE, state.PRUNED) and hasattr(study, "_twin_done"):
                                study._twin_done += 1
                            for callback in callbacks:
                                callback(study, frozen)
                    except BaseException:
                        halt.set()
                        wait(futures)
                        for trial in pending:  # best effort: the storage may be what failed
                            try:
                                study.tell(trial, state=state.FAIL)
                            except Exception:  # noqa: BLE001
                                logger.debug("trial %d left unfinished", trial.number, exc_info=True)
                        raise
                    if error is not None:
                        raise error
        finally:
            study._thread_local.in_optimize_loop = False
            objective.deadline = deadline
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)


def _limit(deadline: float | Callable[[], float | None] | None) -> float:
    """A deadline (a time, a callable giving one, or ``None``) as a time (``inf``: none)."""
    limit = deadline() if callable(deadline) else deadline
    return math.inf if limit is None else limit
