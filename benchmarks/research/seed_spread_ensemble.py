"""Does a larger final ensemble make a magnetometer twin's dS_M curve depend less on the seed?

For each final-ensemble shape (members x configurations at most, and optionally the
score ratio within which a configuration joins), fits the twin once per seed with
the product's defaults otherwise and reports the seed spread of the predicted |dS_M|(T)
curve exactly as ``bench_twin.py --seeds`` does (the RMS difference of two seeds over
the peak of their mean, median pair and largest pair), the fit's wall time and which
trials formed each ensemble::

    .venv/bin/python benchmarks/research/seed_spread_ensemble.py --dataset erco2 \\
        --shapes 6x3,12x3,18x3,12x6,24x6,12x6r3,6x6r3

A shape ``MxK`` is ``ensemble_size=M, top_k=K``; ``MxKrR`` also lets configurations up to
``R`` times the best validation loss join (default
:data:`bluesky_twin.twin._ensemble.TOP_K_SCORE_RATIO`, 1.5).  The fits are seeded and
have no time limit, so the spreads repeat on any load; the wall times do not.
"""

from __future__ import annotations

import argparse
import re
import sys
import time

import numpy as np
from _seed_study import ROOT, load_magnetometer, print_table, seed_study_parser

sys.path.insert(0, str(ROOT / "benchmarks"))
SHAPE = re.compile(r"^(\d+)x(\d+)(?:r([0-9.]+))?$")


def parse_shape(text: str) -> tuple[int, int, float | None]:
    """``"12x6r3"`` -> ``(12, 6, 3.0)``."""
    m = SHAPE.match(text)
    if not m:
        raise argparse.ArgumentTypeError(f"a shape is MxK or MxKrR (e.g. 12x6, 12x6r3), got {text!r}")
    return int(m.group(1)), int(m.group(2)), float(m.group(3)) if m.group(3) else None


def main(argv: list[str] | None = None) -> int:
    ap = seed_study_parser(__doc__.split("\n")[0])
    ap.add_argument("--shapes", default="6x3,12x3,18x3,12x6,24x6,12x6r3,6x6r3")
    args = ap.parse_args(argv)
    try:
        shapes = [parse_shape(s) for s in args.shapes.split(",")]
        seeds = [int(s) for s in args.seeds.split(",")]
    except (argparse.ArgumentTypeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    import _twin_seeds as ts
    import optuna

    import bluesky_twin.twin._ensemble as ensemble
    from bluesky_twin.twin import DigitalTwin

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    name, top, df, xcols, ycol, X = load_magnetometer(args.dataset, args.data)
    default_ratio = ensemble.TOP_K_SCORE_RATIO
    rows = []
    for members, top_k, ratio in shapes:
        ensemble.TOP_K_SCORE_RATIO = default_ratio if ratio is None else ratio
        curves, walls, formed = [], [], []
        for seed in seeds:
            t0 = time.perf_counter()
            twin = DigitalTwin.fit(
                df, xcols, ycol, trials=args.trials, jobs=args.jobs, seed=seed, ensemble_size=members, top_k=top_k
            )
            walls.append(time.perf_counter() - t0)
            curves.append(ts.dsm_curve(lambda Q, twin=twin: twin.predict(Q)[0], X, top)[1])
            groups: dict[int, int] = {}
            for g in twin.metadata["ensemble"]:
                groups[g["trial"]] = groups.get(g["trial"], 0) + g["members"]
            formed.append(" ".join(f"{t}:{n}" for t, n in groups.items()))
            print(f"{members}x{top_k} ratio {ensemble.TOP_K_SCORE_RATIO:g} seed {seed}: {walls[-1]:.1f} s", flush=True)
        spread = ts.curve_spread(curves)
        rows.append(
            f"| {members} | {top_k} | {ensemble.TOP_K_SCORE_RATIO:g} | {spread['pairwise_median_pct']:.2f} % | "
            f"{spread['pairwise_max_pct']:.2f} % | {np.median(walls):.1f} | {'; '.join(formed)} |"
        )
    ensemble.TOP_K_SCORE_RATIO = default_ratio
    print_table(
        f"{name}, seeds {args.seeds}, {args.trials} trials, jobs {args.jobs}",
        ["members", "configurations at most", "score ratio", "dS_M spread, median pair", "largest pair"]
        + ["fit wall (s), median", "trial:members per seed"],
        rows,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
