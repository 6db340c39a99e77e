"""Does pooling independent searches (``restarts``) make a magnetometer twin's dS_M curve depend less on the seed?

A seeded search settles on a few configurations; on the coarse ErCo2 and Fe3Ga4 scans other
seeds settle on others that fit the measured lines as well but shape the sharp transition
differently, so the predicted |dS_M|(T) depends on the seed (docs/twin.md, "Dependence on
the seed").  ``DigitalTwin.fit(restarts=K)`` pools the ensembles of K independent seeded
searches.  This study fits the twin once per outer seed for each shape ``KxTxE`` (K
restarts of T trials and E members each; ``default`` is the product's 1x30x6) and reports
what ``bench_twin.py --seeds`` reports: the leave-one-field-out NRMSE per seed and the seed
spread of the curves (RMS difference of two seeds over the peak of their mean; median pair
and largest pair), with the fit's wall time::

    .venv/bin/python benchmarks/research/seed_spread_restarts.py --dataset erco2 --shapes default,10x10x2,20x10x2

``--field-scale sqrt`` reads the field on a square-root scale (``TwinSearchSpace.input_scales``).

The restarts of two outer seeds are independent searches (their seeds are spawned from the
outer seed, :meth:`bluesky_twin.twin.FitConfig.restart_seeds`).  The fits are seeded and
have no time limit, so the numbers repeat on any load of the same CPU kind; the wall times
do not.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from _seed_study import DATASETS, ROOT, print_table, seed_study_parser, space_options, study_cells

sys.path.insert(0, str(ROOT / "benchmarks"))


def parse_shape(text: str) -> tuple[int, int, int]:
    """``default`` or ``KxTxE`` as (restarts, trials, members)."""
    if text == "default":
        return 1, 30, 6
    parts = text.split("x")
    if len(parts) != 3 or not all(p.isdigit() and int(p) >= 1 for p in parts):
        raise ValueError(f"a shape is 'default' or KxTxE with positive integers, got {text!r}")
    k, t, e = (int(p) for p in parts)
    return k, t, e


def main(argv: list[str] | None = None) -> int:
    ap = seed_study_parser(__doc__.split("\n")[0])
    ap.add_argument("--shapes", default="default,10x10x2", help="comma-separated 'default' or KxTxE shapes")
    args = ap.parse_args(argv)
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
        shapes = [(text, parse_shape(text)) for text in args.shapes.split(",")]
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    import _twin_seeds as ts
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    key = DATASETS[args.dataset]
    rows = []
    scale_options = space_options(args.dataset, args.data, args.field_scale, args.monotone)
    for text, (restarts, trials, members) in shapes:
        options = {"restarts": restarts, "ensemble_size": members, **scale_options}
        if members < 3:
            options["top_k"] = 1
        t0 = time.perf_counter()
        r = ts.magnetometer_seeds(key, Path(args.data), seeds, trials, args.jobs, options)
        rows.append(f"| {text} | {restarts} | {trials} | {members} | {study_cells(r)}")
        print(f"shape {text}: {time.perf_counter() - t0:.0f} s", flush=True)
    print_table(
        f"{ts.MAGNETOMETERS[key][0]}, seeds {args.seeds}, jobs {args.jobs}, field scale {args.field_scale}, "
        f"monotone field {args.monotone}",
        ["shape", "restarts", "trials each", "members each", "LOFO NRMSE, median (per seed)"]
        + ["dS_M spread, median pair", "largest pair", "fit wall (s), median"],
        rows,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
