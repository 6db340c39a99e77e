"""Writing runs into a store: ``bluesky_tiled_plugins.TiledWriter``, one writer at a time per store."""

from __future__ import annotations

import threading
from typing import Any

from ..errors import InputError

__all__ = ["DEFAULT_BATCH_SIZE", "SerializedWriter", "make_tiled_writer"]

#: Events a TiledWriter from :func:`make_tiled_writer` holds before writing them.
DEFAULT_BATCH_SIZE = 50


def make_tiled_writer(client: Any, *, batch_size: int = DEFAULT_BATCH_SIZE, **kwargs: Any) -> Any:
    """A ``bluesky_tiled_plugins.TiledWriter`` writing into *client*; subscribe it to the RunEngine.

    Parameters
    ----------
    client
        A writable tiled container client (from :func:`open_store` or :func:`open_tiled`).
    batch_size
        Events held in memory before they are written. TiledWriter's own default
        (10000) writes a run's events only at its stop document, so a crash mid-run
        would lose them all; the default here writes every 50 events.  ``1`` writes each
        event at once (costly for fast zero-delay scans), larger values are faster.
    **kwargs
        Passed to ``TiledWriter`` (``backup_directory``, ``validate``...).

    Notes
    -----
    Do not wrap it with ``make_callback_safe``: a failing data writer must not be silent.
    """
    from bluesky_tiled_plugins import TiledWriter

    if int(batch_size) < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size!r}")
    return SerializedWriter(TiledWriter(client, batch_size=int(batch_size), **kwargs), _write_lock(client))


_WRITE_LOCKS_GUARD = threading.Lock()


def _write_lock(client: Any) -> threading.Lock:
    """The lock shared by every writer of *client*'s store (kept on its tiled Context)."""
    holder = getattr(client, "context", client)
    with _WRITE_LOCKS_GUARD:
        lock = getattr(holder, "_bluesky_twin_write_lock", None)
        if lock is None:
            lock = threading.Lock()
            holder._bluesky_twin_write_lock = lock
        return lock


class SerializedWriter:
    """A document callback whose calls take turns with the other writers of its store.

    Several writers may feed one store from different threads -- the RunEngine's
    writer and, say, a :class:`~bluesky_twin.callbacks.TwinStream` writing derived
    runs from the trainer's worker thread.  An embedded SQLite store takes one writer
    at a time ("database is locked" otherwise), so :func:`make_tiled_writer` gives all
    writers of one client a shared lock.  Attributes are those of the wrapped writer.
    """

    def __init__(self, writer: Any, lock: threading.Lock) -> None:
        self._writer = writer
        self._lock = lock

    def __call__(self, name: str, doc: dict) -> Any:
        with self._lock:
            return self._writer(name, doc)

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._writer, attr)
