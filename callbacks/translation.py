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

Untrustworthy frames (opt-in)
-----------------------------
Every result is recorded; those in the 'untrustworthy' zone are also appended to
:attr:`flagged` and set :attr:`untrustworthy` (a :class:`threading.Event` a plan
can poll).  ``on_untrustworthy(result)`` is called from the worker thread, and
``pause_engine=RE`` asks the RunEngine to pause at its next checkpoint
(``RE.request_pause(defer=True)``, thread-safe).

The class is wrapped with :func:`bluesky.callbacks.core.make_class_safe`: an
exception in the callback is logged and never aborts the scan.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from bluesky.callbacks.core import CallbackBase, make_class_safe

__all__ = ["TranslationCallback", "TranslationResult"]

logger = logging.getLogger(__name__)


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


class _RunState:
    """Per-run bookkeeping (documents, counters, pending results)."""

    def __init__(self, start_doc: dict[str, Any]):
        self.start = start_doc
        self.uid = start_doc["uid"]
        self.frame_descriptors: set[str] = set()
        self.streams: dict[str, Any] = {}  # event_model's per-stream data-key sets (our stream only)
        self.event_counters: dict[str, int] = {}
        self.bundle: Any = None  # ComposeDescriptorBundle of the translation stream
        self.frame_shape: tuple[int, ...] | None = None
        self.submitted = 0
        self.processed = 0
        self.emitted = 0
        self.dropped = 0
        self.done: "queue.SimpleQueue[TranslationResult]" = queue.SimpleQueue()
        self.closed = False


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
    ):
        super().__init__()
        if drop_policy not in ("oldest", "newest"):
            raise ValueError(f"drop_policy must be 'oldest' or 'newest', got {drop_policy!r}")
        if maxsize < 1:
            raise ValueError("maxsize must be >= 1")
        if model is None or isinstance(model, (str, Path)):
            from bluesky_twin.gan.model import Exp2SimModel

            model = Exp2SimModel.load(model)
        if model.scorer is None or "frame" not in model.scorer.thresholds:
            raise ValueError("the model's domain score is not calibrated")
        self.model = model
        self.classifier = model.classifiers.get(classifier)
        self.field = field
        self.stream_name = stream_name
        self.drop_policy = drop_policy
        self.stop_timeout = float(stop_timeout)
        self.on_untrustworthy = on_untrustworthy
        self.pause_engine = pause_engine
        self.keep_mask = keep_mask
        self.stats = {"submitted": 0, "processed": 0, "emitted": 0, "dropped": 0, "unfinished": 0,
                      "errors": 0, "emit_errors": 0, "skipped_shape": 0}
        self.flagged: list[TranslationResult] = []
        self.results: list[TranslationResult] = []
        self.untrustworthy = threading.Event()
        self._subscribers: list[Callable[[str, dict], Any]] = []
        self._queue: "queue.Queue[tuple[_RunState, str, int, np.ndarray] | None]" = queue.Queue(maxsize)
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._run: _RunState | None = None
        self._worker: threading.Thread | None = None
        self._closing = False

    # ---------------------------------------------------------------- output
    def subscribe(self, callback: Callable[[str, dict], Any]) -> Callable[[str, dict], Any]:
        """Send the ``translation`` stream's documents to *callback* (e.g. a TiledWriter)."""
        self._subscribers.append(callback)
        return callback

    def _emit(self, name: str, doc: dict[str, Any]) -> None:
        for cb in list(self._subscribers):
            try:
                cb(name, doc)
            except Exception:  # a failing consumer must not break the others or the scan
                self.stats["emit_errors"] += 1
                logger.exception("translation: subscriber %r failed on %s", cb, name)

    # ------------------------------------------------------------ documents
    def start(self, doc: dict[str, Any]) -> None:  # noqa: D102
        self._run = _RunState(doc)
        self.flagged = []
        self.results = []
        self.untrustworthy.clear()
        super().start(doc)

    def descriptor(self, doc: dict[str, Any]) -> None:  # noqa: D102
        run = self._run
        if run is None or doc.get("run_start") != run.uid:
            return
        if doc.get("name") == self.stream_name:
            raise RuntimeError(f"the run already has a stream named {self.stream_name!r}")
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
        frame = np.array(doc["data"][self.field], dtype=np.float32, copy=True)
        self._submit((run, doc["uid"], int(doc.get("seq_num", 0)), frame))

    def stop(self, doc: dict[str, Any]) -> None:  # noqa: D102
        run = self._run
        if run is None or doc.get("run_start") != run.uid:
            return
        deadline = time.monotonic() + self.stop_timeout
        with self._idle:
            while run.processed + run.dropped < run.submitted and time.monotonic() < deadline:
                self._idle.wait(timeout=max(0.0, min(0.05, deadline - time.monotonic())))
        run.closed = True
        unfinished = run.submitted - run.dropped - run.processed
        if unfinished > 0:
            self.stats["unfinished"] += unfinished
            logger.warning("translation: %d frame(s) not finished within stop_timeout=%.1f s",
                           unfinished, self.stop_timeout)
        self._emit_ready(run)
        self._run = None

    # --------------------------------------------------------------- worker
    def _ensure_worker(self) -> None:
        if self._worker is None or not self._worker.is_alive():
            self._worker = threading.Thread(target=self._work, name="translation-worker", daemon=True)
            self._worker.start()

    def _submit(self, item: tuple[_RunState, str, int, np.ndarray]) -> None:
        self._ensure_worker()
        run = item[0]
        run.submitted += 1
        self.stats["submitted"] += 1
        try:
            self._queue.put_nowait(item)
            return
        except queue.Full:
            pass
        if self.drop_policy == "newest":
            self._count_drop(run)
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
            self._count_drop(run)

    def _count_drop(self, run: _RunState) -> None:
        with self._idle:
            run.dropped += 1
            self.stats["dropped"] += 1
            self._idle.notify_all()

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            run, src_uid, seq_num, frame = item
            try:
                if not run.closed:
                    result = self._process(run, src_uid, seq_num, frame)
                    if result is not None:
                        run.done.put(result)
                        self._after_result(result)
            except Exception:
                self.stats["errors"] += 1
                logger.exception("translation: failed on a frame")
            finally:
                with self._idle:
                    run.processed += 1
                    self._idle.notify_all()

    def _process(self, run: _RunState, src_uid: str, seq_num: int, frame: np.ndarray) -> TranslationResult | None:
        if run.frame_shape is None:
            run.frame_shape = frame.shape
        elif frame.shape != run.frame_shape:
            self.stats["skipped_shape"] += 1
            logger.warning("translation: frame %d has shape %s, expected %s; skipped",
                           seq_num, frame.shape, run.frame_shape)
            return None
        t0 = time.perf_counter()
        out = self.model.translate_and_score(frame[None], keep_mask=self.keep_mask)
        translated = out["translated"][0]
        if self.classifier is not None:
            probs = np.asarray(self.classifier.predict_proba(np.nan_to_num(translated, nan=0.0)[None])[0],
                               dtype=np.float64)
            pred = int(np.argmax(probs))
        else:
            probs, pred = np.full(2, np.nan), -1
        self.stats["processed"] += 1
        return TranslationResult(run.uid, src_uid, seq_num, translated, float(out["scores"][0]),
                                 str(out["zones"][0]), probs, pred, time.perf_counter() - t0)

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
            f"{self.field}_exp2sim": {"source": f"exp2sim:{self.field}", "dtype": "array",
                                      "dtype_numpy": "<f4", "shape": list(shape), "units": "arb. units"},
            "domain_score": {"source": "exp2sim:domain", "dtype": "number", "dtype_numpy": "<f8", "shape": []},
            "domain_zone": {"source": "exp2sim:domain", "dtype": "string", "shape": [],
                            "choices": ["trustworthy", "expert opinion", "untrustworthy"]},
            **{name: {"source": "duq", "dtype": "number", "dtype_numpy": "<f8", "shape": []}
               for name in _class_keys(n_classes)},
            "predicted_class": {"source": "duq", "dtype": "integer", "dtype_numpy": "<i8", "shape": []},
            "source_seq_num": {"source": "translation", "dtype": "integer", "dtype_numpy": "<i8", "shape": []},
            "dropped_frames": {"source": "translation", "dtype": "integer", "dtype_numpy": "<i8", "shape": []},
            "translation_seconds": {"source": "translation", "dtype": "number", "dtype_numpy": "<f8",
                                    "shape": [], "units": "s"},
        }
        meta = self.model.metadata.get("training", {})
        configuration = {"exp2sim": {
            "data": {"model_seed": meta.get("seed", -1), "stop_timeout": self.stop_timeout,
                     "trust_threshold": self.model.scorer.thresholds["frame"].trustworthy,
                     "untrust_threshold": self.model.scorer.thresholds["frame"].untrustworthy},
            "timestamps": {"model_seed": time.time(), "stop_timeout": time.time(),
                           "trust_threshold": time.time(), "untrust_threshold": time.time()},
            "data_keys": {
                "model_seed": {"source": "exp2sim", "dtype": "integer", "shape": []},
                "stop_timeout": {"source": "exp2sim", "dtype": "number", "shape": []},
                "trust_threshold": {"source": "exp2sim", "dtype": "number", "shape": []},
                "untrust_threshold": {"source": "exp2sim", "dtype": "number", "shape": []},
            }}}
        return compose_descriptor(
            start=run.start, streams=run.streams, event_counters=run.event_counters, name=self.stream_name,
            data_keys=data_keys, object_keys={"exp2sim": list(data_keys)}, configuration=configuration,
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
                self._emit("descriptor", run.bundle.descriptor_doc)
            now = time.time()
            data = {
                f"{self.field}_exp2sim": result.translated.astype(np.float32),
                "domain_score": result.score,
                "domain_zone": result.zone,
                **dict(zip(_class_keys(len(result.class_probabilities)), map(float, result.class_probabilities))),
                "predicted_class": result.predicted_class,
                "source_seq_num": result.source_seq_num,
                "dropped_frames": run.dropped,
                "translation_seconds": result.seconds,
            }
            event = run.bundle.compose_event(data=data, timestamps={k: result.time for k in data}, time=now)
            self._emit("event", event)
            run.emitted += 1
            self.stats["emitted"] += 1

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
