"""A tiled catalog of Bluesky runs in PostgreSQL: checked, initialised on first use, served with an API key.

The catalog (nodes, metadata, data sources) and the tables of every run (event data,
written by TiledWriter into tiled's SQL table storage) both live in PostgreSQL; by
default in the same database.  Arrays that a writer sends as arrays (not tables) go to
an optional data directory.

:func:`prepare_catalog_database` does what ``tiled catalog init`` does, in-process (so
the URL and its password never appear in a process list), under a PostgreSQL advisory
lock (two servers starting at once do not both initialise), and only on an empty
database: a database holding anything but a tiled catalog of Bluesky runs is refused.
:func:`build_server_app` builds the tiled app on it with a single-user API key and
anonymous access refused.  Every message names the database with its password masked
(:func:`bluesky_twin.twin.storage_url.mask_url`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import InputError
from ._layout import BLUESKY_CATALOG_SPECS, _is_postgres

__all__ = ["MIN_API_KEY_LENGTH", "build_server_app", "check_api_key", "prepare_catalog_database"]

#: Shortest API key a server accepts (``secrets.token_hex(32)`` gives 64 characters).
MIN_API_KEY_LENGTH = 16

# pg_advisory_lock key held while a catalog is checked and initialised ("bt-tiled").
_INIT_LOCK = 0x62742D74696C6564
# the spec every top-level node of a catalog of Bluesky runs carries
_RUN_SPEC = "BlueskyRun"


def _masked(uri: str) -> str:
    from ..twin.storage_url import mask_url

    return mask_url(uri)


def _one_line(exc: BaseException, uri: str) -> str:
    from ..twin.storage_url import one_line

    return one_line(exc, uri)


def _rest(uri: str) -> str:
    """*uri* after its scheme (``user@host:port/db?...``)."""
    return uri.split("://", 1)[1]


def asyncpg_url(uri: str) -> str:
    """*uri* with the asyncpg driver tiled's catalog needs (``postgresql+asyncpg://``)."""
    return "postgresql+asyncpg://" + _rest(uri)


def libpq_url(uri: str) -> str:
    """*uri* as a plain ``postgresql://`` URL (libpq, psycopg2, tiled's table storage)."""
    return "postgresql://" + _rest(uri)


def check_postgres_url(uri: str, *, what: str = "--catalog") -> str:
    """*uri* if it names a PostgreSQL database, else an InputError (password masked).

    Raises
    ------
    InputError
        If *uri* is not ``postgresql://``, ``postgres://`` or ``postgresql+asyncpg://``,
        or names no database.
    """
    if not _is_postgres(uri):
        raise InputError(
            f"{what} {_masked(uri)!r} is not a PostgreSQL URL: give postgresql://USER@HOST[:PORT]/DATABASE"
        )
    path = _rest(uri).split("?", 1)[0]
    if "/" not in path or not path.split("/", 1)[1]:
        raise InputError(f"{what} {_masked(uri)!r} names no database: give postgresql://USER@HOST[:PORT]/DATABASE")
    return uri


def check_api_key(api_key: str | None, *, source: str = "api_key") -> str:
    """*api_key* if a server may use it, else an InputError that does not contain it.

    Parameters
    ----------
    api_key
        The single-user API key.
    source
        Where it came from, for the message (e.g. ``"$TILED_SINGLE_USER_API_KEY"``).

    Raises
    ------
    InputError
        If it is empty, shorter than :data:`MIN_API_KEY_LENGTH`, or not ASCII letters
        and digits (tiled's own rule).
    """
    hint = 'make one with: python -c "import secrets; print(secrets.token_hex(32))"'
    if not api_key:
        raise InputError(f"the API key from {source} is empty; {hint}")
    if not (api_key.isascii() and api_key.isalnum()):
        raise InputError(f"the API key from {source} must be ASCII letters and digits only; {hint}")
    if len(api_key) < MIN_API_KEY_LENGTH:
        raise InputError(
            f"the API key from {source} has {len(api_key)} characters, a server needs at least "
            f"{MIN_API_KEY_LENGTH}; {hint}"
        )
    return api_key


def _connect(uri: str, *, what: str) -> Any:
    """A psycopg2 connection to *uri* (autocommit), or a one-line InputError."""
    import psycopg2

    try:
        connection = psycopg2.connect(libpq_url(uri), connect_timeout=5)
    except psycopg2.Error as exc:
        raise InputError(f"cannot connect to the {what} {_masked(uri)}: {_one_line(exc, uri)}") from None
    connection.autocommit = True
    return connection


def _tables(cursor: Any) -> list[str]:
    cursor.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() ORDER BY table_name"
    )
    return [row[0] for row in cursor.fetchall()]


