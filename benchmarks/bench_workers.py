"""One twin study in 1 vs 2 worker processes (``bluesky-twin fit --processes N``) on PostgreSQL.

For each data set two interior lines of the coarse axis are withheld; the rest is fitted
with ``bluesky-twin fit DATA --storage URL --processes N --trials T`` (the real command:
N ``bluesky-twin worker`` processes share one study in a fresh PostgreSQL database, then
the final ensemble is built once in the parent), alternating N = 1 and N = 2 for
``--repeats`` rounds.  Per run it records:

* the command's wall time, and the search's own span (first trial start to last trial
  end, from the study);
* the best trial's validation score (mean squared error on held-out interior lines,
  standardised units) and the final twin's normalised RMSE on the two withheld lines
  (RMSE / standard deviation of the data set), and its training R^2.

It prints the table and writes ``docs/benchmarks/workers.md``::

    .venv/bin/python benchmarks/bench_workers.py [--datasets 1,4] [--trials 16] [--repeats 2] \\
        [--postgres postgresql://postgres@127.0.0.1:5432/test] [--data DIR]

The data directory is found as in ``bench_twin.py``.  The PostgreSQL URL names a
database the user may create databases from (one throw-away database per run).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_twin import DATASETS, add_data_option, resolve_data_dir  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _held_out(df: pd.DataFrame, x: list[str]) -> tuple[str, list[float]]:
    """The coarse axis and two interior values of it (at one and two thirds)."""
    coarse = min(x, key=lambda c: df[c].nunique())
    values = np.sort(df[coarse].unique())
    return coarse, [float(values[len(values) // 3]), float(values[2 * len(values) // 3])]


class _Database:
    """A throw-away PostgreSQL database for one run."""

    def __init__(self, base_url: str) -> None:
        import psycopg2

        self.base_url = base_url
        self.name = f"bench_workers_{uuid.uuid4().hex[:10]}"
        conn = psycopg2.connect(base_url)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{self.name}"')
        conn.close()
        self.url = f"{base_url.rpartition('/')[0]}/{self.name}"

    def drop(self) -> None:
        import psycopg2

        conn = psycopg2.connect(self.base_url)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        conn.close()


def _run(csv: Path, x: list[str], y: str, processes: int, trials: int, seed: int, base_url: str, work: Path) -> dict:
    import optuna

    from bluesky_twin.twin import DigitalTwin
    from bluesky_twin.twin.storage_url import open_storage

    db = _Database(base_url)
    out = work / f"model-{uuid.uuid4().hex[:6]}"
    cmd = [sys.executable, "-m", "bluesky_twin.cli", "fit", str(csv), *sum((["--x", c] for c in x), [])]
    cmd += ["--y", y, "--out", str(out), "--study", "bench", "--processes", str(processes)]
    cmd += ["--trials", str(trials), "--seed", str(seed)]
    try:
        t0 = time.perf_counter()
        done = subprocess.run(
            cmd, env={**os.environ, "BLUESKY_TWIN_STORAGE": db.url}, capture_output=True, text=True, check=False
        )
        wall = time.perf_counter() - t0
        if done.returncode != 0:
            raise SystemExit(f"fit failed ({done.returncode}):\n{done.stderr[-3000:]}")
        study = optuna.load_study(study_name="bench", storage=open_storage(db.url))
        trials_ = [t for t in study.trials if t.datetime_start is not None and t.datetime_complete is not None]
        span = (max(t.datetime_complete for t in trials_) - min(t.datetime_start for t in trials_)).total_seconds()
        state = optuna.trial.TrialState
        twin = DigitalTwin.load(out)
        return {
            "wall": wall,
            "search": span,
            "best": float(study.best_value),
            "complete": sum(t.state == state.COMPLETE for t in study.trials),
            "pruned": sum(t.state == state.PRUNED for t in study.trials),
            "twin": twin,
        }
    finally:
        db.drop()


def main() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", default="1", help="comma-separated data set numbers (1 ErCo2, 4 ARPES)")
    ap.add_argument("--trials", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    add_data_option(ap)
    args = ap.parse_args()
    data_dir = resolve_data_dir(args.data)
    cmdline = f"--datasets {args.datasets} --trials {args.trials} --repeats {args.repeats}"
    rows_md: list[str] = []
    per_run: list[str] = []
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-workers-") as tmp:
        work = Path(tmp)
        for key in [int(k) for k in args.datasets.split(",")]:
            label, fname, _ = DATASETS[key]
            df = pd.read_csv(data_dir / fname)
            x, y = list(df.columns[:2]), str(df.columns[2])
            coarse, held = _held_out(df, x)
            mask = df[coarse].isin(held).to_numpy()
            csv = work / f"fit-{key}.csv"
            df[~mask].to_csv(csv, index=False)
            X, Y = df[x].to_numpy(), df[y].to_numpy()
            runs: dict[int, list[dict]] = {1: [], 2: []}
            for r in range(args.repeats):
                for n in (1, 2) if r % 2 == 0 else (2, 1):  # alternate the order: the machine is shared
                    res = _run(csv, x, y, n, args.trials, r, args.postgres, work)
                    twin = res.pop("twin")
                    res["nrmse"] = float(np.sqrt(np.mean((twin.predict(X[mask])[0] - Y[mask]) ** 2)) / Y.std())
                    res["r2"] = float(twin.metadata["train_r2"])
                    runs[n].append(res)
                    line = (
                        f"{label}, repeat {r}, {n} process(es): wall {res['wall']:.1f} s, "
                        f"search {res['search']:.1f} s, "
                        f"best trial {res['best']:.4g}, withheld-line NRMSE {res['nrmse']:.4f}, train R^2 "
                        f"{res['r2']:.4f}, {res['complete']} complete / {res['pruned']} pruned"
                    )
                    print(line, flush=True)
                    per_run.append(f"- {line}")

            def med(n: int, k: str, runs: dict = runs) -> float:
                return statistics.median(v[k] for v in runs[n])

            rows_md.append(
                f"| {label} | {int((~mask).sum())} | {med(1, 'wall'):.1f} | {med(2, 'wall'):.1f} | "
                f"{med(1, 'wall') / med(2, 'wall'):.2f} | {med(1, 'search') / med(2, 'search'):.2f} | "
                f"{med(1, 'best'):.4g} | {med(2, 'best'):.4g} | {med(2, 'best') / med(1, 'best'):.2f} | "
                f"{med(1, 'nrmse'):.4f} | {med(2, 'nrmse'):.4f} | {med(2, 'nrmse') / med(1, 'nrmse'):.2f} |"
            )
    minutes = (time.perf_counter() - t_all) / 60
    md = [
        "# One study, 1 vs 2 worker processes",
        "",
        f"Command: `.venv/bin/python benchmarks/bench_workers.py {cmdline}` ({minutes:.1f} min) on "
        f"{os.cpu_count()} shared cores, PostgreSQL on 127.0.0.1. Each run is "
        f"`bluesky-twin fit DATA --storage URL --processes N --trials {args.trials}` on a fresh database: "
        "N `bluesky-twin worker` processes share the study, then the final ensemble (6 members) is built "
        "once in the parent. Two interior lines of the coarse axis are withheld from the fit; medians over "
        f"{args.repeats} repeat(s) (seed = repeat number), the order of N = 1 and N = 2 alternating.",
        "",
        "Speed-up = time with 1 process / time with 2 (above 1: two processes are faster); 'search' is the "
        "span from the first trial's start to the last trial's end. Best trial = validation MSE on held-out "
        "interior lines (standardised units) of the study's best trial; NRMSE = the final twin's RMSE on the "
        "withheld lines / standard deviation of the data set. Quality ratios are 2 processes / 1 "
        "(below 1: better with two).",
        "",
        "| data set | points fitted | wall, 1 process (s) | wall, 2 processes (s) | speed-up, wall | "
        "speed-up, search | best trial, 1 | best trial, 2 | ratio | NRMSE, 1 | NRMSE, 2 | ratio |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
        *rows_md,
        "",
        "Per run:",
        "",
        *per_run,
        "",
    ]
    (ROOT / "docs" / "benchmarks" / "workers.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
