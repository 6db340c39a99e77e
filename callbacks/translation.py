"""Live Exp2Sim translation of INS frames with a domain-of-applicability score.

:class:`TranslationCallback` watches a run's events for a frame field (default
``ins_frame``, the simulated spectrometer's detector) and, **in a background
worker thread**, runs

1. Exp2Sim (removes instrument resolution),
2. the domain-of-applicability score and its zone,
3. the DUQ classifier (trained on unconvolved simulations) on the translated frame.

Results become a ``translation`` stream of the *same run*: an event descriptor
plus one event per translated frame, built with :mod:`event_model` and handed to
the document callbacks registered with :meth:`TranslationCallback.subscribe`
(e.g. a ``TiledWriter``).

Threading and ordering
----------------------
* ``event()`` only copies the frame into a bounded queue and returns.  When the
  queue is full a frame is dropped according to ``drop_policy`` (``"oldest"``:
  discard the oldest waiting frame, keep the newest -- the default for live
  monitoring; ``"newest"``: discard the incoming frame) and counted in
  :attr:`stats` (``dropped``) and in every emitted event (``dropped_frames``).
* Finished results are *emitted on the RunEngine's callback thread* (at the next
  document of the run, and at ``stop``), so the subscribed writer never sees two
  threads at once.
* At ``stop`` the callback waits at most ``stop_timeout`` seconds for the frames
  still queued, emits them, and lets the stop document through; frames not done
  by then are counted as ``unfinished``.  Subscribe this callback to the
  RunEngine **before** the writer that stores the run, so the ``translation``
  stream reaches the writer before the run's stop document::

      translation = TranslationCallback(field="ins_frame")
      writer = make_tiled_writer(client)
      translation.subscribe(writer)
      RE.subscribe(translation)     # first
      RE.subscribe(writer)          # then the writer

Frame checks and accounting
---------------------------
``event()`` checks each frame before it is queued: numeric dtype (integer or
float), the model's number of axes and the **model's frame shape**
(:attr:`TranslationCallback.frame_shape`: ``model.frame_shape`` if the model
has one, else the shape of its domain-score reference frames; for a model that
exposes neither, the shape of the first frame the model translated), no
``+-inf`` and at least one finite pixel (NaN marks masked pixels and is
allowed).  A frame that fails is skipped, logged and counted (``skipped`` plus
``skipped_shape``, ``skipped_nonfinite`` or ``skipped_dtype``); later frames
are still translated.  A frame the model itself rejects with
:class:`~bluesky_twin.errors.InputError` is also counted as skipped
(``skipped_invalid``); any other model failure counts as ``errors``.

Every frame the callback sees ends in exactly one count::

    submitted == processed + dropped + skipped + errors + unfinished

The counts are kept for the whole callback (:attr:`TranslationCallback.stats`)
and for the current or last run (:attr:`TranslationCallback.run_stats`).  Each
emitted event carries the run's counts so far (``dropped_frames``,
``skipped_frames``); with ``summary_stream="translation_summary"`` the callback
also emits, at ``stop``, a one-event stream of that name with the run's final
counts (only in runs that have the frame field).

Memory
------
:attr:`TranslationCallback.results` keeps the last ``keep_results`` results of
the current run (a :class:`collections.deque`), :attr:`~TranslationCallback.flagged`
the last ``keep_results`` untrustworthy ones; every result goes out as a
document to the subscribers, which is where data is stored.

Untrustworthy frames (opt-in)
-----------------------------
Every result is recorded (the last ``keep_results``); those in the 'untrustworthy' zone are also appended to
:attr:`flagged` and set :attr:`untrustworthy` (a :class:`threading.Event` a plan
can poll).  ``on_untrustworthy(result)`` is called from the worker thread, and
``pause_engine=RE`` asks the RunEngine to pause at its next checkpoint
(``RE.request_pause(defer=True)``, thread-safe).

The class is wrapped with :func:`bluesky.callbacks.core.make_class_safe`: an
exception in the callback is logged and never aborts the scan.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from bluesky.callbacks.core import CallbackBase, make_class_safe

__all__ = ["TranslationCallback", "TranslationResult"]

logger = logging.getLogger(__name__)

#: Why a frame was skipped -> its counter in ``stats`` / ``run_stats``.
SKIP_REASONS = ("shape", "nonfinite", "dtype", "invalid")
#: Counters of :attr:`TranslationCallback.stats` and :attr:`TranslationCallback.run_stats`.
COUNTERS = (
    "submitted",
    "processed",
    "emitted",
    "dropped",
    "skipped",
    *(f"skipped_{r}" for r in SKIP_REASONS),
    "errors",
    "unfinished",
    "emit_errors",
)
#: Skipped frames logged as warnings per run (the rest at debug level, then one summary line).
_WARN_SKIPS = 5


@dataclass
class TranslationResult:
    """One translated frame."""

    run_uid: str
    source_uid: str
    source_seq_num: int
    translated: np.ndarray
    score: float
    zone: str
    class_probabilities: np.ndarray
    predicted_class: int
    seconds: float
    time: float = field(default_factory=time.time)


def _class_keys(n_classes: int) -> list[str]:
    """Data keys of the classifier outputs (DUQ kernel values; class 0: J2 < 0, class 1: J2 > 0)."""
    if n_classes == 2:
        return ["p_J2_negative", "p_J2_positive"]
    return [f"p_class_{i}" for i in range(n_classes)]


def _model_frame_shape(model: Any) -> tuple[int, ...] | None:
    """Frame shape the model takes: ``model.frame_shape``, else its reference frames' shape, else ``None``."""
    shape = getattr(model, "frame_shape", None)
    if shape is not None:
        return tuple(int(s) for s in shape)
    reference = getattr(model, "reference", None)
    if isinstance(reference, np.ndarray) and reference.ndim >= 3:
        return tuple(int(s) for s in reference.shape[1:])
    return None


