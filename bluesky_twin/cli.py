"""The ``bluesky-twin`` command line.

Subcommands live next to the code they drive; each module exposes
``register(subparsers)`` that adds its parsers and sets ``func`` to a callable
``func(args) -> int``.  Only argparse is imported here so ``--help`` is fast;
heavy libraries are imported inside the ``func`` bodies.

Exit codes: 0 success, 1 unexpected failure, 2 bad input (one clear line on stderr,
nothing overwritten).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from importlib import import_module

# (module, attribute) pairs providing ``register(subparsers)``; order = help order.
_TOP_LEVEL = [
    "bluesky_twin.twin.cli",
    "bluesky_twin.analysis.cli",
    "bluesky_twin.replay",
    "bluesky_twin.demo",
    "bluesky_twin.model_cli",
    "bluesky_twin.store_cli",
    "bluesky_twin.profile_cli",
    "bluesky_twin.service.cli",
]
_INS = [
    "bluesky_twin.ins.cli",
    "bluesky_twin.gan.cli",
]


def build_parser() -> argparse.ArgumentParser:
    """Build the full argument parser (cheap: imports only small CLI modules)."""
    from bluesky_twin import __version__

    parser = argparse.ArgumentParser(
        prog="bluesky-twin",
        description="Digital twins that steer Bluesky experiments.",
    )
    parser.add_argument("--version", action="version", version=f"bluesky-twin {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _TOP_LEVEL:
        _register(name, sub)
    ins = sub.add_parser("ins", help="inelastic neutron scattering: simulate, translate, score")
    ins_sub = ins.add_subparsers(dest="ins_command", metavar="INS_COMMAND")
    for name in _INS:
        _register(name, ins_sub)
    ins.set_defaults(func=lambda args: (ins.print_help(), 2)[1])
    return parser


def _register(module_name: str, sub: argparse._SubParsersAction) -> None:
    """Import a subcommand module and let it add its parsers.

    A module that fails to import is a bug and raises (a broken subcommand is never
    hidden).  Subcommand modules import only the standard library at module level, so
    a missing *optional* extra shows when the command runs: each command it added is
    wrapped by :func:`bluesky_twin._lazy.with_install_hint`, which prints the
    ``pip install 'bluesky-twin[EXTRA]'`` hint as one line and exits 2.
    """
    from bluesky_twin._lazy import with_install_hint

    module = import_module(module_name)
    before = set(sub.choices)
    module.register(sub)
    todo = [parser for name, parser in sub.choices.items() if name not in before]
    while todo:  # the commands it added, and their own subcommands
        parser = todo.pop()
        func = parser.get_default("func")
        if func is not None:
            parser.set_defaults(func=with_install_hint(func, parser.prog))
        for action in parser._subparsers._group_actions if parser._subparsers else ():
            todo.extend(action.choices.values())


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    from bluesky_twin.errors import InputError, ModelFileError

    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2),
        format="%(levelname)s %(name)s: %(message)s",
    )
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return int(func(args) or 0)
    except (InputError, ModelFileError) as exc:
        print(f"bluesky-twin: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bluesky-twin: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
