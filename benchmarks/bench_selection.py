"""Held-out-line selection against the paper's training-fit selection, over several seeds.

For each data set and seed, a twin is fitted as in ``bench_twin.py`` (30 trials, 2
jobs).  Among the search's complete trials two single configurations are picked: the
one with the lowest held-out-line loss (the twin's criterion) and the one with the
lowest training loss (the paper's criterion, training R^2).  When they differ, each is
refitted without every held-out interior line (the lines of ``bench_twin.py``) and
scored by the line-averaged RMSE over the data's standard deviation (NRMSE); when they
are the same configuration the seed is a tie.  Side by side in one run::

    .venv/bin/python benchmarks/bench_selection.py --datasets 1,2,3 --seeds 0 1 2 [--data DIR]

The data directory is found as in ``bench_twin.py`` (``--data``, ``$BLUESKY_TWIN_DATA``,
``../shared/data/terashima2023``).

Writes ``docs/benchmarks/selection.md`` and ``selection.json`` (``--out NAME``: ``NAME.md`` /
``NAME.json``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_twin  # noqa: E402
from bench_twin import DATASETS, ROOT, lofo_lines, lofo_nrmse, twin_lofo  # noqa: E402


def compare(key: int, seed: int, trials: int, jobs: int) -> dict:
    import optuna
    import torch

    from bluesky_twin.twin import DigitalTwin, TwinSearchSpace
    from bluesky_twin.twin import model_params as _model_params
    from bluesky_twin.twin.storage_url import open_storage

    name, fname, _ = DATASETS[key]
    df = pd.read_csv(bench_twin.DATA / fname)
    xcols, ycol = list(df.columns[:2]), df.columns[2]
    X, y = df[xcols].to_numpy(float), df[ycol].to_numpy(float)
    t0 = time.perf_counter()
    twin = DigitalTwin.fit(df, xcols, ycol, trials=trials, jobs=jobs, seed=seed, progress=False)
    fit_s = time.perf_counter() - t0
    study = optuna.load_study(study_name=twin.study_name, storage=open_storage(twin.storage_url()))
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE and "train_mse" in t.user_attrs]
    by_lines = min(complete, key=lambda t: t.value)
    by_train = min(complete, key=lambda t: t.user_attrs["train_mse"])
    lines = lofo_lines(X)
    space = TwinSearchSpace.from_dict(twin.metadata["search_space"])
    torch.set_num_threads(1)

    def nrmse(trial) -> float:
        params = _model_params(trial.params, space, len(X))
        preds = twin_lofo(
            twin, X, y, lines, params=params, epochs=max(int(trial.user_attrs.get("best_epoch", 150)), 150), seed=seed
        )
        return lofo_nrmse(preds, X, y, lines)

    row = {
        "dataset": name,
        "seed": seed,
        "fit_s": fit_s,
        "complete": len(complete),
        "lines_trial": by_lines.number,
        "train_trial": by_train.number,
    }
    if by_lines.number == by_train.number:
        row["lines_nrmse"] = row["train_nrmse"] = nrmse(by_lines)
    else:
        row["lines_nrmse"], row["train_nrmse"] = nrmse(by_lines), nrmse(by_train)
    print(
        f"{name} seed {seed}: held-out-lines pick #{by_lines.number} {row['lines_nrmse']:.4f}, "
        f"train-fit pick #{by_train.number} {row['train_nrmse']:.4f} ({len(complete)} complete)",
        flush=True,
    )
    return row


def write(rows: list[dict], command: str, seconds: float, stem: str = "selection") -> None:
    out = ROOT / "docs" / "benchmarks"
    (out / f"{stem}.json").write_text(json.dumps({"command": command, "rows": rows}, indent=1))
    lines = [
        "# Selection criterion: held-out lines vs training fit",
        "",
        f"Command: `.venv/bin/python {command}` ({seconds / 60:.1f} min). Each seed fits a twin (30 trials, "
        "2 jobs); the best single configuration by held-out-line loss and the best by training loss are "
        "refitted without each held-out interior line; NRMSE = line-averaged RMSE / std of the data "
        "(lower is better).",
        "",
        "| data set | seed | complete trials | held-out-lines pick | train-fit pick | better |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        same = r["lines_trial"] == r["train_trial"]
        if same:
            better = "same configuration"
        else:
            better = "held-out lines" if r["lines_nrmse"] < r["train_nrmse"] else "training fit"
        lines.append(
            f"| {r['dataset']} | {r['seed']} | {r['complete']} | "
            f"{r['lines_nrmse']:.4f} (#{r['lines_trial']}) | "
            f"{r['train_nrmse']:.4f} (#{r['train_trial']}) | {better} |"
        )
    lines += [
        "",
        "| data set | seeds | held-out lines better | training fit better | same | mean NRMSE lines / train |",
        "|---|---|---|---|---|---|",
    ]
    for name in dict.fromkeys(r["dataset"] for r in rows):
        rs = [r for r in rows if r["dataset"] == name]
        diff = [r for r in rs if r["lines_trial"] != r["train_trial"]]
        wins = sum(r["lines_nrmse"] < r["train_nrmse"] for r in diff)
        lines.append(
            f"| {name} | {len(rs)} | {wins} | {len(diff) - wins} | {len(rs) - len(diff)} | "
            f"{np.mean([r['lines_nrmse'] for r in rs]):.4f} / {np.mean([r['train_nrmse'] for r in rs]):.4f} |"
        )
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", default="1,2,3")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--trials", type=int, default=30)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", default="selection", help="file stem under docs/benchmarks/")
    bench_twin.add_data_option(ap)
    args = ap.parse_args()
    bench_twin.DATA = bench_twin.resolve_data_dir(args.data)
    command = "benchmarks/bench_selection.py " + " ".join(sys.argv[1:])
    t0 = time.perf_counter()
    rows = []
    for key in [int(k) for k in args.datasets.split(",")]:
        for seed in args.seeds:
            rows.append(compare(key, seed, args.trials, args.jobs))
            write(rows, command, time.perf_counter() - t0, args.out)
    print(f"wrote docs/benchmarks/{args.out}.md in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