def _model_dims(model: Any, shape: tuple[int, ...] | None) -> int:
    """Number of spatial axes of the model's frames (2 unless the model says otherwise)."""
    dims = getattr(getattr(model, "config", None), "dims", None)
    if isinstance(dims, int):
        return dims
    return len(shape) if shape is not None else 2


class _RunState:
    """Per-run bookkeeping (documents, counters, pending results)."""

    def __init__(self, start_doc: dict[str, Any]):
        self.start = start_doc
        self.uid = start_doc["uid"]
        self.frame_descriptors: set[str] = set()
        self.streams: dict[str, Any] = {}  # event_model's per-stream data-key sets (our streams only)
        self.event_counters: dict[str, int] = {}
        self.bundle: Any = None  # ComposeDescriptorBundle of the translation stream
        self.counts: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self.done: queue.SimpleQueue[TranslationResult] = queue.SimpleQueue()
        self.closed = False

    def accounted(self) -> int:
        """Frames whose fate is known (translated, dropped, skipped, failed, unfinished)."""
        c = self.counts
        return c["processed"] + c["dropped"] + c["skipped"] + c["errors"] + c["unfinished"]


@make_class_safe(logger=logger)
class TranslationCallback(CallbackBase):
    """Translate INS frames off the RunEngine thread and emit a ``translation`` stream.

    Parameters
    ----------
    model
        An :class:`~bluesky_twin.gan.model.Exp2SimModel`, a model directory, or
        ``None`` for the shipped model.
    field
        Data key holding the frames (default ``"ins_frame"``).
    stream_name
        Name of the emitted stream.
    maxsize
        Capacity of the input queue.
    drop_policy
        ``"oldest"`` or ``"newest"`` (see module docs).
    stop_timeout
        Seconds to wait at ``stop`` for queued frames.
    on_untrustworthy
        Optional hook ``f(result)`` called (worker thread) for untrustworthy frames.
    pause_engine
        Optional RunEngine to ask for a deferred pause on an untrustworthy frame.
    classifier
        Which of the model's classifiers to apply to the translated frame.
    keep_mask
        Put NaN back into the translated frame where the input was masked.
    keep_results
        How many results of the current run :attr:`results` (and :attr:`flagged`)
        keep in memory, the most recent ones (default 100; 0 keeps none).  Every
        result is emitted as a document whatever this is.
    summary_stream
        Name of a one-event stream with the run's final counts, emitted at ``stop``
        (e.g. ``"translation_summary"``); ``None`` (default): no summary stream.

    Attributes
    ----------
    stats
        Counters over all runs: ``submitted``, ``processed``, ``emitted``,
        ``dropped``, ``skipped`` (with ``skipped_shape``, ``skipped_nonfinite``,
        ``skipped_dtype``, ``skipped_invalid``), ``errors``, ``unfinished``,
        ``emit_errors``.
    run_stats
        The same counters for the current run, or the last one after its ``stop``.
    frame_shape
        The frame shape the model takes (``None`` until known, see module docs).
    results, flagged
        :class:`collections.deque` of the last ``keep_results`` (untrustworthy) results.
    untrustworthy
        :class:`threading.Event`, set by an untrustworthy frame of the current run.
    """

    def __init__(
        self,
        model: Any = None,
        *,
        field: str = "ins_frame",
        stream_name: str = "translation",
        maxsize: int = 8,
        drop_policy: str = "oldest",
        stop_timeout: float = 10.0,
        on_untrustworthy: Callable[[TranslationResult], None] | None = None,
        pause_engine: Any = None,
        classifier: str = "unconvolved",
        keep_mask: bool = True,
        keep_results: int = 100,
        summary_stream: str | None = None,
    ):
        super().__init__()
        if drop_policy not in ("oldest", "newest"):
            raise ValueError(f"drop_policy must be 'oldest' or 'newest', got {drop_policy!r}")
        if maxsize < 1:
            raise ValueError("maxsize must be >= 1")
        if int(keep_results) < 0:
            raise ValueError(f"keep_results must be >= 0, got {keep_results}")
        if summary_stream is not None and summary_stream == stream_name:
            raise ValueError("summary_stream must differ from stream_name")
        if model is None or isinstance(model, (str, Path)):
            from bluesky_twin.gan.model import Exp2SimModel

            model = Exp2SimModel.load(model)
        if model.scorer is None or "frame" not in model.scorer.thresholds:
            raise ValueError("the model's domain score is not calibrated")
        self.model = model
        self.classifier = model.classifiers.get(classifier)
        self.field = field
        self.stream_name = stream_name
        self.summary_stream = summary_stream
        self.drop_policy = drop_policy
        self.stop_timeout = float(stop_timeout)
        self.on_untrustworthy = on_untrustworthy
        self.pause_engine = pause_engine
        self.keep_mask = keep_mask
        self.keep_results = int(keep_results)
        self.frame_shape: tuple[int, ...] | None = _model_frame_shape(model)
        self._dims = _model_dims(model, self.frame_shape)
        self.stats: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self.flagged: collections.deque[TranslationResult] = collections.deque(maxlen=self.keep_results)
        self.results: collections.deque[TranslationResult] = collections.deque(maxlen=self.keep_results)
        self.untrustworthy = threading.Event()
        self._subscribers: list[Callable[[str, dict], Any]] = []
        self._queue: queue.Queue[tuple[_RunState, str, int, np.ndarray] | None] = queue.Queue(maxsize)
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._run: _RunState | None = None
        self._last_counts: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self._worker: threading.Thread | None = None
        self._closing = False

    @property
    def run_stats(self) -> dict[str, int]:
        """Counters of the current run, or of the last run after its ``stop`` (a copy)."""
        run = self._run
        with self._lock:
            return dict(run.counts if run is not None else self._last_counts)

    # ---------------------------------------------------------------- output
    def subscribe(self, callback: Callable[[str, dict], Any]) -> Callable[[str, dict], Any]:
        """Send the ``translation`` stream's documents to *callback* (e.g. a TiledWriter)."""
        self._subscribers.append(callback)
        return callback

    def _emit(self, name: str, doc: dict[str, Any], run: _RunState | None = None) -> None:
        for cb in list(self._subscribers):
            try:
                cb(name, doc)
            except Exception:  # a failing consumer must not break the others or the scan
                self._count(run, "emit_errors")
                logger.exception("translation: subscriber %r failed on %s", cb, name)

    def _count(self, run: _RunState | None, key: str, n: int = 1) -> None:
        """Add *n* to counter *key* of the totals and of *run* (thread-safe)."""
        with self._idle:
            self.stats[key] += n
            if run is not None:
                run.counts[key] += n
            self._idle.notify_all()

    # ------------------------------------------------------------ documents
    def start(self, doc: dict[str, Any]) -> None:  # noqa: D102
        self._run = _RunState(doc)
        self.flagged = collections.deque(maxlen=self.keep_results)
        self.results = collections.deque(maxlen=self.keep_results)
        self.untrustworthy.clear()
        super().start(doc)

    def descriptor(self, doc: dict[str, Any]) -> None:  # noqa: D102
        run = self._run
        if run is None or doc.get("run_start") != run.uid:
            return
        if doc.get("name") is not None and doc.get("name") in (self.stream_name, self.summary_stream):
            raise RuntimeError(f"the run already has a stream named {doc['name']!r}")
        if self.field in doc.get("data_keys", {}):
            run.frame_descriptors.add(doc["uid"])
        self._emit_ready(run)

    def event(self, doc: dict[str, Any]) -> None:  # noqa: D102
        run = self._run
        if run is None:
            return
        self._emit_ready(run)
        if doc.get("descriptor") not in run.frame_descriptors or self.field not in doc.get("data", {}):
            return
        seq_num = int(doc.get("seq_num", 0))
        self._count(run, "submitted")
        try:
            frame, problem = self._check_frame(doc["data"][self.field])
        except Exception as exc:  # counted, never lost: an unforeseen kind of bad frame
            frame, problem = None, ("invalid", f"{type(exc).__name__}: {exc}")
        if frame is None:
            self._skip(run, seq_num, *problem)
            return
        self._submit((run, doc["uid"], seq_num, frame))

    def stop(self, doc: dict[str, Any]) -> None:  # noqa: D102
        run = self._run
        if run is None or doc.get("run_start") != run.uid:
            return
        deadline = time.monotonic() + self.stop_timeout
        with self._idle:
            while run.accounted() < run.counts["submitted"] and time.monotonic() < deadline:
                self._idle.wait(timeout=max(0.0, min(0.05, deadline - time.monotonic())))
            run.closed = True  # from now on the worker discards this run's frames
            unfinished = run.counts["submitted"] - run.accounted()
        if unfinished > 0:
            self._count(run, "unfinished", unfinished)
            logger.warning(
                "translation: %d frame(s) not finished within stop_timeout=%.1f s", unfinished, self.stop_timeout
            )
        self._emit_ready(run)
        c = run.counts
        if c["skipped"] or c["dropped"] or c["errors"]:
            logger.warning(
                "translation: run %s: %d frame(s) submitted, %d translated, %d dropped, %d skipped "
                "(shape %d, non-finite %d, dtype %d, invalid %d), %d failed",
                run.uid[:8],
                c["submitted"],
                c["processed"],
                c["dropped"],
                c["skipped"],
                c["skipped_shape"],
                c["skipped_nonfinite"],
                c["skipped_dtype"],
                c["skipped_invalid"],
                c["errors"],
            )
        with self._lock:
            self._last_counts = dict(run.counts)
        self._run = None
        if self.summary_stream is not None and run.frame_descriptors:
            try:
                self._emit_summary(run)
            except Exception:
                logger.exception("translation: could not emit the %r stream", self.summary_stream)

    # ----------------------------------------------------------- validation
    def _check_frame(self, value: Any) -> tuple[np.ndarray | None, tuple[str, str]]:
        """``(float32 copy, ("", ""))`` for a usable frame, else ``(None, (reason, message))``."""
        try:
            arr = np.asarray(value)
        except Exception as exc:  # e.g. a ragged list
            return None, ("dtype", f"not an array ({type(exc).__name__}: {exc})")
        if arr.dtype.kind not in "fiu":
            return None, ("dtype", f"dtype {arr.dtype} is not numeric (integer or float)")
        if arr.ndim != self._dims:
            return None, ("shape", f"{arr.ndim} axes {arr.shape}, expected {self._dims}")
        expected = self.frame_shape
        if expected is not None and arr.shape != expected:
            return None, ("shape", f"shape {arr.shape}, the model takes {expected}")
        with np.errstate(over="ignore", invalid="ignore"):
            frame = np.array(arr, dtype=np.float32, copy=True)
        if np.isinf(frame).any():
            return None, ("nonfinite", "contains +-inf (or values beyond float32)")
        if not np.isfinite(frame).any():
            return None, ("nonfinite", "has no finite pixel")
        return frame, ("", "")

    def _skip(self, run: _RunState, seq_num: int, reason: str, message: str) -> None:
        with self._idle:
            self.stats["skipped"] += 1
            self.stats[f"skipped_{reason}"] += 1
            run.counts["skipped"] += 1
            run.counts[f"skipped_{reason}"] += 1
            n = run.counts["skipped"]
            self._idle.notify_all()
        log = logger.warning if n <= _WARN_SKIPS else logger.debug
        log("translation: frame %d of %r skipped: %s", seq_num, self.field, message)

    # --------------------------------------------------------------- worker
    def _ensure_worker(self) -> None:
        if self._worker is None or not self._worker.is_alive():
            self._worker = threading.Thread(target=self._work, name="translation-worker", daemon=True)
            self._worker.start()

    def _submit(self, item: tuple[_RunState, str, int, np.ndarray]) -> None:
        self._ensure_worker()
        run = item[0]
        try:
            self._queue.put_nowait(item)
            return
        except queue.Full:
            pass
        if self.drop_policy == "newest":
            self._count(run, "dropped")
            return
        try:
            old = self._queue.get_nowait()
            if old is not None:
                self._count_drop(old[0])
        except queue.Empty:
            pass
        try:
            self._queue.put_nowait(item)
        except queue.Full:  # the worker cannot have added items: only this thread puts
            self._count(run, "dropped")

    def _count_drop(self, run: _RunState) -> None:
        """Count a frame of *run* dropped from the queue (not if *run* already counted it unfinished)."""
        with self._idle:
            if run.closed:
                return
            self.stats["dropped"] += 1
            run.counts["dropped"] += 1
            self._idle.notify_all()

    def _work(self) -> None:
        from bluesky_twin.errors import InputError

        while True:
            item = self._queue.get()
            if item is None:
                return
            run, src_uid, seq_num, frame = item
            if run.closed:  # counted as unfinished at its stop
                continue
            outcome, result = "errors", None
            expected = self.frame_shape
            if expected is not None and frame.shape != expected:  # queued before the shape was known
                outcome = "shape"
                logger.warning(
                    "translation: frame %d has shape %s, the model takes %s; skipped", seq_num, frame.shape, expected
                )
            else:
                try:
                    result = self._process(run, src_uid, seq_num, frame)
                    outcome = "processed"
                except InputError as exc:
                    outcome = "invalid"
                    logger.warning("translation: the model rejected frame %d: %s; skipped", seq_num, exc)
                except Exception:
                    logger.exception("translation: failed on frame %d", seq_num)
            keys = [outcome] if outcome in ("processed", "errors") else ["skipped", f"skipped_{outcome}"]
            with self._idle:
                if run.closed:  # finished after stop gave up on it: it stays 'unfinished'
                    continue
                for key in keys:
                    self.stats[key] += 1
                    run.counts[key] += 1
                if result is not None:
                    run.done.put(result)
                    if self.frame_shape is None:  # a model that does not tell its frame shape
                        self.frame_shape = tuple(frame.shape)
                self._idle.notify_all()
            if result is not None:
                self._after_result(result)

    def _process(self, run: _RunState, src_uid: str, seq_num: int, frame: np.ndarray) -> TranslationResult:
        t0 = time.perf_counter()
        out = self.model.translate_and_score(frame[None], keep_mask=self.keep_mask)
        translated = out["translated"][0]
        if self.classifier is not None:
            probs = np.asarray(
                self.classifier.predict_proba(np.nan_to_num(translated, nan=0.0)[None])[0], dtype=np.float64
            )
            pred = int(np.argmax(probs))
        else:
            probs, pred = np.full(2, np.nan), -1
        return TranslationResult(
            run.uid,
            src_uid,
            seq_num,
            translated,
            float(out["scores"][0]),
            str(out["zones"][0]),
            probs,
            pred,
            time.perf_counter() - t0,
        )

    def _after_result(self, result: TranslationResult) -> None:
        self.results.append(result)
        if result.zone != "untrustworthy":
            return
        self.flagged.append(result)
        self.untrustworthy.set()
        if self.on_untrustworthy is not None:
            try:
                self.on_untrustworthy(result)
            except Exception:
                logger.exception("translation: on_untrustworthy hook failed")
        if self.pause_engine is not None:
            try:
                if self.pause_engine.state == "running":
                    self.pause_engine.request_pause(defer=True)
            except Exception:
                logger.exception("translation: could not request a pause")

    # ------------------------------------------------------------- emission
    def _descriptor_bundle(self, run: _RunState, shape: tuple[int, ...], n_classes: int) -> Any:
        from event_model import compose_descriptor

        data_keys = {
            f"{self.field}_exp2sim": {
                "source": f"exp2sim:{self.field}",
                "dtype": "array",
                "dtype_numpy": "<f4",
                "shape": list(shape),
                "units": "arb. units",
            },
            "domain_score": {"source": "exp2sim:domain", "dtype": "number", "dtype_numpy": "<f8", "shape": []},
            "domain_zone": {
                "source": "exp2sim:domain",
                "dtype": "string",
                "shape": [],
                "choices": ["trustworthy", "expert opinion", "untrustworthy"],
            },
            **{
                name: {"source": "duq", "dtype": "number", "dtype_numpy": "<f8", "shape": []}
                for name in _class_keys(n_classes)
            },
            "predicted_class": {"source": "duq", "dtype": "integer", "dtype_numpy": "<i8", "shape": []},
            "source_seq_num": {"source": "translation", "dtype": "integer", "dtype_numpy": "<i8", "shape": []},
            "dropped_frames": {"source": "translation", "dtype": "integer", "dtype_numpy": "<i8", "shape": []},
            "skipped_frames": {"source": "translation", "dtype": "integer", "dtype_numpy": "<i8", "shape": []},
            "translation_seconds": {
                "source": "translation",
                "dtype": "number",
                "dtype_numpy": "<f8",
                "shape": [],
                "units": "s",
            },
        }
        meta = self.model.metadata.get("training", {})
        configuration = {
            "exp2sim": {
                "data": {
                    "model_seed": meta.get("seed", -1),
                    "stop_timeout": self.stop_timeout,
                    "trust_threshold": self.model.scorer.thresholds["frame"].trustworthy,
                    "untrust_threshold": self.model.scorer.thresholds["frame"].untrustworthy,
                },
                "timestamps": {
                    "model_seed": time.time(),
                    "stop_timeout": time.time(),
                    "trust_threshold": time.time(),
                    "untrust_threshold": time.time(),
                },
                "data_keys": {
                    "model_seed": {"source": "exp2sim", "dtype": "integer", "shape": []},
                    "stop_timeout": {"source": "exp2sim", "dtype": "number", "shape": []},
                    "trust_threshold": {"source": "exp2sim", "dtype": "number", "shape": []},
                    "untrust_threshold": {"source": "exp2sim", "dtype": "number", "shape": []},
                },
            }
        }
        return compose_descriptor(
            start=run.start,
            streams=run.streams,
            event_counters=run.event_counters,
            name=self.stream_name,
            data_keys=data_keys,
            object_keys={"exp2sim": list(data_keys)},
            configuration=configuration,
            hints={"exp2sim": {"fields": ["domain_score"]}},
        )

    def _emit_ready(self, run: _RunState) -> None:
        """Emit finished results of *run* (called on the RunEngine's callback thread)."""
        while True:
            try:
                result = run.done.get_nowait()
            except queue.Empty:
                return
            if run.bundle is None:
                run.bundle = self._descriptor_bundle(run, result.translated.shape, len(result.class_probabilities))
                self._emit("descriptor", run.bundle.descriptor_doc, run)
            now = time.time()
            with self._lock:
                dropped, skipped = run.counts["dropped"], run.counts["skipped"]
            data = {
                f"{self.field}_exp2sim": result.translated.astype(np.float32),
                "domain_score": result.score,
                "domain_zone": result.zone,
                **dict(zip(_class_keys(len(result.class_probabilities)), map(float, result.class_probabilities))),
                "predicted_class": result.predicted_class,
                "source_seq_num": result.source_seq_num,
                "dropped_frames": dropped,
                "skipped_frames": skipped,
                "translation_seconds": result.seconds,
            }
            event = run.bundle.compose_event(data=data, timestamps={k: result.time for k in data}, time=now)
            self._emit("event", event, run)
            self._count(run, "emitted")

    def _emit_summary(self, run: _RunState) -> None:
        """Emit the ``summary_stream``: one event with the run's final counters."""
        from event_model import compose_descriptor

        keys = [k for k in COUNTERS if k != "emit_errors"]  # emit_errors may still change while emitting
        data_keys = {k: {"source": "translation", "dtype": "integer", "dtype_numpy": "<i8", "shape": []} for k in keys}
        bundle = compose_descriptor(
            start=run.start,
            streams=run.streams,
            event_counters=run.event_counters,
            name=self.summary_stream,
            data_keys=data_keys,
            object_keys={"translation": keys},
            hints={"translation": {"fields": []}},
        )
        self._emit("descriptor", bundle.descriptor_doc, run)
        now = time.time()
        with self._lock:
            data = {k: int(run.counts[k]) for k in keys}
        self._emit("event", bundle.compose_event(data=data, timestamps=dict.fromkeys(data, now), time=now), run)

    def close(self, timeout: float = 5.0) -> None:
        """Stop the worker thread (pending frames are discarded)."""
        if self._worker is not None and self._worker.is_alive():
            try:
                self._queue.put(None, timeout=timeout)
            except queue.Full:
                while True:
                    try:
                        self._queue.get_nowait()
                    except queue.Empty:
                        break
                self._queue.put(None)
            self._worker.join(timeout)
