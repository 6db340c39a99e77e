"""Embedded tiled storage of Bluesky runs, TiledWriter wiring, and replay of stored runs.

The default store is *embedded*: an SQLite catalog (``catalog.db``), an SQLite table
store (``tabular.db``) and a data directory (``data/``, zarr arrays) inside one
directory, served in-process by tiled's ASGI app with no socket and no server
(``Context.from_app``).  A tiled server URI (with an API key) works the same way
through :func:`open_tiled`.  For several writers on several machines the catalog can
live in PostgreSQL (``open_store(directory, catalog_uri="postgresql+asyncpg://...")``).

Documents are written with :func:`make_tiled_writer` (``bluesky_tiled_plugins.TiledWriter``;
not the deprecated copy inside bluesky) and replayed with :func:`iter_run_documents`,
which relies on the ``application/json-seq`` exporter registered here for
``BlueskyRun`` nodes (without it ``run.documents()`` answers HTTP 406).

Relocation: tiled records the data of a run (rows in ``tabular.db``, arrays under
``data/``) as absolute URIs in the catalog.  Every recorded path lies inside the
store directory, so what the catalog holds is, in effect, relative to the directory it
was written in: when a store is opened from another place (copied, moved, restored
from a backup), :func:`build_store_app` rebases those URIs onto the directory it is
opened from before tiled reads them (:func:`rebase_store_paths`).  Stores written
before this rule work too: their URIs are rebased the same way.

Start-up cost: initialising a tiled catalog runs ``python -m tiled catalog init`` in a
subprocess (about 5 s). :func:`open_store` does that once per tiled version, caches the
empty initialised ``catalog.db`` as a template in the user cache directory
(``$BLUESKY_TWIN_CACHE_DIR``, else ``$XDG_CACHE_HOME/bluesky-twin``, else
``~/.cache/bluesky-twin``), and copies it into every new store.

All tiled imports are lazy: importing this module is cheap.
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import sqlite3
import tempfile
import threading
import warnings
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import InputError
from .io_utils import atomic_path

__all__ = [
    "BLUESKY_CATALOG_SPECS",
    "build_store_app",
    "catalog_template",
    "close_store",
    "default_store_directory",
    "documents_equal",
    "iter_run_documents",
    "jsonable_document",
    "last_scan_id",
    "make_tiled_writer",
    "open_store",
    "open_tiled",
    "read_stream",
    "rebase_store_paths",
    "replay_comparable",
    "select_runs",
    "serve_store",
]

#: Specs of the root node: makes the client a ``CatalogOfBlueskyRuns`` (search by ``Key("sample")``, scan ids).
BLUESKY_CATALOG_SPECS = [{"name": "CatalogOfBlueskyRuns", "version": "3.0"}]

CATALOG_FILE = "catalog.db"
TABULAR_FILE = "tabular.db"
DATA_DIR = "data"

#: Events a TiledWriter from :func:`make_tiled_writer` holds before writing them.
DEFAULT_BATCH_SIZE = 50

_template_lock = threading.Lock()
_registry_lock = threading.Lock()
_json_seq_registered = False


# ----------------------------------------------------------------------------------------
# opening stores
# ----------------------------------------------------------------------------------------
def default_store_directory() -> Path:
    """Directory of the user's default embedded store.

    ``$BLUESKY_TWIN_TILED_DIR`` if set, else ``$XDG_DATA_HOME/bluesky-twin/tiled``, else
    ``~/.local/share/bluesky-twin/tiled``.
    """
    explicit = os.environ.get("BLUESKY_TWIN_TILED_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
    return base / "bluesky-twin" / "tiled"


def last_scan_id(client: Any) -> int:
    """``scan_id`` of the most recent run in *client* (0 if empty), to continue numbering.

    Use ``RE.md["scan_id"] = last_scan_id(catalog)`` after opening a persistent store.
    """
    if len(client) == 0:
        return 0
    try:
        start = client.values().last().metadata.get("start", {})
    except (KeyError, IndexError):
        return 0
    scan_id = start.get("scan_id", 0)
    return int(scan_id) if isinstance(scan_id, (int, float)) and math.isfinite(scan_id) else 0


def _cache_dir() -> Path:
    explicit = os.environ.get("BLUESKY_TWIN_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "bluesky-twin"


def _sqlite_uri(path: Path) -> str:
    return f"sqlite:///{path}"


def _alembic_version(db_path: Path) -> str | None:
    """The alembic revision stamped in an SQLite catalog, or None if it is not a catalog."""
    try:
        connection = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    except sqlite3.Error:
        return None
    try:
        row = connection.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.Error:
        return None
    finally:
        connection.close()
    return None if row is None else str(row[0])


def _initialise_catalog(uri: str) -> None:
    """Run tiled's (subprocess-based) catalog initialisation for *uri*."""
    from tiled.catalog import from_uri

    from_uri(uri, init_if_not_exists=True)


