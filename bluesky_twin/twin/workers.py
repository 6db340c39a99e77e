"""One twin study, many worker processes: ``bluesky-twin worker`` and ``fit --processes``.

A study in a shared database (PostgreSQL, MySQL/MariaDB) is prepared once by
:func:`process_search` (``bluesky-twin fit DATA --storage URL --processes N``): it
records in the study's user attributes everything a worker needs besides the data
file (:data:`SPEC_ATTR`: the number of finished trials wanted, the resolved search
space, the seed and folds, and the data file's absolute path), next to the data's
sha256 and axis names (:mod:`bluesky_twin.twin.study`).  Then any number of
:func:`run_worker` processes, on this machine or others (``bluesky-twin worker
--study NAME``), run trials until the study holds that many finished (complete or
pruned) trials, and the process that prepared the study builds the final ensemble
once from the study's best trials.

A worker reads the data from ``--data PATH``, else from the path the study records
(a file system shared by the hosts); data whose sha256 differs from the study's are
refused with one line before the worker touches the study.

Dead workers
------------
Each running trial sends a heartbeat to the database every ``interval`` seconds.  A
trial whose heartbeat is older than ``grace`` seconds (its worker was killed, or its
host lost) is marked failed by the next worker that looks, and Optuna's
:class:`~optuna.storages.RetryHeartbeatStaleTrialCallback` enqueues a copy of it
(same parameters, system attribute ``failed_trial`` naming the original) that a
surviving worker runs; a trial is retried at most ``max_retry`` times.  Workers count
only finished trials towards the target, and while the trials still running would
reach it they wait (checking for stale trials) rather than start more, so a killed
worker's trial is retried and the study still ends with the requested number.  Two
workers deciding at the same instant may start one trial each where one was missing,
so a study can end with a few more finished trials than requested, never fewer.

Reproducibility
---------------
Worker processes take trials as they become free, so unlike a fit without a time
limit in one process (:mod:`bluesky_twin.twin._search`) the result depends on timing;
each worker's sampler has its own seed, and a trial's network initialisation depends
only on the study's seed and the trial number.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bluesky_twin.errors import InputError
from bluesky_twin.twin.storage_url import (
    GRACE_PERIOD_S,
    HEARTBEAT_INTERVAL_S,
    MAX_RETRY,
    STORAGE_ENV,
    is_journal,
    mask_url,
)

if TYPE_CHECKING:  # pragma: no cover
    from bluesky_twin.twin._search import SearchResult, TwinSearch

__all__ = [
    "SPEC_ATTR",
    "Heartbeat",
    "WorkerSummary",
    "process_search",
    "run_worker",
    "study_counts",
]

logger = logging.getLogger(__name__)

#: Study user attribute holding what a worker needs to run the study's trials.
SPEC_ATTR = "twin_workers"
#: Version of the :data:`SPEC_ATTR` record.
SPEC_VERSION = 1
#: Most worker processes ``fit --processes`` starts.
MAX_PROCESSES = 64
#: Environment variable: seconds the study's trial number 0 sleeps (with heartbeats)
#: before training, once its parameters are drawn (user attribute ``held_s``); tests use
#: it to kill a worker while its trial is running.
HOLD_ENV = "BLUESKY_TWIN_WORKER_HOLD_S"


@dataclass(frozen=True)
class Heartbeat:
    """How a worker's running trials show that it is alive.

    Parameters
    ----------
    interval
        Seconds between heartbeats of a running trial.
    grace
        Seconds without a heartbeat after which a running trial is failed (and
        retried); must exceed *interval*.
    max_retry
        Times a failed (stale) trial is retried as a new trial.

    Raises
    ------
    InputError
        A value out of range (one line naming the option).
    """

    interval: int = HEARTBEAT_INTERVAL_S
    grace: int = GRACE_PERIOD_S
    max_retry: int = MAX_RETRY

    def __post_init__(self) -> None:
        for name, value, low in (
            ("heartbeat", self.interval, 1),
            ("grace", self.grace, 1),
            ("max-retry", self.max_retry, 0),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= 86_400:
                raise InputError(f"--{name} must be an integer from {low} to 86400, got {value!r}")
        if self.grace <= self.interval:
            raise InputError(
                f"--grace ({self.grace} s) must be longer than --heartbeat ({self.interval} s): "
                "a living worker's trials would be failed"
            )

    def args(self) -> list[str]:
        """The ``bluesky-twin worker`` options that give these settings."""
        return ["--heartbeat", str(self.interval), "--grace", str(self.grace), "--max-retry", str(self.max_retry)]


@dataclass(frozen=True)
class WorkerSummary:
    """What one :func:`run_worker` call did.

    Attributes
    ----------
    worker
        The worker identity recorded with its trials (``host/pid=N``).
    ran
        Trials this worker ran (finished, pruned or failed).
    finished
        Finished (complete or pruned) trials of the study when the worker stopped.
    target
        Finished trials the study asks for.
    """

    worker: str
    ran: int
    finished: int
    target: int


def require_database(url: str, what: str) -> None:
    """Refuse a storage that worker processes cannot share with heartbeats (one line)."""
    if is_journal(url) or "://" not in url or url.startswith("sqlite:"):
        raise InputError(
            f"{what} needs a database storage shared by the workers (postgresql://..., "
            f"mysql+pymysql://...), not {mask_url(url)!r}: give --storage or set {STORAGE_ENV}"
        )


def _open(url: str, heartbeat: Heartbeat) -> Any:
    from bluesky_twin.twin.storage_url import open_storage

    return open_storage(
        url, heartbeat_interval=heartbeat.interval, grace_period=heartbeat.grace, max_retry=heartbeat.max_retry
    )


def study_counts(trials: list[Any]) -> tuple[int, int, int]:
    """``(finished, running, waiting)`` trials among *trials* (finished: complete or pruned)."""
    import optuna

    state = optuna.trial.TrialState
    finished = sum(1 for t in trials if t.state in (state.COMPLETE, state.PRUNED))
    running = sum(1 for t in trials if t.state == state.RUNNING)
    waiting = sum(1 for t in trials if t.state == state.WAITING)
    return finished, running, waiting


def _sampler_pruner(seed: int, target: int) -> tuple[Any, Any]:
    """The same sampler and pruner settings as a search in one process (constant liar on)."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=min(10, max(1, target // 3)), multivariate=True, constant_liar=True
        )
    pruner = optuna.pruners.SuccessiveHalvingPruner(min_resource=10, reduction_factor=3)
    return sampler, pruner


