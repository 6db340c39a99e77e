"""How does a magnetometer twin's dS_M seed spread fall with the number of pooled searches?

``DigitalTwin.fit(restarts=K)`` pools the final ensembles of K independent seeded searches
of equal size, so the pooled networks' mean is the mean of the restarts' means and, because
dS_M is linear in M, the pooled curve is the mean of the restarts' signed curves (the
line-residual correction, refitted on the pool when the search space asks for one, aside).
This study fits one plain twin per seed, then measures what pooling K of them would give
without fitting the pools: over random partitions of the seeds into disjoint groups of K,
the RMS difference between two groups' mean curves over the peak (median pair, averaged
over the partitions), for each K of ``--pool``.  It also reports each seed's curve against the mean of all
of them, and where its peak lies, so that a sample of five seeds can be read against a wider
one::

    .venv/bin/python benchmarks/research/seed_spread_pooling.py --dataset fe3ga4 --seeds 0-19 --pool 1,2,3,4,5

The fits are seeded and have no time limit, so the curves repeat on any load of the same CPU
kind; the wall times do not.  ``--curves DIR`` keeps each seed's curve (``DIR/seed-S.npy``)
and reuses it on a later run with the same options.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from _seed_study import ROOT, load_magnetometer, print_table, seed_study_parser, space_options

sys.path.insert(0, str(ROOT / "benchmarks"))

#: random partitions of the seeds per group size
PARTITIONS = 200


def parse_seeds(text: str) -> list[int]:
    """``0,1,2`` or ``0-19`` (inclusive), or a mix of both."""
    seeds: list[int] = []
    for part in text.split(","):
        lo, sep, hi = part.partition("-")
        if not lo.strip().isdigit() or (sep and not hi.strip().isdigit()):
            raise ValueError(f"seeds are non-negative integers or ranges A-B, got {part!r}")
        seeds.extend(range(int(lo), int(hi) + 1) if sep else [int(lo)])
    if len(set(seeds)) != len(seeds) or len(seeds) < 2:
        raise ValueError("give at least two distinct seeds")
    return seeds


def pooled_spread(curves, k: int, partitions: int = PARTITIONS, seed: int = 0) -> float:
    """Median-pair spread (% of the peak) of the mean curves of disjoint groups of *k* seeds.

    Averaged (median) over *partitions* random partitions of the seeds; a partition
    leaves out the remainder of ``len(curves) // k`` groups.
    """
    import _twin_seeds as ts
    import numpy as np

    signed = np.asarray(curves)
    rng = np.random.default_rng(seed)
    groups = len(signed) // k
    per_partition = []
    for _ in range(partitions):
        order = rng.permutation(len(signed))
        pooled = [np.abs(signed[order[i * k : (i + 1) * k]].mean(axis=0)) for i in range(groups)]
        per_partition.append(ts.curve_spread(pooled)["pairwise_median_pct"])
    return float(np.median(per_partition))


def main(argv: list[str] | None = None) -> int:
    ap = seed_study_parser(__doc__.split("\n")[0])
    ap.set_defaults(seeds="0-19")
    ap.add_argument("--pool", default="1,2,3,4,5", help="comma-separated group sizes K (restarts pooled)")
    ap.add_argument("--curves", default=None, help="directory that keeps each seed's signed dS_M curve")
    args = ap.parse_args(argv)
    try:
        seeds = parse_seeds(args.seeds)
        pools = [int(k) for k in args.pool.split(",")]
        if any(k < 1 or 2 * k > len(seeds) for k in pools):
            raise ValueError(f"each group size must be between 1 and half the number of seeds ({len(seeds) // 2})")
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    import _twin_seeds as ts
    import numpy as np
    import optuna

    from bluesky_twin.twin import DigitalTwin

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    name, top, df, xcols, ycol, X = load_magnetometer(args.dataset, args.data)
    options = space_options(args.dataset, args.data, args.field_scale, args.monotone)
    cache = Path(args.curves) if args.curves else None
    stamp_options = {"dataset": args.dataset, "trials": args.trials, "field_scale": args.field_scale}
    if args.monotone:
        stamp_options["monotone"] = True
    tag = json.dumps(stamp_options)
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        stamp = cache / "options.json"
        if stamp.exists() and stamp.read_text() != tag:
            print(f"error: {cache} holds curves of other options ({stamp.read_text()})", file=sys.stderr)
            return 2
        stamp.write_text(tag)
    T = ts.dsm_temperatures(X)
    curves, walls = [], []
    for seed in seeds:
        path = cache / f"seed-{seed}.npy" if cache is not None else None
        if path is not None and path.exists():
            curves.append(np.load(path))
            continue
        t0 = time.perf_counter()
        twin = DigitalTwin.fit(
            df, xcols, ycol, trials=args.trials, jobs=args.jobs, seed=seed, progress=False, **options
        )
        walls.append(time.perf_counter() - t0)
        curve = ts.dsm_curve(lambda Q, twin=twin: twin.predict(Q)[0], X, top, absolute=False)[1]
        curves.append(curve)
        if path is not None:
            np.save(path, curve)
        print(f"{name} seed {seed}: fit {walls[-1]:.1f} s", flush=True)
    signed = np.asarray(curves)
    mean = np.abs(signed.mean(axis=0))
    peak = float(mean.max())
    rows = [
        f"| {seed} | {np.sqrt(np.mean((np.abs(c) - mean) ** 2)) / peak * 100:.2f} % | {T[np.argmax(np.abs(c))]:.1f} |"
        for seed, c in zip(seeds, signed)
    ]
    print_table(
        f"{name}, each seed against the mean of all {len(seeds)} (field scale {args.field_scale}, "
        f"monotone field {args.monotone}); "
        f"the mean curve peaks at {T[np.argmax(mean)]:.1f} K",
        ["seed", "curve vs mean of all, % of peak", "peak at (K)"],
        rows,
    )
    rows = [f"| {k} | {len(seeds) // k} | {pooled_spread(signed, k):.2f} % |" for k in pools]
    wall = f", fit wall median {np.median(walls):.1f} s" if walls else ""
    print_table(
        f"{name}, seeds {args.seeds}, {args.trials} trials{wall}: spread of the mean curves of K pooled seeds",
        ["K (restarts pooled)", "groups per partition", "dS_M spread, median pair"],
        rows,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