def catalog_template() -> Path:
    """Path of a ready, empty, initialised SQLite catalog for this tiled version (built once).

    Returns
    -------
    pathlib.Path
        A file to *copy* (never open it directly: it must stay empty).
    """
    import tiled

    template = _cache_dir() / f"tiled-{tiled.__version__}-empty-catalog.db"
    with _template_lock:
        if template.is_file() and _alembic_version(template) is not None:
            return template
        template.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="bluesky-twin-template-") as scratch:
            fresh = Path(scratch) / CATALOG_FILE
            _initialise_catalog(_sqlite_uri(fresh))
            if _alembic_version(fresh) is None:  # pragma: no cover - tiled contract
                raise RuntimeError("tiled catalog initialisation produced no alembic stamp")
            with atomic_path(template) as tmp:
                shutil.copyfile(fresh, tmp)
    return template


def _ensure_json_seq_exporter() -> Any:
    """Register the BlueskyRun ``application/json-seq`` exporter; return the registry."""
    global _json_seq_registered
    from tiled.media_type_registration import default_serialization_registry

    with _registry_lock:
        if not _json_seq_registered:
            from bluesky_tiled_plugins.exporters import json_seq_exporter

            default_serialization_registry.register("BlueskyRun", "application/json-seq", json_seq_exporter)
            _json_seq_registered = True
    return default_serialization_registry


def _import_starlette_testclient() -> None:
    # starlette warns that its TestClient wants `httpx2`; tiled's in-process Context uses
    # it anyway.  Import it once with exactly that warning silenced.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Using `httpx` with `starlette\.testclient`")
        import starlette.testclient  # noqa: F401


def _is_postgres(uri: str) -> bool:
    return uri.startswith(("postgresql://", "postgresql+asyncpg://", "postgres://"))


def _tabular_for_postgres(catalog_uri: str) -> str:
    # The table store uses the synchronous driver on the same database.
    rest = catalog_uri.split("://", 1)[1]
    return f"postgresql://{rest}"


