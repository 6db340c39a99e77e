"""Optuna storages for the twin's hyper-parameter search.

* ``None`` -> a journal file (the embedded default; no server, safe for threads and
  for several processes on one machine).
* ``journal:PATH`` or a path ending in ``.journal`` / ``.log`` -> that journal file.
* ``postgresql://...``, ``mysql+pymysql://...``, ``sqlite:///...`` -> an RDB storage
  with heartbeats, so that trials of a worker that died are marked failed and retried.

Secrets
-------
A database password is never stored or printed: :func:`mask_url` replaces it by
``***`` (``postgresql://user:***@host/db``) in the twin's metadata and in every
message, and :func:`scrub` removes it from driver and Optuna error texts.  The full
URL can come from the environment variable :data:`STORAGE_ENV` (``bluesky-twin fit``
uses it when ``--storage`` is not given), and a masked URL read back from a twin's
metadata is resolved through that variable.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from bluesky_twin._lazy import lazy_exports
from bluesky_twin.errors import InputError

logger = logging.getLogger(__name__)

#: Seconds between heartbeats of running trials in an RDB storage.
HEARTBEAT_INTERVAL_S = 30
#: A running trial whose heartbeat is older than this is considered dead.
GRACE_PERIOD_S = 120
#: How often a trial whose worker died (no heartbeat) is retried as a new trial.
MAX_RETRY = 2
#: Environment variable holding the storage URL (with its password) for ``bluesky-twin fit``.
STORAGE_ENV = "BLUESKY_TWIN_STORAGE"
#: What a password is replaced by.
MASK = "***"

# scheme://user:PASSWORD@host...  (the password runs up to the last "@" before the path)
_URL_PASSWORD = re.compile(r"(?P<pre>//[^/:@\s'\"]*:)(?P<pw>[^/\s'\"]*)@")
# ...?password=PASSWORD&...  (libpq and driver keyword spellings)
_QUERY_PASSWORD = re.compile(r"(?P<pre>[?&;\s](?:password|passwd|pwd)=)(?P<pw>[^&;\s'\"]*)", re.IGNORECASE)


class StorageError(InputError):
    """The study's database failed (the message names it without its password)."""


class StorageLostError(StorageError):
    """The connection to the study's database was lost while the study ran.

    The trials that finished before it are kept in the database; running the same
    fit again (same storage, same study name, same data) resumes the study.
    """


def is_journal(url: str) -> bool:
    """Whether *url* names a journal file rather than a database."""
    return url.startswith("journal:") or url.endswith((".journal", ".log"))


def journal_path(url: str) -> Path:
    """The file behind a journal storage URL."""
    return Path(url[len("journal:") :] if url.startswith("journal:") else url)


def _passwords(url: str) -> list[str]:
    found = [m.group("pw") for m in _URL_PASSWORD.finditer(url)]
    found += [m.group("pw") for m in _QUERY_PASSWORD.finditer(url)]
    out: list[str] = []
    for pw in found:
        if pw and pw != MASK:
            out += [pw, unquote(pw)]
    return sorted(set(out), key=len, reverse=True)


def mask_url(url: str) -> str:
    """*url* with any password replaced by ``***``.

    Parameters
    ----------
    url
        A storage URL (or any text holding URLs).

    Returns
    -------
    str
        ``postgresql://user:***@host/db`` for ``postgresql://user:secret@host/db``;
        URLs without a password are returned unchanged.
    """
    url = _URL_PASSWORD.sub(lambda m: m.group("pre") + (MASK if m.group("pw") else "") + "@", url)
    return _QUERY_PASSWORD.sub(lambda m: m.group("pre") + MASK, url)


def scrub(text: str, url: str | None = None) -> str:
    """*text* with the password of *url* (and of any URL in it) replaced by ``***``.

    Parameters
    ----------
    text
        A message, e.g. the text of a driver's exception.
    url
        The storage URL whose password must not appear.

    Returns
    -------
    str
    """
    if url:
        for pw in _passwords(url):
            text = text.replace(pw, MASK)
    return mask_url(text)


def has_masked_password(url: str) -> bool:
    """Whether *url* carries a password masked by :func:`mask_url`."""
    return any(m.group("pw") == MASK for m in _URL_PASSWORD.finditer(url)) or any(
        m.group("pw") == MASK for m in _QUERY_PASSWORD.finditer(url)
    )


