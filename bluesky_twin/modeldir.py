"""Versioned, checksummed model directories: the on-disk format of every model kind.

Every model bluesky-twin writes (the measurement twin, the Exp2SimGAN translation
model, a DUQ classifier) is a *model directory*::

    MODEL_DIR/
        CURRENT              {"layout": 1, "format": ..., "version": "v000003",
                              "metadata_sha256": ...}; replaced atomically (os.replace)
        versions/
            v000002/         an older version, kept (the newest KEEP_VERSIONS are)
            v000003/         immutable once published
                metadata.json   format, format_version, ..., "files": {path: sha256}
                ...             every other file, each listed in "files"
        .lock                while a command writes: {"pid", "host", "since"}

A writer builds a new version in a hidden temporary directory, lists the sha256 of
every file in its ``metadata.json``, renames the directory into ``versions/`` and
only then points ``CURRENT`` at it.  A reader reads ``CURRENT`` once, reads every file
of that version into memory and checks each against the checksums (a missing entry, an
unlisted file or a mismatch is an error), so a load is one consistent version by
construction, however many writers save at the same time.  If a version is pruned
while a reader is loading it, the reader starts again from ``CURRENT``.

Model files are parsed only with safe loaders: ``torch.load(weights_only=True)``,
``numpy.load(allow_pickle=False)`` and strict JSON.  Sizes that a loader reads from
the metadata are checked against bounds (:func:`check_size`) before anything is
allocated, and paths named in the metadata must stay inside the version
(:meth:`ModelVersion.sub`).

Every problem with a directory raises :class:`~bluesky_twin.errors.ModelFileError`;
refusals to write (an output that is not a model directory of the same kind, a
directory another process is writing) raise :class:`~bluesky_twin.errors.InputError`.
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

from bluesky_twin.errors import InputError, ModelFileError

__all__ = [
    "LAYOUT_VERSION",
    "KEEP_VERSIONS",
    "ModelVersion",
    "ModelDirInfo",
    "check_size",
    "current_path",
    "describe",
    "dumps_strict",
    "load_model",
    "open_version",
    "prepare_output_dir",
    "check_output_file",
    "upgrade_flat_dir",
    "writer_lock",
    "write_version",
]

#: Version of the directory layout (``CURRENT`` + ``versions/``).
LAYOUT_VERSION = 1
#: Versions kept in a model directory after a new one is published (the current included).
KEEP_VERSIONS = 3
#: Most bytes a loader reads from one version (all files together).
MAX_VERSION_BYTES = 2 * 1024**3
#: Most files in one version.
MAX_VERSION_FILES = 10_000

POINTER_FILE = "CURRENT"
VERSIONS_DIR = "versions"
METADATA_FILE = "metadata.json"
LOCK_FILE = ".lock"
_TMP_PREFIX = ".tmp-"
_TRASH_PREFIX = ".trash-"
_LOAD_ATTEMPTS = 8

T = TypeVar("T")


# --------------------------------------------------------------------- JSON
def dumps_strict(obj: Any) -> str:
    """Indented, sorted, *strict* JSON: NaN and infinities are an error, not ``NaN``.

    Raises
    ------
    ValueError
        *obj* holds a non-finite float (the message names its key).
    """
    from bluesky_twin.io_utils import json_default

    try:
        return json.dumps(obj, indent=2, sort_keys=True, allow_nan=False, default=json_default) + "\n"
    except ValueError:
        raise ValueError(f"metadata holds a non-finite number at {_first_nonfinite(obj)}") from None


def _first_nonfinite(obj: Any, where: str = "") -> str:
    if isinstance(obj, float) and not math.isfinite(obj):
        return where or "<top>"
    if isinstance(obj, dict):
        for k, v in obj.items():
            found = _first_nonfinite(v, f"{where}.{k}" if where else str(k))
            if found:
                return found
    if isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            found = _first_nonfinite(v, f"{where}[{i}]")
            if found:
                return found
    return ""


def _loads_strict(data: bytes, what: str) -> Any:
    def _reject(token: str) -> Any:
        raise ValueError(f"non-standard JSON constant {token}")

    try:
        return json.loads(data.decode("utf-8"), parse_constant=_reject)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ModelFileError(f"{what} is corrupt (not valid JSON: {exc})") from None


# --------------------------------------------------------------------- sizes
def check_size(what: str, value: Any, lo: int, hi: int, *, source: str = "metadata.json") -> int:
    """Return *value* as an int if ``lo <= value <= hi``; else raise :class:`ModelFileError`.

    Loaders call this on every size they read from metadata (layers, widths, members,
    frame sizes...) before allocating anything.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise ModelFileError(f"{source}: {what} must be an integer, got {value!r}")
    ivalue = int(value)
    if not lo <= ivalue <= hi:
        raise ModelFileError(f"{source}: {what} = {ivalue} is outside the sane range [{lo}, {hi}]")
    return ivalue


