"""Prediction speed: the twin's network ensemble against its tabulated copy.

For each data set, fits the twin (30 trials; ARPES under a 180 s budget, as in
``bench_twin.py``), then times
1e5 random points through ``twin.predict`` and through ``twin.tabulate(shape).predict``
for two grid shapes, side by side in one run, and measures the tabulation error
against the network, absolutely and relative to the ensemble's own standard
deviation.  Writes ``docs/benchmarks/predict.md``::

    .venv/bin/python benchmarks/bench_predict.py [--datasets 1,4] [--trials 30] [--repeats 7] [--data DIR]

The data directory is found as in ``bench_twin.py`` (``--data``, ``$BLUESKY_TWIN_DATA``,
``../shared/data/terashima2023``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_twin import add_data_option, resolve_data_dir  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATASETS = {1: "ErCo2 M(T,H)", 2: "Fe3Ga4 M(T,H)", 3: "PdH R(T,H)", 4: "ARPES I(theta1,theta2)"}
GRIDS = [(400, 200), (1000, 200)]


def _median_time(fn, repeats):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def bench_dataset(key: int, trials: int, repeats: int, data_dir: Path) -> list[str]:
    from bluesky_twin.twin import DigitalTwin

    df = pd.read_csv(data_dir / f"traindata_Section3_{key}.csv")
    x, y = list(df.columns[:2]), df.columns[2]
    twin = DigitalTwin.fit(df, x, y, trials=trials, jobs=2, seed=0, budget=180.0 if key == 4 else None)
    rng = np.random.default_rng(0)
    Q = rng.uniform(twin.x_range[:, 0], twin.x_range[:, 1], size=(100_000, 2))
    net_s = _median_time(lambda: twin.predict(Q), max(1, repeats // 3))
    sd = float(df[y].std())
    arch = ", ".join(
        f"{e['params']['n_layers']}x{e['params']['n_units']}"
        f"{' fourier' if e['params'].get('fourier_features') else ''} ({e['members']})"
        for e in twin.metadata["ensemble"]
    )
    rows = [
        f"### {DATASETS[key]} ({len(df)} points; ensemble {arch}, layers x units (members))",
        "",
        "| predictor | median time for 1e5 points | network / this | build (s) | max error / data std "
        "| RMS error / data std | max error / ensemble std |",
        "|---|---|---|---|---|---|---|",
        f"| network ensemble (`twin.predict`) | {1e3 * net_s:.0f} ms | 1 | - | 0 | 0 | 0 |",
    ]
    for shape in GRIDS:
        t = time.perf_counter()
        tab = twin.tabulate(shape)
        build_s = time.perf_counter() - t
        tab_s = _median_time(lambda tab=tab: tab.predict(Q), repeats)
        rows.append(
            f"| tabulated {shape[0]} x {shape[1]} (`twin.tabulate({shape})`) | {1e3 * tab_s:.1f} ms | "
            f"{net_s / tab_s:.0f}x | {build_s:.1f} | {tab.max_abs_error / sd:.2%} | {tab.rms_error / sd:.3%} "
            f"| {tab.max_error_over_std:.2f} |"
        )
        print(rows[-1], flush=True)
    return rows + [""]


def main() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", default="1,4")
    ap.add_argument("--trials", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=7)
    add_data_option(ap)
    args = ap.parse_args()
    data_dir = resolve_data_dir(args.data)
    keys = [int(k) for k in args.datasets.split(",")]
    md = [
        "# Prediction speed (1e5 points)",
        "",
        f"Command: `.venv/bin/python benchmarks/bench_predict.py --datasets {args.datasets} --trials {args.trials} "
        f"--repeats {args.repeats}` on {os.cpu_count()} shared cores. Target: 1e5 points in <= 50 ms. "
        "Errors are measured against the network on 2000 random points inside the training box; "
        "`max error / ensemble std` below 1 means the table is closer to the network than the ensemble's "
        "members are to each other at every checked point.",
        "",
    ]
    for key in keys:
        md += bench_dataset(key, args.trials, args.repeats, data_dir)
    (ROOT / "docs" / "benchmarks" / "predict.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
