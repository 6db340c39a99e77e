"""``TwinTrainer``: a streaming callback that (re)fits a digital twin between runs.

Subscribe it to a RunEngine (``RE.subscribe(trainer)``).  For every run it builds,
through an :class:`event_model.RunRouter` factory, a per-run collector that takes the
configured x and y data keys from the events of one stream (``"primary"`` by
default).  Once a run's descriptor has been routed, its events and event pages go
straight to that run's collector: the twin reads scalar data keys only, so the
RunRouter's Filler (and its event-page packing, most of the per-event cost) is not
needed.  When a run stops successfully, the accumulated data of all accepted runs
is handed to a single background worker that fits the twin (first fit, then warm
starts from the current twin).  The RunEngine thread only copies a few numbers per
event; it is never blocked by training and an exception in the callback or in the
fit never reaches the RunEngine (the class is wrapped with
:func:`bluesky.callbacks.core.make_class_safe`; failures are logged and kept in
:attr:`TwinTrainer.last_error` / :attr:`TwinTrainer.errors`).

Semantics
---------
* **Masking.** A reading whose x or y value is NaN, +-inf or not a real scalar is
  dropped and counted (per run and per field).
* **Rewinds.** A pause/resume rewinds the plan to its last checkpoint and the
  RunEngine re-emits the events taken since, with the *same* ``seq_num`` on the same
  descriptor (the bundler restores its sequence counters) but new event uids.  Rows
  are therefore keyed by ``(descriptor uid, seq_num)``; a re-emitted row replaces the
  earlier one (the retaken measurement wins) and is counted in ``n_duplicates``.
* **Exit status.** Runs whose stop document says ``exit_status != "success"``
  (abort, fail) are skipped unless ``include_failed=True``.
* **Faults.** A row that the collector fails to take (an exception while reading an
  event, or events of a training-stream descriptor whose handling failed) is
  counted in ``RunReport.rows_lost`` and ``status["rows_lost"]``, and the error is
  kept in :attr:`TwinTrainer.errors`; a run with lost rows is trained on but marked
  ``"accepted_with_losses"`` instead of ``"accepted"``.  A re-emitted (rewound) row
  that is then taken successfully is no longer lost.
* **Runs with no stop document** are never trained on silently: when a new run
  starts while one is still open a warning is logged, and :meth:`TwinTrainer.flush`
  closes all open runs as ``"incomplete"`` (trained on only with
  ``include_incomplete=True``).
* **Opt-in training.** ``condition`` (like bluesky-adaptive's trigger condition) is
  applied to every start document; a run it rejects is ignored silently and only
  counted (``status["ignored_runs"]``).  The default trains on every run;
  :func:`twin_runs_only` trains only on runs that ask for it (``md["twin"] is True``)
  or come from a twin plan (:data:`TWIN_PLAN_NAMES`).  A run without the configured
  data keys is ``"no_data"``, logged at DEBUG only (it was never meant for the twin).
* **Quiet fits.** Optuna logs one INFO line per trial.  While a fit of the trainer
  runs, the ``optuna`` logger is raised to WARNING (:func:`quiet_optuna`, reference
  counted, restored when the last fit ends), so trial logs do not scroll over an
  IPython prompt.  Each fit attempt instead produces ONE status line, logged at INFO
  on ``bluesky_twin.callbacks.trainer`` and passed to ``status_callback``, e.g.
  ``"twin fit 3 -> version 3-1a2b3c4d on 808 points from 4 runs in 12.3 s"``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from bluesky.callbacks.core import make_class_safe
from event_model import DocumentRouter, RunRouter

logger = logging.getLogger(__name__)

__all__ = ["TWIN_PLAN_NAMES", "RunReport", "TwinTrainer", "quiet_optuna", "twin_runs_only"]

#: Run report states.
OPEN, ACCEPTED, SKIPPED, INCOMPLETE, NO_DATA = "open", "accepted", "skipped", "incomplete", "no_data"
#: Error messages kept in ``TwinTrainer.errors`` (all are counted in ``n_errors``).
MAX_KEPT_ERRORS = 100
#: State of an accepted run that lost rows to a fault in the collector.
ACCEPTED_WITH_LOSSES = "accepted_with_losses"
#: States of runs whose data is part of the training set.
ACCEPTED_STATES = (ACCEPTED, ACCEPTED_WITH_LOSSES)


#: Plan names whose runs :func:`twin_runs_only` accepts: the twin-steered plans of
#: :mod:`bluesky_twin.plans`.
TWIN_PLAN_NAMES: frozenset[str] = frozenset({"coarse_to_fine", "twin_adaptive_scan"})


def twin_runs_only(start_doc: Mapping[str, Any]) -> bool:
    """Trigger condition: train only on runs meant for the twin.

    A run is meant for the twin when its start document carries ``twin=True``
    (``RE(grid_scan(...), twin=True)`` or ``md={"twin": True}``) or when its
    ``plan_name`` is one of :data:`TWIN_PLAN_NAMES`.  ``twin=False`` opts a twin plan's
    run out.  Pass it as ``TwinTrainer(..., condition=twin_runs_only)``.

    Parameters
    ----------
    start_doc
        A RunStart document.

    Returns
    -------
    bool
        Whether the trainer should collect and train on this run.
    """
    flag = start_doc.get("twin")
    if flag is not None:
        return flag is True
    return start_doc.get("plan_name") in TWIN_PLAN_NAMES


_optuna_quiet_lock = threading.Lock()
_optuna_quiet_depth = 0
_optuna_saved_level: int | None = None


@contextlib.contextmanager
def quiet_optuna(level: int = logging.WARNING) -> Iterator[None]:
    """Raise the ``optuna`` logger to *level* (default WARNING) for the duration of a block.

    Optuna logs one INFO line per trial to stderr.  The level is a property of the
    process-wide ``optuna`` logger (a per-thread filter cannot catch the trials that
    ``jobs > 1`` runs in Optuna's own thread pool), so it is raised while at least one
    block is active -- reference counted across threads -- and the previous level is
    restored when the last block ends, unless someone else changed it meanwhile.  A
    logger already at *level* or quieter is left alone.

    Parameters
    ----------
    level
        The least severe level still shown while the block runs.
    """
    global _optuna_quiet_depth, _optuna_saved_level
    try:  # optuna sets its logger to INFO when first imported: import it before reading the level
        import optuna  # noqa: F401
    except ImportError:  # pragma: no cover - then nothing logs to it
        pass
    optuna_logger = logging.getLogger("optuna")
    with _optuna_quiet_lock:
        if _optuna_quiet_depth == 0:
            current = optuna_logger.level
            # NOTSET (0) means "inherit": optuna sets INFO when it configures itself
            if current < level:
                _optuna_saved_level = current
                optuna_logger.setLevel(level)
            else:
                _optuna_saved_level = None
        _optuna_quiet_depth += 1
    try:
        yield
    finally:
        with _optuna_quiet_lock:
            _optuna_quiet_depth -= 1
            if _optuna_quiet_depth == 0 and _optuna_saved_level is not None:
                if optuna_logger.level == level:  # nobody changed it meanwhile
                    optuna_logger.setLevel(_optuna_saved_level)
                _optuna_saved_level = None


@dataclass
class RunReport:
    """What the trainer did with one run.

    Attributes
    ----------
    uid
        RunStart uid.
    state
        ``"open"`` (no stop yet), ``"accepted"`` (part of the training data),
        ``"accepted_with_losses"`` (part of the training data, but ``rows_lost``
        rows were lost to a fault), ``"skipped"`` (failed/aborted run),
        ``"incomplete"`` (no stop document, closed by :meth:`TwinTrainer.flush`) or
        ``"no_data"`` (no usable rows).
    exit_status
        The stop document's ``exit_status`` (``None`` while open / if missing).
    n_events
        Events seen in the training stream, re-emitted ones included.
    n_points
        Usable rows after de-duplication and masking.
    n_masked
        Rows dropped because a value was NaN, inf or not a real scalar.
    n_duplicates
        Events that replaced an earlier event with the same ``(descriptor, seq_num)``.
    masked_by_field
        Number of non-finite / non-scalar values per data key.
    rows_lost
        Rows of the training stream that the trainer failed to take because of a
        fault (an exception in the collector); see :attr:`TwinTrainer.errors`.
    reason
        Human-readable explanation when the run was not accepted.
    """

    uid: str
    state: str = OPEN
    exit_status: str | None = None
    n_events: int = 0
    n_points: int = 0
    n_masked: int = 0
    n_duplicates: int = 0
    masked_by_field: dict[str, int] = field(default_factory=dict)
    rows_lost: int = 0
    reason: str = ""


@dataclass
class _RunData:
    """Finalised rows of one run (x: (n, len(x_fields)), y: (n,))."""

    uid: str
    x: np.ndarray
    y: np.ndarray
    seq_num: np.ndarray
    time: np.ndarray


def _scalar(value: Any) -> float:
    """Return *value* as a float, NaN if it is not a real scalar."""
    if isinstance(value, (bool, np.bool_)):
        return float(value)
    try:
        out = float(value)
    except (TypeError, ValueError):
        return math.nan
    return out


class _RunCollector(DocumentRouter):
    """Collect (x, y) rows of one run; built per run by the trainer's RunRouter factory."""

    def __init__(self, trainer: TwinTrainer, start_doc: Mapping[str, Any]) -> None:
        super().__init__()
        self._trainer = trainer
        self.uid: str = start_doc["uid"]
        self.start_doc = dict(start_doc)
        self.report = RunReport(uid=self.uid)
        self._fields = list(trainer.x_fields) + [trainer.y_field]
        self._descriptors: dict[str, bool] = {}  # uid -> usable (right stream, has all keys)
        self._descriptor_order: dict[str, int] = {}
        # (descriptor uid, seq_num) -> (x tuple, y, time) or None when masked
        self._rows: dict[tuple[str, int], tuple[tuple[float, ...], float, float] | None] = {}
        self._masked_keys: dict[tuple[str, int], list[str]] = {}
        # rows lost to a fault: keyed ones are recovered if a rewind re-takes them
        self._lost: set[tuple[str, int]] = set()
        self._lost_unkeyed = 0
        self._broken_descriptors: set[str] = set()  # training-stream descriptors whose handling failed
        self.missing_fields: list[str] = []

    # -- documents -------------------------------------------------------------
    def descriptor(self, doc):
        if doc.get("name") != self._trainer.stream_name:
            self._descriptors[doc["uid"]] = False
            return
        keys = doc.get("data_keys", {})
        missing = [f for f in self._fields if f not in keys]
        if missing:
            self.missing_fields = missing
            self._descriptors[doc["uid"]] = False
            return
        self._descriptors[doc["uid"]] = True
        self._descriptor_order[doc["uid"]] = len(self._descriptor_order)

    def event(self, doc):
        desc = doc["descriptor"]
        if not self._descriptors.get(desc, False):
            if desc in self._broken_descriptors:
                self.lose_rows(desc, [doc.get("seq_num")])
            return
        try:
            self._add_row(desc, int(doc["seq_num"]), doc["data"], float(doc["time"]))
        except Exception as exc:  # one bad row must not cost the others
            self.lose_rows(desc, [doc.get("seq_num")], exc)

    def event_page(self, doc):
        desc = doc["descriptor"]
        if not self._descriptors.get(desc, False):
            if desc in self._broken_descriptors:
                self.lose_rows(desc, list(doc.get("seq_num", [])))
            return
        try:
            data = doc["data"]
            columns = [data[f] for f in self._fields]
            seqs = list(doc["seq_num"])
            times = list(doc["time"])
        except Exception as exc:
            self.lose_rows(desc, list(doc.get("seq_num", [])), exc)
            return
        for i, seq in enumerate(seqs):
            try:
                row = {f: col[i] for f, col in zip(self._fields, columns)}
                self._add_row(desc, int(seq), row, float(times[i]))
            except Exception as exc:
                self.lose_rows(desc, [seq], exc)

    def stop(self, doc):
        self.report.exit_status = doc.get("exit_status")
        self._trainer._finish_run(self, doc)

    # -- internals -------------------------------------------------------------
    def lose_rows(self, desc: str, seqs: Sequence[Any], exc: BaseException | None = None) -> None:
        """Count rows of descriptor *desc* as lost to a fault (and record *exc*)."""
        for seq in seqs:
            try:
                key = (desc, int(seq))
            except (TypeError, ValueError):
                self._lost_unkeyed += 1
                continue
            if self._rows.get(key) is None and key not in self._masked_keys:
                self._lost.add(key)  # never taken (a retaken, stored row is not lost)
        self.report.rows_lost = len(self._lost) + self._lost_unkeyed
        if exc is not None:
            self._trainer._record_error(f"run {self.uid[:8]}: lost {len(seqs)} row(s) of descriptor {desc[:8]}", exc)

    def mark_descriptor_broken(self, desc: str) -> None:
        """Events of *desc* (a training-stream descriptor whose handling failed) count as lost."""
        self._descriptors.pop(desc, None)
        self._broken_descriptors.add(desc)

    def _add_row(self, desc: str, seq: int, data: Mapping[str, Any], t: float) -> None:
        self.report.n_events += 1
        key = (desc, seq)
        if key in self._rows:
            self.report.n_duplicates += 1
            self._masked_keys.pop(key, None)
        values = [_scalar(data[f]) for f in self._fields]
        bad = [f for f, v in zip(self._fields, values) if not math.isfinite(v)]
        if bad:
            self._rows[key] = None
            self._masked_keys[key] = bad
        else:
            self._rows[key] = (tuple(values[:-1]), values[-1], t)
        if key in self._lost:  # a rewind re-took a row lost earlier
            self._lost.discard(key)
            self.report.rows_lost = len(self._lost) + self._lost_unkeyed

    def finalize(self) -> _RunData:
        """Freeze the rows (ordered by descriptor, then seq_num) and fill the report."""
        masked_by_field: dict[str, int] = {}
        for bad in self._masked_keys.values():
            for f in bad:
                masked_by_field[f] = masked_by_field.get(f, 0) + 1
        keys = sorted(self._rows, key=lambda k: (self._descriptor_order[k[0]], k[1]))
        good = [(k, self._rows[k]) for k in keys if self._rows[k] is not None]
        nx = len(self._fields) - 1
        x = np.array([r[0] for _, r in good], dtype=float).reshape(len(good), nx)
        y = np.array([r[1] for _, r in good], dtype=float)
        seq = np.array([k[1] for k, _ in good], dtype=np.int64)
        t = np.array([r[2] for _, r in good], dtype=float)
        self.report.n_points = len(good)
        self.report.n_masked = len(self._rows) - len(good)
        self.report.masked_by_field = masked_by_field
        self.report.rows_lost = len(self._lost) + self._lost_unkeyed
        return _RunData(self.uid, x, y, seq, t)


FitFunction = Callable[..., Any]


def _runs(n: int) -> str:
    return f"{n} run" if n == 1 else f"{n} runs"


@make_class_safe(logger=logger)
class TwinTrainer:
    """Streaming twin trainer; subscribe with ``RE.subscribe(trainer)``.

    Parameters
    ----------
    x_fields
        Data keys of the twin inputs, in order (e.g. ``["temperature", "field"]``).
    y_field
        Data key of the measured quantity (e.g. ``"magnetization"``).
    twin
        Optional initial :class:`bluesky_twin.twin.DigitalTwin`; the first refit
        warm-starts from it.  Its ``x_names``/``y_name`` must match the fields.
    fit_kwargs
        Extra keyword arguments for ``DigitalTwin.fit`` of the *first* fit
        (``trials``, ``timeout``, ``jobs``, ``storage``, ``seed``...).
    refit_kwargs
        Keyword arguments for warm-start refits (default: ``fit_kwargs`` with
        ``trials`` capped at 5).
    study_name
        Base name of the Optuna studies.  Fit attempt *k* uses ``f"{study_name}-{k}"`` so a
        persistent storage keeps one study per twin version.  Default: a fresh
        ``"bluesky-twin-<hex>"``.
    stream_name
        Event stream to take readings from.
    include_failed
        Also train on runs whose stop ``exit_status`` is not ``"success"``.
    include_incomplete
        Also train on runs that never got a stop document (closed by :meth:`flush`).
    auto_refit
        Refit in the background after every accepted run (default).  With ``False``
        call :meth:`refit` yourself (used by ``bluesky-twin replay``).
    min_points
        Do not attempt a fit with fewer usable rows than this.
    fit_function
        Callable with ``DigitalTwin.fit``'s signature; defaults to
        ``bluesky_twin.twin.DigitalTwin.fit``.
    condition
        Trigger condition applied to every start document: only runs for which it
        returns true are collected and trained on; the others are ignored silently
        (counted in ``status["ignored_runs"]``).  ``None`` (default) takes every run;
        :func:`twin_runs_only` takes the runs marked ``twin=True`` and those of the
        twin plans.  A condition that raises ignores the run and records the error.
    status_callback
        Called on the worker thread with ONE line per fit attempt (success, failure or
        too few points), e.g. ``"twin fit 3 -> version 3-1a2b3c4d on 808 points from 4
        runs in 12.3 s"``.  The same line is logged at INFO on
        ``bluesky_twin.callbacks.trainer`` (failures at ERROR).  ``print`` shows it in
        an IPython session; exceptions it raises are recorded, never propagated.
    quiet_optuna
        Raise the ``optuna`` logger to WARNING while a fit runs (see
        :func:`quiet_optuna`), so its per-trial INFO lines are not printed.

    Notes
    -----
    Thread-safety: document methods run on the RunEngine thread; fits run on one
    worker thread; every public property is safe to read from any thread.
    """

    def __init__(
        self,
        x_fields: Sequence[str],
        y_field: str,
        *,
        twin: Any | None = None,
        fit_kwargs: Mapping[str, Any] | None = None,
        refit_kwargs: Mapping[str, Any] | None = None,
        study_name: str | None = None,
        stream_name: str = "primary",
        include_failed: bool = False,
        include_incomplete: bool = False,
        auto_refit: bool = True,
        min_points: int = 8,
        fit_function: FitFunction | None = None,
        condition: Callable[[Mapping[str, Any]], bool] | None = None,
        status_callback: Callable[[str], Any] | None = None,
        quiet_optuna: bool = True,
    ) -> None:
        x_fields = [str(f) for f in x_fields]
        if not x_fields:
            raise ValueError("x_fields must name at least one data key")
        if len(set(x_fields)) != len(x_fields) or y_field in x_fields:
            raise ValueError(f"x_fields {x_fields} and y_field {y_field!r} must be distinct data keys")
        if twin is not None:
            if list(twin.x_names) != x_fields or twin.y_name != y_field:
                raise ValueError(
                    f"initial twin maps {list(twin.x_names)} -> {twin.y_name!r}, "
                    f"trainer is configured for {x_fields} -> {y_field!r}"
                )
        self.x_fields: list[str] = x_fields
        self.y_field: str = str(y_field)
        self.stream_name = stream_name
        self.include_failed = bool(include_failed)
        self.include_incomplete = bool(include_incomplete)
        self.auto_refit = bool(auto_refit)
        self.min_points = int(min_points)
        self.fit_kwargs: dict[str, Any] = dict(fit_kwargs or {})
        if refit_kwargs is None:
            refit_kwargs = dict(self.fit_kwargs)
            refit_kwargs["trials"] = min(int(refit_kwargs.get("trials", 5)), 5)
        self.refit_kwargs: dict[str, Any] = dict(refit_kwargs)
        self.study_name: str = study_name or f"bluesky-twin-{uuid.uuid4().hex[:8]}"
        self._fit_function = fit_function
        if condition is not None and not callable(condition):
            raise ValueError(f"condition must be a callable taking the start document, got {condition!r}")
        if status_callback is not None and not callable(status_callback):
            raise ValueError(f"status_callback must be callable, got {status_callback!r}")
        self.condition: Callable[[Mapping[str, Any]], bool] | None = condition
        self.status_callback: Callable[[str], Any] | None = status_callback
        self.quiet_optuna = bool(quiet_optuna)
        self._n_ignored = 0  # runs the condition rejected
        # open runs the condition rejected: start uid -> their descriptor uids (dropped at stop)
        self._rejected: dict[str, list[str]] = {}

        self._cond = threading.Condition()
        self._twin = twin
        self._twin_runs: tuple[str, ...] = tuple(getattr(twin, "metadata", {}).get("training_run_uids", ()) or ())
        self._twin_study: str | None = getattr(twin, "metadata", {}).get("study_name") if twin is not None else None
        self._n_fits = 0
        self._n_attempts = 0  # fit attempts that reached the fit function or its point check
        self._data: dict[str, _RunData] = {}
        self._reports: dict[str, RunReport] = {}
        self._open: dict[str, _RunCollector] = {}
        self._ignored_starts: set[str] = set()
        self._ignored_descriptors: set[str] = set()
        self._by_descriptor: dict[str, _RunCollector] = {}
        self._dirty = False
        self._worker_active = False
        self._training = False
        self._attempted_runs: set[str] = set()  # runs covered by a finished (failed) attempt
        self._fit_failed = False  # the latest fit attempt raised
        self.last_error: BaseException | None = None
        self.errors: list[str] = []  # the first MAX_KEPT_ERRORS faults
        self.n_errors = 0  # all faults
        self.fit_seconds: list[float] = []
        self.last_status: str | None = None  # the latest fit attempt's status line
        self._listeners: list[Callable[[Any, TwinTrainer], None]] = []
        self._thread: threading.Thread | None = None
        self._closed = False
        self._router = RunRouter([self._factory])

    # -- callback entry point ------------------------------------------------------
    def __call__(self, name: str, doc: dict) -> None:
        """Route one document (RunEngine callback signature)."""
        try:
            self._route(name, doc)
        except Exception as exc:
            self._record_error(f"callback failed on {name!r} document", exc)
            try:
                self._account_fault(name, doc)
            except Exception:  # pragma: no cover - accounting must never add a fault
                logger.exception("TwinTrainer: could not account for a fault on a %r document", name)
            raise  # make_class_safe logs and swallows it

    def _account_fault(self, name: str, doc: Mapping[str, Any]) -> None:
        """Attribute the rows a failed document cost to its run (they are counted, not silent)."""
        if name == "descriptor":
            collector = self._open.get(doc.get("run_start"))
            if collector is not None and doc.get("name") == self.stream_name and "uid" in doc:
                collector.mark_descriptor_broken(doc["uid"])
                self._by_descriptor[doc["uid"]] = collector
        elif name in ("event", "event_page"):
            collector = self._by_descriptor.get(doc.get("descriptor"))
            if collector is not None:
                seqs = [doc.get("seq_num")] if name == "event" else list(doc.get("seq_num") or [])
                collector.lose_rows(doc.get("descriptor"), seqs)

    def _route(self, name: str, doc: dict) -> None:
        if name == "start":
            uid = doc["uid"]
            if uid in self._reports or uid in self._ignored_starts:
                logger.warning("TwinTrainer: run %s was already seen; ignoring its documents", uid)
                self._ignored_starts.add(uid)
                return
            if uid in self._rejected:
                return
            if not self._wanted(doc):
                with self._cond:
                    self._n_ignored += 1
                self._rejected[uid] = []
                self._ignored_starts.add(uid)
                return
            if self._open:
                logger.warning(
                    "TwinTrainer: run %s starts while run(s) %s have no stop document yet; "
                    "they are not trained on until they stop (flush() closes them as incomplete)",
                    uid,
                    sorted(self._open),
                )
        elif name == "descriptor":
            if doc.get("run_start") in self._ignored_starts:
                self._ignored_descriptors.add(doc["uid"])
                rejected = self._rejected.get(doc.get("run_start"))
                if rejected is not None:
                    rejected.append(doc["uid"])
                return
        elif name in ("event", "event_page"):
            desc = doc.get("descriptor")
            if desc in self._ignored_descriptors:
                return
            collector = self._by_descriptor.get(desc)
            if collector is not None:
                # Fast path: the collector of this run reads scalar data keys only, so the
                # RunRouter's Filler and its page packing (about 90 % of the cost) are skipped.
                (collector.event if name == "event" else collector.event_page)(doc)
                return
        elif name == "stop":
            if doc.get("run_start") in self._ignored_starts:
                rejected = self._rejected.pop(doc.get("run_start"), None)
                if rejected is not None:  # forget a rejected run: its state must not grow
                    self._ignored_starts.discard(doc["run_start"])
                    self._ignored_descriptors.difference_update(rejected)
                return
        elif name in ("resource", "datum", "datum_page", "stream_resource", "stream_datum"):
            # The twin reads scalar data keys only; external assets are not needed.
            return
        self._router(name, doc)
        if name == "descriptor":
            collector = self._open.get(doc.get("run_start"))
            if collector is not None:
                self._by_descriptor[doc["uid"]] = collector

    def _wanted(self, start_doc: Mapping[str, Any]) -> bool:
        """Apply the trigger condition (a condition that raises rejects the run)."""
        if self.condition is None:
            return True
        try:
            return bool(self.condition(start_doc))
        except Exception as exc:
            self._record_error(f"condition {self.condition!r} failed on run {start_doc.get('uid')}", exc)
            return False

    def _factory(self, name: str, start_doc: dict):
        collector = _RunCollector(self, start_doc)
        with self._cond:
            self._open[collector.uid] = collector
            self._reports[collector.uid] = collector.report
        return [collector], []

    # -- run bookkeeping -----------------------------------------------------------
    def _finish_run(
        self,
        collector: _RunCollector,
        stop_doc: Mapping[str, Any] | None,
        reason: str = "no stop document (closed by flush())",
    ) -> None:
        data = collector.finalize()
        report = collector.report
        if stop_doc is None:
            report.state = INCOMPLETE
            report.reason = reason
            accept = self.include_incomplete
        elif report.exit_status != "success":
            report.state = SKIPPED
            report.reason = f"exit_status={report.exit_status!r} (reason: {stop_doc.get('reason', '')!r})"
            accept = self.include_failed
        else:
            accept = True
        if report.rows_lost:
            logger.warning(
                "TwinTrainer: run %s lost %d row(s) to faults: %s",
                report.uid,
                report.rows_lost,
                self.errors[-1] if self.errors else "",
            )
        if accept:
            if report.n_points == 0:
                report.state = NO_DATA
                if report.rows_lost:
                    report.reason = f"all {report.rows_lost} row(s) lost to faults in the trainer (trainer.errors)"
                elif collector.missing_fields:
                    report.reason = f"stream {self.stream_name!r} lacks data keys {collector.missing_fields}"
                elif report.n_events == 0:
                    report.reason = f"no events in stream {self.stream_name!r} with {self.x_fields + [self.y_field]}"
                else:
                    report.reason = "every reading was masked (NaN/inf)"
                accept = False
            elif report.rows_lost:
                report.state = ACCEPTED_WITH_LOSSES
                report.reason = (
                    f"{report.rows_lost} row(s) lost to faults in the trainer "
                    f"(trainer.errors); trained on the {report.n_points} others"
                )
            else:
                report.state = ACCEPTED
        if report.n_masked:
            logger.warning(
                "TwinTrainer: run %s: masked %d of %d rows with non-finite readings %s",
                report.uid,
                report.n_masked,
                report.n_masked + report.n_points,
                report.masked_by_field,
            )
        if not accept and report.state in (SKIPPED, INCOMPLETE, NO_DATA):
            # a run that never had the twin's data keys was never meant for it: DEBUG only
            unrelated = report.state == NO_DATA and not report.rows_lost and report.n_events == 0
            logger.log(
                logging.DEBUG if unrelated else logging.WARNING,
                "TwinTrainer: not training on run %s: %s %s",
                report.uid,
                report.state,
                report.reason,
            )
        for key in [k for k, c in self._by_descriptor.items() if c is collector]:
            del self._by_descriptor[key]
        with self._cond:
            self._open.pop(collector.uid, None)
            if accept:
                self._data[collector.uid] = data
                self._dirty = True
            self._cond.notify_all()
        if accept and self.auto_refit:
            self._schedule()

    def flush(self, reason: str = "no stop document (closed by flush())") -> list[str]:
        """Close every run that has no stop document yet as ``"incomplete"``.

        Parameters
        ----------
        reason
            The explanation kept in the runs' reports.

        Returns
        -------
        list of str
            The uids of the runs closed.  They are trained on only if
            ``include_incomplete`` is set.
        """
        with self._cond:
            pending = list(self._open.values())
        for collector in pending:
            logger.warning("TwinTrainer: run %s never stopped; closing it as incomplete", collector.uid)
            self._finish_run(collector, None, reason)
        return [c.uid for c in pending]

    # -- fitting ---------------------------------------------------------------------
    def _schedule(self) -> None:
        with self._cond:
            if self._worker_active or self._closed:
                return  # the running worker loop picks up the new data (coalesced)
            self._worker_active = True
        # A daemon thread: a refit still running when the interpreter exits is dropped
        # instead of holding up the exit (its twin was never saved anyway).
        self._thread = threading.Thread(target=self._worker_loop, name="twin-trainer", daemon=True)
        self._thread.start()

    def _worker_loop(self) -> None:
        while True:
            with self._cond:
                if not self._dirty:
                    self._training = False
                    self._worker_active = False
                    self._cond.notify_all()
                    return
                self._dirty = False
                self._training = True
            self._fit_once()

    def refit(self, *, wait: bool = True, timeout: float | None = None) -> Any | None:
        """Fit now on all accepted data (synchronously with ``wait=True``).

        Returns
        -------
        The twin after the fit, or ``None`` if the fit failed (see :attr:`last_error`)
        or did not finish within *timeout*.
        """
        with self._cond:
            self._dirty = True
            before = self._n_fits
        self._schedule()
        if not wait:
            return None
        with self._cond:
            self._cond.wait_for(lambda: not self._worker_active, timeout=timeout)
            return self._twin if self._n_fits > before else None

    def _fit_once(self) -> None:
        with self._cond:
            runs = tuple(self._data)
            parts = [self._data[u] for u in runs]
            previous = self._twin
            # studies are numbered by attempt, not by success: a failed fit may have left
            # completed trials in a persistent storage, which a study of more data refuses
            self._n_attempts += 1
            attempt = self._n_fits + 1
            study_number = self._n_attempts
        n = sum(len(p.y) for p in parts)
        if n < self.min_points:
            self._status(
                f"twin fit {attempt} not attempted: only {n} usable points from {_runs(len(runs))}; "
                f"need >= {self.min_points}"
            )
            with self._cond:
                self._attempted_runs.update(runs)
                self._cond.notify_all()
            return
        frame = self.training_frame(runs)
        fit = self._fit_function
        if fit is None:
            from bluesky_twin.twin import DigitalTwin

            fit = DigitalTwin.fit
        kwargs = dict(self.refit_kwargs if previous is not None else self.fit_kwargs)
        kwargs.setdefault("study_name", f"{self.study_name}-{study_number}")
        kwargs.setdefault("progress", False)
        t0 = time.perf_counter()
        try:
            with quiet_optuna() if self.quiet_optuna else contextlib.nullcontext():
                twin = fit(frame, x=list(self.x_fields), y=self.y_field, warm_start=previous, **kwargs)
        except Exception as exc:  # never propagate: the RunEngine must keep going
            # the traceback goes to DEBUG; the status line is the one ERROR line
            self._record_error(f"twin fit on {n} points from {len(runs)} run(s) failed", exc, logging.DEBUG)
            self._status(
                f"twin fit {attempt} failed on {n} points from {_runs(len(runs))} after "
                f"{time.perf_counter() - t0:.1f} s: {type(exc).__name__}: {exc}",
                logging.ERROR,
            )
            with self._cond:
                self._fit_failed = True
                self._attempted_runs.update(runs)
                self._cond.notify_all()
            return
        seconds = time.perf_counter() - t0
        meta = getattr(twin, "metadata", None)
        if isinstance(meta, dict):
            meta.setdefault("training_run_uids", list(runs))
        study = (meta or {}).get("study_name") if isinstance(meta, dict) else None
        # reported before the twin is published: whoever waits for it has the line too
        self._status(
            f"twin fit {attempt} -> version {getattr(twin, 'version', '?')} on {n} points "
            f"from {_runs(len(runs))} in {seconds:.1f} s"
        )
        with self._cond:
            self._twin = twin
            self._twin_runs = runs
            self._twin_study = study or kwargs.get("study_name")
            self._n_fits = attempt
            self._fit_failed = False
            self.fit_seconds.append(seconds)
            self._attempted_runs.update(runs)
            self._cond.notify_all()
        for listener in list(self._listeners):
            try:
                listener(twin, self)
            except Exception as exc:
                self._record_error(f"refit listener {listener!r} failed", exc)

    def _status(self, line: str, level: int = logging.INFO) -> None:
        """Report one fit attempt: log *line* and pass it to ``status_callback``."""
        self.last_status = line
        logger.log(level, "%s", line)
        if self.status_callback is not None:
            try:
                self.status_callback(line)
            except Exception as exc:
                self._record_error(f"status_callback {self.status_callback!r} failed", exc)

    def _record_error(self, what: str, exc: BaseException, level: int = logging.ERROR) -> None:
        """Keep a fault (``last_error``, ``errors``, ``n_errors``) and log it with its traceback."""
        self.last_error = exc
        self.n_errors += 1
        if len(self.errors) < MAX_KEPT_ERRORS:
            self.errors.append(f"{what}: {type(exc).__name__}: {exc}")
            logger.log(level, "TwinTrainer: %s: %s: %s", what, type(exc).__name__, exc, exc_info=exc)
        else:  # a fault on every event must not fill the memory or the log
            logger.debug("TwinTrainer: %s: %s: %s", what, type(exc).__name__, exc)

    def add_refit_listener(self, listener: Callable[[Any, TwinTrainer], None]) -> None:
        """Call ``listener(twin, trainer)`` on the worker thread after every successful fit."""
        self._listeners.append(listener)

    # -- waiting -------------------------------------------------------------------
    def _state_for(self, newer_than: str | None, run_uid: str | None) -> tuple[bool, Any | None]:
        """(done, twin): done once a suitable twin exists or it cannot come any more."""
        twin = self._twin
        version = getattr(twin, "version", None) if twin is not None else None
        ok = twin is not None and (newer_than is None or version != newer_than)
        if run_uid is not None:
            ok = ok and run_uid in self._twin_runs
        if ok:
            return True, twin
        busy = self._worker_active or run_uid in self._open
        if run_uid is not None and not busy:
            report = self._reports.get(run_uid)
            if report is not None and report.state in (SKIPPED, INCOMPLETE, NO_DATA):
                return True, None  # this run will never be trained on
            if run_uid in self._attempted_runs:
                return True, None  # the fit that included it failed / had too few points
        return False, None

    def poll(self, *, newer_than: str | None = None, run_uid: str | None = None) -> tuple[bool, Any | None]:
        """Non-blocking check used by plans: ``(done, twin_or_None)``.

        ``done`` is true when a twin newer than *newer_than* (and trained on
        *run_uid*, if given) exists, or when it can no longer appear (the run was
        rejected or its fit failed): then the twin is ``None``.
        """
        with self._cond:
            return self._state_for(newer_than, run_uid)

    def wait_for_version(
        self,
        newer_than: str | None = None,
        timeout: float | None = None,
        *,
        run_uid: str | None = None,
    ) -> Any | None:
        """Block (not for use inside a plan) until a fresh twin is available.

        Parameters
        ----------
        newer_than
            A twin version string; wait for any other version.  ``None``: any twin.
        timeout
            Seconds to wait at most (``None``: forever).
        run_uid
            Additionally require that the twin was trained on this run.

        Returns
        -------
        The twin, or ``None`` on timeout or when it can no longer appear (rejected
        run, failed fit: see :attr:`last_error`).  Inside a plan use
        :func:`bluesky_twin.plans.wait_for_twin`, which polls with ``bps.sleep``.
        """
        with self._cond:
            result: list[Any] = [None]

            def ready() -> bool:
                done, twin = self._state_for(newer_than, run_uid)
                result[0] = twin
                return done

            self._cond.wait_for(ready, timeout=timeout)
            return result[0]

    # -- introspection ---------------------------------------------------------------
    @property
    def twin(self) -> Any | None:
        """The current twin (``None`` before the first successful fit)."""
        return self._twin

    @property
    def version(self) -> str | None:
        """Version string of the current twin."""
        twin = self._twin
        return None if twin is None else str(twin.version)

    @property
    def training_run_uids(self) -> list[str]:
        """Uids of the runs the current twin was trained on."""
        return list(self._twin_runs)

    @property
    def twin_study_name(self) -> str | None:
        """Optuna study name of the current twin's fit."""
        return self._twin_study

    @property
    def training(self) -> bool:
        """True while a fit is running or queued."""
        with self._cond:
            return self._worker_active

    @property
    def runs(self) -> dict[str, RunReport]:
        """Report of every run seen, keyed by uid."""
        with self._cond:
            return dict(self._reports)

    @property
    def accepted_run_uids(self) -> list[str]:
        """Runs whose data is part of the training set."""
        with self._cond:
            return list(self._data)

    @property
    def open_run_uids(self) -> list[str]:
        """Runs started but not stopped."""
        with self._cond:
            return list(self._open)

    def provenance(self) -> dict[str, Any]:
        """Start-document metadata describing the current twin (for twin-steered runs)."""
        return {
            "twin_version": self.version,
            "twin_training_run_uids": self.training_run_uids,
            "twin_study_name": self.twin_study_name,
            "twin_x": list(self.x_fields),
            "twin_y": self.y_field,
        }

    @property
    def status(self) -> dict[str, Any]:
        """A JSON-friendly summary (state, version, counts, last error).

        ``state`` is ``"training"`` while a fit runs, ``"failed"`` when the latest fit
        attempt raised, else ``"idle"`` (a later successful fit clears ``"failed"``).
        ``last_error`` and ``n_errors`` keep the history of faults (fits and callback);
        ``rows_lost`` counts rows lost to callback faults, ``runs_with_losses`` the runs
        that lost them.  ``ignored_runs`` counts the runs that ``condition`` rejected,
        ``last_status`` is the latest fit attempt's status line.
        """
        with self._cond:
            reports = list(self._reports.values())
            state = "training" if self._training else ("failed" if self._fit_failed else "idle")
            return {
                "state": state,
                "version": self.version,
                "n_fits": self._n_fits,
                "study_name": self._twin_study,
                "training_run_uids": list(self._twin_runs),
                "n_points": int(sum(len(d.y) for d in self._data.values())),
                "n_masked": int(sum(r.n_masked for r in reports)),
                "n_duplicates": int(sum(r.n_duplicates for r in reports)),
                "rows_lost": int(sum(r.rows_lost for r in reports)),
                "runs_with_losses": [r.uid for r in reports if r.rows_lost],
                "skipped_runs": [r.uid for r in reports if r.state == SKIPPED],
                "incomplete_runs": [r.uid for r in reports if r.state == INCOMPLETE],
                "open_runs": list(self._open),
                "ignored_runs": self._n_ignored,
                "last_status": self.last_status,
                "last_error": None
                if self.last_error is None
                else f"{type(self.last_error).__name__}: {self.last_error}",
                "n_errors": self.n_errors,
                "fit_seconds": list(self.fit_seconds),
            }

    def run_data(self, uid: str) -> dict[str, np.ndarray]:
        """Rows collected from one accepted run: ``{"x", "y", "seq_num", "time"}``."""
        with self._cond:
            data = self._data.get(uid)
        if data is None:
            raise KeyError(f"run {uid} is not part of the training data (see trainer.runs[{uid!r}])")
        return {"x": data.x.copy(), "y": data.y.copy(), "seq_num": data.seq_num.copy(), "time": data.time.copy()}

    def training_frame(self, run_uids: Iterable[str] | None = None):
        """All accepted rows as a :class:`pandas.DataFrame` (x columns, y column)."""
        import pandas as pd

        with self._cond:
            uids = list(self._data) if run_uids is None else list(run_uids)
            parts = [self._data[u] for u in uids]
        if parts:
            x = np.concatenate([p.x for p in parts])
            y = np.concatenate([p.y for p in parts])
        else:
            x = np.empty((0, len(self.x_fields)))
            y = np.empty(0)
        frame = pd.DataFrame(x, columns=self.x_fields)
        frame[self.y_field] = y
        return frame

    def close(self, wait: bool = True, timeout: float | None = None) -> None:
        """Stop scheduling refits; with ``wait=True`` let a running refit finish first.

        Call it before closing the stores that refit listeners (e.g. a
        :class:`~bluesky_twin.callbacks.TwinStream`) write to.
        """
        with self._cond:
            self._closed = True
            thread = self._thread
        if wait and thread is not None:
            thread.join(timeout)

    def __repr__(self) -> str:
        return (
            f"TwinTrainer(x_fields={self.x_fields!r}, y_field={self.y_field!r}, "
            f"version={self.version!r}, runs={len(self._data)})"
        )