# --------------------------------------------------------------------- reading
@dataclass(frozen=True)
class ModelVersion:
    """One verified version of a model directory, held in memory.

    Attributes
    ----------
    root
        The model directory.
    name
        The version's name (``v000003``; ``""`` for a nested view).
    metadata
        The parsed ``metadata.json`` of the version (or of the nested view).
    files
        Every file's content, by path relative to the view, checksums verified.
    """

    root: Path
    name: str
    metadata: dict[str, Any]
    files: dict[str, bytes] = field(repr=False)
    prefix: str = ""

    @property
    def path(self) -> Path:
        """Where the version lies on disk (read-only; prefer :meth:`read`)."""
        base = self.root / VERSIONS_DIR / self.name if self.name else self.root
        return base / self.prefix if self.prefix else base

    def _label(self, rel: str) -> str:
        return str(self.path / rel)

    def has(self, rel: str) -> bool:
        """Whether the view holds file *rel*."""
        return _safe_rel(rel, self._label(rel)) in self.files

    def read(self, rel: str) -> bytes:
        """The verified content of file *rel*."""
        key = _safe_rel(rel, self._label(rel))
        try:
            return self.files[key]
        except KeyError:
            raise ModelFileError(f"{self._label(rel)} is missing") from None

    def read_json(self, rel: str) -> Any:
        """File *rel* parsed as strict JSON."""
        return _loads_strict(self.read(rel), self._label(rel))

    def torch_load(self, rel: str) -> Any:
        """File *rel* loaded with ``torch.load(weights_only=True)`` on the CPU."""
        import torch

        data = self.read(rel)
        try:
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises many types on pickled or corrupt content
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise ModelFileError(f"cannot load {self._label(rel)} safely: {type(exc).__name__}: {first}") from None

    def numpy_load(self, rel: str) -> Any:
        """File *rel* loaded with ``numpy.load(allow_pickle=False)`` (``.npy`` array or ``.npz`` dict).

        The size an array header declares is checked against the bytes present before
        anything is allocated.
        """
        import zipfile

        import numpy as np

        data = self.read(rel)
        try:
            if data[:4] == b"PK\x03\x04":  # .npz
                out = {}
                with zipfile.ZipFile(io.BytesIO(data)) as zf:
                    for info in zf.infolist():
                        if info.file_size > MAX_VERSION_BYTES:
                            raise ValueError(f"member {info.filename} declares {info.file_size} bytes")
                        member = zf.read(info)
                        _check_npy_header(member)
                        key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
                        out[key] = np.load(io.BytesIO(member), allow_pickle=False)
                return out
            _check_npy_header(data)
            return np.load(io.BytesIO(data), allow_pickle=False)
        except Exception as exc:
            raise ModelFileError(f"cannot read {self._label(rel)} safely: {type(exc).__name__}: {exc}") from None

    def sub(self, rel: str) -> ModelVersion:
        """A view of the sub-directory *rel* (which must stay inside this version).

        The view's metadata is the sub-directory's own ``metadata.json``.
        """
        key = _safe_rel(rel, self._label(rel))
        head = key + "/"
        files = {k[len(head) :]: v for k, v in self.files.items() if k.startswith(head)}
        if not files:
            raise ModelFileError(f"{self._label(rel)} is missing or empty")
        prefix = f"{self.prefix}/{key}" if self.prefix else key
        view = ModelVersion(self.root, self.name, {}, files, prefix)
        meta = view.read_json(METADATA_FILE)
        if not isinstance(meta, dict):
            raise ModelFileError(f"{view._label(METADATA_FILE)} is not a JSON object")
        return ModelVersion(self.root, self.name, meta, files, prefix)