def _initialise(uri: str) -> None:
    """Create tiled's catalog tables and stamp the alembic revision (``tiled catalog init``).

    Run in a worker thread: tiled's initialisation and alembic's stamping both run their
    own event loop, which a caller inside a running loop (IPython, Jupyter) cannot host.
    """
    import asyncio
    import warnings
    from concurrent.futures import ThreadPoolExecutor

    from sqlalchemy.ext.asyncio import create_async_engine
    from tiled.alembic_utils import stamp_head
    from tiled.catalog.alembic_constants import ALEMBIC_DIR, ALEMBIC_INI_TEMPLATE_PATH
    from tiled.catalog.core import initialize_database

    url = asyncpg_url(uri)

    async def create() -> None:
        engine = create_async_engine(url)
        try:
            await initialize_database(engine)
        finally:
            await engine.dispose()

    def run() -> None:
        asyncio.run(create())
        with warnings.catch_warnings():
            # tiled's alembic.ini template predates alembic's path_separator option
            warnings.filterwarnings("ignore", message="No path_separator found", category=DeprecationWarning)
            stamp_head(ALEMBIC_INI_TEMPLATE_PATH, ALEMBIC_DIR, url)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="tiled-catalog-init") as pool:
        pool.submit(run).result()


def prepare_catalog_database(catalog_uri: str) -> bool:
    """Make the PostgreSQL database *catalog_uri* a tiled catalog of Bluesky runs, or refuse it.

    An empty database (no tables in its current schema) is initialised as ``tiled
    catalog init`` would; a tiled catalog of this tiled's schema revision whose
    top-level nodes are all Bluesky runs is used as it is.  The check and the
    initialisation hold a PostgreSQL advisory lock, so servers starting together on one
    database initialise it once.

    Parameters
    ----------
    catalog_uri
        ``postgresql://``, ``postgres://`` or ``postgresql+asyncpg://`` URL of the
        database (a password may be in it, in ``~/.pgpass`` or in ``$PGPASSWORD``).

    Returns
    -------
    bool
        True if the database was initialised now, False if it already held the catalog.

    Raises
    ------
    InputError
        One line, password masked: the database cannot be reached; it holds tables that
        are not a tiled catalog; it is a tiled catalog of another schema revision (with
        the command that upgrades it); or it holds top-level nodes that are not Bluesky
        runs.  Nothing is written then.
    """
    check_postgres_url(catalog_uri)
    shown = _masked(libpq_url(catalog_uri))
    connection = _connect(catalog_uri, what="catalog database")
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(%s)", (_INIT_LOCK,))
            try:
                tables = _tables(cursor)
                if not tables:
                    try:
                        _initialise(catalog_uri)
                    except Exception as exc:
                        raise InputError(
                            f"initialising a tiled catalog in {shown} failed: {_one_line(exc, catalog_uri)}"
                        ) from None
                    return True
                _check_existing(cursor, tables, shown)
                return False
            finally:
                cursor.execute("SELECT pg_advisory_unlock(%s)", (_INIT_LOCK,))
    finally:
        connection.close()


def _check_existing(cursor: Any, tables: list[str], shown: str) -> None:
    """Refuse a non-empty database that is not a tiled catalog of Bluesky runs of this revision."""
    from tiled.catalog.core import ALL_REVISIONS, REQUIRED_REVISION

    if not {"alembic_version", "nodes"} <= set(tables):
        listed = ", ".join(tables[:3]) + (", ..." if len(tables) > 3 else "")
        raise InputError(
            f"the database {shown} holds {len(tables)} table(s) ({listed}) and is not a tiled catalog: "
            "give an empty database (CREATE DATABASE ...) or an existing catalog of Bluesky runs"
        )
    cursor.execute("SELECT version_num FROM alembic_version")
    row = cursor.fetchone()
    revision = None if row is None else str(row[0])
    if revision != REQUIRED_REVISION:
        if revision in ALL_REVISIONS:
            hint = f"back it up, then upgrade it with `tiled catalog upgrade-database {shown}`"
        elif revision is None:
            hint = "its alembic_version table is empty"
        else:
            hint = "it is not a tiled catalog this tiled knows (written by a newer tiled, or something else)"
        raise InputError(
            f"the database {shown} has schema revision {revision}, this tiled needs {REQUIRED_REVISION}: {hint}"
        )
    cursor.execute(
        "SELECT key FROM nodes WHERE parent = 0 AND NOT (coalesce(specs, '[]'::jsonb) @> %s::jsonb) "
        "ORDER BY key LIMIT 3",
        (json.dumps([{"name": _RUN_SPEC}]),),
    )
    foreign = [row[0] for row in cursor.fetchall()]
    if foreign:
        raise InputError(
            f"the tiled catalog in {shown} holds top-level nodes that are not Bluesky runs "
            f"({', '.join(map(repr, foreign))}): it belongs to something else; give another database"
        )


