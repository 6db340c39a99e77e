"""Benchmark the measurement twin against interpolation baselines on the four
Terashima et al. (2023) data sets, side by side in one run.

Run::

    .venv/bin/python benchmarks/bench_twin.py [--datasets 1,2,3,4] [--trials 30] [--jobs 2] [--data DIR]

The data (the ``traindata_Section3_*.csv`` files) come from ``--data DIR``, else from
the environment variable ``BLUESKY_TWIN_DATA``, else from ``../shared/data/terashima2023``
next to the repository if it exists.

It prints the numbers and writes ``docs/benchmarks/twin.md`` plus figures under
``docs/figures/``.  Per data set:

* fit wall time for ``--trials`` Optuna trials, and the ratio to the paper's
  Table SM1 time (8-core desktops, 5 workers);
* training R^2 of the twin ensemble;
* leave-one-field-out (LOFO) error on interior lines for the twin (its selected
  configuration refit without the line) and for linear interpolation along the
  coarse axis, a cubic spline along it, a tuned scipy RBFInterpolator and a random
  forest; plus the LOFO error of the configuration a *training-fit* criterion
  would have picked (why selection uses held-out lines);
* on ErCo2: dS_M(T) at 5 T from every method, with the number of local extrema
  and the total variation (spurious oscillation) of each curve;
* prediction time of 1e5 points.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
ARPES_BUDGET = 180.0
DATA_ENV = "BLUESKY_TWIN_DATA"
DATA: Path  # set by main() from --data / $BLUESKY_TWIN_DATA / the default
DATASETS = {
    1: ("ErCo2 M(T,H)", "traindata_Section3_1.csv", (2.6, 3.9)),
    2: ("Fe3Ga4 M(T,H)", "traindata_Section3_2.csv", (2.5, 4.5)),
    3: ("PdH R(T,H)", "traindata_Section3_3.csv", (2.1, 3.1)),
    4: ("ARPES I(theta1,theta2)", "traindata_Section3_4.csv", (6.8, 13.6)),
}


def default_data_dir() -> Path | None:
    """``$BLUESKY_TWIN_DATA``, else ``../shared/data/terashima2023`` beside the repository if present."""
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser()
    candidate = ROOT.parent / "shared" / "data" / "terashima2023"
    return candidate if candidate.is_dir() else None


def add_data_option(ap: argparse.ArgumentParser) -> None:
    """Add ``--data DIR`` (the directory of the Terashima et al. CSV files)."""
    ap.add_argument(
        "--data",
        type=Path,
        default=None,
        metavar="DIR",
        help=f"directory of the traindata_Section3_*.csv files (default: ${DATA_ENV}, "
        "else ../shared/data/terashima2023 beside the repository)",
    )


def resolve_data_dir(value: Path | None) -> Path:
    """The data directory from the option, the environment or the default; exits 2 if there is none."""
    path = value if value is not None else default_data_dir()
    if path is None or not path.is_dir():
        where = path if path is not None else "no --data, no $" + DATA_ENV + ", no ../shared/data/terashima2023"
        print(f"error: data directory not found ({where})", file=sys.stderr)
        raise SystemExit(2)
    return path


# ----------------------------------------------------------------------------- baselines
def _per_line(X: np.ndarray, y: np.ndarray, lines: np.ndarray, x1: np.ndarray) -> np.ndarray:
    """Each line's y interpolated (linearly, along the dense axis) onto ``x1``."""
    out = np.empty((len(lines), len(x1)))
    for i, h in enumerate(lines):
        sel = X[:, 1] == h
        order = np.argsort(X[sel, 0])
        out[i] = np.interp(x1, X[sel, 0][order], y[sel][order])
    return out


def predict_linear(X: np.ndarray, y: np.ndarray, Q: np.ndarray) -> np.ndarray:
    """Linear interpolation along the coarse axis between the neighbouring lines."""
    lines = np.unique(X[:, 1])
    grid = _per_line(X, y, lines, Q[:, 0])
    out = np.empty(len(Q))
    for j in range(len(Q)):
        out[j] = np.interp(Q[j, 1], lines, grid[:, j])
    return out


