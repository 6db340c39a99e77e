"""Layout of an embedded store: file names, the root spec, default directories and URIs.

An embedded store is one directory holding an SQLite catalog (``catalog.db``), an
SQLite table store (``tabular.db``) and a data directory (``data/``, zarr arrays).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "BLUESKY_CATALOG_SPECS",
    "BLUESKY_MEDIA_TYPES",
    "CATALOG_FILE",
    "DATA_DIR",
    "TABULAR_FILE",
    "default_store_directory",
]

#: Specs of the root node: makes the client a ``CatalogOfBlueskyRuns`` (search by ``Key("sample")``, scan ids).
BLUESKY_CATALOG_SPECS = [{"name": "CatalogOfBlueskyRuns", "version": "3.0"}]

#: Exporters a store's app registers, as a tiled config's ``media_types`` section: the
#: ``application/json-seq`` exporter of ``BlueskyRun`` nodes, without which
#: ``run.documents()`` answers HTTP 406.
BLUESKY_MEDIA_TYPES = {
    "BlueskyRun": {"application/json-seq": "bluesky_tiled_plugins.exporters:json_seq_exporter"},
}

#: The catalog database of an embedded store.
CATALOG_FILE = "catalog.db"
#: The table store (event data of every run) of an embedded store.
TABULAR_FILE = "tabular.db"
#: The directory of array files (zarr) of an embedded store.
DATA_DIR = "data"


def default_store_directory() -> Path:
    """Directory of the user's default embedded store.

    Returns
    -------
    pathlib.Path
        ``$BLUESKY_TWIN_TILED_DIR`` if set, else ``$XDG_DATA_HOME/bluesky-twin/tiled``,
        else ``~/.local/share/bluesky-twin/tiled``.
    """
    explicit = os.environ.get("BLUESKY_TWIN_TILED_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
    return base / "bluesky-twin" / "tiled"


def _cache_dir() -> Path:
    """The user cache directory of bluesky-twin (catalog templates live there)."""
    explicit = os.environ.get("BLUESKY_TWIN_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "bluesky-twin"


def _sqlite_uri(path: Path) -> str:
    """The SQLAlchemy URI of the SQLite database file *path*."""
    return f"sqlite:///{path}"


def _is_postgres(uri: str) -> bool:
    """Whether *uri* names a PostgreSQL database."""
    return uri.startswith(("postgresql://", "postgresql+asyncpg://", "postgres://"))


def _tabular_for_postgres(catalog_uri: str) -> str:
    """The table store beside a PostgreSQL catalog: the same database, synchronous driver."""
    rest = catalog_uri.split("://", 1)[1]
    return f"postgresql://{rest}"