def _fail_stale(study: Any) -> None:
    import optuna

    with warnings.catch_warnings():  # as Optuna's optimize does
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


# ---------------------------------------------------------------------------- the worker


def run_worker(
    storage_url: str,
    study_name: str,
    *,
    data: str | os.PathLike | None = None,
    seed: int | None = None,
    heartbeat: Heartbeat | None = None,
    poll: float | None = None,
    echo: Callable[[str], None] | None = None,
) -> WorkerSummary:
    """Join the study *study_name* and run its trials until it holds its target of finished trials.

    Parameters
    ----------
    storage_url
        The study's database URL (a masked password is resolved through
        ``BLUESKY_TWIN_STORAGE``).
    study_name
        A study prepared by :func:`process_search` (``bluesky-twin fit --processes``).
    data
        The data file (default: the absolute path the study records).
    seed
        This worker's sampler seed (default: drawn from the operating system).
    heartbeat
        Heartbeat interval, grace period and retries (default :class:`Heartbeat`).
    poll
        Seconds between looks at the study while the trials still running would reach
        the target (default: the heartbeat interval, at most 2 s).
    echo
        Called with one line per trial this worker finishes (``None``: quiet).

    Returns
    -------
    WorkerSummary

    Raises
    ------
    InputError
        One line, before any trial is run: no such study, a study not prepared for
        workers, a missing data file or data other than the study's, or a storage that
        is not a database.
    """
    from bluesky_twin.data import load_scan_table
    from bluesky_twin.twin._config import FitConfig
    from bluesky_twin.twin._fit import _one_intra_op_thread, search_data, x_scaler_for
    from bluesky_twin.twin._scaler import Scaler
    from bluesky_twin.twin._search import _Objective
    from bluesky_twin.twin.space import TwinSearchSpace
    from bluesky_twin.twin.study import _study_class, storage_errors

    require_database(storage_url, "bluesky-twin worker")
    heartbeat = heartbeat or Heartbeat()
    shown = mask_url(storage_url)
    storage = _open(storage_url, heartbeat)
    with storage_errors(storage_url, study_name):
        try:
            study_id = storage.get_study_id_from_name(study_name)
        except KeyError:
            raise InputError(f"no study {study_name!r} in {shown}") from None
        attrs = storage.get_study_user_attrs(study_id)
    spec = attrs.get(SPEC_ATTR)
    if not isinstance(spec, dict) or spec.get("version") != SPEC_VERSION:
        raise InputError(
            f"study {study_name!r} in {shown} was not prepared for workers: start it with "
            "bluesky-twin fit DATA --storage URL --study NAME --processes N"
        )
    path = Path(data) if data is not None else Path(spec.get("data_path") or "")
    if not path.is_file():
        where = "given with --data" if data is not None else "recorded by the study; give it with --data"
        raise InputError(f"data file {path} ({where}): not found")
    table = load_scan_table(path, spec["x_names"], spec["y_name"])
    got, want = table.fingerprint(), attrs.get("data_sha256")
    if got != want:
        raise InputError(
            f"data {path} (sha256 {got[:12]}...) are not the data of study {study_name!r} "
            f"(sha256 {str(want)[:12]}...): give the file the study was started with"
        )
    target = int(spec["target_trials"])
    config = FitConfig(seed=int(spec["seed"]), n_folds=int(spec["n_folds"]), search_folds=int(spec["search_folds"]))
    space = TwinSearchSpace.from_dict(spec["search_space"])
    _, _, data_ = search_data(table, x_scaler_for(table, space), Scaler.fit(table.y, table.y_name), config, space)
    if seed is None:
        seed = int.from_bytes(os.urandom(4), "little")
    sampler, pruner = _sampler_pruner(seed, target)
    study = _study_class()(study_name=study_name, storage=storage, sampler=sampler, pruner=pruner)
    worker = f"{socket.gethostname()}/pid={os.getpid()}"
    study._twin_url, study._twin_worker = storage_url, worker
    objective = _Objective(space, data_, config.seed, deadline=None, precision=space.precision)
    hold = float(os.environ.get(HOLD_ENV, "0") or 0)

    def run_trial(trial: Any) -> float:
        if hold > 0 and trial.number == 0:  # test hook: keep the study's first trial running
            objective.suggest(trial)
            trial.set_user_attr("held_s", hold)  # its parameters are all drawn
            time.sleep(hold)
        return objective(trial)

    def report(study_: Any, trial: Any) -> None:
        if echo is not None:
            value = f" {trial.value:.5g}" if trial.value is not None else ""
            retried = trial.system_attrs.get("failed_trial")
            again = f" (retry of trial {retried})" if retried is not None else ""
            echo(f"trial {trial.number} {trial.state.name.lower()}{value}{again}")

    poll = float(poll) if poll is not None else min(2.0, float(heartbeat.interval))
    ran = 0
    finished = 0
    with _one_intra_op_thread(), storage_errors(storage_url, study_name):
        while True:
            _fail_stale(study)
            finished, running, waiting = study_counts(study.get_trials(deepcopy=False))
            if finished >= target:
                break
            if waiting == 0 and finished + running >= target:
                time.sleep(poll)  # the running trials would reach the target: watch them
                continue
            study.optimize(run_trial, n_trials=1, callbacks=[report], gc_after_trial=False, catch=())
            ran += 1
        logger.info("worker %s ran %d trial(s)", worker, ran)
    return WorkerSummary(worker, ran, finished, target)


