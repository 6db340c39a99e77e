"""Relocation of an embedded store: rebase the data paths its catalog records.

Tiled records the data of a run (rows in ``tabular.db``, arrays under ``data/``) as
absolute URIs in the catalog.  Every recorded path lies inside the store directory, so
what the catalog holds is, in effect, relative to the directory it was written in:
when a store is opened from another place (copied, moved, restored from a backup),
:func:`rebase_store_paths` rewrites those URIs onto the directory it is opened from
before tiled reads them.  Stores written before this rule are rebased the same way.
"""

from __future__ import annotations

import os
import re
import sqlite3
from pathlib import Path

from ..errors import InputError
from ._layout import CATALOG_FILE, TABULAR_FILE

__all__ = ["rebase_store_paths"]

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
                updates.append((prefix + new + path[len(old) :], asset_id))
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
