"""Tiled configuration of an embedded store: a ``tiled serve config`` file and a client profile.

Served by tiled's own server (``tiled serve config CONFIG``) or opened in-process from a
profile (``tiled.client.from_profile(NAME)``), an embedded store is then a standard
``CatalogOfBlueskyRuns``: ``c[-1]``, ``c[scan_id]``, ``run.documents()`` and
``run["primary"].read()`` work.  The config carries what a plain ``tiled serve`` on the
directory lacks:

- the ``CatalogOfBlueskyRuns`` spec of the root node (:data:`BLUESKY_CATALOG_SPECS`);
- the store's table database and data directory as *readable* storage (writable only
  when asked, for writers going through the server);
- the ``application/json-seq`` exporter of ``BlueskyRun`` nodes in its ``media_types``
  section (:data:`BLUESKY_MEDIA_TYPES`), for ``run.documents()``.

No API key is written: ``tiled serve config`` takes ``--api-key KEY`` or
``$TILED_SINGLE_USER_API_KEY`` (else it prints a random one).
"""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Any

from ..errors import InputError
from ._catalog import _ready_catalog, _require_catalog
from ._layout import BLUESKY_CATALOG_SPECS, BLUESKY_MEDIA_TYPES, CATALOG_FILE, DATA_DIR, TABULAR_FILE, _sqlite_uri

__all__ = ["tiled_config", "write_tiled_config", "write_tiled_profile"]

_PROFILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def tiled_config(directory: str | os.PathLike, *, writable: bool = False) -> dict[str, Any]:
    """The tiled server config of the existing embedded store in *directory*.

    The store is checked first (schema revision) and, if it was copied or moved, its
    recorded data paths are rebased onto *directory*
    (:func:`~bluesky_twin.storage.rebase_store_paths`), so the config serves the
    store's own files.  The paths in the config are absolute: write it again after
    moving the store.

    Parameters
    ----------
    directory
        A store directory made by :func:`~bluesky_twin.storage.open_store`.
    writable
        Declare the table database and the data directory writable (a TiledWriter may
        then write runs through the server); by default they are only readable.

    Returns
    -------
    dict
        ``{"catalog": {...}, "media_types": {...}}``, as tiled's config schema has it.

    Raises
    ------
    InputError
        If *directory* holds no store, a catalog of another schema revision, or a moved
        store whose catalog cannot be written.
    """
    root = Path(directory).expanduser().resolve()
    _require_catalog(root)
    catalog_path = _ready_catalog(root)
    storage = [str(root / DATA_DIR), _sqlite_uri(root / TABULAR_FILE)]
    catalog: dict[str, Any] = {
        "uri": _sqlite_uri(catalog_path),
        "specs": copy.deepcopy(BLUESKY_CATALOG_SPECS),
        "init_if_not_exists": False,
        "writable_storage" if writable else "readable_storage": storage,
    }
    return {"catalog": catalog, "media_types": copy.deepcopy(BLUESKY_MEDIA_TYPES)}


def _checked_out(out: str | os.PathLike, directory: str | os.PathLike, *, overwrite: bool) -> Path:
    """*out* as a path, checked before anything is written or rebased.

    Raises
    ------
    InputError
        If *out* exists (without *overwrite*), is a directory, or is one of the store's
        own databases.
    """
    from ..modeldir import check_output_file

    root = Path(directory).expanduser()
    return check_output_file(out, overwrite=overwrite, inputs=(root / CATALOG_FILE, root / TABULAR_FILE))


def _write_yaml(path: Path, content: dict[str, Any], header: str) -> Path:
    """Write *content* as YAML after the comment lines *header*, atomically."""
    import yaml

    from ..io_utils import atomic_write_text

    comments = "".join(f"# {line}".rstrip() + "\n" for line in header.splitlines())
    atomic_write_text(path, comments + yaml.safe_dump(content, sort_keys=False, default_flow_style=False))
    return path


def write_tiled_config(
    directory: str | os.PathLike, out: str | os.PathLike, *, overwrite: bool = False, writable: bool = False
) -> Path:
    """Write a ``tiled serve config`` file for the embedded store in *directory*.

    Parameters
    ----------
    directory
        A store directory made by :func:`~bluesky_twin.storage.open_store`.
    out
        The YAML file to write (its directory is created if needed).
    overwrite
        Replace an existing *out*.
    writable
        See :func:`tiled_config`.

    Returns
    -------
    pathlib.Path
        *out*.  Serve it with ``tiled serve config OUT --api-key KEY`` (or with
        ``$TILED_SINGLE_USER_API_KEY`` set).

    Raises
    ------
    InputError
        See :func:`tiled_config`; also if *out* exists (without *overwrite*), is a
        directory, or is one of the store's databases.  Nothing is written then.
    """
    path = _checked_out(out, directory, overwrite=overwrite)
    content = tiled_config(directory, writable=writable)
    header = (
        f"tiled server config of the embedded store {Path(directory).expanduser().resolve()}\n"
        "(written by `bluesky-twin store serve-config`).  Serve it with\n"
        "    tiled serve config THIS_FILE --host 127.0.0.1 --port 8000 --api-key KEY\n"
        "or set TILED_SINGLE_USER_API_KEY instead of --api-key."
    )
    return _write_yaml(path, content, header)


def write_tiled_profile(
    directory: str | os.PathLike, out: str | os.PathLike, *, name: str, overwrite: bool = False, writable: bool = False
) -> Path:
    """Write a tiled client profile that opens the embedded store in *directory* in-process.

    The profile holds the config of :func:`tiled_config` under ``direct:``, so
    ``tiled.client.from_profile(name)`` serves the store inside the calling process
    (no server, no API key) with the same catalog spec and exporters as
    ``tiled serve config``.  For a running server, tiled's own
    ``tiled profile create URI --name NAME`` writes a profile.

    Parameters
    ----------
    directory
        A store directory made by :func:`~bluesky_twin.storage.open_store`.
    out
        The YAML file to write, in one of tiled's profile directories
        (``tiled profile paths``) or in ``$TILED_PROFILES``.
    name
        The profile name: letters, digits, ``_``, ``.`` and ``-``.
    overwrite, writable
        See :func:`write_tiled_config`.

    Returns
    -------
    pathlib.Path
        *out*.

    Raises
    ------
    InputError
        If *name* is not a valid profile name, or see :func:`write_tiled_config`.
    """
    if not _PROFILE_NAME.match(name):
        raise InputError(f"profile name {name!r}: use letters, digits, '_', '.' and '-'")
    path = _checked_out(out, directory, overwrite=overwrite)
    content = {name: {"direct": tiled_config(directory, writable=writable)}}
    header = (
        f"tiled client profile {name!r}: the embedded store {Path(directory).expanduser().resolve()}\n"
        "served in-process (written by `bluesky-twin store tiled-profile`).  Open it with\n"
        f"    from tiled.client import from_profile; catalog = from_profile({name!r})"
    )
    return _write_yaml(path, content, header)
