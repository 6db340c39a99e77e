"""The trainer service: documents from the 0MQ bus into a ``TwinTrainer``, twins into a model directory.

One process, three threads:

* the **bus thread** runs a :class:`bluesky.callbacks.zmq.RemoteDispatcher`
  subscribed to the proxy; it only puts each ``(name, doc)`` on a queue;
* the **processing thread** (the caller of :meth:`TrainerService.run`) first
  catches up from the store (every stored run that has a stop document is replayed
  through the trainer, the ``bluesky-twin replay`` path), then takes the queued
  bus documents through a :class:`~bluesky_twin.service._gaps.BusRunTracker`
  (gap detection and fill from the store, de-duplication of runs that arrive from
  both) into the trainer;
* the trainer's own **worker thread** fits, and each new twin is published as a new
  version of the model directory, its ``metadata.json`` holding the provenance:
  ``training_run_uids`` and a ``service`` entry (the accepted runs, the training
  data's sha256, the bus, the store, the gap counts).

The bus is subscribed *before* the catch-up starts, so a run that ends while the
store is read is in the queue as well; the tracker drops the second copy.  The
service holds the model directory's writer lock for its lifetime (a second service
on the same directory is refused), and writes its status, atomically, to
:func:`~bluesky_twin.service.status_path` (``MODEL_DIR.service.json``).
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._gaps import BusRunTracker
from ._status import status_path

logger = logging.getLogger(__name__)

__all__ = ["ServiceConfig", "TrainerService"]

#: Runs listed (with their state and counts) in the status file; the counts are exact.
MAX_STATUS_RUNS = 1000
#: Published versions listed in the status file.
MAX_STATUS_PUBLISHED = 20
#: Seconds between two status writes when nothing arrives (its ``updated`` time is a heartbeat).
HEARTBEAT_S = 5.0


@dataclass(frozen=True)
class ServiceConfig:
    """Everything the service needs, checked once by the command line.

    Attributes
    ----------
    bus
        ``HOST:PORT`` of the 0MQ proxy's outgoing (subscriber) side.
    model_dir
        The shared twin model directory the service publishes into.
    x_fields, y_field
        The twin's input data keys and its measured data key.
    tiled
        An embedded store directory or a tiled server URI, or ``None``: then there is
        no catch-up and gaps are counted but not filled.
    api_key
        The tiled server's API key (never written anywhere).
    stream
        Event stream the trainer reads.
    train
        ``False`` collects and checks runs but never fits (load tests).
    fit_kwargs, refit_kwargs
        ``DigitalTwin.fit`` options of the first fit and of warm-start refits.
    min_points, twin_runs_only, include_failed
        As for :class:`~bluesky_twin.callbacks.TwinTrainer`.
    fill_timeout, stop_timeout
        As for :class:`~bluesky_twin.service._gaps.BusRunTracker`.
    grace
        Seconds a running fit may take to finish when the service is stopped.
    status_interval
        Least seconds between two status writes while documents stream in.
    """

    bus: str
    model_dir: Path
    x_fields: list[str]
    y_field: str
    tiled: str | None = None
    api_key: str | None = field(default=None, repr=False)
    stream: str = "primary"
    train: bool = True
    fit_kwargs: Mapping[str, Any] = field(default_factory=dict)
    refit_kwargs: Mapping[str, Any] | None = None
    min_points: int = 8
    twin_runs_only: bool = False
    include_failed: bool = False
    fill_timeout: float = 10.0
    stop_timeout: float = 30.0
    grace: float = 30.0
    status_interval: float = 1.0


def _shown_store(location: str | None) -> str | None:
    """The store location as it may be shown and stored (no user info, query or key)."""
    if location is None:
        return None
    if "://" not in location:
        return os.path.abspath(location)
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(location)
    return urlunsplit((parts.scheme, parts.netloc.rsplit("@", 1)[-1], parts.path, "", ""))


def _rss_mb() -> float | None:
    """Resident memory of this process in MiB (Linux ``/proc``), ``None`` elsewhere."""
    try:
        with open("/proc/self/statm") as fh:
            pages = int(fh.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return round(pages * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)


class TrainerService:
    """Run a :class:`~bluesky_twin.callbacks.TwinTrainer` on the document bus; see the module docstring.

    Parameters
    ----------
    config
        The checked configuration.
    """

    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        self.model_dir = Path(config.model_dir)
        self.status_file = status_path(self.model_dir)
        self.stop_event = threading.Event()
        self._queue: queue.Queue[tuple[str, dict]] = queue.Queue()
        self._state = "starting"
        self._started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self._status_lock = threading.Lock()
        self._published: list[dict[str, Any]] = []
        self._caught_up = 0
        self._bus_error: str | None = None
        self._errors = 0  # bus documents the service failed to take
        self._dispatcher: Any = None
        self._bus_thread: threading.Thread | None = None
        self._client: Any = None
        self.trainer: Any = None
        self.tracker: BusRunTracker | None = None

    # ------------------------------------------------------------------ set-up
    def _initial_twin(self) -> Any | None:
        """The twin already published in the model directory (fields checked), or ``None``."""
        from bluesky_twin.errors import InputError
        from bluesky_twin.modeldir import inspect_path

        info = inspect_path(self.model_dir)
        if info.kind != "model":
            return None
        from bluesky_twin.twin import DigitalTwin

        twin = DigitalTwin.load(self.model_dir)
        if list(twin.x_names) != list(self.config.x_fields) or twin.y_name != self.config.y_field:
            raise InputError(
                f"--model-dir {self.model_dir} holds a twin of {list(twin.x_names)} -> {twin.y_name!r}, "
                f"not {list(self.config.x_fields)} -> {self.config.y_field!r}; choose another directory"
            )
        return twin

    def _make_trainer(self, twin: Any | None) -> Any:
        from bluesky_twin.callbacks.trainer import TwinTrainer, twin_runs_only

        cfg = self.config
        trainer = TwinTrainer(
            cfg.x_fields,
            cfg.y_field,
            twin=twin,
            fit_kwargs=dict(cfg.fit_kwargs),
            refit_kwargs=None if cfg.refit_kwargs is None else dict(cfg.refit_kwargs),
            stream_name=cfg.stream,
            include_failed=cfg.include_failed,
            auto_refit=False,  # switched on after the catch-up: one fit for all stored runs
            min_points=cfg.min_points,
            condition=twin_runs_only if cfg.twin_runs_only else None,
            status_callback=self._fit_line,
        )
        trainer.add_refit_listener(self._publish)
        return trainer

    def _fit_line(self, line: str) -> None:
        print(f"trainer service: {line}", flush=True)

    # ------------------------------------------------------------------ the store
    def _open_store(self) -> None:
        if self.config.tiled is None:
            return
        from bluesky_twin import storage

        self._client = storage.open_tiled(self.config.tiled, api_key=self.config.api_key)

    def _fetch(self, run_uid: str) -> list[tuple[str, dict]] | None:
        """The stored documents of *run_uid* once its stop document is stored, else ``None``."""
        try:
            run = self._client[run_uid]
        except KeyError:
            return None
        if not run.metadata.get("stop"):
            return None
        return [(name, doc) for name, doc in run.documents() if not (name == "stop" and not doc)]

    def _catch_up(self) -> None:
        """Replay every stored run that has a stop document (the ``bluesky-twin replay`` path)."""
        if self._client is None:
            return
        from bluesky_twin.callbacks.trainer import twin_runs_only

        assert self.tracker is not None
        for run in self._client.values():
            if self.stop_event.is_set():
                return
            meta = run.metadata
            start = meta.get("start") or {}
            if not meta.get("stop") or not start.get("uid"):
                continue  # still running (its stop comes on the bus) or crashed
            if self.config.twin_runs_only and not twin_runs_only(start):
                continue
            docs = [(name, doc) for name, doc in run.documents() if not (name == "stop" and not doc)]
            self.tracker.feed_stored(docs)
            self._caught_up += 1
        self.trainer.flush(reason="no stop document in the store")

    # ------------------------------------------------------------------ the bus
    def _start_bus(self) -> None:
        ready = threading.Event()

        def run_bus() -> None:
            from bluesky.callbacks.zmq import RemoteDispatcher

            try:
                dispatcher = RemoteDispatcher(self.config.bus)
                dispatcher.subscribe(lambda name, doc: self._queue.put((name, doc)))
                self._dispatcher = dispatcher
                dispatcher.loop.call_soon(ready.set)
                dispatcher.start()
            except BaseException as exc:  # CancelledError when the service stops
                if not self.stop_event.is_set():
                    self._bus_error = f"{type(exc).__name__}: {exc}"
                    logger.error("trainer service: the bus subscriber stopped: %s", self._bus_error)
                    self.stop_event.set()
            finally:
                ready.set()

        self._bus_thread = threading.Thread(target=run_bus, name="twin-service-bus", daemon=True)
        self._bus_thread.start()
        ready.wait(10.0)

    def _stop_bus(self) -> None:
        dispatcher = self._dispatcher
        if dispatcher is not None and dispatcher._task is not None:
            try:
                dispatcher.loop.call_soon_threadsafe(dispatcher._task.cancel)
            except RuntimeError:  # the loop is already closed
                pass
        if self._bus_thread is not None:
            self._bus_thread.join(5.0)

    # ------------------------------------------------------------------ publishing
    def _publish(self, twin: Any, trainer: Any) -> None:
        """Refit listener (the trainer's worker thread): save *twin* as a new version."""
        meta = getattr(twin, "metadata", None)
        runs = list(trainer.training_run_uids)
        if isinstance(meta, dict):
            meta["training_run_uids"] = runs
            meta["service"] = {
                "accepted_run_uids": runs,
                "data_sha256": meta.get("data_sha256"),
                "bus": self.config.bus,
                "tiled": _shown_store(self.config.tiled),
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "published": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "gaps": self.tracker.gaps.as_dict() if self.tracker is not None else None,
            }
        twin.save(self.model_dir)  # readable by other accounts as the umask allows (see modeldir)
        entry = {
            "model_version": getattr(twin, "model_version", None),
            "version": str(twin.version),
            "runs": len(runs),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        with self._status_lock:
            self._published = (self._published + [entry])[-MAX_STATUS_PUBLISHED:]
        print(
            f"trainer service: published {entry['model_version']} (twin {entry['version']}, "
            f"{len(runs)} run(s)) to {self.model_dir}",
            flush=True,
        )
        self.write_status()

    # ------------------------------------------------------------------ status
    def status(self) -> dict[str, Any]:
        """The service's status (what :meth:`write_status` writes)."""
        trainer, tracker = self.trainer, self.tracker
        tstatus = dict(trainer.status) if trainer is not None else {}
        tstatus["fit_seconds"] = tstatus.get("fit_seconds", [])[-10:]
        runs: dict[str, Any] = {}
        if trainer is not None:
            for uid, rep in list(trainer.runs.items())[-MAX_STATUS_RUNS:]:
                runs[uid] = {"state": rep.state, "n_events": rep.n_events, "n_points": rep.n_points}
        with self._status_lock:
            published = list(self._published)
        return {
            "service": "bluesky-twin trainer serve",
            "state": self._state,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": self._started,
            "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "bus": self.config.bus,
            "tiled": _shown_store(self.config.tiled),
            "model_dir": os.path.abspath(self.model_dir),
            "x_fields": list(self.config.x_fields),
            "y_field": self.config.y_field,
            "train": self.config.train,
            "documents": tracker.documents if tracker is not None else 0,
            "events": tracker.events if tracker is not None else 0,
            "queued": self._queue.qsize(),
            "caught_up_runs": self._caught_up,
            "open_runs": tracker.open_runs if tracker is not None else [],
            "gaps": tracker.gaps.as_dict() if tracker is not None else None,
            "bus_error": self._bus_error,
            "document_errors": self._errors,
            "trainer": tstatus,
            "runs": runs,
            "published": published,
            "rss_mb": _rss_mb(),
        }

    def write_status(self) -> None:
        """Write :meth:`status` to the status file atomically (never raises)."""
        import json

        from bluesky_twin.io_utils import atomic_path, json_default

        try:
            text = json.dumps(self.status(), indent=2, sort_keys=True, default=json_default) + "\n"
            with self._status_lock, atomic_path(self.status_file) as tmp:
                tmp.write_text(text, encoding="utf-8")
        except Exception as exc:
            logger.warning("trainer service: cannot write %s: %s: %s", self.status_file, type(exc).__name__, exc)

    # ------------------------------------------------------------------ running
    def run(self) -> int:
        """Serve until :attr:`stop_event` is set (SIGTERM/SIGINT in the command); returns 0."""
        from bluesky_twin.modeldir import writer_lock

        with writer_lock(self.model_dir, option="--model-dir"):
            twin = self._initial_twin()
            self._open_store()
            try:
                self.trainer = self._make_trainer(twin)
                self.tracker = BusRunTracker(
                    self.trainer,
                    self._fetch if self._client is not None else None,
                    fill_timeout=self.config.fill_timeout,
                    stop_timeout=self.config.stop_timeout,
                )
                self._serve()
            finally:
                if self._client is not None:
                    from bluesky_twin import storage

                    storage.close_store(self._client)
        return 0

    def _serve(self) -> None:
        trainer, tracker = self.trainer, self.tracker
        assert tracker is not None
        self._start_bus()  # subscribed before the catch-up: nothing ends unseen in between
        self._state = "catching_up"
        self.write_status()
        try:
            self._catch_up()
            covered = set(trainer.training_run_uids)
            if self.config.train:
                trainer.auto_refit = True
                if set(trainer.accepted_run_uids) - covered:
                    trainer.refit(wait=False)
            self._state = "listening"
            self.write_status()
            print(
                f"trainer service: listening on {self.config.bus}, {self._caught_up} stored run(s) caught up, "
                f"publishing to {self.model_dir}",
                flush=True,
            )
            self._loop()
        finally:
            self._state = "stopping"
            self._stop_bus()
            self._drain()
            trainer.close(wait=True, timeout=self.config.grace)
            self._state = "stopped"
            self.write_status()

    def _loop(self) -> None:
        tracker = self.tracker
        assert tracker is not None
        last_write = time.monotonic()
        last_check = last_write
        dirty = False
        training = False
        while not self.stop_event.is_set():
            try:
                name, doc = self._queue.get(timeout=0.2)
            except queue.Empty:
                name = None
            if name is not None:
                try:
                    tracker.feed(name, doc)
                except Exception as exc:  # one malformed document must not stop the service
                    self._errors += 1
                    logger.error("trainer service: a %r document failed: %s: %s", name, type(exc).__name__, exc)
                dirty = True
            now = time.monotonic()
            if now - last_check >= 1.0:
                if tracker.check_open():
                    dirty, name = True, "stop"
                last_check = now
            if self.trainer.training != training:  # a fit started or ended: show it at once
                training = not training
                dirty, name = True, "stop"
            if now - last_write >= HEARTBEAT_S:
                dirty = True  # "updated" shows the service is alive
            if dirty and (name in ("start", "stop") or now - last_write >= self.config.status_interval):
                self.write_status()
                last_write, dirty = now, False

    def _drain(self) -> None:
        """Take the documents already queued (no waiting): a run that stopped is not left half-read."""
        tracker = self.tracker
        while True:
            try:
                name, doc = self._queue.get_nowait()
            except queue.Empty:
                return
            try:
                tracker.feed(name, doc)
            except Exception:  # pragma: no cover - the trainer is exception-safe
                logger.exception("trainer service: a document failed while stopping")
