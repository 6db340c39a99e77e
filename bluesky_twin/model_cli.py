"""``bluesky-twin upgrade-model``: convert a model directory of an older release."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add the model-directory subcommands to *sub*."""
    p = sub.add_parser(
        "upgrade-model",
        help="convert a model directory of the unversioned layout (bluesky-twin < 0.2)",
        description="Move the files of a model directory written by an older bluesky-twin into its first "
        "version (versions/v000001), list the sha256 of every file and point CURRENT at it. "
        "Checksums the old metadata records are verified first; no file is deleted.",
    )
    p.add_argument("model", metavar="MODEL_DIR")
    p.set_defaults(func=_upgrade)


def _upgrade(args: argparse.Namespace) -> int:
    from bluesky_twin.modeldir import upgrade_flat_dir, writer_lock

    with writer_lock(args.model, option="MODEL_DIR"):
        name = upgrade_flat_dir(args.model)
    print(f"upgraded {args.model}: its files are version {name}")
    return 0
