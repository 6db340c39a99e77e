"""``PublishedTwinSource``: the twin a trainer service publishes, as a ``TwinSource`` for the plans.

On the RunEngine host the twin is not trained: a trainer service (``bluesky-twin
trainer serve``) publishes each refit as a new version of a shared model directory.
:class:`PublishedTwinSource` follows that directory and offers what the in-process
:class:`~bluesky_twin.callbacks.TwinTrainer` offers (the
:class:`~bluesky_twin.protocols.TwinSource` protocol), so the plans
(``coarse_to_fine``, ``twin_adaptive_scan``, ``wait_for_twin``) take either.

A watcher thread reads the directory's ``CURRENT`` pointer every
``refresh_interval`` seconds and loads a version when the pointer changes
(:func:`bluesky_twin.modeldir.load_model`: one whole, checksummed version, never a
half-written one).  The RunEngine thread never loads anything: :meth:`poll` reads
what the watcher holds.  Which runs a twin was trained on comes from its metadata
(``training_run_uids``); whether a run will never be trained on (rejected, no data)
comes from the service's status file.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from ._status import read_status

logger = logging.getLogger(__name__)

__all__ = ["PublishedTwinSource"]

#: Run states (in the service's status) of runs that will never be trained on.
_NEVER = ("skipped", "incomplete", "no_data")


class PublishedTwinSource:
    """The latest twin published in a model directory, with the ``TwinSource`` interface.

    Parameters
    ----------
    model_dir
        The model directory a trainer service publishes into (it may not exist yet).
    x_fields, y_field
        The twin's data keys.  Default: those of the service's status file, else of
        the published twin's metadata.
    refresh_interval
        Seconds between two looks at the directory's ``CURRENT`` pointer.
    store
        The tiled catalog the runs are written to (from
        :func:`~bluesky_twin.storage.open_tiled`).  With it the source is a
        :class:`~bluesky_twin.protocols.RecordingTwinSource`: :meth:`run_data` reads a
        run's readings back from the store (``coarse_to_fine`` compares the fine run
        with the twin).
    stream
        The event stream :meth:`run_data` reads (default ``"primary"``).

    Raises
    ------
    InputError
        If the fields are not given and neither the status file nor a published twin
        names them; or *refresh_interval* is not a positive number.

    Notes
    -----
    Thread-safety: every member may be used from any thread.  The watcher is a daemon
    thread; :meth:`close` stops it.
    """

    def __init__(
        self,
        model_dir: str | os.PathLike,
        *,
        x_fields: list[str] | None = None,
        y_field: str | None = None,
        refresh_interval: float = 0.5,
        store: Any | None = None,
        stream: str = "primary",
    ) -> None:
        from bluesky_twin.errors import InputError

        self.model_dir = Path(model_dir)
        try:
            interval = float(refresh_interval)
        except (TypeError, ValueError):
            interval = float("nan")
        if not interval > 0:
            raise InputError(f"refresh_interval must be a positive number of seconds; got {refresh_interval!r}")
        self.refresh_interval = interval
        if x_fields is None or y_field is None:
            found = self._fields_on_disk()
            if found is None:
                raise InputError(
                    f"{self.model_dir}: no published twin and no service status name the twin's fields; "
                    "pass x_fields=[...] and y_field=..."
                )
            x_fields = list(x_fields) if x_fields is not None else found[0]
            y_field = y_field if y_field is not None else found[1]
        self._store = store
        self.stream = str(stream)
        self._x_fields = [str(f) for f in x_fields]
        self._y_field = str(y_field)
        self._cond = threading.Condition()
        self._twin: Any | None = None
        self._pointer: bytes | None = None
        self._runs: tuple[str, ...] = ()
        self._last_error: str | None = None
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="published-twin-watcher", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ the directory
    def _fields_on_disk(self) -> tuple[list[str], str] | None:
        status = read_status(self.model_dir)
        if status and status.get("x_fields") and status.get("y_field"):
            return [str(f) for f in status["x_fields"]], str(status["y_field"])
        try:
            pointer = json.loads((self.model_dir / "CURRENT").read_text())
            meta = json.loads((self.model_dir / "versions" / pointer["version"] / "metadata.json").read_text())
            return [str(f) for f in meta["x_names"]], str(meta["y_name"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _read_pointer(self) -> bytes | None:
        try:
            return (self.model_dir / "CURRENT").read_bytes()
        except OSError:
            return None

    def refresh(self) -> bool:
        """Load the published twin if ``CURRENT`` changed since the last look; whether it did.

        Called by the watcher thread; call it yourself (never on the RunEngine thread:
        it imports torch and reads the model) to look at once.
        """
        pointer = self._read_pointer()
        with self._cond:
            if pointer is None or pointer == self._pointer:
                return False
        from bluesky_twin.errors import ModelFileError
        from bluesky_twin.twin import DigitalTwin

        try:
            twin = DigitalTwin.load(self.model_dir)
        except (ModelFileError, OSError) as exc:
            with self._cond:
                self._last_error = f"{type(exc).__name__}: {exc}"
            logger.warning("PublishedTwinSource: cannot load %s: %s", self.model_dir, exc)
            return False
        if list(twin.x_names) != self._x_fields or twin.y_name != self._y_field:
            with self._cond:
                self._pointer = pointer
                self._last_error = (
                    f"{self.model_dir} holds a twin of {list(twin.x_names)} -> {twin.y_name!r}, "
                    f"not {self._x_fields} -> {self._y_field!r}"
                )
            logger.warning("PublishedTwinSource: %s", self._last_error)
            return False
        runs = tuple(str(u) for u in (twin.metadata.get("training_run_uids") or ()))
        with self._cond:
            self._twin = twin
            self._runs = runs
            self._pointer = pointer
            self._last_error = None
            self._cond.notify_all()
        return True

    def _watch(self) -> None:
        while not self._closed.is_set():
            try:
                self.refresh()
            except Exception as exc:  # the watcher must keep watching
                with self._cond:
                    self._last_error = f"{type(exc).__name__}: {exc}"
                logger.exception("PublishedTwinSource: refresh failed")
            self._closed.wait(self.refresh_interval)

    def close(self) -> None:
        """Stop the watcher thread."""
        self._closed.set()
        self._thread.join(5.0)

    # ------------------------------------------------------------------ TwinSource
    @property
    def x_fields(self) -> list[str]:
        """Data keys of the twin's inputs, in order."""
        return list(self._x_fields)

    @property
    def y_field(self) -> str:
        """Data key of the modelled quantity."""
        return self._y_field

    @property
    def twin(self) -> Any | None:
        """The latest published twin loaded so far (``None`` before the first)."""
        return self._twin

    @property
    def version(self) -> str | None:
        """Version of :attr:`twin`."""
        twin = self._twin
        return None if twin is None else str(twin.version)

    @property
    def training_run_uids(self) -> list[str]:
        """Uids of the runs the current twin was trained on (from its metadata)."""
        return list(self._runs)

    @property
    def model_version(self) -> str | None:
        """The model-directory version of :attr:`twin` (``"v000003"``)."""
        twin = self._twin
        return None if twin is None else getattr(twin, "model_version", None)

    @property
    def service_status(self) -> dict[str, Any] | None:
        """The trainer service's last status (its status file), ``None`` without one."""
        return read_status(self.model_dir)

    @property
    def status(self) -> dict[str, Any]:
        """``state`` (the service's, or ``"no service"``), ``version``, ``model_version``,
        ``last_error`` (loading, or the service's trainer) and the service's ``gaps``."""
        service = read_status(self.model_dir) or {}
        trainer = service.get("trainer") or {}
        with self._cond:
            error = self._last_error or trainer.get("last_error")
            return {
                "state": service.get("state", "no service"),
                "version": self.version,
                "model_version": self.model_version,
                "training_run_uids": list(self._runs),
                "last_error": error,
                "gaps": service.get("gaps"),
                "model_dir": str(self.model_dir),
            }

    @property
    def runs(self) -> dict[str, dict[str, Any]]:
        """The service's report of each run it saw (its last 1000): ``{uid: {"state",
        "n_events", "n_points"}}``, from its status file."""
        service = read_status(self.model_dir) or {}
        return dict(service.get("runs") or {})

    def run_data(self, uid: str) -> dict[str, Any]:
        """``{"x": (n, len(x_fields)), "y": (n,)}`` of run *uid*, read back from the store.

        Rows with a non-finite value are dropped, as the trainer drops them.  The read is
        one request to the store (a plan that calls it waits for it).

        Raises
        ------
        KeyError
            No store was given, the store does not hold the run, or its stream lacks the
            twin's fields.
        """
        import numpy as np

        from bluesky_twin.errors import InputError
        from bluesky_twin.storage import read_stream

        if self._store is None:
            raise KeyError(f"run {uid}: PublishedTwinSource reads run data from the store; none was given (store=...)")
        fields = [*self._x_fields, self._y_field]
        try:
            columns = read_stream(self._store[uid], self.stream, fields)
        except (KeyError, InputError) as exc:
            raise KeyError(f"run {uid}: no {self.stream!r} readings of {fields} in the store ({exc})") from None
        x = np.column_stack([np.asarray(columns[f], dtype=float).reshape(-1) for f in self._x_fields])
        y = np.asarray(columns[self._y_field], dtype=float).reshape(-1)
        keep = np.isfinite(x).all(axis=1) & np.isfinite(y)
        return {"x": x[keep], "y": y[keep]}

    def _state_for(self, newer_than: str | None, run_uid: str | None) -> tuple[bool, Any | None]:
        twin = self._twin
        ok = twin is not None and (newer_than is None or str(twin.version) != newer_than)
        if run_uid is not None:
            ok = ok and run_uid in self._runs
        if ok:
            return True, twin
        if run_uid is not None:
            service = read_status(self.model_dir) or {}
            state = ((service.get("runs") or {}).get(run_uid) or {}).get("state")
            if state in _NEVER:
                return True, None  # the service will never train on this run
        return False, None

    def poll(self, *, newer_than: str | None = None, run_uid: str | None = None) -> tuple[bool, Any | None]:
        """Non-blocking: ``(done, twin)``, as :meth:`TwinTrainer.poll
        <bluesky_twin.callbacks.TwinTrainer.poll>`; ``done`` with ``None`` when the
        service reports that *run_uid* will never be trained on."""
        with self._cond:
            return self._state_for(newer_than, run_uid)

    def wait_for_version(
        self, newer_than: str | None = None, timeout: float | None = None, *, run_uid: str | None = None
    ) -> Any | None:
        """Block (never inside a plan) until :meth:`poll` is done; the twin, or ``None`` on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                done, twin = self._state_for(newer_than, run_uid)
                if done:
                    return twin
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return None
                # woken by a new twin; the status file (rejected runs) is read every interval
                self._cond.wait(self.refresh_interval if left is None else min(left, self.refresh_interval))

    def provenance(self) -> dict[str, Any]:
        """Start-document metadata of the current twin (as the trainer's), plus its model version."""
        twin = self._twin
        meta = getattr(twin, "metadata", {}) if twin is not None else {}
        return {
            "twin_version": self.version,
            "twin_training_run_uids": list(self._runs),
            "twin_study_name": meta.get("study_name"),
            "twin_x": list(self._x_fields),
            "twin_y": self._y_field,
            "twin_model_version": self.model_version,
        }

    def __repr__(self) -> str:
        return f"PublishedTwinSource({str(self.model_dir)!r}, version={self.version!r})"
