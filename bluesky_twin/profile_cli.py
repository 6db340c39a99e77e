"""``bluesky-twin profile``: the IPython profile collection shipped with the package.

``bluesky-twin profile install DIR`` copies the startup files of the profile
(``00-base.py``, ``10-instruments.py``, ``20-twin.py``, ``90-plans.py``) into
``DIR/startup``, so that ``ipython --profile-dir=DIR`` starts a beamline session.
Existing files are never replaced without ``--overwrite``; bad input exits 2 with one
line and writes nothing.  ``bluesky-twin profile path`` prints where the shipped
startup files are.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``profile`` subcommands to *sub*."""
    p = sub.add_parser(
        "profile",
        help="the IPython profile collection: install it into a profile directory",
        description="The NSLS-II-style IPython profile that sets up the RunEngine, an embedded "
        "tiled store, the simulated instruments, the twin trainer and the plans.",
    )
    psub = p.add_subparsers(dest="profile_command", metavar="PROFILE_COMMAND")
    inst = psub.add_parser(
        "install",
        help="copy the startup files into DIR/startup",
        description="Copy the profile's startup files into DIR/startup (DIR is created if needed). "
        "Start the session with `ipython --profile-dir=DIR`. Existing files are kept "
        "unless --overwrite is given; then only the profile's own files are replaced.",
    )
    inst.add_argument("directory", metavar="DIR", help="IPython profile directory, e.g. ~/.ipython/profile_twin")
    inst.add_argument("--overwrite", action="store_true", help="replace startup files of the same names")
    inst.set_defaults(func=_install)
    where = psub.add_parser("path", help="print the directory that holds the shipped startup files")
    where.set_defaults(func=_path)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def startup_source() -> Path:
    """The directory of the shipped startup files.

    An installed wheel carries them as package data in ``bluesky_twin/profile_collection``;
    a source checkout (or editable install) has them in the repository's
    ``profile_collection``.
    """
    package = Path(__file__).resolve().parent
    for candidate in (package / "profile_collection" / "startup", package.parent / "profile_collection" / "startup"):
        if candidate.is_dir() and any(candidate.glob("*.py")):
            return candidate
    raise FileNotFoundError("the profile's startup files are not installed with this bluesky-twin")


def install(directory: str | Path, *, overwrite: bool = False) -> list[Path]:
    """Copy the startup files into ``directory/startup`` and return the written paths.

    Parameters
    ----------
    directory : str or Path
        The IPython profile directory (``ipython --profile-dir=directory``).
    overwrite : bool
        Replace files of the same names.  Without it an existing file is an error.

    Raises
    ------
    bluesky_twin.errors.InputError
        *directory* (or its ``startup``) is not a directory, or a file would be replaced
        without *overwrite*.  Nothing is written then.
    """
    from bluesky_twin.errors import InputError

    target = Path(directory).expanduser()
    startup = target / "startup"
    for path in (target, startup):
        if path.exists() and not path.is_dir():
            raise InputError(f"DIR: {path} exists and is not a directory")
    sources = sorted(startup_source().glob("*.py"))
    existing = [startup / src.name for src in sources if (startup / src.name).exists()]
    if existing and not overwrite:
        names = ", ".join(p.name for p in existing)
        raise InputError(f"DIR: {startup} already has {names}; pass --overwrite to replace them")
    for path in existing:
        if not path.is_file():
            raise InputError(f"DIR: {path} is not a regular file; refusing to replace it")
    written = []
    try:
        startup.mkdir(parents=True, exist_ok=True)
        for src in sources:
            dest = startup / src.name
            tmp = dest.with_name(f".{dest.name}.tmp")
            tmp.write_bytes(src.read_bytes())
            tmp.replace(dest)  # atomic: a reader sees the old or the new file, never half of one
            written.append(dest)
    except OSError as exc:
        raise InputError(f"DIR: cannot write into {startup}: {exc.strerror or exc}") from exc
    return written


def _install(args: argparse.Namespace) -> int:
    written = install(args.directory, overwrite=args.overwrite)
    target = Path(args.directory).expanduser()
    print(
        f"installed {len(written)} startup files into {target / 'startup'}; start with: ipython --profile-dir={target}"
    )
    return 0


def _path(args: argparse.Namespace) -> int:
    try:
        print(startup_source())
    except FileNotFoundError as exc:
        print(f"bluesky-twin: error: {exc}", file=sys.stderr)
        return 1
    return 0