# ------------------------------------------------------------------ fit --processes N


def _generated_name(y_name: str) -> str:
    return f"twin-{y_name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"


def prepare_study(search: TwinSearch, heartbeat: Heartbeat) -> tuple[Any, str, str]:
    """Create (or resume) the study of *search* and record what its workers need.

    Returns
    -------
    study, study_name, data_path
        The study (for watching; it runs no trial here), its name and the data file.

    Raises
    ------
    InputError
        The storage is not a database, the data do not come from a file, the study
        holds trials of other data, or finished trials of another search space.
    """
    from bluesky_twin.twin.study import open_study

    c = search.config
    url = c.storage or ""
    require_database(url, "--processes")
    source = search.table.source
    if not source or source.startswith("<") or not os.path.isfile(source):
        raise InputError("worker processes read the data from a file: fit a CSV path, not a DataFrame")
    data_path = os.path.abspath(source)
    study_name = c.study_name or _generated_name(search.table.y_name)
    sampler, pruner = _sampler_pruner(c.seed, search.trials)
    storage = _open(url, heartbeat)
    study, _ = open_study(
        url,
        study_name,
        search.table,
        sampler=sampler,
        pruner=pruner,
        seed=c.seed,
        trials=search.trials,
        storage=storage,
        worker=f"{socket.gethostname()}/pid={os.getpid()}",
    )
    space = search.space.to_dict()
    with _errors(url, study_name):
        old = study.user_attrs.get(SPEC_ATTR)
        finished, _, _ = study_counts(study.get_trials(deepcopy=False))
        if isinstance(old, dict) and finished and old.get("search_space") != space:
            raise InputError(
                f"study {study_name!r} in {mask_url(url)} holds {finished} finished trial(s) of another "
                "search space: choose another study name (or the same options to resume it)"
            )
        spec = {
            "version": SPEC_VERSION,
            "target_trials": int(search.trials),
            "search_space": space,
            "seed": int(c.seed),
            "n_folds": int(c.n_folds),
            "search_folds": len(search.data.val_idx),
            "x_names": list(search.table.x_names),
            "y_name": str(search.table.y_name),
            "data_path": data_path,
        }
        study.set_user_attr(SPEC_ATTR, spec)
    return study, study_name, data_path