def _check_npy_header(data: bytes) -> None:
    """Refuse a ``.npy`` whose header declares more data than the bytes hold (or objects)."""
    import numpy as np

    fh = io.BytesIO(data)
    major, _minor = np.lib.format.read_magic(fh)
    if major == 1:
        shape, _fortran, dtype = np.lib.format.read_array_header_1_0(fh)
    else:
        shape, _fortran, dtype = np.lib.format.read_array_header_2_0(fh, max_header_size=100_000)
    if dtype.hasobject:
        raise ValueError("the array holds Python objects (pickles are not loaded)")
    need = math.prod(int(s) for s in shape) * dtype.itemsize
    if need > len(data) - fh.tell():
        raise ValueError(
            f"the header declares shape {tuple(shape)} ({need} bytes) but the file holds "
            f"{len(data) - fh.tell()} bytes of data"
        )


def _safe_rel(rel: str, label: str) -> str:
    """Normalise a relative path named in metadata; refuse anything that leaves the version."""
    if not isinstance(rel, str) or not rel or "\\" in rel or "\x00" in rel:
        raise ModelFileError(f"{label}: invalid path {rel!r} in metadata")
    p = PurePosixPath(rel)
    if p.is_absolute() or any(part in ("..", "") for part in p.parts) or rel.startswith("~"):
        raise ModelFileError(f"{label}: path {rel!r} in metadata leaves the model directory")
    return str(p)


def _read_pointer(root: Path) -> dict[str, Any] | None:
    try:
        data = (root / POINTER_FILE).read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ModelFileError(f"cannot read {root / POINTER_FILE}: {exc}") from None
    if len(data) > 4096:
        raise ModelFileError(f"{root / POINTER_FILE} is not a model pointer (too large)")
    ptr = _loads_strict(data, str(root / POINTER_FILE))
    if not isinstance(ptr, dict) or not isinstance(ptr.get("version"), str):
        raise ModelFileError(f"{root / POINTER_FILE} is not a model pointer")
    if ptr.get("layout") != LAYOUT_VERSION:
        raise ModelFileError(
            f"{root} uses model-directory layout {ptr.get('layout')!r}; this bluesky-twin reads layout {LAYOUT_VERSION}"
        )
    name = ptr["version"]
    if "/" in name or name.startswith(".") or not name:
        raise ModelFileError(f"{root / POINTER_FILE} names an invalid version {name!r}")
    return ptr


def _regular_files(base: Path, error: Callable[[str], Exception]) -> Iterator[tuple[str, str]]:
    """``(relative posix path, full path)`` of every file under *base*; a symbolic link or a
    special file raises ``error(message)``."""
    for dirpath, dirnames, filenames in os.walk(base, followlinks=False):
        for d in dirnames:
            if os.path.islink(os.path.join(dirpath, d)):
                raise error(f"{base}: {os.path.join(dirpath, d)} is a symbolic link")
        for fn in filenames:
            full = os.path.join(dirpath, fn)
            rel = os.path.relpath(full, base).replace(os.sep, "/")
            if os.path.islink(full) or not os.path.isfile(full):
                raise error(f"{base}: {rel} is a symbolic link or not a regular file")
            yield rel, full


def _read_tree(base: Path, label: Path) -> dict[str, bytes]:
    """Every regular file under *base* (no symlinks), bounded in count and bytes."""
    files: dict[str, bytes] = {}
    total = 0
    for rel, full in _regular_files(base, ModelFileError):
        total += os.path.getsize(full)
        if total > MAX_VERSION_BYTES or len(files) >= MAX_VERSION_FILES:
            raise ModelFileError(
                f"{label} holds more than {MAX_VERSION_BYTES} bytes or {MAX_VERSION_FILES} files: not a model directory"
            )
        with open(full, "rb") as fh:
            files[rel] = fh.read()
    return files


