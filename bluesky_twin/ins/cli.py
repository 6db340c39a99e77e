"""``bluesky-twin ins generate``: simulate a paired INS dataset to an ``.npz`` file.

Only argparse is imported at registration; numpy/scipy/resins load when the command runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bluesky_twin.errors import InputError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``generate`` subcommand (mounted under ``bluesky-twin ins``)."""
    p = subparsers.add_parser(
        "generate",
        help="simulate paired unconvolved / experiment-like INS frames (J1-J2 antiferromagnet)",
        description=(
            "Simulate N frames of the S=5/2 square-lattice J1-J2 Heisenberg antiferromagnet "
            "(balanced classes sign(J2)): the spin-wave map without resolution and an "
            "experiment-like MAPS frame (resolution from resins, Bose factor, elastic line, "
            "background, Poisson noise, NaN masks).  Writes an .npz readable with "
            "bluesky_twin.ins.InsDataset.load."
        ),
    )
    p.add_argument("--n", type=int, required=True, help="number of frames")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--geometry", choices=("cut", "powder"), default="cut", help="cut along (h, 1/2, 0) or powder |Q| (default cut)"
    )
    p.add_argument("--size", type=int, default=64, help="frame size in pixels (default 64)")
    p.add_argument("--out", required=True, help="output file, must end in .npz")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--progress", action="store_true", help="show a progress bar")
    p.set_defaults(func=_run_generate)


def _run_generate(args: argparse.Namespace) -> int:
    if args.n < 1:
        raise InputError(f"--n must be a positive integer, got {args.n}")
    if not 8 <= args.size <= 1024:
        raise InputError(f"--size must be in [8, 1024], got {args.size}")
    if args.workers < 1:
        raise InputError(f"--workers must be a positive integer, got {args.workers}")
    out = Path(args.out)
    if out.suffix != ".npz":
        raise InputError(f"--out must name an .npz file, got {args.out!r}")
    from bluesky_twin.modeldir import check_output_file

    check_output_file(out, overwrite=args.overwrite)

    from bluesky_twin.ins.dataset import generate_dataset, summarize

    ds = generate_dataset(
        args.n,
        seed=args.seed,
        geometry=args.geometry,
        size=args.size,
        n_workers=args.workers,
        progress=args.progress,
    )
    ds.save(out)
    info = summarize(ds)
    print(
        f"wrote {out}: {info['n']} {info['geometry']} frames {info['shape']}, "
        f"{info['n_positive_J2']} with J2 > 0, masked fraction {info['masked_fraction']:.3f}"
    )
    return 0
