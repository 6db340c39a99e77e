"""``bluesky-twin store``: tiled's own server and client on an embedded store.

``bluesky-twin store serve-config STORE_DIR --out CONFIG.yml`` writes a config for
``tiled serve config CONFIG.yml``; ``bluesky-twin store tiled-profile STORE_DIR --name
NAME`` writes a client profile for ``tiled.client.from_profile(NAME)``.  Either way the
store is a standard ``CatalogOfBlueskyRuns`` (``c[-1]``, ``c[scan_id]``,
``run.documents()``, ``run["primary"].read()``).  An existing output is never replaced
without ``--overwrite``; bad input exits 2 with one line and writes nothing.
"""

from __future__ import annotations

import argparse
from pathlib import Path

_WRITABLE_HELP = (
    "declare the store's table database and data directory writable, so that a TiledWriter "
    "can write runs through tiled (default: readable only)"
)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``store`` subcommands to *sub*."""
    p = sub.add_parser(
        "store",
        help="serve an embedded store with tiled's own server or client profile",
        description="Make an embedded store of runs a standard tiled CatalogOfBlueskyRuns for "
        "`tiled serve config` and `tiled.client.from_profile`.",
    )
    ssub = p.add_subparsers(dest="store_command", metavar="STORE_COMMAND")
    cfg = ssub.add_parser(
        "serve-config",
        help="write a `tiled serve config` file for a store",
        description="Write a tiled server config for the embedded store in STORE_DIR: the CatalogOfBlueskyRuns "
        "spec, the store's files as storage and the json-seq exporter that run.documents() needs. "
        "Serve it with `tiled serve config CONFIG --api-key KEY` (or TILED_SINGLE_USER_API_KEY). "
        "A copied or moved store has its data paths rebased first.",
    )
    cfg.add_argument("store", metavar="STORE_DIR", help="an embedded store directory (holds catalog.db)")
    cfg.add_argument("--out", required=True, metavar="CONFIG", help="the YAML config file to write")
    cfg.add_argument("--overwrite", action="store_true", help="replace an existing CONFIG")
    cfg.add_argument("--writable", action="store_true", help=_WRITABLE_HELP)
    cfg.set_defaults(func=_serve_config)
    prof = ssub.add_parser(
        "tiled-profile",
        help="write a tiled client profile that opens a store in-process",
        description="Write a tiled client profile NAME that serves the embedded store in STORE_DIR inside the "
        "calling process (no server, no API key): `tiled.client.from_profile(NAME)`. For a running "
        "`tiled serve config` server use tiled's own `tiled profile create URI --name NAME`.",
    )
    prof.add_argument("store", metavar="STORE_DIR", help="an embedded store directory (holds catalog.db)")
    prof.add_argument("--name", required=True, help="the profile name (letters, digits, '_', '.', '-')")
    prof.add_argument(
        "--out", metavar="PROFILE", help="the YAML file to write (default: NAME.yml in tiled's user profile directory)"
    )
    prof.add_argument("--overwrite", action="store_true", help="replace an existing PROFILE")
    prof.add_argument("--writable", action="store_true", help=_WRITABLE_HELP)
    prof.set_defaults(func=_tiled_profile)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _serve_config(args: argparse.Namespace) -> int:
    from bluesky_twin.storage import write_tiled_config

    out = write_tiled_config(args.store, args.out, overwrite=args.overwrite, writable=args.writable)
    print(f"wrote {out}; serve it with: tiled serve config {out} --api-key KEY")
    return 0


def _tiled_profile(args: argparse.Namespace) -> int:
    from tiled.profiles import paths

    from bluesky_twin.storage import write_tiled_profile

    out = Path(args.out) if args.out else paths[-1] / f"{args.name}.yml"
    written = write_tiled_profile(args.store, out, name=args.name, overwrite=args.overwrite, writable=args.writable)
    print(f"wrote {written}; open it with: tiled.client.from_profile({args.name!r})")
    folder = written.parent.resolve()
    if folder not in {p.expanduser().resolve() for p in paths}:
        print(
            f"note: {folder} is not one of tiled's profile directories; "
            f"set TILED_PROFILES={folder} (see `tiled profile paths`)"
        )
    return 0