def _verify(files: dict[str, bytes], label: Path, fmt: str | None) -> dict[str, Any]:
    from bluesky_twin.io_utils import sha256_bytes

    if METADATA_FILE not in files:
        raise ModelFileError(f"{label} lacks {METADATA_FILE}")
    meta = _loads_strict(files[METADATA_FILE], str(label / METADATA_FILE))
    if not isinstance(meta, dict):
        raise ModelFileError(f"{label / METADATA_FILE} is not a JSON object")
    if fmt is not None and meta.get("format") != fmt:
        raise ModelFileError(f"{label} holds no {describe(fmt)} (format {meta.get('format')!r})")
    listed = meta.get("files")
    if not isinstance(listed, dict):
        raise ModelFileError(f"{label / METADATA_FILE} has no 'files' checksum table")
    for rel in files:
        if rel != METADATA_FILE and rel not in listed:
            raise ModelFileError(f"{label / rel} has no checksum entry in {METADATA_FILE}")
    for rel, digest in listed.items():
        key = _safe_rel(rel, str(label))
        if key not in files:
            raise ModelFileError(f"{label / key} is missing (listed in {METADATA_FILE})")
        if sha256_bytes(files[key]) != digest:
            raise ModelFileError(f"{label / key} does not match its checksum in {METADATA_FILE} (corrupt or replaced)")
    return meta


def open_version(path: str | os.PathLike, fmt: str | None) -> ModelVersion:
    """Read and verify the current version of model directory *path* (one attempt).

    Parameters
    ----------
    path
        The model directory.
    fmt
        The expected ``format`` of its metadata (``None``: any).
    """
    root = Path(path)
    if not root.is_dir():
        if root.exists():
            raise ModelFileError(f"{root} is not a model directory (it is a file)")
        raise ModelFileError(f"model directory not found: {root} does not exist")
    ptr = _read_pointer(root)
    if ptr is None:
        if (root / METADATA_FILE).is_file():
            raise ModelFileError(
                f"{root} uses the unversioned layout of an older bluesky-twin; "
                f"run 'bluesky-twin upgrade-model {root}' once to convert it"
            )
        raise ModelFileError(f"{root} is not a {describe(fmt)} directory (no {POINTER_FILE})")
    name = ptr["version"]
    vdir = root / VERSIONS_DIR / name
    if not vdir.is_dir():
        raise _MissingVersion(f"{root}: version {name} named in {POINTER_FILE} is missing")
    files = _read_tree(vdir, vdir)
    from bluesky_twin.io_utils import sha256_bytes

    if METADATA_FILE in files:
        _loads_strict(files[METADATA_FILE], str(vdir / METADATA_FILE))  # a clear message for non-JSON
        if ptr.get("metadata_sha256") != sha256_bytes(files[METADATA_FILE]):
            raise ModelFileError(
                f"{vdir / METADATA_FILE} does not match the checksum in {POINTER_FILE} (corrupt or replaced)"
            )
    meta = _verify(files, vdir, fmt)
    return ModelVersion(root, name, meta, files)


def current_path(path: str | os.PathLike) -> Path:
    """The directory of the current version of model directory *path* (for inspection).

    Loaders should use :func:`load_model`, which reads the pointer once and verifies
    every file; this is for people and tests who want to look at the files.
    """
    root = Path(path)
    ptr = _read_pointer(root)
    if ptr is None:
        raise ModelFileError(f"{root} is not a model directory (no {POINTER_FILE})")
    return root / VERSIONS_DIR / ptr["version"]