def build_store_app(
    directory: str | os.PathLike,
    *,
    catalog_uri: str | None = None,
    tabular_uri: str | None = None,
    readable_storage: Iterable[str | os.PathLike] | None = None,
    api_key: str | None = None,
) -> Any:
    """The tiled ASGI app of a store of Bluesky runs in *directory* (created if needed).

    :func:`open_store` serves it in-process; :func:`serve_store` serves it over HTTP.

    Parameters
    ----------
    directory
        Holds ``catalog.db`` (unless *catalog_uri* is given), ``tabular.db`` (unless
        *tabular_uri* is given) and ``data/`` (zarr arrays written by TiledWriter).
    catalog_uri
        Optional catalog database, e.g. ``"postgresql+asyncpg://postgres@127.0.0.1/test"``
        for writers on several machines; initialised on first use.
    tabular_uri
        Optional writable table storage; with a PostgreSQL catalog it defaults to the same
        database through the synchronous driver (``postgresql://...``).
    readable_storage
        Extra directories the server may read external files from.
    api_key
        If given, the app requires this single-user API key.

    Raises
    ------
    InputError
        If *directory* is an existing file, holds a file that is not a tiled catalog,
        or a URI has an unsupported scheme.
    """
    root = Path(directory).expanduser().resolve()  # tiled matches recorded paths as strings
    if root.exists() and not root.is_dir():
        raise InputError(f"tiled store location {str(root)!r} exists and is not a directory")
    root.mkdir(parents=True, exist_ok=True)
    data_dir = root / DATA_DIR
    data_dir.mkdir(exist_ok=True)

    if catalog_uri is None:
        catalog_path = root / CATALOG_FILE
        if not catalog_path.exists():
            template = catalog_template()
            with atomic_path(catalog_path) as tmp:
                shutil.copyfile(template, tmp)
        else:
            revision = _alembic_version(catalog_path)
            if revision is None:
                raise InputError(f"{str(catalog_path)!r} exists but is not a tiled catalog")
            from tiled.catalog.core import ALL_REVISIONS, REQUIRED_REVISION

            if revision != REQUIRED_REVISION:
                hint = (
                    f"upgrade it with `tiled catalog upgrade-database {_sqlite_uri(catalog_path)}`"
                    if revision in ALL_REVISIONS
                    else "it was written by a newer tiled; upgrade tiled"
                )
                raise InputError(
                    f"tiled catalog {str(catalog_path)!r} has schema revision {revision}, this tiled needs "
                    f"{REQUIRED_REVISION}: {hint}"
                )
            rebase_store_paths(root)
        catalog_uri = _sqlite_uri(catalog_path)
        initialise = False
    else:
        if not (_is_postgres(catalog_uri) or catalog_uri.startswith("sqlite")):
            raise InputError(f"unsupported catalog URI {catalog_uri!r}: use sqlite:/// or postgresql+asyncpg://")
        if catalog_uri.startswith(("postgresql://", "postgres://")):
            catalog_uri = "postgresql+asyncpg://" + catalog_uri.split("://", 1)[1]
        initialise = True
    if tabular_uri is None:
        tabular_uri = _tabular_for_postgres(catalog_uri) if _is_postgres(catalog_uri) else _sqlite_uri(root / TABULAR_FILE)

    from tiled.catalog import from_uri
    from tiled.server.app import build_app

    registry = _ensure_json_seq_exporter()
    adapter = from_uri(
        catalog_uri,
        specs=BLUESKY_CATALOG_SPECS,
        init_if_not_exists=initialise,
        writable_storage=[str(data_dir), tabular_uri],
        readable_storage=[str(Path(p)) for p in (readable_storage or [])],
    )
    authentication = None
    if api_key is not None:
        from tiled.config import Authentication

        authentication = Authentication(single_user_api_key=api_key)
    return build_app(adapter, authentication=authentication, serialization_registry=registry)


def open_store(
    directory: str | os.PathLike,
    *,
    catalog_uri: str | None = None,
    tabular_uri: str | None = None,
    readable_storage: Iterable[str | os.PathLike] | None = None,
) -> Any:
    """Open (creating if needed) an embedded tiled store of Bluesky runs in *directory*.

    Parameters
    ----------
    directory, catalog_uri, tabular_uri, readable_storage
        See :func:`build_store_app`.

    Returns
    -------
    bluesky_tiled_plugins.CatalogOfBlueskyRuns
        A tiled client served in-process (no socket). Close it with :func:`close_store`.

    Raises
    ------
    InputError
        See :func:`build_store_app`.
    """
    from tiled.client import Context, from_context

    app = build_store_app(
        directory, catalog_uri=catalog_uri, tabular_uri=tabular_uri, readable_storage=readable_storage
    )
    _import_starlette_testclient()
    context = Context.from_app(app)
    return from_context(context)


