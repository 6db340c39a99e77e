"""Does a longer final training buy training R^2, and what does it cost between the lines?

Loads a fitted twin, then retrains its ensemble configurations (same members, same
schedule) for ``epochs x MULT``, once without every third interior line (their error,
as NRMSE over the data's std, measures prediction between lines) and once on all
lines (training R^2).  Side by side for each multiplier in one run::

    .venv/bin/python benchmarks/bench_final_epochs.py MODEL_DIR DATA.csv [--mult 1 3]

``DATA.csv`` is the file the twin was fitted on (a bare file name is looked up in
``$BLUESKY_TWIN_DATA``, else in ``../shared/data/terashima2023`` beside the repository).

Prints a markdown table; used for the ARPES note in docs/twin.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_twin import default_data_dir  # noqa: E402


def main() -> None:
    import torch

    from bluesky_twin.twin import DigitalTwin, Scaler
    from bluesky_twin.twin.network import BatchedMLP
    from bluesky_twin.twin.training import train_members

    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("data")
    ap.add_argument("--mult", type=float, nargs="+", default=[1.0, 3.0])
    args = ap.parse_args()
    torch.set_num_threads(1)
    twin = DigitalTwin.load(args.model)
    meta, space = twin.metadata, twin.metadata["search_space"]
    data = Path(args.data)
    if not data.exists() and data.name == args.data and default_data_dir() is not None:
        data = default_data_dir() / args.data
    df = pd.read_csv(data).dropna(subset=[*twin.x_names, twin.y_name])
    X, y = df[twin.x_names].to_numpy(float), df[twin.y_name].to_numpy(float)
    # what the twin's fit standardised with, on its input scales
    xs, ys_scaler = Scaler.fit(X, "x", twin._x_scaler.warp), Scaler.fit(y, "y")
    Xt = torch.tensor(xs.transform(X), dtype=torch.float32)
    yt = torch.tensor(ys_scaler.transform(y.reshape(-1, 1)), dtype=torch.float32)
    ys = yt[:, 0].numpy()
    line_axis = twin.x_names.index(meta["line_axis"])
    lines = np.unique(X[:, line_axis])
    held_lines = lines[1:-1][1::3]
    held = np.isin(X[:, line_axis], held_lines)

    def ensemble_mean(rows: np.ndarray, mult: float) -> np.ndarray:
        idx = torch.from_numpy(np.flatnonzero(rows))
        preds = []
        for i, e in enumerate(meta["ensemble"]):
            gen = torch.Generator().manual_seed(100 + i)
            model = BatchedMLP.from_params(e["members"], X.shape[1], e["params"], generator=gen)
            train_members(
                model,
                Xt,
                yt,
                [idx] * e["members"],
                None,
                lr=e["params"]["lr"],
                batch_size=min(e["params"]["batch_size"], len(idx)),
                weight_decay=e["params"]["weight_decay"],
                max_epochs=max(1, int(e["epochs"] * mult)),
                lr_drop_epoch=space["lr_drop_epoch"],
                lr_drop_factor=space["lr_drop_factor"],
                generator=gen,
                max_steps_per_epoch=space.get("max_steps_per_epoch", 0),
            )
            with torch.no_grad():
                preds.append(model(Xt[None].expand(e["members"], -1, -1))[:, :, 0].numpy())
        return np.concatenate(preds).mean(axis=0)

    print(
        f"twin {twin.version}: ensemble "
        + ", ".join(
            f"{e['params']['n_layers']}x{e['params']['n_units']} ({e['epochs']} epochs)" for e in meta["ensemble"]
        )
    )
    print("\n| final epochs | held-out-line NRMSE (every 3rd interior line) | training R^2 (all lines) | time (s) |")
    print("|---|---|---|---|")
    for mult in args.mult:
        t = time.perf_counter()
        p = ensemble_mean(~held, mult)
        nrmse = np.mean(
            [np.sqrt(np.mean((p[X[:, line_axis] == h] - ys[X[:, line_axis] == h]) ** 2)) for h in held_lines]
        )
        p_all = ensemble_mean(np.ones(len(X), bool), mult)
        r2 = 1.0 - np.mean((p_all - ys) ** 2) / np.var(ys)
        print(f"| x{mult:g} | {nrmse:.4f} | {r2:.4f} | {time.perf_counter() - t:.0f} |", flush=True)


if __name__ == "__main__":
    main()
