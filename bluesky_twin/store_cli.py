"""``bluesky-twin store``: a tiled server on PostgreSQL; tiled's own server and client on an embedded store.

``bluesky-twin store serve --catalog postgresql://USER@HOST/DB --data-dir DIR`` serves a
catalog of Bluesky runs whose catalog and run tables live in PostgreSQL (initialised on
first use), with the API key from an environment variable or a file and anonymous
access refused.
``bluesky-twin store serve-config STORE_DIR --out CONFIG.yml`` writes a config for
``tiled serve config CONFIG.yml``; ``bluesky-twin store tiled-profile STORE_DIR --name
NAME`` writes a client profile for ``tiled.client.from_profile(NAME)``.  Either way the
store is a standard ``CatalogOfBlueskyRuns`` (``c[-1]``, ``c[scan_id]``,
``run.documents()``, ``run["primary"].read()``).  An existing output is never replaced
without ``--overwrite``; bad input exits 2 with one line and writes nothing.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

#: Environment variable read for ``--catalog`` when the option is not given.
CATALOG_ENV = "BLUESKY_TWIN_TILED_CATALOG"
#: Default environment variable holding the server's API key (tiled's own name).
API_KEY_ENV = "TILED_SINGLE_USER_API_KEY"

_WRITABLE_HELP = (
    "declare the store's table database and data directory writable, so that a TiledWriter "
    "can write runs through tiled (default: readable only)"
)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``store`` subcommands to *sub*."""
    p = sub.add_parser(
        "store",
        help="serve runs from PostgreSQL with tiled; serve an embedded store with tiled's own server or profile",
        description="`store serve`: a tiled server of runs whose catalog and tables live in PostgreSQL. "
        "`store serve-config` / `store tiled-profile`: make an embedded store of runs a standard tiled "
        "CatalogOfBlueskyRuns for `tiled serve config` and `tiled.client.from_profile`.",
    )
    ssub = p.add_subparsers(dest="store_command", metavar="STORE_COMMAND")
    srv = ssub.add_parser(
        "serve",
        help="serve a tiled catalog of runs whose catalog and tables live in PostgreSQL (API key required)",
        description="Serve a tiled CatalogOfBlueskyRuns whose catalog and run tables (event data) live in "
        "PostgreSQL, in the foreground until Ctrl-C or SIGTERM. An empty database is initialised on first "
        "use (as `tiled catalog init`); a database that holds anything else is refused. Clients must "
        "present the API key (read from an environment variable or a file, never from the command line); "
        "anonymous access is refused. Passwords in URLs are masked in every message.",
    )
    srv.add_argument(
        "--catalog",
        metavar="URL",
        default=None,
        help=f"postgresql://USER@HOST[:PORT]/DATABASE of the catalog and the run tables (default: ${CATALOG_ENV}); "
        "keep a password in ~/.pgpass, $PGPASSWORD or that variable, where the process list does not show it",
    )
    srv.add_argument(
        "--tables",
        metavar="URL",
        default=None,
        help="postgresql:// database for the run tables, if not the catalog's",
    )
    srv.add_argument(
        "--data-dir",
        metavar="DIR",
        default=None,
        help="directory for arrays written as arrays (created if needed; default: none, only tables are written)",
    )
    srv.add_argument(
        "--readable",
        action="append",
        default=[],
        metavar="DIR",
        help="directory of external files (detector files) the server may read (repeatable)",
    )
    key = srv.add_mutually_exclusive_group()
    key.add_argument(
        "--api-key-env",
        metavar="VAR",
        default=API_KEY_ENV,
        help=f"environment variable holding the API key (default: {API_KEY_ENV})",
    )
    key.add_argument(
        "--api-key-file",
        metavar="FILE",
        default=None,
        help="file holding the API key (one line; readable by its owner only, chmod 600)",
    )
    srv.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    srv.add_argument("--port", type=int, default=8000, help="port to listen on (default: 8000; 0: any free port)")
    srv.set_defaults(func=_serve)
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


def _api_key(args: argparse.Namespace) -> tuple[str, str]:
    """The API key and where it came from (for messages), read from a file or the environment."""
    from bluesky_twin.errors import InputError
    from bluesky_twin.storage import check_api_key

    if args.api_key_file is not None:
        path = Path(args.api_key_file).expanduser()
        source = f"--api-key-file {path}"
        try:
            mode = path.stat().st_mode
            if not path.is_file():
                raise InputError(f"{source} is not a file")
            if os.name == "posix" and mode & 0o077:
                raise InputError(f"{source} can be read by other users: chmod 600 {path}")
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise InputError(f"cannot read {source}: {exc.strerror or exc}") from None
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if len(lines) > 1:
            raise InputError(f"{source} holds {len(lines)} lines; it must hold the API key alone")
        return check_api_key(lines[0] if lines else "", source=source), source
    name = args.api_key_env
    source = f"${name}"
    value = os.environ.get(name)
    if value is None:
        raise InputError(
            f"no API key: set {name} (or pass --api-key-env VAR / --api-key-file FILE); "
            'make one with: python -c "import secrets; print(secrets.token_hex(32))"'
        )
    return check_api_key(value.strip(), source=source), source


def _serve(args: argparse.Namespace) -> int:
    import sys

    from bluesky_twin.errors import InputError

    api_key, key_source = _api_key(args)
    catalog = args.catalog or os.environ.get(CATALOG_ENV)
    if not catalog:
        raise InputError(
            f"no catalog database: pass --catalog postgresql://USER@HOST[:PORT]/DATABASE or set {CATALOG_ENV}"
        )
    if not 0 <= args.port <= 65535:
        raise InputError(f"--port must be between 0 and 65535; got {args.port}")

    from bluesky_twin.storage import run_tiled_server
    from bluesky_twin.twin.storage_url import has_masked_password, mask_url

    shown = mask_url(catalog)

    def ready(base_uri: str, initialised: bool) -> None:
        where = "a new catalog, initialised now" if initialised else "an existing catalog"
        tables = f"tables in {mask_url(args.tables)}" if args.tables else "tables in the same database"
        arrays = f"arrays in {Path(args.data_dir).expanduser().resolve()}" if args.data_dir else "no array storage"
        print(
            f"tiled server at {base_uri}: {where} in {shown}, {tables}, {arrays}; "
            f"API key from {key_source} required, anonymous access refused; stop with Ctrl-C",
            flush=True,
        )
        if args.catalog and (has_masked_password(shown) or "password=" in shown):
            print(
                "note: the password in --catalog shows in the process list; "
                f"keep it in ~/.pgpass, PGPASSWORD or {CATALOG_ENV}",
                file=sys.stderr,
                flush=True,
            )

    run_tiled_server(
        catalog,
        api_key=api_key,
        host=args.host,
        port=args.port,
        tabular_uri=args.tables,
        data_dir=args.data_dir,
        readable_storage=args.readable,
        on_ready=ready,
    )
    print("tiled server stopped", flush=True)
    return 0