def _check_table_locations(catalog_uri: str, tabular_uri: str) -> None:
    """Refuse a catalog whose runs record their tables in a database the server will not have.

    tiled finds the database of a run's tables by its *name* alone (host, port and
    credentials may change), so a catalog restored under another database name, or
    served without the ``--tables`` database it was written with, would list its runs
    but fail to read their events.
    """
    from tiled.storage import storage_registry_key

    expected = storage_registry_key(libpq_url(tabular_uri))
    connection = _connect(catalog_uri, what="catalog database")
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT DISTINCT data_uri FROM assets WHERE data_uri LIKE 'postgres%'")
            recorded = sorted({storage_registry_key(libpq_url(row[0])) for row in cursor.fetchall()})
    finally:
        connection.close()
    others = [key for key in recorded if key != expected]
    if others:
        names = ", ".join(repr(key.rsplit("/", 1)[-1]) for key in others)
        raise InputError(
            f"the catalog in {_masked(libpq_url(catalog_uri))} records run tables in database {names}, "
            f"not in {expected.rsplit('/', 1)[-1]!r}: restore a backup under its original database name, "
            "or give that database with --tables"
        )


def _check_tables_database(tabular_uri: str) -> None:
    """Refuse a separate table-storage database that cannot be reached."""
    check_postgres_url(tabular_uri, what="--tables")
    _connect(tabular_uri, what="table database").close()


def build_server_app(
    catalog_uri: str,
    *,
    api_key: str,
    tabular_uri: str | None = None,
    data_dir: str | os.PathLike | None = None,
    readable_storage: Iterable[str | os.PathLike] = (),
) -> Any:
    """The tiled ASGI app of a catalog of Bluesky runs in PostgreSQL, API key required.

    Parameters
    ----------
    catalog_uri
        The catalog's PostgreSQL database; checked and initialised on first use
        (:func:`prepare_catalog_database`).
    api_key
        The single-user API key every client must present (:func:`check_api_key`);
        anonymous access is refused whatever ``$TILED_ALLOW_ANONYMOUS_ACCESS`` says.
    tabular_uri
        PostgreSQL database of the run tables (event data); default: the catalog's.
    data_dir
        Directory for arrays written as arrays (created if needed); default: none, so
        only tables can be written.
    readable_storage
        Directories of external files (detector files) the server may read.

    Returns
    -------
    fastapi.FastAPI
        Serve it with uvicorn (:func:`~bluesky_twin.storage.run_tiled_server` does).

    Raises
    ------
    InputError
        See :func:`prepare_catalog_database` and :func:`check_api_key`; also a data
        directory that is a file, or a table database that cannot be reached.
    """
    return _server_app(
        catalog_uri, api_key=api_key, tabular_uri=tabular_uri, data_dir=data_dir, readable_storage=readable_storage
    )[0]


def _server_app(
    catalog_uri: str,
    *,
    api_key: str,
    tabular_uri: str | None,
    data_dir: str | os.PathLike | None,
    readable_storage: Iterable[str | os.PathLike],
) -> tuple[Any, bool]:
    """:func:`build_server_app`, and whether the catalog was initialised now."""
    check_api_key(api_key)
    check_postgres_url(catalog_uri)
    writable: list[str] = []
    if data_dir is not None:
        data_path = Path(data_dir).expanduser().resolve()
        if data_path.exists() and not data_path.is_dir():
            raise InputError(f"--data-dir {str(data_path)!r} exists and is not a directory")
    if tabular_uri is not None:
        _check_tables_database(tabular_uri)
    initialised = prepare_catalog_database(catalog_uri)
    if not initialised:
        _check_table_locations(catalog_uri, tabular_uri or catalog_uri)
    if data_dir is not None:
        data_path.mkdir(parents=True, exist_ok=True)
        writable.append(str(data_path))
    writable.append(libpq_url(tabular_uri or catalog_uri))

    from tiled.catalog import from_uri
    from tiled.config import Authentication
    from tiled.server.app import build_app

    from ._store import _serialization_registry

    adapter = from_uri(
        asyncpg_url(catalog_uri),
        specs=BLUESKY_CATALOG_SPECS,
        init_if_not_exists=False,
        writable_storage=writable,
        readable_storage=[str(Path(p).expanduser().resolve()) for p in readable_storage],
    )
    authentication = Authentication(single_user_api_key=api_key, allow_anonymous_access=False)
    app = build_app(adapter, authentication=authentication, serialization_registry=_serialization_registry())
    return app, initialised