@contextmanager
def serve_store(
    directory: str | os.PathLike,
    *,
    api_key: str,
    host: str = "127.0.0.1",
    port: int = 0,
    catalog_uri: str | None = None,
    tabular_uri: str | None = None,
) -> Iterator[str]:
    """Serve the store in *directory* over HTTP in a background thread (for other processes).

    Parameters
    ----------
    directory, catalog_uri, tabular_uri
        See :func:`build_store_app`.
    api_key
        The single-user API key clients must present.
    host, port
        Where to listen (``port=0``: any free port).

    Yields
    ------
    str
        The server's base URI, e.g. ``"http://127.0.0.1:43567/api/v1"``; open it with
        ``open_tiled(uri, api_key=api_key)``. The server stops when the block exits.
    """
    import time

    import httpx
    import uvicorn
    from tiled.server.simple import ThreadedServer

    if not (api_key and api_key.isascii() and api_key.isalnum()):
        raise InputError("serve_store needs a non-empty, alphanumeric api_key (e.g. secrets.token_hex(32))")
    app = build_store_app(directory, catalog_uri=catalog_uri, tabular_uri=tabular_uri, api_key=api_key)
    server = ThreadedServer(uvicorn.Config(app, host=host, port=port, loop="asyncio", log_level="warning"))
    with server.run_in_thread() as base_url:
        deadline = time.monotonic() + 30.0
        with httpx.Client(trust_env=False) as probe:
            while True:
                try:
                    if probe.get(f"{base_url}/healthz", timeout=1.0).status_code == 200:
                        break
                except httpx.RequestError:
                    pass
                if time.monotonic() > deadline or not server.thread.is_alive():
                    raise RuntimeError(f"tiled server for {directory} did not become ready")
                time.sleep(0.05)
        yield f"{base_url}/api/v1"


def open_tiled(uri_or_dir: str | os.PathLike, *, api_key: str | None = None, create: bool = False) -> Any:
    """Open a tiled catalog of runs: an embedded store directory or a tiled server URI.

    Parameters
    ----------
    uri_or_dir
        ``http(s)://host:port[/api/v1/metadata/path]`` of a tiled server, or a directory
        made by :func:`open_store`.
    api_key
        API key for a server (ignored for a directory); default: the
        ``TILED_API_KEY`` environment variable.
    create
        Create a new embedded store if the directory does not exist yet.

    Raises
    ------
    InputError
        If the directory does not hold a store (and *create* is False); or the server
        cannot be reached within :data:`SERVER_PROBE_TIMEOUT` seconds, needs an API key
        that was not given, or refuses the key (the message never contains the key).

    Notes
    -----
    A server must register the json-seq exporter for replay, in its config file::

        media_types:
          BlueskyRun:
            application/json-seq: bluesky_tiled_plugins.exporters:json_seq_exporter
    """
    text = os.fspath(uri_or_dir)
    if text.startswith(("http://", "https://")):
        return _open_server(text, api_key=api_key)
    if text.startswith(("tiled://", "ws://")) or "://" in text:
        raise InputError(f"unsupported tiled location {text!r}: give a directory or an http(s):// URI")
    root = Path(text).expanduser()
    if not create and not (root / CATALOG_FILE).is_file():
        raise InputError(f"no embedded tiled store in {str(root)!r} (expected {CATALOG_FILE} there)")
    return open_store(root)


#: Seconds to wait for a tiled server to answer before it counts as unreachable.
SERVER_PROBE_TIMEOUT = 5.0


