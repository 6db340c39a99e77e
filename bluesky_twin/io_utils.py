"""Atomic file writing and content hashing.

Outputs are written to a temporary file in the destination directory and moved
into place with :func:`os.replace`, so a crash never leaves a half-written file
and never destroys the previous version.  Model directories have their own
versioned format (:mod:`bluesky_twin.modeldir`).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def current_umask() -> int:
    """The process's file-mode creation mask, read without changing it where the OS allows.

    On Linux it comes from ``/proc/self/status``; elsewhere ``os.umask`` is set and
    restored at once (a brief window in which another thread creating a file would get
    the default mask).
    """
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def as_if_created(path: str | os.PathLike) -> None:
    """Give a file or directory from :mod:`tempfile` (private: 0600/0700) the mode ``open()``/``mkdir`` would.

    Temporary files are created private to their owner; once renamed into place they
    should be as readable as any other file the process writes (for example by a RunEngine
    session under another account reading a model directory), so the mode follows the
    umask: ``0o666 & ~umask`` for a file, ``0o777 & ~umask`` for a directory.
    """
    p = Path(path)
    os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~current_umask())


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to *path*; on success move it onto *path*.

    Parameters
    ----------
    path
        Final destination.
    suffix
        Suffix for the temporary file (some writers infer the format from it).
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=suffix or dest.suffix, dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        as_if_created(tmp_path)
        yield tmp_path
        os.replace(tmp_path, dest)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write *text* to *path* atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write *obj* as indented JSON to *path* atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=json_default) + "\n")


def finite_json_data(obj: Any) -> Any:
    """*obj* as plain JSON data: numpy values to Python, tuples to lists, keys to str,
    and NaN/inf to ``None`` (strict JSON; e.g. an undefined gap or an unreached step)."""
    import math

    if isinstance(obj, dict):
        return {str(k): finite_json_data(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json_data(v) for v in obj]
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):  # numpy arrays and scalars
        return finite_json_data(obj.tolist())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    return obj


def json_default(obj: Any) -> Any:
    """``json.dumps(default=...)``: numpy scalars and arrays, paths."""
    try:
        import numpy as np

        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of *data*."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's content."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
