"""The SQLite catalog of an embedded store: the cached empty template and the schema check.

Initialising a tiled catalog runs ``python -m tiled catalog init`` in a subprocess
(about 5 s).  :func:`catalog_template` does that once per tiled version, caches the
empty initialised ``catalog.db`` in the user cache directory
(``$BLUESKY_TWIN_CACHE_DIR``, else ``$XDG_CACHE_HOME/bluesky-twin``, else
``~/.cache/bluesky-twin``), and every new store gets a copy of it.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
import threading
from pathlib import Path

from ..errors import InputError
from ..io_utils import atomic_path
from ._layout import CATALOG_FILE, _cache_dir, _sqlite_uri
from ._relocate import rebase_store_paths

__all__ = ["catalog_template"]

_template_lock = threading.Lock()


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


def _check_revision(catalog_path: Path) -> None:
    """Refuse a file that is not a tiled catalog, or one of another schema revision.

    Parameters
    ----------
    catalog_path
        An existing ``catalog.db``.

    Raises
    ------
    InputError
        If it is not a tiled catalog, or its schema revision is not the one this tiled
        needs (with the command that upgrades it, where one does).
    """
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


def _require_catalog(directory: str | os.PathLike) -> Path:
    """The ``catalog.db`` of the existing embedded store in *directory*.

    Raises
    ------
    InputError
        If *directory* holds no ``catalog.db``.
    """
    catalog_path = Path(directory).expanduser() / CATALOG_FILE
    if not catalog_path.is_file():
        raise InputError(f"no embedded tiled store in {str(catalog_path.parent)!r} (expected {CATALOG_FILE} there)")
    return catalog_path


def _ready_catalog(root: Path) -> Path:
    """The ``catalog.db`` of the store directory *root*, ready for tiled to open.

    A missing catalog is copied from :func:`catalog_template`; an existing one is
    checked (:func:`_check_revision`) and its data paths are rebased onto *root*
    (:func:`~bluesky_twin.storage.rebase_store_paths`).

    Parameters
    ----------
    root
        The resolved store directory (it exists).

    Returns
    -------
    pathlib.Path
        The catalog file.

    Raises
    ------
    InputError
        See :func:`_check_revision` and :func:`~bluesky_twin.storage.rebase_store_paths`.
    """
    catalog_path = root / CATALOG_FILE
    if not catalog_path.exists():
        template = catalog_template()
        with atomic_path(catalog_path) as tmp:
            shutil.copyfile(template, tmp)
    else:
        _check_revision(catalog_path)
        rebase_store_paths(root)
    return catalog_path