def _redacted(uri: str) -> str:
    """*uri* without user info, query and fragment (where an API key could hide)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(uri)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _open_server(uri: str, *, api_key: str | None) -> Any:
    """Open a tiled server's catalog, turning connection and authentication failures into one-line InputErrors.

    The server is probed once, without retries, so an unreachable server fails within
    :data:`SERVER_PROBE_TIMEOUT` seconds instead of after tiled's retry schedule.
    """
    from urllib.parse import urlsplit

    import httpx

    shown = _redacted(uri)
    parts = urlsplit(uri)
    if not parts.hostname:
        raise InputError(f"tiled server URI {shown!r} has no host")
    if api_key is None:
        api_key = os.environ.get("TILED_API_KEY") or None
    from urllib.parse import parse_qs

    secrets = [k for k in [api_key, *parse_qs(parts.query).get("api_key", [])] if k]

    def clean(message: str) -> str:
        for secret in secrets:
            message = message.replace(secret, "***")
        return " ".join(message.split())[:300]

    try:
        with httpx.Client(timeout=SERVER_PROBE_TIMEOUT) as probe:
            probe.get(f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}/healthz")
    except httpx.HTTPError as exc:
        reason = clean(str(exc)) or type(exc).__name__
        raise InputError(f"cannot reach the tiled server at {shown}: {reason}") from None

    from tiled.client import from_uri
    from tiled.client.context import CannotPrompt

    no_key = (f"the tiled server at {shown} needs an API key: pass --api-key KEY (api_key=...) "
              "or set TILED_API_KEY")
    try:
        return from_uri(uri, api_key=api_key)
    except CannotPrompt:
        raise InputError(no_key) from None
    except httpx.HTTPStatusError as exc:
        code = exc.response.status_code
        if code in (401, 403):
            if secrets:
                raise InputError(f"the tiled server at {shown} refused the API key (HTTP {code})") from None
            raise InputError(no_key) from None
        raise InputError(f"the tiled server at {shown} answered HTTP {code}: {clean(str(exc))}") from None
    except httpx.HTTPError as exc:
        raise InputError(f"cannot read from the tiled server at {shown}: {type(exc).__name__}: "
                         f"{clean(str(exc))}") from None
    except RuntimeError as exc:
        if "API key" in str(exc):
            raise InputError(no_key) from None
        raise


def close_store(client: Any) -> None:
    """Close the HTTP (or in-process) connection behind a client from :func:`open_store`/:func:`open_tiled`."""
    context = getattr(client, "context", None)
    if context is not None:
        context.close()


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
            setattr(holder, "_bluesky_twin_write_lock", lock)
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


_SQL_ASSET = re.compile(r"^((?:sqlite|duckdb)://[^/]*/)(/.*)$")
_FILE_ASSET = re.compile(r"^(file://[^/]*)(/.*)$")


def _split_asset_uri(uri: str) -> tuple[str, str] | None:
    """``(prefix, absolute path)`` of a local asset URI as tiled records it, else None."""
    match = _SQL_ASSET.match(uri) or _FILE_ASSET.match(uri)
    return None if match is None else (match.group(1), match.group(2))


def rebase_store_paths(directory: str | os.PathLike) -> dict[str, str]:
    """Point the data paths recorded in a copied or moved store at the store's current directory.

    Tiled records the table store (``tabular.db``) and the array files (``data/...``)
    of every run as absolute URIs.  All of them lie inside the store directory, so the
    directory they were written in is read off the ``tabular.db`` URI, and every URI
    under it is rewritten to the same relative place under *directory* (with symbolic
    links resolved, as :func:`build_store_app` opens it).  Nothing changes when the
    store is opened where it was written, or through a symbolic link to that place.
    :func:`build_store_app` calls this on every embedded store it opens.

    Parameters
    ----------
    directory
        A store directory holding ``catalog.db``.

    Returns
    -------
    dict
        ``{old directory: new directory}`` for every directory rebased (empty if none).

    Raises
    ------
    InputError
        If the catalog must be rebased but cannot be written (a read-only copy).
    """
    root = Path(directory).expanduser().resolve()
    catalog_path = root / CATALOG_FILE
    try:
        connection = sqlite3.connect(f"file:{catalog_path}?mode=ro", uri=True)
    except sqlite3.Error:
        return {}
    try:
        rows = connection.execute("SELECT id, data_uri FROM assets").fetchall()
    except sqlite3.Error:
        return {}
    finally:
        connection.close()
    old_roots: set[str] = set()
    for _, uri in rows:
        split = _split_asset_uri(str(uri or ""))
        if split is not None and uri.startswith(("sqlite", "duckdb")) and Path(split[1]).name == TABULAR_FILE:
            old_roots.add(str(Path(split[1]).parent))
    moved = {old: str(root) for old in old_roots if old != str(root)}
    if not moved:
        return {}
    updates = []
    for asset_id, uri in rows:
        split = _split_asset_uri(str(uri or ""))
        if split is None:
            continue
        prefix, path = split
        for old, new in moved.items():
            if path == old or path.startswith(old + "/"):
                updates.append((prefix + new + path[len(old):], asset_id))
                break
    try:
        with sqlite3.connect(catalog_path) as connection:
            connection.executemany("UPDATE assets SET data_uri = ? WHERE id = ?", updates)
        connection.close()
    except sqlite3.Error as exc:
        raise InputError(
            f"the store in {str(root)!r} was moved from {sorted(moved)[0]!r} and its data paths cannot be "
            f"updated ({exc}); make {CATALOG_FILE} writable and open it again"
        ) from None
    return moved


# ----------------------------------------------------------------------------------------
# reading back
# ----------------------------------------------------------------------------------------
def _as_query_list(query: Any) -> list[Any]:
    if query is None:
        return []
    if isinstance(query, Mapping):
        from tiled.queries import Key

        return [Key(key) == value for key, value in query.items()]
    if isinstance(query, (list, tuple)):
        return [q for item in query for q in _as_query_list(item)]
    if isinstance(query, str):
        raise InputError(
            f"query {query!r}: pass a tiled query object or a mapping {{start-document key: value}}"
        )
    return [query]


def select_runs(client: Any, uids: Iterable[str] | None = None, query: Any = None) -> list[Any]:
    """The runs to replay: the given *uids* (full or partial), else all runs matching *query*.

    Parameters
    ----------
    client
        A catalog of runs.
    uids
        Run uids (a partial uid of at least 8 characters is enough); order is kept.
    query
        A tiled query, a list of them, or a mapping ``{key: value}`` of start-document
        equalities (``Key(key) == value``); combined with AND.

    Returns
    -------
    list
        ``BlueskyRun`` clients, by uid order given, else in the catalog's (time) order.

    Raises
    ------
    InputError
        If a uid matches no run or the selection is empty.
    """
    node = client
    for q in _as_query_list(query):
        node = node.search(q)
    if uids is not None:
        uids = list(uids)
        runs = []
        for uid in uids:
            try:
                runs.append(node[str(uid)])
            except (KeyError, ValueError) as err:
                raise InputError(f"no stored run with uid {uid!r}{' matching the query' if query else ''}") from err
        return runs
    runs = list(node.values())
    if not runs:
        raise InputError("no stored runs" + (" match the query" if query is not None else " in the catalog"))
    return runs


def iter_run_documents(client: Any, uids: Iterable[str] | None = None, query: Any = None) -> Iterator[tuple[str, dict]]:
    """Yield ``(name, doc)`` for every document of the selected runs, run after run.

    The documents are those the RunEngine emitted (``start``, ``descriptor``, ``event``
    ..., ``stop``), in emission order, as JSON data (tuples become lists). Feed them to
    any callback, e.g. a ``TwinTrainer``, exactly as live.  A run that never got a stop
    document is replayed without one (and with only the events written before the
    interruption; see :func:`make_tiled_writer`'s ``batch_size``).

    Parameters
    ----------
    client, uids, query
        See :func:`select_runs`.
    """
    for run in select_runs(client, uids=uids, query=query):
        for name, doc in run.documents():
            if name == "stop" and not doc:
                # the exporter emits an empty stop for a run that never got one
                # (crash, kill); replay it as it was: without a stop document
                continue
            yield name, doc


def read_stream(run: Any, stream: str = "primary", fields: Iterable[str] | None = None) -> dict[str, Any]:
    """Read a stream of a stored run as ``{field: numpy array}``, one array per data key.

    Reads each variable separately, which avoids xarray's duplicate-dimension warning
    for square 2D frames (TiledWriter names both axes of an N x N frame alike).

    Parameters
    ----------
    run
        A ``BlueskyRun`` client.
    stream
        Stream name.
    fields
        Data keys to read (default: all of them).

    Raises
    ------
    InputError
        If the stream or a field does not exist.
    """
    import numpy as np

    try:
        node = run[stream]
    except KeyError as err:
        raise InputError(f"run {run.start.get('uid', '?')[:8]} has no stream {stream!r}") from err
    data_keys = dict(node.metadata.get("data_keys", {}))
    wanted = list(data_keys) if fields is None else list(fields)
    missing = [f for f in wanted if f not in data_keys]
    if missing:
        raise InputError(f"stream {stream!r} has no field(s) {missing}; fields: {sorted(data_keys)}")
    # One request per table (scalars and small arrays live in the stream's "internal"
    # table) is much faster than one request per variable; large arrays are array nodes.
    out: dict[str, Any] = {}
    tables: dict[str, Any] = {}
    try:
        children = dict(node.base.items())
    except AttributeError:  # not a composite stream node: fall back to per-variable reads
        children = {}
    for child in children.values():
        if getattr(child, "structure_family", None) == "table":
            frame = child.read()
            for column in frame.columns:
                tables[str(column)] = frame[column]
    for field in wanted:
        column = tables.get(field)
        if column is not None:
            values = column.to_numpy()
            if values.dtype == object:
                values = np.stack([np.asarray(v) for v in values]) if len(values) else values
            out[field] = values
        else:
            out[field] = np.asarray(node[field].read())
    return out


def jsonable_document(doc: Any) -> Any:
    """*doc* as JSON data (numpy values to Python, tuples to lists, NaN kept as float NaN).

    Live documents compare equal to replayed ones after this normalisation.
    """

    def default(obj: Any) -> Any:
        if hasattr(obj, "tolist"):
            return obj.tolist()
        if hasattr(obj, "item"):
            return obj.item()
        raise TypeError(f"not JSON serialisable: {type(obj).__name__}")

    return json.loads(json.dumps(doc, default=default, allow_nan=True))


def replay_comparable(name: str, doc: Any) -> Any:
    """*doc* JSON-normalised, without the fields that a TiledWriter round trip does not keep.

    TiledWriter stores event *data* in tables, so the json-seq exporter regenerates
    each event's ``uid`` (``"event-<descriptor uid>-<seq_num>"``) and omits an empty
    ``filled``; a PostgreSQL catalog does not keep the order of the descriptor's
    ``object_keys`` lists (sorted here). Everything a callback consumes (data, timestamps, seq_num, time,
    descriptor) is kept; compare live and replayed documents with
    ``documents_equal(replay_comparable(n, live), replay_comparable(n, replayed))``.
    """
    doc = jsonable_document(doc)
    if name == "descriptor" and isinstance(doc.get("object_keys"), dict):
        # rebuilt from data_keys, whose order a JSONB catalog (PostgreSQL) does not keep
        doc["object_keys"] = {obj: sorted(keys) for obj, keys in doc["object_keys"].items()}
    if name == "event":
        doc.pop("uid", None)
        if not doc.get("filled"):
            doc.pop("filled", None)
    return doc


def documents_equal(a: Any, b: Any) -> bool:
    """Compare two (JSON-normalised) documents, treating NaN as equal to NaN."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(documents_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(documents_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b