def load_model(path: str | os.PathLike, fmt: str | None, build: Callable[[ModelVersion], T]) -> T:
    """Open the current version of *path* and ``build`` a model from it.

    If the version is pruned or replaced while it is read (a concurrent writer), the
    load starts again from ``CURRENT``; an error that persists is raised.
    """
    root = Path(path)
    last: Exception | None = None
    for attempt in range(_LOAD_ATTEMPTS):
        before = _pointer_bytes(root)
        try:
            return build(open_version(root, fmt))
        except (ModelFileError, OSError) as exc:
            last = exc
            # nothing moved: the error is real, unless the pointer names a version that a concurrent
            # writer pruned, which that writer repairs before it returns (see write_version)
            if _pointer_bytes(root) == before and not isinstance(exc, (FileNotFoundError, _MissingVersion)):
                break
            time.sleep(0.01 * (attempt + 1))
    if isinstance(last, ModelFileError):
        raise last
    raise ModelFileError(f"cannot read model directory {root}: {last}") from None


def _pointer_bytes(root: Path) -> bytes | None:
    try:
        return (root / POINTER_FILE).read_bytes()
    except OSError:
        return None


# --------------------------------------------------------------------- writing
def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _manifest(tmp: Path) -> dict[str, str]:
    """The sha256 of every file under *tmp* but ``metadata.json``, each fsynced first."""
    from bluesky_twin.io_utils import sha256_file

    out: dict[str, str] = {}
    for rel, full in _regular_files(tmp, ValueError):
        if rel == METADATA_FILE:
            continue
        with open(full, "rb+") as fh:
            os.fsync(fh.fileno())
        out[rel] = sha256_file(full)
    return dict(sorted(out.items()))