@contextlib.contextmanager
def _errors(url: str, study_name: str) -> Iterator[None]:
    from bluesky_twin.twin.study import storage_errors

    with storage_errors(url, study_name):
        yield


def _worker_command(study_name: str, data_path: str, seed: int, heartbeat: Heartbeat) -> list[str]:
    # the URL (and its password) travel in the environment, never on a command line
    return [
        sys.executable,
        "-m",
        "bluesky_twin.cli",
        "worker",
        "--study",
        study_name,
        "--data",
        data_path,
        "--seed",
        str(seed),
        *heartbeat.args(),
        "--quiet",
    ]


def process_search(
    search: TwinSearch,
    *,
    processes: int,
    heartbeat: Heartbeat | None = None,
    poll: float = 1.0,
    echo: Callable[[str], None] | None = print,
) -> SearchResult:
    """Run *search* in *processes* worker processes on this machine and wait for the study.

    The study (in the database of ``search.config.storage``) is prepared with
    :func:`prepare_study`; each process runs ``bluesky-twin worker`` on it (the URL
    travels in ``BLUESKY_TWIN_STORAGE``); workers started on other hosts with the same
    study name join in.  It returns once the study holds the requested number of
    finished trials and its own processes have exited, for
    :func:`~bluesky_twin.twin._fit.fit_twin` to build the final ensemble once.

    Parameters
    ----------
    search
        The fit's search (its config names the storage, study, seed and trials: the
        finished trials the study should hold in all).
    processes
        Worker processes to start here (0: wait for workers started elsewhere).
    heartbeat
        Heartbeat settings passed to the workers.
    poll
        Seconds between looks at the study.
    echo
        Prints progress lines (``None``: quiet).

    Raises
    ------
    InputError
        As :func:`prepare_study`; or a worker process failed (its message is on
        stderr; the finished trials are kept, and the same command resumes the study).
    """
    import optuna

    from bluesky_twin.twin._search import SearchResult

    if not isinstance(processes, int) or not 0 <= processes <= MAX_PROCESSES:
        raise InputError(f"--processes must be between 0 and {MAX_PROCESSES}, got {processes!r}")
    heartbeat = heartbeat or Heartbeat()
    c = search.config
    url = c.storage or ""
    study, study_name, data_path = prepare_study(search, heartbeat)
    target = int(search.trials)
    shown = mask_url(url)
    say = echo or (lambda line: None)
    say(
        f"study {study_name!r} in {shown}: {target} finished trial(s) wanted, {processes} worker process(es) here; "
        f"other hosts join with: bluesky-twin worker --study {study_name} --data {data_path} "
        f"(storage URL in {STORAGE_ENV})"
    )
    env = {**os.environ, STORAGE_ENV: url}
    procs: list[subprocess.Popen] = []
    ended: set[int] = set()
    bar = None
    try:
        with _errors(url, study_name):
            finished, _, _ = study_counts(study.get_trials(deepcopy=False))
        if finished < target:
            procs = [
                subprocess.Popen(_worker_command(study_name, data_path, c.seed * 1009 + i + 1, heartbeat), env=env)
                for i in range(processes)
            ]
        if c.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=target, desc=f"twin {search.table.y_name} ({processes} processes)", unit="trial")
        while True:
            with _errors(url, study_name):
                trials = study.get_trials(deepcopy=False)
            finished, _, _ = study_counts(trials)
            if bar is not None:
                bar.update(min(finished, target) - bar.n)
            for i, p in enumerate(procs):
                if p.poll() not in (None, 0) and i not in ended:
                    ended.add(i)
                    say(
                        f"worker process {i} (pid {p.pid}) ended with status {p.returncode}; its running trial "
                        f"is retried by the other workers once its heartbeat is {heartbeat.grace} s old"
                    )
            done = all(p.poll() is not None for p in procs)
            if finished >= target and done:
                break
            if procs and done:
                raise InputError(
                    f"every worker process of study {study_name!r} ended before it held {target} finished trials "
                    f"(their messages are above); the {finished} finished trial(s) are kept in {shown}: "
                    "run the same command again to resume"
                )
            time.sleep(poll)
    except BaseException:
        _stop(procs)
        raise
    finally:
        if bar is not None:
            bar.close()
    with _errors(url, study_name):
        complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    return SearchResult(study, complete, url, study_name, None)


def _stop(procs: list[subprocess.Popen], wait_s: float = 10.0) -> None:
    """Ask the worker processes to stop (their running trials are told failed), then kill."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    end = time.monotonic() + wait_s
    for p in procs:
        try:
            p.wait(timeout=max(0.1, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
