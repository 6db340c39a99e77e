"""Where do the seeds of a magnetometer twin disagree: between the measured fields, or on them?

``bench_twin.py --seeds`` measures the seed spread of the predicted |dS_M|(T) curve, which
integrates dM/dT over a fine field grid from the lowest field to the top one.  This study
fits the product's twin once per seed (the same fits as that seed study) and computes the
curve twice: on the fine field grid, and from the twin evaluated on the *measured* fields
only (the trapezoid between them, as a reading of the lines would do, but with the
twin's M on the lines instead of the readings).  If the seeds disagreed mainly in how they
interpolate between fields, the second spread would be small.  It also reports which share
of the squared seed differences lies within 2 K of the curve's peak, and the widest
temperature gap between consecutive readings on each of the lowest three fields::

    .venv/bin/python benchmarks/research/seed_spread_where.py --dataset erco2

The fits are seeded and have no time limit, so the numbers repeat on any load of the same
CPU kind.
"""

from __future__ import annotations

import sys

import numpy as np
from _seed_study import ROOT, load_magnetometer, print_table, seed_study_parser

sys.path.insert(0, str(ROOT / "benchmarks"))


def pair_rms(curves: np.ndarray, peak: float, mask: np.ndarray | None = None) -> list[float]:
    """RMS difference of every pair of curves (over *mask*, default all), in % of *peak*."""
    sel = np.ones(curves.shape[1], bool) if mask is None else mask
    n = len(curves)
    return [
        float(np.sqrt(np.mean((curves[i, sel] - curves[j, sel]) ** 2)) / peak * 100)
        for i in range(n)
        for j in range(i + 1, n)
    ]


def main(argv: list[str] | None = None) -> int:
    args = seed_study_parser(__doc__.split("\n")[0]).parse_args(argv)
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    import _twin_seeds as ts
    import optuna

    from bluesky_twin.analysis.mce import entropy_change_isofield
    from bluesky_twin.twin import DigitalTwin

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    name, top, df, xcols, ycol, X = load_magnetometer(args.dataset, args.data)
    fields = np.unique(X[:, 1])
    measured = fields[fields <= top]
    fine, on_fields, T = [], [], None
    for seed in seeds:
        twin = DigitalTwin.fit(df, xcols, ycol, trials=args.trials, jobs=args.jobs, seed=seed)
        T, curve = ts.dsm_curve(lambda Q, twin=twin: twin.predict(Q)[0], X, top)
        fine.append(curve)
        TT, HH = np.meshgrid(T, measured)
        M = twin.predict(np.column_stack([TT.ravel(), HH.ravel()]))[0]
        res = entropy_change_isofield(TT.ravel(), HH.ravel(), M, T_grid=T, field_unit="Oe")
        on_fields.append(np.abs(res.curve(res.H[-1])[0]))
        print(f"{name} seed {seed}: fitted", flush=True)
    rows = []
    for label, curves in (("fine field grid (the seed study's curve)", fine), ("measured fields only", on_fields)):
        C = np.asarray(curves)
        peak = float(C.mean(axis=0).max())
        near = np.abs(T - T[np.argmax(C.mean(axis=0))]) <= 2.0
        pairs = pair_rms(C, peak)
        total = sum(np.sum((C[i] - C[j]) ** 2) for i in range(len(C)) for j in range(i + 1, len(C)))
        close = sum(np.sum((C[i, near] - C[j, near]) ** 2) for i in range(len(C)) for j in range(i + 1, len(C)))
        rows.append(
            f"| {label} | {np.median(pairs):.2f} % | {max(pairs):.2f} % | {100 * close / total:.0f} % "
            f"({int(near.sum())} of {len(T)} temperatures) |"
        )
    print_table(
        f"{name}, seeds {args.seeds}, {args.trials} trials, jobs {args.jobs}: seed spread of |dS_M|(T)",
        ["curve", "spread, median pair", "largest pair", "share of squared differences within 2 K of the peak"],
        rows,
    )
    gaps = []
    for h in fields[:3]:
        t = np.sort(X[X[:, 1] == h, 0])
        i = int(np.argmax(np.diff(t)))
        gaps.append(f"| {h:g} | {len(t)} | {np.median(np.diff(t)):.2f} K | {t[i]:.2f}-{t[i + 1]:.2f} K |")
    print_table(
        "Readings on the lowest fields",
        [f"field ({xcols[1]})", "readings", "median spacing", "widest gap"],
        gaps,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
