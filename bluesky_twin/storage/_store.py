"""Opening a store of Bluesky runs: its tiled app, served in-process, and closing it.

The default store is *embedded*: an SQLite catalog (``catalog.db``), an SQLite table
store (``tabular.db``) and a data directory (``data/``, zarr arrays) inside one
directory, served in-process by tiled's ASGI app with no socket and no server
(``Context.from_app``).  For several writers on several machines the catalog can live
in PostgreSQL (``open_store(directory, catalog_uri="postgresql+asyncpg://...")``).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import InputError
from ._catalog import _ready_catalog
from ._layout import (
    BLUESKY_CATALOG_SPECS,
    BLUESKY_MEDIA_TYPES,
    DATA_DIR,
    TABULAR_FILE,
    _is_postgres,
    _sqlite_uri,
    _tabular_for_postgres,
)

__all__ = ["build_store_app", "close_store", "open_store"]


def _serialization_registry() -> Any:
    """A copy of tiled's default serialization registry with :data:`BLUESKY_MEDIA_TYPES` added.

    Built the way tiled builds one from a config file's ``media_types`` (tiled's own
    global registry is left as it is), so an embedded store and ``tiled serve config``
    on a config from :func:`~bluesky_twin.storage.write_tiled_config` export alike.
    """
    import copy

    from tiled.media_type_registration import default_serialization_registry
    from tiled.utils import import_object

    registry = copy.deepcopy(default_serialization_registry)
    for family, exporters in BLUESKY_MEDIA_TYPES.items():
        for media_type, path in exporters.items():
            registry.register(family, media_type, import_object(path))
    return registry


def _import_starlette_testclient() -> None:
    # starlette warns that its TestClient wants `httpx2`; tiled's in-process Context uses
    # it anyway.  Import it once with exactly that warning silenced.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Using `httpx` with `starlette\.testclient`")
        import starlette.testclient  # noqa: F401


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
        for writers on several machines; initialised on first use (a PostgreSQL
        database that holds something else is refused, see
        :func:`~bluesky_twin.storage.prepare_catalog_database`).
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
        a URI has an unsupported scheme, or a PostgreSQL catalog database is
        unreachable or holds something else.
    """
    root = Path(directory).expanduser().resolve()  # tiled matches recorded paths as strings
    if root.exists() and not root.is_dir():
        raise InputError(f"tiled store location {str(root)!r} exists and is not a directory")
    root.mkdir(parents=True, exist_ok=True)
    data_dir = root / DATA_DIR
    data_dir.mkdir(exist_ok=True)

    if catalog_uri is None:
        catalog_uri = _sqlite_uri(_ready_catalog(root))
        initialise = False
    else:
        if not (_is_postgres(catalog_uri) or catalog_uri.startswith("sqlite")):
            from ..twin.storage_url import mask_url

            raise InputError(
                f"unsupported catalog URI {mask_url(catalog_uri)!r}: use sqlite:/// or postgresql+asyncpg://"
            )
        initialise = catalog_uri.startswith("sqlite")
        if _is_postgres(catalog_uri):
            from ._postgres import asyncpg_url, prepare_catalog_database

            prepare_catalog_database(catalog_uri)  # in-process: the URL never shows in a process list
            catalog_uri = asyncpg_url(catalog_uri)
    if tabular_uri is None:
        tabular_uri = (
            _tabular_for_postgres(catalog_uri) if _is_postgres(catalog_uri) else _sqlite_uri(root / TABULAR_FILE)
        )

    from tiled.catalog import from_uri
    from tiled.server.app import build_app

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

        authentication = Authentication(single_user_api_key=api_key, allow_anonymous_access=False)
    return build_app(adapter, authentication=authentication, serialization_registry=_serialization_registry())


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


def close_store(client: Any) -> None:
    """Close the HTTP (or in-process) connection behind a client from :func:`open_store`/:func:`open_tiled`."""
    context = getattr(client, "context", None)
    if context is not None:
        context.close()
