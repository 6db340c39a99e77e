"""Warm-start refit time: the live trainer's refit between runs.

A twin is fitted on ErCo2 with two interior field lines withheld; the "next run"
then brings those lines (the new points), and the twin is refitted from the first
one (previous best parameters tried first, previous weights, small budget), as
``TwinTrainer`` does between runs.  Compared side by side with a cold fit of the
same budget on the same data.  A third interior line (2 T) is in no fit: the error
there is each twin's error between measured lines, and the refit's recorded
selection score (``cv_rmse``, on its held-out search folds) is set beside the cold
fit's, so a selection that has seen its own validation lines shows.  Writes
``docs/benchmarks/warm_start.md``::

    .venv/bin/python benchmarks/bench_warm_start.py [--repeats 3] [--data DIR]

The data directory is found as in ``bench_twin.py`` (``--data``, ``$BLUESKY_TWIN_DATA``,
``../shared/data/terashima2023``); the ErCo2 file is ``traindata_Section3_1.csv``.
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
ERCO2 = "traindata_Section3_1.csv"


def main() -> None:
    import optuna

    from bluesky_twin.twin import DigitalTwin

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--first-trials", type=int, default=30)
    add_data_option(ap)
    args = ap.parse_args()
    df = pd.read_csv(resolve_data_dir(args.data) / ERCO2)
    x, y = ["X1_demo1", "X2_demo1"], "Y_demo1"
    held, unseen = [5000.0, 30000.0], 20000.0
    df_all = df
    df = df[df[x[1]] != unseen]
    first = df[~df[x[1]].isin(held)]
    n_new = int(df[x[1]].isin(held).sum())
    t = time.perf_counter()
    base = DigitalTwin.fit(first, x, y, trials=args.first_trials, jobs=2, seed=0)
    base_s = time.perf_counter() - t
    X, Y = df_all[x].to_numpy(), df_all[y].to_numpy()
    sel = df_all[x[1]].isin(held).to_numpy()
    out = (df_all[x[1]] == unseen).to_numpy()

    def err(tw, rows: np.ndarray = sel) -> float:
        """NRMSE of a twin on *rows* (default: the new lines)."""
        return float(np.sqrt(np.mean((tw.predict(X[rows])[0] - Y[rows]) ** 2)) / Y.std())

    before_new, before_unseen = err(base), err(base, out)  # the first twin's errors, for every repeat
    rows = []
    for r in range(args.repeats):
        t = time.perf_counter()
        warm = DigitalTwin.fit(df, warm_start=base, seed=r)
        warm_s = time.perf_counter() - t
        t = time.perf_counter()
        cold = DigitalTwin.fit(
            df, x, y, trials=warm.metadata["n_trials_complete"] + warm.metadata["n_trials_pruned"], seed=r
        )
        cold_s = time.perf_counter() - t
        rows.append(
            (
                warm_s,
                cold_s,
                before_new,
                err(warm),
                err(cold),
                warm.metadata["train_r2"],
                cold.metadata["train_r2"],
                err(warm, out),
                err(cold, out),
                warm.metadata["cv_rmse"] / Y.std(),
                cold.metadata["cv_rmse"] / Y.std(),
            )
        )
        print(
            f"repeat {r}: warm {warm_s:.1f} s, cold {cold_s:.1f} s; NRMSE on the new lines: before {before_new:.4f}, "
            f"warm {rows[-1][3]:.4f}, cold {rows[-1][4]:.4f}; on the unseen line: before {before_unseen:.4f}, "
            f"warm {rows[-1][7]:.4f}, cold {rows[-1][8]:.4f}; recorded selection NRMSE: "
            f"warm {rows[-1][9]:.4f}, cold {rows[-1][10]:.4f}",
            flush=True,
        )
    a = np.array(rows)
    med = np.median(a, axis=0)
    md = [
        "# Warm-start refit (the live trainer's refit between runs)",
        "",
        f"Command: `.venv/bin/python benchmarks/bench_warm_start.py --repeats {args.repeats}` on {os.cpu_count()} "
        "shared cores. ErCo2 with the 5000 Oe and 30000 Oe lines withheld from the first fit "
        f"({args.first_trials} trials, jobs=2, {base_s:.0f} s); the refit adds those {n_new} points "
        f"(target: refit < 10 s with 100-300 new points). Cold fit = same data, same trial budget, no warm start. "
        f"The {unseen / 1e4:g} T line is in no fit: the error there is between measured lines. The recorded "
        "selection NRMSE is the chosen configuration's error on the search's held-out lines (`cv_rmse`), "
        "which a refit reports to the user.",
        "",
        "| | warm start | cold fit, same budget |",
        "|---|---|---|",
        f"| refit wall time, median (s) | {med[0]:.1f} | {med[1]:.1f} |",
        f"| NRMSE on the new lines (before the refit: {med[2]:.4f}) | {med[3]:.4f} | {med[4]:.4f} |",
        f"| train R^2 | {med[5]:.4f} | {med[6]:.4f} |",
        f"| NRMSE on the unseen {unseen / 1e4:g} T line (before the refit: {before_unseen:.4f}) "
        f"| {med[7]:.4f} | {med[8]:.4f} |",
        f"| recorded selection NRMSE (`cv_rmse`) | {med[9]:.4f} | {med[10]:.4f} |",
        "",
        "Per repeat (warm s, cold s, NRMSE on the new lines before, warm, cold; on the unseen line warm, cold; "
        "recorded selection warm, cold): "
        + "; ".join(", ".join(f"{v:.3g}" for v in (*row[:5], *row[7:])) for row in rows),
        "",
    ]
    (ROOT / "docs" / "benchmarks" / "warm_start.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