def predict_spline(X: np.ndarray, y: np.ndarray, Q: np.ndarray) -> np.ndarray:
    """Cubic spline along the coarse axis (natural boundary)."""
    from scipy.interpolate import CubicSpline

    lines = np.unique(X[:, 1])
    grid = _per_line(X, y, lines, Q[:, 0])
    spline = CubicSpline(lines, grid, axis=0, bc_type="natural")  # one spline per query column
    idx = np.clip(np.searchsorted(lines, Q[:, 1]) - 1, 0, len(lines) - 2)
    dx = Q[:, 1] - lines[idx]
    cols = np.arange(len(Q))
    c = spline.c  # (4, n_lines - 1, n_query)
    return ((c[0, idx, cols] * dx + c[1, idx, cols]) * dx + c[2, idx, cols]) * dx + c[3, idx, cols]


class RBFBaseline:
    """scipy RBFInterpolator on standardised axes, kernel and smoothing tuned by LOFO."""

    KERNELS = ("thin_plate_spline", "cubic", "quintic")
    SMOOTHING = (0.0, 1e-3, 1e-1)

    def __init__(self, X: np.ndarray, y: np.ndarray, neighbors: int | None = None) -> None:
        self.mu, self.sd = X.mean(0), X.std(0)
        self.ym, self.ys = y.mean(), y.std()
        self.neighbors = neighbors
        self.params = self._tune(X, y)

    def _fit(self, X, y, kernel, smoothing):
        from scipy.interpolate import RBFInterpolator

        return RBFInterpolator(
            (X - self.mu) / self.sd,
            (y - self.ym) / self.ys,
            kernel=kernel,
            smoothing=smoothing,
            neighbors=self.neighbors,
        )

    def _tune(self, X, y):
        lines = np.unique(X[:, 1])[1:-1]
        lines = lines[:: max(1, len(lines) // 4)]
        best, best_err = None, np.inf
        for k in self.KERNELS:
            for s in self.SMOOTHING:
                err = 0.0
                try:
                    for h in lines:
                        tr = X[:, 1] != h
                        f = self._fit(X[tr], y[tr], k, s)
                        err += np.mean((f((X[~tr] - self.mu) / self.sd) * self.ys + self.ym - y[~tr]) ** 2)
                except np.linalg.LinAlgError:  # e.g. quintic on collinear neighbourhoods
                    continue
                if err < best_err:
                    best, best_err = (k, s), err
        return best

    def predict(self, X, y, Q):
        f = self._fit(X, y, *self.params)
        return f((Q - self.mu) / self.sd) * self.ys + self.ym


def predict_forest(X, y, Q, seed=0):
    from sklearn.ensemble import RandomForestRegressor

    rf = RandomForestRegressor(n_estimators=200, min_samples_leaf=2, n_jobs=1, random_state=seed)
    mu, sd = X.mean(0), X.std(0)
    rf.fit((X - mu) / sd, y)
    return rf.predict((Q - mu) / sd)


# ----------------------------------------------------------------------------- twin LOFO
def lofo_lines(X):
    """The held-out interior lines (second column) of the LOFO comparison: at most 8, spread out."""
    interior = np.unique(X[:, 1])[1:-1]
    return interior[:: max(1, int(np.ceil(len(interior) / 8)))]


def lofo_nrmse(preds, X, y, lines):
    """Line-averaged RMSE of per-line predictions ``{line: values}`` over the data's std."""
    return float(np.mean([np.sqrt(np.mean((preds[h] - y[X[:, 1] == h]) ** 2)) for h in lines]) / y.std())


def twin_lofo(twin, X, y, lines, params=None, epochs=None, seed=0, lr_drop=None, networks_only=None):
    """Refit the twin's configurations once per held-out line; average them like the twin does.

    With *params* given, only that configuration is refitted.  Each refit trains like the
    twin's final ensemble: the same epochs and learning-rate drop, steps per epoch
    (``final_steps_per_epoch``) and precision.  When the twin carries a line-residual
    correction, each refit gets its own, fitted on the lines it trained on; a dict passed
    as *networks_only* receives the predictions without it.
    """
    if params is None:
        # one refit per configuration and member count: on large maps the ensemble
        # lists a configuration's members as separate one-member groups
        # (a pooled twin's restarts number their trials each from 0: a configuration is (restart, trial))
        def config(e):
            return e.get("restart", 0), e["trial"]

        entries = {config(e): e for e in twin.metadata["ensemble"]}.values()
        weights = [sum(g["members"] for g in twin.metadata["ensemble"] if config(g) == config(e)) for e in entries]
        per_config = [
            _lofo_one(twin, X, y, lines, e["params"], e["epochs"], seed, e.get("lr_drop_epoch")) for e in entries
        ]
        full = {h: np.average([p[h] for p in per_config], axis=0, weights=weights) for h in lines}
    else:
        full = _lofo_one(twin, X, y, lines, params, epochs, seed, lr_drop)
    if networks_only is not None:
        networks_only.update({h: full[h][X[:, 1] == h] for h in lines})
    return {h: _held_out_prediction(twin, X, y, h, full[h]) for h in lines}


def _held_out_prediction(twin, X, y, h, prediction):
    """The refit's prediction on held-out line *h*, plus its line-residual correction if the twin has one."""
    from bluesky_twin.twin.line_residual import LineResidual

    sel = X[:, 1] == h
    meta = twin.metadata.get("line_residual")
    if not meta:
        return prediction[sel]
    correction = LineResidual.fit(X[~sel], y[~sel] - prediction[~sel], meta["line_axis"])
    return prediction[sel] + correction(X[sel])


def _lofo_one(twin, X, y, lines, params, epochs, seed, lr_drop=None):
    import torch

    from bluesky_twin.twin import LARGE_DATA_ROWS, Scaler
    from bluesky_twin.twin.network import BatchedMLP
    from bluesky_twin.twin.training import MonotonePenalty, resolve_precision, train_members

    # what the twin's fit standardised with, on its input scales
    xs, ys = Scaler.fit(X, "x", twin._x_scaler.warp), Scaler.fit(y, "y")
    Xt = torch.tensor(xs.transform(X), dtype=torch.float32)
    yt = torch.tensor(ys.transform(y.reshape(-1, 1)), dtype=torch.float32)
    gen = torch.Generator().manual_seed(seed)
    model = BatchedMLP.from_params(len(lines), X.shape[1], params, generator=gen)
    train = [torch.from_numpy(np.flatnonzero(X[:, 1] != h)) for h in lines]
    space = twin.metadata["search_space"]
    steps = space.get("final_steps_per_epoch")
    train_members(
        model,
        Xt,
        yt,
        train,
        None,
        lr=params["lr"],
        batch_size=params["batch_size"],
        weight_decay=params["weight_decay"],
        max_epochs=epochs,
        lr_drop_epoch=lr_drop or space["lr_drop_epoch"],
        lr_drop_factor=space["lr_drop_factor"],
        generator=gen,
        max_steps_per_epoch=space.get("max_steps_per_epoch", 0) if steps is None else steps,
        precision=resolve_precision(space.get("precision", "float32"), len(X), LARGE_DATA_ROWS),
        monotone=MonotonePenalty.over(Xt, twin.x_names, space.get("monotone") or {}),
    )
    with torch.no_grad():  # every refit's prediction on all rows: {held-out line: (n,) values}
        p = model(Xt.unsqueeze(0).expand(len(lines), -1, -1))[:, :, 0].numpy()
    return {h: p[i] * ys.scale[0] + ys.mean[0] for i, h in enumerate(lines)}


def lofo_errors(X, y, lines, predictors, twin_preds):
    """Normalised RMSE (by std of y) per method over the held-out lines."""
    res = {name: [] for name in ["twin", *predictors]}
    for h in lines:
        sel = X[:, 1] == h
        Xtr, ytr, Q = X[~sel], y[~sel], X[sel]
        res["twin"].append(np.sqrt(np.mean((twin_preds[h] - y[sel]) ** 2)))
        for name, fn in predictors.items():
            res[name].append(np.sqrt(np.mean((fn(Xtr, ytr, Q) - y[sel]) ** 2)))
    sd = y.std()
    return {k: float(np.mean(v) / sd) for k, v in res.items()}, {k: [float(e / sd) for e in v] for k, v in res.items()}


# ----------------------------------------------------------------------------- main
PER_AXIS_FOURIER = False


def run_dataset(key, trials, jobs, seed, out_rows, figs):
    import torch

    from bluesky_twin.twin import DigitalTwin

    name, fname, paper_min = DATASETS[key]
    df = pd.read_csv(DATA / fname)
    xcols, ycol = list(df.columns[:2]), df.columns[2]
    X, y = df[xcols].to_numpy(float), df[ycol].to_numpy(float)
    print(f"\n=== {name}: {len(df)} points, {len(np.unique(X[:, 1]))} lines", flush=True)
    t0 = time.perf_counter()
    space = None
    if PER_AXIS_FOURIER:  # the search-space variant of docs/twin.md (one Fourier scale per axis)
        from bluesky_twin.twin import TwinSearchSpace

        space = TwinSearchSpace(fourier_per_axis=True, fourier_scale=(0.5, 16.0))
    twin = DigitalTwin.fit(
        df,
        xcols,
        ycol,
        trials=trials,
        jobs=jobs,
        seed=seed,
        search_space=space,
        budget=None if key != 4 else ARPES_BUDGET,
        progress=False,
    )
    wall = time.perf_counter() - t0
    m = twin.metadata
    print(
        f"fit {wall:.1f} s ({m['n_trials_complete']} complete, {m['n_trials_pruned']} pruned), "
        f"train R^2 {m['train_r2']:.4f}, best {m['best_params']}",
        flush=True,
    )

    # prediction speed
    rng = np.random.default_rng(0)
    Q = rng.uniform(twin.x_range[:, 0], twin.x_range[:, 1], size=(100_000, 2))
    times = []
    for _ in range(5):
        t = time.perf_counter()
        twin.predict(Q)
        times.append(time.perf_counter() - t)
    pred_ms = 1e3 * float(np.median(times))

    lines = lofo_lines(X)
    torch.set_num_threads(1)
    net_preds = {}
    twin_preds = twin_lofo(twin, X, y, lines, seed=seed, networks_only=net_preds)
    net_lofo = lofo_nrmse(net_preds, X, y, lines) if m.get("line_residual") else None
    # the configuration a training-fit criterion would have chosen
    import optuna

    from bluesky_twin.twin.storage_url import open_storage

    study = optuna.load_study(study_name=twin.study_name, storage=open_storage(twin.storage_url()))
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE and "train_mse" in t.user_attrs]
    by_train = min(complete, key=lambda t: t.user_attrs["train_mse"])
    alt = None
    if by_train.number != m["best_trial"]:
        from bluesky_twin.twin import TwinSearchSpace
        from bluesky_twin.twin import final_schedule as _final_schedule
        from bluesky_twin.twin import model_params as _model_params

        space = TwinSearchSpace.from_dict(m["search_space"])
        alt_params = _model_params(by_train.params, space, len(X))
        # as the twin's final ensemble would train it (a search fold holds out a third of the lines)
        alt_epochs, _ = _final_schedule(by_train, space, int(alt_params["batch_size"]), int(len(X) * 2 / 3), len(X))
        alt_preds = twin_lofo(twin, X, y, lines, params=alt_params, epochs=alt_epochs, seed=seed)
        alt = lofo_nrmse(alt_preds, X, y, lines)
    rbf = RBFBaseline(X, y, neighbors=None if len(X) < 5000 else 64)
    predictors = {"linear": predict_linear, "spline": predict_spline, "rbf": rbf.predict, "forest": predict_forest}
    mean_err, per_line = lofo_errors(X, y, lines, predictors, twin_preds)
    if net_lofo is not None:
        print(
            f"line-residual correction {m['line_residual']}: LOFO NRMSE of the networks alone {net_lofo:.4f}",
            flush=True,
        )
    print(
        "LOFO NRMSE:",
        {k: round(v, 4) for k, v in mean_err.items()},
        f"(train-fit-selected config: {alt if alt is None else round(alt, 4)})",
        flush=True,
    )
    row = {
        "dataset": name,
        "points": len(df),
        "trials": trials,
        "jobs": jobs,
        "fit_s": wall,
        "paper_min": paper_min,
        "speedup_vs_paper": (60 * np.mean(paper_min)) / wall,
        "complete": m["n_trials_complete"],
        "pruned": m["n_trials_pruned"],
        "train_r2": m["train_r2"],
        "network_train_r2": (m.get("line_residual") or {}).get("network_train_r2", m["train_r2"]),
        "lofo_networks_only": net_lofo,
        "line_residual": m.get("line_residual"),
        "pred_1e5_ms": pred_ms,
        "ensemble": m["ensemble"],
        "lofo": mean_err,
        "lofo_per_line": per_line,
        "lofo_lines": lines.tolist(),
        "lofo_train_fit_selected": alt,
        "best_params": m["best_params"],
        "rbf_params": list(rbf.params),
        "command": "benchmarks/bench_twin.py " + " ".join(sys.argv[1:]),
    }
    out_rows.append(row)
    if key == 1:
        figs.update(mce_comparison(twin, X, y, rbf))
    return row


def mce_comparison(twin, X, y, rbf):
    """|dS_M|(T) at 5 T from the twin and every baseline, on a 0.1 T field step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bluesky_twin.analysis.mce import entropy_change_isofield
    from bluesky_twin.analysis.steps import count_extrema

    T = np.arange(10.5, 59.5, 0.25)
    H = np.arange(100.0, 50_000.0 + 1, 1000.0)  # 0.1 T step (1000 Oe)
    TT, HH = np.meshgrid(T, H)
    Q = np.column_stack([TT.ravel(), HH.ravel()])
    curves = {}
    methods = {
        "twin": lambda: twin.predict(Q)[0],
        "linear": lambda: predict_linear(X, y, Q),
        "spline": lambda: predict_spline(X, y, Q),
        "rbf": lambda: rbf.predict(X, y, Q),
        "forest": lambda: predict_forest(X, y, Q),
    }
    for name, fn in methods.items():
        M = fn()
        res = entropy_change_isofield(Q[:, 0], Q[:, 1], M, T_grid=T, field_unit="Oe")
        curves[name] = np.abs(res.curve(res.H[-1])[0]) if hasattr(res, "H") else None
    raw = entropy_change_isofield(X[:, 0], X[:, 1], y, T_grid=T, field_unit="Oe")
    curves["raw coarse fields (trapezoid)"] = np.abs(raw.curve(raw.H[-1])[0])
    stats = {}
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, c in curves.items():
        prom = 0.01 * np.ptp(c)
        stats[name] = {
            "extrema": int(count_extrema(c, prom)),
            "total_variation_over_peak": float(np.abs(np.diff(c)).sum() / (2 * c.max())),
        }
        ax.plot(T, c, label=f"{name} ({stats[name]['extrema']} extrema)")
    ax.set_xlabel("T (K)")
    ax.set_ylabel("|dS_M| at 5 T (raw units x T / K)")
    ax.set_title("ErCo2: entropy change at 0->5 T, 0.1 T field step")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = ROOT / "docs" / "figures" / "bench_erco2_dsm.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print("ErCo2 dS_M curve stats:", stats, flush=True)
    return {"erco2_dsm": stats, "erco2_dsm_png": str(path.relative_to(ROOT))}


def _networks_only(row, key):
    """A row's network-only number, '--' when the twin had no line-residual correction."""
    return f"{row[key]:.4f}" if row.get("line_residual") and row.get(key) is not None else "--"


def write_markdown(rows, figs, args, elapsed):
    lines = [
        "# Twin benchmark (Terashima et al. 2023 data)",
        "",
        f"Command: `.venv/bin/python benchmarks/bench_twin.py --datasets {args.datasets} --trials {args.trials} "
        f"--jobs {args.jobs}{' --update' if args.update else ''}"
        f"{f' --arpes-budget {args.arpes_budget:g}' if '4' in args.datasets.split(',') else ''}` "
        f"({elapsed / 60:.1f} min for this invocation; "
        "rows of earlier invocations are kept with --update; the invocation behind each row is listed "
        "under the tables). "
        f"Machine: {os.cpu_count()} cores, shared with other "
        "work while this ran, so absolute times are pessimistic; compare the ratios.",
        "",
        "## Fit time, training fit, prediction",
        "",
        "| data set | points | trials (complete/pruned) | fit wall (s) | paper (min) | paper / ours | train R^2 | "
        "train R^2, networks alone | predict 1e5 pts (ms) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: [v[0] for v in DATASETS.values()].index(r["dataset"])):
        lines.append(
            f"| {r['dataset']} | {r['points']} | {r['complete']}/{r['pruned']} | {r['fit_s']:.1f} | "
            f"{r['paper_min'][0]}-{r['paper_min'][1]} | {r['speedup_vs_paper']:.2f}x | {r['train_r2']:.4f} | "
            f"{_networks_only(r, 'network_train_r2')} | {r['pred_1e5_ms']:.0f} |"
        )
    lines += [
        "",
        "## Leave-one-field-out error (held-out interior lines)",
        "",
        "RMSE on each held-out line divided by the standard deviation of the whole data set, averaged over the "
        "lines (lower is better). The twin's row refits each configuration of its ensemble (the top-k trials by "
        "held-out-line loss) without the line and averages them, as the twin does; "
        "`train-fit pick` is the configuration with the best *training* loss among the complete trials "
        "(the paper's criterion), refit the same way. Where the twin carries a line-residual correction "
        "(large maps, `TwinSearchSpace.line_residual`), each refit fits its own on the lines it saw; "
        "`networks alone` is the same refits without it ('--': no correction on this data set).",
        "",
        "| data set | twin | networks alone | train-fit pick | linear along coarse axis | cubic spline | RBF (tuned) | "
        "random forest | twin / best baseline |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: [v[0] for v in DATASETS.values()].index(r["dataset"])):
        e = r["lofo"]
        best_base = min(e["linear"], e["spline"], e["rbf"], e["forest"])
        alt = "same config" if r["lofo_train_fit_selected"] is None else f"{r['lofo_train_fit_selected']:.4f}"
        lines.append(
            f"| {r['dataset']} | {e['twin']:.4f} | {_networks_only(r, 'lofo_networks_only')} | {alt} | "
            f"{e['linear']:.4f} | {e['spline']:.4f} | "
            f"{e['rbf']:.4f} | {e['forest']:.4f} | {e['twin'] / best_base:.2f} |"
        )
    if "erco2_dsm" in figs:
        lines += [
            "",
            "## ErCo2: |dS_M|(T) at 0->5 T on a 0.1 T field step",
            "",
            f"![dS_M comparison](../{figs['erco2_dsm_png'].replace('docs/', '')})",
            "",
            "| method | local extrema (prominence > 1% of range) | total variation / (2 x peak) |",
            "|---|---|---|",
        ]
        for k, v in figs["erco2_dsm"].items():
            lines.append(f"| {k} | {v['extrema']} | {v['total_variation_over_peak']:.3f} |")
        lines += ["", "A smooth single-peaked curve has 1 extremum and a total-variation ratio of 1."]
    lines += ["", "Invocation behind each row:", ""]
    lines += [
        f"* {r['dataset']}: `.venv/bin/python {r.get('command', 'benchmarks/bench_twin.py (not recorded)')}`"
        for r in rows
    ]
    lines += ["", "Raw numbers: `docs/benchmarks/twin.json`."]
    (ROOT / "docs" / "benchmarks" / "twin.md").write_text("\n".join(lines) + "\n")
    (ROOT / "docs" / "benchmarks" / "twin.json").write_text(
        json.dumps({"rows": rows, "figs": figs}, indent=1, default=str)
    )


def run_seed_studies(args: argparse.Namespace) -> int:
    """``--seeds``: the seed studies of :mod:`_twin_seeds`, written to docs/benchmarks/twin_seeds.md."""
    import _twin_seeds as ts

    seeds = [int(s) for s in args.seeds.split(",")]
    keys = [int(k) for k in args.datasets.split(",")]
    t0 = time.perf_counter()
    command = "benchmarks/bench_twin.py " + " ".join(sys.argv[1:])
    out: dict = {"command": command, "magnetometers": []}
    page = ROOT / "docs" / "benchmarks" / "twin_seeds.json"
    if args.update and page.exists():
        # keep the sections this invocation does not rerun, each with the invocation behind it
        previous = json.loads(page.read_text())
        rerun = {ts.MAGNETOMETERS[k][0] for k in keys if k in ts.MAGNETOMETERS}
        for section in [*previous.get("magnetometers", []), previous.get("arpes_half"), previous.get("timing")]:
            if section is not None:
                section.setdefault("command", previous["command"])
        out["magnetometers"] = [m for m in previous.get("magnetometers", []) if m["dataset"] not in rerun]
        if 4 not in keys and "arpes_half" in previous:
            out["arpes_half"] = previous["arpes_half"]
        if not args.compare_ref and "timing" in previous:
            out["timing"] = previous["timing"]
    order = [ts.MAGNETOMETERS[k][0] for k in sorted(ts.MAGNETOMETERS)]
    for key in (k for k in keys if k in ts.MAGNETOMETERS):
        entry = ts.magnetometer_seeds(key, DATA, seeds, args.trials, args.jobs, {}, save_dir=args.save_twins)
        entry["command"] = command
        out["magnetometers"] = sorted([*out["magnetometers"], entry], key=lambda m: order.index(m["dataset"]))
        write_seed_markdown(out, time.perf_counter() - t0)
    if 4 in keys:
        out["arpes_half"] = ts.arpes_every_other_line(
            DATA, seeds[:3], args.trials, args.jobs, args.arpes_half_budget, {}
        )
        out["arpes_half"]["command"] = command
        write_seed_markdown(out, time.perf_counter() - t0)
    if args.compare_ref:
        out["timing"] = ts.fit_timing_against(
            args.compare_ref, ROOT, DATA / DATASETS[1][1], seeds, args.trials, args.jobs
        )
        out["timing"]["command"] = command
    write_seed_markdown(out, time.perf_counter() - t0)
    print(f"\nwrote docs/benchmarks/twin_seeds.md in {time.perf_counter() - t0:.0f} s")
    return 0


def write_seed_markdown(out: dict, elapsed: float) -> None:
    """docs/benchmarks/twin_seeds.md and .json from the seed studies so far."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = [
        "# Twin benchmark: dependence on the seed",
        "",
        f"Command: `.venv/bin/python {out['command']}` ({elapsed / 60:.1f} min; {os.cpu_count()} cores, "
        "shared with other work while this ran: compare times side by side, not with other pages).",
        "",
    ]
    if out["magnetometers"]:
        lines += [
            "## Magnetometers: one fit per seed",
            "",
            "LOFO: leave-one-field-out NRMSE (as in [the main table](twin.md)). dS_M spread: the RMS difference "
            "between the |dS_M|(T) curves of two seeds (lowest field to the top field, 51 fields, 200 "
            "temperatures), over the peak of the seeds' mean curve; the median and the largest pair.",
            "",
            "| data set | seeds | fit wall (s), median (range) | twin LOFO, median (range) | linear | spline | RBF | "
            "dS_M spread, median pair | largest pair | configurations x members |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for m in out["magnetometers"]:
            fits = [r["fit_s"] for r in m["seeds"]]
            sp = m["dsm_spread"]
            b = m["baselines"]
            shapes = ", ".join(f"{r['configurations']}x{r['members']}" for r in m["seeds"])
            lines.append(
                f"| {m['dataset']} (0->{m['top_field'] / 1e4:g} T) | {len(m['seeds'])} | {np.median(fits):.1f} "
                f"({min(fits):.1f}-{max(fits):.1f}) | {m['lofo_median']:.4f} ({m['lofo_range'][0]:.4f}-"
                f"{m['lofo_range'][1]:.4f}) | {b['linear']['lofo_nrmse']:.4f} | {b['spline']['lofo_nrmse']:.4f} | "
                f"{b['rbf']['lofo_nrmse']:.4f} | {sp['pairwise_median_pct']:.2f}% | {sp['pairwise_max_pct']:.2f}% | "
                f"{shapes} |"
            )
        fig, axes = plt.subplots(1, len(out["magnetometers"]), figsize=(6 * len(out["magnetometers"]), 4))
        for ax, m in zip(np.atleast_1d(axes), out["magnetometers"]):
            for r, c in zip(m["seeds"], m["curves"]):
                ax.plot(m["T"], c, lw=1, label=f"seed {r['seed']}")
            ax.set_title(f"{m['dataset']}: |dS_M|, 0->{m['top_field'] / 1e4:g} T")
            ax.set_xlabel("T (K)")
            ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(ROOT / "docs" / "figures" / "bench_twin_seeds.png", dpi=110)
        plt.close(fig)
        lines += ["", "![dS_M per seed](../figures/bench_twin_seeds.png)", ""]
    if "arpes_half" in out:
        a = out["arpes_half"]
        bl = a["baselines_rmse"]
        lines += [
            "## ARPES: every other theta2 line held out",
            "",
            f"Fit on {a['train_lines']} lines ({a['train_points']} points), scored on the {a['test_lines']} lines "
            f"between them; RMSE in counts; budget {a['budget_s']:g} s per fit.",
            "",
            f"Baselines: linear along theta2 {bl['linear']:.2f}, cubic spline {bl['spline']:.2f}, RBF {bl['rbf']:.2f}. "
            f"The two outermost held-out lines (next to the lines with the central cut-out) carry "
            f"{100 * a['outer_lines_share_of_linear_sse']:.0f}% of linear interpolation's squared error.",
            "",
        ]
        if a.get("floor"):
            lines += [
                "Floor of linear filters: the best least-squares combination of the four nearest training lines, "
                "each smoothed at six widths, fitted on the held-out lines themselves "
                f"(`_twin_seeds.linear_filter_floor`), reaches RMSE {a['floor']['oracle_linear_filter_rmse']:.2f}, "
                f"{a['floor']['ratio_to_linear']:.3f} x linear.",
                "",
            ]
        lines += ["| seed | fit wall (s) | twin RMSE | networks alone | twin / linear |", "|---|---|---|---|---|"]
        for r in a["seeds"]:
            lines.append(
                f"| {r['seed']} | {r['fit_s']:.1f} | {r['rmse']:.2f} | {r['rmse_networks_only']:.2f} | "
                f"{r['ratio_to_linear']:.3f} |"
            )
    if "timing" in out:
        t = out["timing"]
        lines += [
            "",
            f"## ErCo2 fit time against `{t['ref']}`",
            "",
            f"{t['trials']} trials, `--jobs {t['jobs']}`, seeds {t['seeds']}, each fit in its own process, the two "
            "trees alternating.",
            "",
            "| tree | seconds per seed | median |",
            "|---|---|---|",
        ]
        for k, v in t["seconds"].items():
            lines.append(f"| {k} | {', '.join(f'{x:.1f}' for x in v)} | {t['median_s'][k]:.1f} |")
        lines += ["", f"Median ratio, this tree over `{t['ref']}`: {t['median_ratio_this_over_ref']:.2f}."]
    sections = [
        *((m["dataset"], m) for m in out["magnetometers"]),
        ("ARPES every other line", out.get("arpes_half")),
        ("ErCo2 fit time", out.get("timing")),
    ]
    behind = [(name, sec["command"]) for name, sec in sections if sec is not None and "command" in sec]
    if any(cmd != out["command"] for _, cmd in behind):
        lines += [
            "",
            "Invocation behind each section (`--update` keeps the sections an invocation does not rerun):",
            "",
        ]
        lines += [f"* {name}: `.venv/bin/python {cmd}`" for name, cmd in behind]
    lines += ["", "Raw numbers: `docs/benchmarks/twin_seeds.json`."]
    (ROOT / "docs" / "benchmarks" / "twin_seeds.md").write_text("\n".join(lines) + "\n")
    (ROOT / "docs" / "benchmarks" / "twin_seeds.json").write_text(json.dumps(out, indent=1, default=float))


def main() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", default="1,2,3,4")
    ap.add_argument("--trials", type=int, default=30)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--update",
        action="store_true",
        help="keep the other data sets' rows of an earlier run (docs/benchmarks/twin.json; with --seeds, the "
        "sections of twin_seeds.json this invocation does not rerun)",
    )
    ap.add_argument(
        "--arpes-budget",
        type=float,
        default=180.0,
        help="wall-time budget of the whole ARPES fit, search and final ensemble (s)",
    )
    ap.add_argument(
        "--fourier-per-axis",
        action="store_true",
        help="search one Fourier scale per input axis (0.5-16) on every data set (the default "
        "space does so on large maps only)",
    )
    ap.add_argument(
        "--seeds",
        default=None,
        metavar="S,S,...",
        help="instead of the single-seed tables: fit ErCo2 and Fe3Ga4 once per seed (LOFO error and dS_M "
        "spread) and the ARPES map on every other line, and write docs/benchmarks/twin_seeds.md",
    )
    ap.add_argument(
        "--arpes-half-budget",
        type=float,
        default=120.0,
        help="with --seeds: wall-time budget of each every-other-line ARPES fit (s)",
    )
    ap.add_argument(
        "--save-twins",
        type=Path,
        default=None,
        metavar="DIR",
        help="with --seeds: save each magnetometer twin to DIR/erco2-sSEED, DIR/fe3ga4-sSEED",
    )
    ap.add_argument(
        "--compare-ref",
        default=None,
        metavar="GIT_REF",
        help="with --seeds: also time the ErCo2 fit of this tree against git revision GIT_REF, alternating",
    )
    add_data_option(ap)
    args = ap.parse_args()
    global DATA
    DATA = resolve_data_dir(args.data)
    if args.seeds is not None:
        return run_seed_studies(args)
    global PER_AXIS_FOURIER
    PER_AXIS_FOURIER = args.fourier_per_axis
    t0 = time.perf_counter()
    rows, figs = [], {}
    if args.update and (ROOT / "docs" / "benchmarks" / "twin.json").exists():
        old = json.loads((ROOT / "docs" / "benchmarks" / "twin.json").read_text())
        wanted = {DATASETS[int(k)][0] for k in args.datasets.split(",")}
        rows = [r for r in old["rows"] if r["dataset"] not in wanted]
        figs = old.get("figs", {}) if "1" not in args.datasets.split(",") else {}
    global ARPES_BUDGET
    ARPES_BUDGET = args.arpes_budget
    for key in [int(k) for k in args.datasets.split(",")]:
        run_dataset(key, args.trials, args.jobs, args.seed, rows, figs)
        write_markdown(rows, figs, args, time.perf_counter() - t0)
    print(f"\nwrote docs/benchmarks/twin.md in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
