"""Prediction speed: the twin's network ensemble against its tabulated copy.

Fits the ErCo2 twin (30 trials, as in ``bench_twin.py``), then times 1e5 random
points through ``twin.predict`` and through ``twin.tabulate().predict``, side by
side in one run, and measures the tabulation error.  Writes
``docs/benchmarks/predict.md``::

    .venv/bin/python benchmarks/bench_predict.py [--trials 30] [--repeats 7]
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "terashima2023" / "traindata_Section3_1.csv"


def _median_time(fn, repeats):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def main() -> None:
    import optuna

    from bluesky_twin.twin import DigitalTwin

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    df = pd.read_csv(DATA)
    twin = DigitalTwin.fit(df, ["X1_demo1", "X2_demo1"], "Y_demo1", trials=args.trials, jobs=2, seed=0)
    rng = np.random.default_rng(0)
    Q = rng.uniform(twin.x_range[:, 0], twin.x_range[:, 1], size=(100_000, 2))
    t = time.perf_counter()
    tab = twin.tabulate()
    build_s = time.perf_counter() - t
    net_s = _median_time(lambda: twin.predict(Q), max(1, args.repeats // 3))
    tab_s = _median_time(lambda: tab.predict(Q), args.repeats)
    sd = float(df["Y_demo1"].std())
    arch = ", ".join(f"{e['params']['n_layers']}x{e['params']['n_units']} ({e['members']})" for e in twin.metadata["ensemble"])
    md = [
        "# Prediction speed (1e5 points)",
        "",
        f"Command: `.venv/bin/python benchmarks/bench_predict.py --trials {args.trials} --repeats {args.repeats}` "
        f"on {os.cpu_count()} shared cores; ErCo2 twin, ensemble {arch} (layers x units (members)). "
        "Target: 1e5 points in <= 50 ms.",
        "",
        "| | median time for 1e5 points | ratio to the network |",
        "|---|---|---|",
        f"| network ensemble (`twin.predict`) | {1e3 * net_s:.0f} ms | 1 |",
        f"| tabulated, 400 x 200 grid, cubic splines (`twin.tabulate().predict`) | {1e3 * tab_s:.1f} ms | "
        f"{net_s / tab_s:.0f}x faster |",
        "",
        f"Building the table took {build_s:.1f} s (one network pass over 80,000 grid points). Interpolation error "
        f"against the network on 2000 random points: max {tab.max_abs_error:.3g}, RMS {tab.rms_error:.3g} "
        f"({tab.max_abs_error / sd:.2%} and {tab.rms_error / sd:.2%} of the data's standard deviation).",
        "",
    ]
    (ROOT / "docs" / "benchmarks" / "predict.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