def write_version(
    path: str | os.PathLike,
    metadata: dict[str, Any],
    write_files: Callable[[Path], None],
    *,
    keep: int = KEEP_VERSIONS,
) -> str:
    """Publish a new version of model directory *path*; return the version's name.

    Parameters
    ----------
    path
        The model directory (created if missing).  An existing path that is not a model
        directory of ``metadata["format"]`` (a file, or a non-empty directory of
        anything else) is refused with :class:`InputError`; nothing is touched.
    metadata
        JSON-serialisable metadata with a ``format`` entry; ``files`` (the checksums of
        every file the writer made) is added.  Non-finite numbers are an error.
    write_files
        ``write_files(tmp)`` writes the version's files into directory *tmp* (anything
        but ``metadata.json``; sub-directories allowed, symbolic links not).
    keep
        Versions kept after publishing (>= 1; older ones are removed).
    """
    fmt = metadata.get("format")
    if not isinstance(fmt, str):
        raise ValueError("metadata needs a 'format' entry")
    root = Path(path)
    _refuse_foreign(root, fmt)
    versions = root / VERSIONS_DIR
    versions.mkdir(parents=True, exist_ok=True)
    _clean_stale(versions)
    from bluesky_twin.io_utils import as_if_created

    tmp = Path(tempfile.mkdtemp(prefix=_TMP_PREFIX, dir=versions))
    try:
        as_if_created(tmp)  # readable like any directory the process makes (mkdtemp's is private)
        write_files(tmp)
        if (tmp / METADATA_FILE).exists():
            raise ValueError(f"the writer may not write {METADATA_FILE} itself")
        meta = dict(metadata)
        meta["files"] = _manifest(tmp)
        text = dumps_strict(meta)
        with open(tmp / METADATA_FILE, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        _fsync_dir(tmp)
        name = _publish_dir(tmp, versions)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _point_at(root, fmt, name, text.encode("utf-8"))
    _prune(root, max(1, int(keep)))
    _repair_pointer(root, fmt)
    return name


class _MissingVersion(ModelFileError):
    """``CURRENT`` names a version that is not there (for a moment, while writers race)."""


def _repair_pointer(root: Path, fmt: str) -> None:
    """Point ``CURRENT`` at the newest version if the one it names was pruned under it.

    Writers without a common lock can race: writer A publishes ``v7`` and, before it
    points ``CURRENT`` at it, writer B publishes and points at ``v8``-``v10`` and prunes
    ``v7`` as old; A then points at the missing ``v7``.  Every writer therefore checks,
    as its last step, that ``CURRENT`` names a version that exists and otherwise points
    it at the newest one, which no concurrent prune removes (a prune keeps the version
    ``CURRENT`` names and everything newer).
    """
    for _ in range(100):
        ptr = _read_pointer(root)
        names = _version_names(root / VERSIONS_DIR)
        if ptr is None or ptr["version"] in names or not names:
            return
        newest = names[-1]
        try:
            metadata = (root / VERSIONS_DIR / newest / METADATA_FILE).read_bytes()
        except FileNotFoundError:
            continue  # pruned in between: look again
        _point_at(root, fmt, newest, metadata)


def _point_at(root: Path, fmt: str, name: str, metadata: bytes) -> None:
    """Replace ``CURRENT`` atomically with a pointer to version *name* (whose metadata is *metadata*)."""
    from bluesky_twin.io_utils import atomic_write_text, sha256_bytes

    pointer = {"layout": LAYOUT_VERSION, "format": fmt, "version": name, "metadata_sha256": sha256_bytes(metadata)}
    atomic_write_text(root / POINTER_FILE, json.dumps(pointer, sort_keys=True) + "\n")
    _fsync_dir(root)


def _publish_dir(tmp: Path, versions: Path) -> str:
    """Rename *tmp* to the next free ``vNNNNNN`` name (safe against concurrent writers)."""
    for _ in range(1000):
        n = 1 + max(
            (int(p.name[1:]) for p in versions.iterdir() if p.name.startswith("v") and p.name[1:].isdigit()), default=0
        )
        name = f"v{n:06d}"
        try:
            os.rename(tmp, versions / name)  # fails if another writer took the name
        except OSError:
            if (versions / name).exists():
                continue
            raise
        _fsync_dir(versions)
        return name
    raise RuntimeError(f"could not find a free version name in {versions}")  # pragma: no cover


def _version_names(versions: Path) -> list[str]:
    try:
        return sorted(
            (p.name for p in versions.iterdir() if p.name.startswith("v") and p.name[1:].isdigit()),
            key=lambda s: int(s[1:]),
        )
    except FileNotFoundError:
        return []


def _prune(root: Path, keep: int) -> None:
    """Remove versions older than the current one beyond the newest *keep*.

    The current version and any newer one (a concurrent writer may be about to point
    ``CURRENT`` at it) are never removed.
    """
    ptr = _read_pointer(root)
    names = _version_names(root / VERSIONS_DIR)
    if ptr is None or ptr["version"] not in names:
        return
    older = names[: names.index(ptr["version"])]
    drop = older[: max(0, len(older) - (keep - 1))]
    for name in drop:
        src = root / VERSIONS_DIR / name
        trash = root / VERSIONS_DIR / f"{_TRASH_PREFIX}{name}-{os.getpid()}-{threading.get_ident()}"
        try:
            os.rename(src, trash)
        except OSError:
            continue  # another writer pruned it
        shutil.rmtree(trash, ignore_errors=True)


def _clean_stale(versions: Path, age_s: float = 3600.0) -> None:
    """Remove temporary and trash directories that crashed writers left behind."""
    now = time.time()
    for p in versions.iterdir():
        if p.name.startswith((_TMP_PREFIX, _TRASH_PREFIX)):
            try:
                if now - p.stat().st_mtime > age_s:
                    shutil.rmtree(p, ignore_errors=True)
            except OSError:
                pass


# --------------------------------------------------------------------- what is at a path
@dataclass(frozen=True)
class ModelDirInfo:
    """What an output path holds: nothing, an empty directory, a model, or something else."""

    kind: str  # "missing" | "empty" | "model" | "file" | "other"
    format: str | None = None
    version: str | None = None


def inspect_path(path: str | os.PathLike) -> ModelDirInfo:
    """Classify *path* for the output rules of the commands (never raises for content)."""
    root = Path(path)
    if not root.exists():
        return ModelDirInfo("missing")
    if not root.is_dir():
        return ModelDirInfo("file")
    entries = [p.name for p in root.iterdir()]
    if not entries or entries == [LOCK_FILE]:
        return ModelDirInfo("empty")
    try:
        ptr = _read_pointer(root)
    except ModelFileError:
        ptr = None
    if ptr is not None:
        return ModelDirInfo("model", ptr.get("format"), ptr["version"])
    if (root / METADATA_FILE).is_file():  # the unversioned layout of older releases
        try:
            meta = json.loads((root / METADATA_FILE).read_text())
            fmt = meta.get("format") if isinstance(meta, dict) else None
        except (OSError, ValueError):
            fmt = None
        if isinstance(fmt, str) and fmt.startswith("bluesky-twin"):
            return ModelDirInfo("model", fmt, None)
    return ModelDirInfo("other")


_DESCRIPTIONS = {
    "bluesky-twin/measurement-twin": "twin model",
    "bluesky-twin/exp2simgan": "Exp2SimGAN model",
    "bluesky-twin-duq": "DUQ classifier",
}


def describe(fmt: str | None) -> str:
    """A readable name of a model format."""
    return _DESCRIPTIONS.get(fmt or "", f"{fmt} model" if fmt else "model")


def _refuse_foreign(root: Path, fmt: str) -> ModelDirInfo:
    """What *root* holds, if a model of *fmt* may be written there; else :class:`InputError`."""
    info = inspect_path(root)
    if info.kind == "file":
        raise InputError(f"{root} exists and is a file, not a {describe(fmt)} directory; nothing was written")
    if info.kind == "other":
        raise InputError(
            f"{root} is a non-empty directory that holds no {describe(fmt)}; "
            "refusing to write into it (choose another path)"
        )
    if info.kind == "model" and info.format != fmt:
        raise InputError(f"{root} holds a {describe(info.format)}, not a {describe(fmt)}; choose another path")
    if info.kind == "model" and info.version is None:
        raise InputError(
            f"{root} holds a {describe(fmt)} in the unversioned layout of an older "
            f"bluesky-twin; run 'bluesky-twin upgrade-model {root}' first"
        )
    return info


def prepare_output_dir(
    path: str | os.PathLike,
    fmt: str,
    *,
    overwrite: bool,
    option: str = "--out",
    flag: str = "--overwrite (alias --force)",
) -> ModelDirInfo:
    """Check a command's model-directory output before anything runs.

    A missing path or an empty directory is fine.  An existing model directory of the
    same format needs *overwrite* (a new version is added; the previous one is kept).
    Anything else (a file, a non-empty directory that holds no such model, another
    kind of model) is refused whatever *overwrite* says.

    Raises
    ------
    InputError
        With one line saying why; nothing has been touched.
    """
    root = Path(path)
    info = _refuse_foreign(root, fmt)
    if info.kind == "model" and not overwrite:
        raise InputError(
            f"{option} {root} already holds a {describe(fmt)} (version {info.version}); "
            f"pass {flag} to publish a new version (the previous one is kept)"
        )
    return info


def check_output_file(
    path: str | os.PathLike, *, overwrite: bool, inputs: tuple[str | os.PathLike, ...] = (), option: str = "--out"
) -> Path:
    """Check a command's file output before anything runs.

    An existing file is replaced only with *overwrite*; a directory, or one of the
    command's own *inputs*, never.

    Raises
    ------
    InputError
        With one line saying why; nothing has been touched.
    """
    out = Path(path)
    for src in inputs:
        try:
            same = out.exists() and Path(src).exists() and os.path.samefile(out, src)
        except OSError:
            same = False
        if same or (not out.exists() and Path(os.path.abspath(out)) == Path(os.path.abspath(src))):
            raise InputError(f"{option} {out} is the command's own input {src}; choose another output")
    if out.is_dir():
        raise InputError(f"{option} {out} is a directory; give a file name")
    if out.exists() and not overwrite:
        raise InputError(f"{option} {out} exists; pass --overwrite to replace it")
    return out


# --------------------------------------------------------------------- locking
_held: dict[str, int] = {}
_held_guard = threading.Lock()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def writer_lock(path: str | os.PathLike, *, option: str = "--out") -> Iterator[Path]:
    """Hold *path* for one writer process for the duration of a command.

    A second process that asks for the same directory is refused at once with one line
    (the owner's pid and start time); a lock left by a process that no longer runs on
    this host is taken over.  Re-entrant within a process.  If the directory did not
    exist and the command wrote nothing into it, it is removed again.
    """
    root = Path(path)
    key = os.path.abspath(root)
    with _held_guard:
        if _held.get(key):
            _held[key] += 1
            reentrant = True
        else:
            reentrant = False
    if reentrant:
        try:
            yield root
        finally:
            with _held_guard:
                _held[key] -= 1
        return
    created = not root.exists()
    root.mkdir(parents=True, exist_ok=True)
    lock = root / LOCK_FILE
    me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                owner = json.loads(lock.read_text())
                pid, host = int(owner["pid"]), str(owner["host"])
            except (OSError, ValueError, KeyError, TypeError):
                owner, pid, host = {}, -1, ""
            if host == me["host"] and pid > 0 and not _pid_alive(pid):
                lock.unlink(missing_ok=True)  # stale: its owner is gone
                continue
            raise InputError(
                f"{option} {root} is being written by pid {owner.get('pid', '?')} on "
                f"{owner.get('host', '?')} since {owner.get('since', '?')}; wait for it to "
                f"finish or choose another path (remove {lock} if that process is gone)"
            ) from None
        with os.fdopen(fd, "w") as fh:
            json.dump(me, fh)
        break
    else:  # pragma: no cover - three stale takeovers lost in a row
        raise InputError(f"{option} {root}: could not take the writer lock {lock}")
    with _held_guard:
        _held[key] = 1
    try:
        yield root
    finally:
        with _held_guard:
            _held.pop(key, None)
        lock.unlink(missing_ok=True)
        if created:
            try:
                root.rmdir()  # only if the command left it empty
            except OSError:
                pass


# --------------------------------------------------------------------- migration
def upgrade_flat_dir(path: str | os.PathLike) -> str:
    """Convert a model directory of the unversioned layout into version ``v000001``.

    Checksums the old metadata already lists (``files``, a DUQ ``weights_sha256``) are
    verified first; a mismatch refuses the upgrade.  Files are moved, not copied or
    deleted.  Returns the version name.
    """
    root = Path(path)
    info = inspect_path(root)
    if info.kind == "model" and info.version is not None:
        raise InputError(f"{root} already uses the versioned layout (version {info.version})")
    if info.kind != "model":
        raise InputError(f"{root} is not a bluesky-twin model directory of the unversioned layout")
    _check_flat_checksums(root)
    entries = [p for p in root.iterdir() if p.name != LOCK_FILE]
    versions = root / VERSIONS_DIR
    tmp = root / f"{_TMP_PREFIX}upgrade"
    tmp.mkdir()
    for p in entries:
        os.rename(p, tmp / p.name)
    _rewrite_metadata_files(tmp)
    versions.mkdir()
    name = "v000001"
    os.rename(tmp, versions / name)
    meta_bytes = (versions / name / METADATA_FILE).read_bytes()
    fmt = json.loads(meta_bytes).get("format")
    _point_at(root, fmt, name, meta_bytes)
    open_version(root, fmt)  # verify what was written
    return name


def _check_flat_checksums(root: Path) -> None:
    from bluesky_twin.io_utils import sha256_file

    for meta_path in root.rglob(METADATA_FILE):
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError) as exc:
            raise InputError(f"{meta_path} is not valid JSON: {exc}") from None
        base = meta_path.parent
        listed = dict(meta.get("files") or {})
        if "weights_sha256" in meta:
            listed["model.pt"] = meta["weights_sha256"]
        for rel, digest in listed.items():
            f = base / _safe_rel(rel, str(base))
            if not f.is_file() or sha256_file(f) != digest:
                raise InputError(f"{f} does not match the checksum its metadata records; not upgrading")


def _rewrite_metadata_files(tmp: Path) -> None:
    """Give every metadata.json (nested ones first) a full ``files`` table of its sub-tree."""
    metas = sorted(tmp.rglob(METADATA_FILE), key=lambda p: -len(p.parts))
    for meta_path in metas:
        meta = json.loads(meta_path.read_text())
        meta["files"] = _manifest(meta_path.parent)
        meta_path.write_text(dumps_strict(meta))