def one_line(exc: BaseException, url: str | None = None) -> str:
    """``Type: first line`` of an exception's text, without the password of *url*."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    first = lines[0] if lines else ""
    first = first.split("(Background on this error at")[0].strip()
    if re.match(r"^\([\w.]+\) ", first):  # sqlalchemy names the driver's error itself
        return scrub(first, url)
    return scrub(f"{type(exc).__name__}: {first}" if first else type(exc).__name__, url)


def resolve_masked(url: str) -> str:
    """The full URL behind a masked one, taken from :data:`STORAGE_ENV`.

    Raises
    ------
    InputError
        The environment variable is unset or names another database.
    """
    if not has_masked_password(url):
        return url
    full = os.environ.get(STORAGE_ENV, "")
    if full and mask_url(full) == url:
        return full
    raise InputError(f"the password of Optuna storage {url} is not stored: set {STORAGE_ENV} to the full URL")


def open_storage(
    url: str,
    *,
    heartbeat_interval: int = HEARTBEAT_INTERVAL_S,
    grace_period: int = GRACE_PERIOD_S,
    max_retry: int = MAX_RETRY,
) -> Any:
    """Open an Optuna storage from a URL (see the module docstring).

    Parameters
    ----------
    url
        ``journal:PATH``, a ``*.journal`` / ``*.log`` path, or a database URL.  A URL
        whose password is masked (``user:***@``) is resolved through :data:`STORAGE_ENV`.
    heartbeat_interval, grace_period, max_retry
        Of a database storage: seconds between heartbeats of a running trial, seconds
        after which a trial without a heartbeat is failed, and how often a failed
        (stale) trial is retried as a new waiting trial.

    Raises
    ------
    InputError
        One line, without the password: unknown scheme, unreachable database,
        a journal file that is not an Optuna journal.
    """
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    if is_journal(url):
        path = journal_path(url)
        if path.is_dir():
            raise InputError(f"Optuna journal {path} is a directory, not a file")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            return JournalStorage(JournalFileBackend(str(path)))
        except (UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
            raise InputError(f"{path} is not an Optuna journal file ({one_line(exc, None)})") from None
        except OSError as exc:
            raise InputError(f"cannot open Optuna journal {path}: {one_line(exc, None)}") from None
    if "://" not in url:
        raise InputError(
            f"unrecognised Optuna storage {mask_url(url)!r}: use journal:PATH, a *.journal file, "
            "or a database URL such as postgresql://user@host/db"
        )
    url = resolve_masked(url)
    import warnings

    try:
        with warnings.catch_warnings():
            # heartbeats have been "experimental" since optuna 2.8; they are what
            # the optuna FAQ recommends for many workers, so accept them quietly
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return _rdb_with_retry(url, heartbeat_interval, grace_period, max_retry)
    except Exception as exc:  # sqlalchemy/driver errors: their text may hold the URL
        raise InputError(f"cannot open Optuna storage {mask_url(url)!r}: {one_line(exc, url)}") from None


def connection_error(exc: BaseException) -> BaseException | None:
    """The database-connection error behind *exc* (its cause/context chain), if any.

    A lost connection shows up as sqlalchemy's ``OperationalError`` /
    ``InterfaceError`` (or a ``DBAPIError`` that invalidated its connection), possibly
    wrapped in Optuna's ``StorageInternalError`` or behind an error Optuna raised while
    handling it.
    """
    import sys

    sa_exc = sys.modules.get("sqlalchemy.exc")
    seen: set[int] = set()
    stack: list[BaseException] = [exc]
    while stack:
        e = stack.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, StorageLostError):
            return e
        if sa_exc is not None:
            if isinstance(e, (sa_exc.OperationalError, sa_exc.InterfaceError)):
                return e
            if isinstance(e, sa_exc.DBAPIError) and getattr(e, "connection_invalidated", False):
                return e
        stack += [c for c in (e.__cause__, e.__context__) if c is not None]
    return None


def _rdb_with_retry(
    url: str,
    heartbeat_interval: int = HEARTBEAT_INTERVAL_S,
    grace_period: int = GRACE_PERIOD_S,
    max_retry: int = MAX_RETRY,
    attempts: int = 4,
) -> Any:
    """Open an RDB storage; retry when workers race to create the schema."""
    import time

    import sqlalchemy.exc

    for attempt in range(attempts):
        try:
            return _rdb(url, heartbeat_interval, grace_period, max_retry)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError, sqlalchemy.exc.OperationalError) as exc:
            # two workers creating optuna's tables at once: one loses the race
            if attempt == attempts - 1 or "connect" in str(exc).lower() and "refused" in str(exc).lower():
                raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")  # pragma: no cover


def _rdb(
    url: str,
    heartbeat_interval: int = HEARTBEAT_INTERVAL_S,
    grace_period: int = GRACE_PERIOD_S,
    max_retry: int = MAX_RETRY,
) -> Any:
    import optuna

    return _storage_class()(
        url,
        heartbeat_interval=heartbeat_interval,
        grace_period=grace_period,
        heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry),
        engine_kwargs={"pool_pre_ping": True},
    )


_CLASSES: dict[str, type] = {}


def _storage_class() -> type:
    """``RDBStorage`` whose heartbeat thread stays quiet when the database goes away.

    Built on first use (optuna is imported lazily); reachable as the module attribute
    ``_TwinRDBStorage`` so that the storage pickles like optuna's own.
    """
    if "_TwinRDBStorage" not in _CLASSES:
        import optuna

        class _TwinRDBStorage(optuna.storages.RDBStorage):
            def record_heartbeat(self, trial_id: int) -> None:
                try:
                    super().record_heartbeat(trial_id)
                except Exception as exc:  # the study's next storage call reports it, in one line
                    if connection_error(exc) is None:
                        raise
                    logger.debug("heartbeat of trial %s not recorded: %s", trial_id, one_line(exc, self.url))

        _TwinRDBStorage.__module__ = __name__
        _TwinRDBStorage.__qualname__ = "_TwinRDBStorage"
        _CLASSES["_TwinRDBStorage"] = _TwinRDBStorage
    return _CLASSES["_TwinRDBStorage"]


# the RDB storage class subclasses optuna's, so it is built on first use (optuna is heavy)
__getattr__, __dir__ = lazy_exports(__name__, {"_TwinRDBStorage": _storage_class})
