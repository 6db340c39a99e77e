"""Optuna storages for the twin's hyper-parameter search.

* ``None`` -> a journal file (the embedded default; no server, safe for threads and
  for several processes on one machine).
* ``journal:PATH`` or a path ending in ``.journal`` / ``.log`` -> that journal file.
* ``postgresql://...``, ``mysql+pymysql://...``, ``sqlite:///...`` -> an RDB storage
  with heartbeats, so that trials of a worker that died are marked failed and retried.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from bluesky_twin.errors import InputError

#: Seconds between heartbeats of running trials in an RDB storage.
HEARTBEAT_INTERVAL_S = 30
#: A running trial whose heartbeat is older than this is considered dead.
GRACE_PERIOD_S = 120


def is_journal(url: str) -> bool:
    """Whether *url* names a journal file rather than a database."""
    return url.startswith("journal:") or url.endswith((".journal", ".log"))


def journal_path(url: str) -> Path:
    """The file behind a journal storage URL."""
    return Path(url[len("journal:"):] if url.startswith("journal:") else url)


def open_storage(url: str) -> Any:
    """Open an Optuna storage from a URL (see the module docstring)."""
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    if is_journal(url):
        path = journal_path(url)
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    if "://" not in url:
        raise InputError(
            f"unrecognised Optuna storage {url!r}: use journal:PATH, a *.journal file, "
            "or a database URL such as postgresql://user@host/db"
        )
    import warnings

    try:
        with warnings.catch_warnings():
            # heartbeats have been "experimental" since optuna 2.8; they are what
            # the optuna FAQ recommends for many workers, so accept them quietly
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return _rdb_with_retry(url)
    except Exception as exc:  # sqlalchemy/driver errors
        raise InputError(f"cannot open Optuna storage {url!r}: {exc}") from exc


def _rdb_with_retry(url: str, attempts: int = 4) -> Any:
    """Open an RDB storage; retry when workers race to create the schema."""
    import time

    import sqlalchemy.exc

    for attempt in range(attempts):
        try:
            return _rdb(url)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError,
                sqlalchemy.exc.OperationalError) as exc:
            # two workers creating optuna's tables at once: one loses the race
            if attempt == attempts - 1 or "connect" in str(exc).lower() and "refused" in str(exc).lower():
                raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")  # pragma: no cover


def _rdb(url: str) -> Any:
    import optuna

    return optuna.storages.RDBStorage(
            url,
            heartbeat_interval=HEARTBEAT_INTERVAL_S,
            grace_period=GRACE_PERIOD_S,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=2),
            engine_kwargs={"pool_pre_ping": True},
        )
