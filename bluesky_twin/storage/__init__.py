"""Embedded tiled storage of Bluesky runs, TiledWriter wiring, and replay of stored runs.

The default store is *embedded*: an SQLite catalog (``catalog.db``), an SQLite table
store (``tabular.db``) and a data directory (``data/``, zarr arrays) inside one
directory, served in-process by tiled's ASGI app with no socket and no server
(``Context.from_app``).  A tiled server URI (with an API key) works the same way
through :func:`open_tiled`.  For several writers on several machines the catalog can
live in PostgreSQL (``open_store(directory, catalog_uri="postgresql+asyncpg://...")``).

A tiled *server* whose catalog and run tables both live in PostgreSQL, with an API key
required and anonymous access refused, is :func:`run_tiled_server` (the command
``bluesky-twin store serve``); :func:`prepare_catalog_database` initialises such a
database on first use and refuses one that holds something else.

Documents are written with :func:`make_tiled_writer` (``bluesky_tiled_plugins.TiledWriter``;
not the deprecated copy inside bluesky) and replayed with :func:`iter_run_documents`,
which relies on the ``application/json-seq`` exporter that every store's app registers
for ``BlueskyRun`` nodes (:data:`BLUESKY_MEDIA_TYPES`; without it ``run.documents()``
answers HTTP 406).  :func:`write_tiled_config` and :func:`write_tiled_profile` give
tiled's own server and client the same catalog (``tiled serve config``,
``tiled.client.from_profile``).

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

Modules, one concept each (all private; use the names re-exported here):

- ``_layout``: file names, the root spec, default directories;
- ``_catalog``: the cached catalog template and the schema-revision check;
- ``_relocate``: rebasing the data paths of a copied or moved store;
- ``_store``: the tiled app of a store, opened in-process, and closing it;
- ``_server``: serving a store over HTTP, opening a directory or a server URI;
- ``_postgres``: a catalog of runs in PostgreSQL, checked, initialised and served;
- ``_config``: a ``tiled serve config`` file and a client profile of a store;
- ``_writer``: TiledWriter, one writer at a time per store;
- ``_readback``: selecting runs, replaying documents, reading streams.

All tiled imports are lazy: importing this package is cheap.
"""

from __future__ import annotations

from ._catalog import catalog_template
from ._config import tiled_config, write_tiled_config, write_tiled_profile
from ._layout import (
    BLUESKY_CATALOG_SPECS,
    BLUESKY_MEDIA_TYPES,
    CATALOG_FILE,
    DATA_DIR,
    TABULAR_FILE,
    default_store_directory,
)
from ._postgres import MIN_API_KEY_LENGTH, build_server_app, check_api_key, prepare_catalog_database
from ._readback import iter_run_documents, last_scan_id, read_stream, select_runs
from ._relocate import rebase_store_paths
from ._server import SERVER_PROBE_TIMEOUT, open_tiled, redact_uri, run_tiled_server, serve_store
from ._store import build_store_app, close_store, open_store
from ._writer import DEFAULT_BATCH_SIZE, SerializedWriter, make_tiled_writer

__all__ = [
    "BLUESKY_CATALOG_SPECS",
    "BLUESKY_MEDIA_TYPES",
    "CATALOG_FILE",
    "DATA_DIR",
    "DEFAULT_BATCH_SIZE",
    "MIN_API_KEY_LENGTH",
    "SERVER_PROBE_TIMEOUT",
    "SerializedWriter",
    "TABULAR_FILE",
    "build_server_app",
    "build_store_app",
    "catalog_template",
    "check_api_key",
    "close_store",
    "default_store_directory",
    "iter_run_documents",
    "last_scan_id",
    "make_tiled_writer",
    "open_store",
    "open_tiled",
    "prepare_catalog_database",
    "read_stream",
    "rebase_store_paths",
    "redact_uri",
    "run_tiled_server",
    "select_runs",
    "serve_store",
    "tiled_config",
    "write_tiled_config",
    "write_tiled_profile",
]
