"""ARPES: training R^2 against between-line error for per-axis Fourier scales and final-training length.

One network configuration (``--config``, JSON twin parameters) is trained twice per
setting, as 2 seeded members: on all rows (training R^2 of the member mean) and
without every fourth interior ARPES line from the third on (7 lines, each keeping
its neighbours; NRMSE over the data's std, averaged over the lines).  A setting is
``[scale_axis0, scale_axis1, seed, epochs, steps_per_epoch, fourier_features]``
(``steps_per_epoch`` 0: full passes; the twin's search and final ensemble use 8)::

    .venv/bin/python benchmarks/explore_fourier_axes.py \\
        --settings '[[2,2,0,150,0,64],[6,1,0,150,0,64]]'

Prints one line per setting; the numbers are quoted in docs/twin.md.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "terashima2023" / "traindata_Section3_4.csv"
BASE = {"n_layers": 4, "n_units": 133, "lr": 1.1e-3, "batch_size": 1024, "weight_decay": 8e-7,
        "activation": "relu"}


def main() -> None:
    import torch

    from bluesky_twin.twin.network import BatchedMLP
    from bluesky_twin.twin.training import train_members

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--settings", required=True, help="JSON list of [s0, s1, seed, epochs, steps, features]")
    ap.add_argument("--config", default=json.dumps(BASE), help="JSON twin parameters of the network")
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--precision", default="float32", choices=["float32", "bfloat16"],
                    help="training precision (train_members(precision=...))")
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = json.loads(args.config)
    df = pd.read_csv(args.data)
    X, y = df.iloc[:, :2].to_numpy(float), df.iloc[:, 2].to_numpy(float)
    Xt = torch.tensor((X - X.mean(0)) / X.std(0), dtype=torch.float32)
    ys = (y - y.mean()) / y.std()
    yt = torch.tensor(ys[:, None], dtype=torch.float32)
    held = np.unique(X[:, 1])[2:-2:4]
    for s0, s1, seed, epochs, steps, feats in json.loads(args.settings):
        preds, seconds = [], 0.0
        for rows in (np.ones(len(X), bool), ~np.isin(X[:, 1], held)):
            gen = torch.Generator().manual_seed(int(seed))
            net = BatchedMLP(2, 2, 1, cfg["n_layers"], cfg["n_units"], activation=cfg["activation"],
                             generator=gen, fourier_features=int(feats), fourier_scale=[float(s0), float(s1)])
            idx = torch.tensor(np.flatnonzero(rows))
            t0 = time.perf_counter()
            train_members(net, Xt, yt, [idx, idx], None, lr=cfg["lr"], batch_size=cfg["batch_size"],
                          weight_decay=cfg["weight_decay"], max_epochs=int(epochs), lr_drop_epoch=100,
                          generator=gen, max_steps_per_epoch=int(steps), precision=args.precision)
            seconds = seconds or time.perf_counter() - t0
            with torch.no_grad():
                preds.append(net(Xt.unsqueeze(0).expand(2, -1, -1)).mean(0)[:, 0].numpy())
        r2 = 1 - np.mean((preds[0] - ys) ** 2) / np.var(ys)
        nrmse = np.mean([np.sqrt(np.mean((preds[1] - ys)[X[:, 1] == v] ** 2)) for v in held])
        print(f"scales ({s0}, {s1}) seed {seed} epochs {epochs} steps/epoch {steps or 'all'} features {feats}: "
              f"{args.precision}: train R^2 {r2:.4f}, held-out-line NRMSE {nrmse:.4f} ({seconds:.0f} s, 2 members, all rows)",
              flush=True)


if __name__ == "__main__":
    main()
