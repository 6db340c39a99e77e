"""Seed studies for ``bench_twin.py --seeds``: how much a twin depends on its seed.

Two studies, both run by ``benchmarks/bench_twin.py --seeds 0,1,2,3,4``:

* **Magnetometers** (ErCo2 from its 8 coarse fields, Fe3Ga4 from its 7): one fit per seed
  with the same options.  Per seed: the fit's wall time, the leave-one-field-out NRMSE
  (``bench_twin.twin_lofo``) and the predicted |dS_M|(T) from the lowest field to 5 T
  (Fe3Ga4: 2 T) on a fine field grid.  The spread of the curves is the RMS difference of
  each pair of seeds over the peak of their mean, in % (median and largest pair), and the
  RMS deviation of each seed from the seeds' mean.
* **ARPES, every other line** (the ``theta2`` lines at odd positions train, the 15 between
  are held out): the twin's RMSE on the held-out lines against linear and cubic-spline
  interpolation along ``theta2`` and a tuned RBF, for each seed; and the leave-one-line-out
  comparison of the full map is the main table's.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

#: (name, file, top field of the dS_M curve, field unit)
MAGNETOMETERS = {
    1: ("ErCo2 M(T,H)", "traindata_Section3_1.csv", 50_000.0),
    2: ("Fe3Ga4 M(T,H)", "traindata_Section3_2.csv", 20_000.0),
}


#: the data-set names of ``bench_steps.py --twin``
SHORT_NAMES = {1: "erco2", 2: "fe3ga4"}


def dsm_temperatures(X: np.ndarray) -> np.ndarray:
    """The 200 temperatures of a :func:`dsm_curve`: the measured range less 0.5 K at each end."""
    return np.linspace(X[:, 0].min() + 0.5, X[:, 0].max() - 0.5, 200)


def dsm_curve(
    predict: Callable[[np.ndarray], np.ndarray], X: np.ndarray, top_field: float, *, absolute: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """|dS_M|(T) from the lowest measured field to *top_field*, on 200 temperatures and 51 fields.

    With ``absolute=False`` the signed dS_M(T), whose mean over twins is the curve of their pooled mean.
    """
    from bluesky_twin.analysis.mce import entropy_change_isofield

    T = dsm_temperatures(X)
    H = np.linspace(X[:, 1].min(), top_field, 51)
    TT, HH = np.meshgrid(T, H)
    Q = np.column_stack([TT.ravel(), HH.ravel()])
    res = entropy_change_isofield(Q[:, 0], Q[:, 1], predict(Q), T_grid=T, field_unit="Oe")
    curve = res.curve(res.H[-1])[0]
    return T, np.abs(curve) if absolute else curve


def curve_spread(curves: Sequence[np.ndarray]) -> dict[str, Any]:
    """Pairwise and from-the-mean RMS differences of curves, in % of the mean curve's peak."""
    C = np.asarray(curves)
    mean = C.mean(axis=0)
    peak = float(mean.max())
    pairs = [
        float(np.sqrt(np.mean((C[i] - C[j]) ** 2)) / peak * 100) for i in range(len(C)) for j in range(i + 1, len(C))
    ]
    from_mean = [float(np.sqrt(np.mean((c - mean) ** 2)) / peak * 100) for c in C]
    return {
        "pairwise_median_pct": float(np.median(pairs)) if pairs else 0.0,
        "pairwise_max_pct": max(pairs) if pairs else 0.0,
        "from_mean_pct": from_mean,
        "peak": peak,
    }


def magnetometer_seeds(
    key: int,
    data_dir,
    seeds: Sequence[int],
    trials: int,
    jobs: int,
    fit_options: dict[str, Any],
    save_dir=None,
) -> dict[str, Any]:
    """Fit one twin per seed on a magnetometer data set; LOFO error, dS_M curve and their spread.

    With *save_dir*, each twin is saved to ``save_dir/KEY-sSEED`` (``erco2-s0``, ...), for
    ``benchmarks/bench_steps.py --twin erco2:0=DIR``.
    """
    import bench_twin as bt

    from bluesky_twin.twin import DigitalTwin

    name, fname, top = MAGNETOMETERS[key]
    df = pd.read_csv(data_dir / fname)
    xcols, ycol = list(df.columns[:2]), df.columns[2]
    X, y = df[xcols].to_numpy(float), df[ycol].to_numpy(float)
    lines = bt.lofo_lines(X)
    rbf = bt.RBFBaseline(X, y)
    predictors = {"linear": bt.predict_linear, "spline": bt.predict_spline, "rbf": rbf.predict}
    per_seed, curves, T = [], [], None
    baseline_lofo: dict[str, float] = {}
    for seed in seeds:
        t0 = time.perf_counter()
        twin = DigitalTwin.fit(df, xcols, ycol, trials=trials, jobs=jobs, seed=seed, progress=False, **fit_options)
        wall = time.perf_counter() - t0
        if save_dir is not None:
            twin.save(save_dir / f"{SHORT_NAMES[key]}-s{seed}")
        T, curve = dsm_curve(lambda Q, twin=twin: twin.predict(Q)[0], X, top)
        curves.append(curve)
        # the baselines' LOFO does not depend on the seed: computed with the first one only
        errors, _ = bt.lofo_errors(
            X, y, lines, {} if baseline_lofo else predictors, bt.twin_lofo(twin, X, y, lines, seed=seed)
        )
        lofo = errors.pop("twin")
        baseline_lofo = baseline_lofo or errors
        m = twin.metadata
        per_seed.append(
            {
                "seed": seed,
                "fit_s": wall,
                "lofo_nrmse": lofo,
                "complete": m["n_trials_complete"],
                "pruned": m["n_trials_pruned"],
                "members": sum(g["members"] for g in m["ensemble"]),
                "configurations": len({g["trial"] for g in m["ensemble"]}),
            }
        )
        print(f"{name} seed {seed}: fit {wall:.1f} s, LOFO NRMSE {lofo:.4f}", flush=True)
    baselines = {}
    for bname, fn in predictors.items():
        baselines[bname] = {"lofo_nrmse": baseline_lofo[bname]}
        _, bcurve = dsm_curve(lambda Q, fn=fn: fn(X, y, Q), X, top)
        baselines[bname]["dsm_vs_twin_mean_pct"] = float(
            np.sqrt(np.mean((bcurve - np.mean(curves, axis=0)) ** 2)) / np.mean(curves, axis=0).max() * 100
        )
    lofo = [r["lofo_nrmse"] for r in per_seed]
    return {
        "dataset": name,
        "top_field": top,
        "seeds": per_seed,
        "lofo_median": float(np.median(lofo)),
        "lofo_range": [float(min(lofo)), float(max(lofo))],
        "dsm_spread": curve_spread(curves),
        "baselines": baselines,
        "T": T.tolist(),
        "curves": [c.tolist() for c in curves],
    }


def arpes_every_other_line(
    data_dir, seeds: Sequence[int], trials: int, jobs: int, budget: float, fit_options: dict[str, Any]
) -> dict[str, Any]:
    """Fit the ARPES map on every other ``theta2`` line and score the lines between."""
    import bench_twin as bt

    from bluesky_twin.twin import DigitalTwin

    df = pd.read_csv(data_dir / bt.DATASETS[4][1])
    xcols, ycol = list(df.columns[:2]), df.columns[2]
    lines = np.unique(df[xcols[1]])
    train_lines, test_lines = lines[0::2], lines[1::2]
    train = df[df[xcols[1]].isin(train_lines)]
    test = df[df[xcols[1]].isin(test_lines)]
    Xtr, ytr = train[xcols].to_numpy(float), train[ycol].to_numpy(float)
    Xte, yte = test[xcols].to_numpy(float), test[ycol].to_numpy(float)

    def rmse(p: np.ndarray) -> float:
        return float(np.sqrt(np.mean((p - yte) ** 2)))

    linear = bt.predict_linear(Xtr, ytr, Xte)
    baselines = {"linear": rmse(linear), "spline": rmse(bt.predict_spline(Xtr, ytr, Xte))}
    rbf = bt.RBFBaseline(Xtr, ytr, neighbors=64)
    baselines["rbf"] = rmse(rbf.predict(Xtr, ytr, Xte))
    per_seed = []
    for seed in seeds:
        t0 = time.perf_counter()
        twin = DigitalTwin.fit(
            train, xcols, ycol, trials=trials, jobs=jobs, seed=seed, budget=budget, progress=False, **fit_options
        )
        wall = time.perf_counter() - t0
        err = rmse(twin.predict(Xte)[0])
        err_net = rmse(twin.networks_only().predict(Xte)[0]) if twin.line_residual is not None else err
        per_seed.append(
            {
                "seed": seed,
                "fit_s": wall,
                "rmse": err,
                "rmse_networks_only": err_net,
                "ratio_to_linear": err / baselines["linear"],
            }
        )
        print(
            f"ARPES every other line, seed {seed}: fit {wall:.1f} s, RMSE {err:.2f} (linear {baselines['linear']:.2f})"
        )
    return {
        "floor": linear_filter_floor(df, xcols, ycol),
        "outer_lines_share_of_linear_sse": float(
            sum(np.sum((linear - yte)[Xte[:, 1] == h] ** 2) for h in (test_lines[0], test_lines[-1]))
            / np.sum((linear - yte) ** 2)
        ),
        "train_lines": len(train_lines),
        "test_lines": len(test_lines),
        "train_points": len(train),
        "budget_s": budget,
        "baselines_rmse": baselines,
        "seeds": per_seed,
    }


def linear_filter_floor(df: pd.DataFrame, xcols: list[str], ycol: str) -> dict[str, float]:
    """What any predictor linear in the neighbouring lines can reach on the every-other-line split.

    Each held-out line is predicted from the two training lines on either side of it
    (``theta2`` +-1 and +-3 steps), each smoothed with Gaussians of 0.5-16 points along
    ``theta1``, plus a constant: 25 features whose least-squares weights are fitted on the
    held-out lines *themselves*.  Its RMSE over linear interpolation's is a floor for every
    linear filter of those lines (smoothing, splines, kernel regressions): a method beating
    it must predict structure that is not a linear function of the neighbouring lines.
    """
    from scipy.ndimage import gaussian_filter1d

    grid = df.pivot_table(index=xcols[1], columns=xcols[0], values=ycol).to_numpy()
    if np.isnan(grid).any():
        return {}
    n = len(grid)
    test = np.arange(1, n, 2)

    def features(i: int) -> np.ndarray:
        cols = [
            gaussian_filter1d(grid[min(max(j, 0), n - 1)], s)
            for j in (i - 3, i - 1, i + 1, i + 3)
            for s in (0.5, 1, 2, 4, 8, 16)
        ]
        return np.column_stack([*cols, np.ones(grid.shape[1])])

    A = np.vstack([features(i) for i in test])
    b = np.concatenate([grid[i] for i in test])
    w, *_ = np.linalg.lstsq(A, b, rcond=None)
    linear = np.concatenate([0.5 * (grid[i - 1] + grid[i + 1]) for i in test])
    floor = float(np.sqrt(np.mean((A @ w - b) ** 2)))
    return {"oracle_linear_filter_rmse": floor, "ratio_to_linear": floor / float(np.sqrt(np.mean((linear - b) ** 2)))}


_TIMING_SNIPPET = """
import os, sys, time, pandas as pd
import bluesky_twin
from bluesky_twin.twin import DigitalTwin
assert os.path.realpath(bluesky_twin.__file__).startswith(os.path.realpath(os.getcwd())), bluesky_twin.__file__
df = pd.read_csv(sys.argv[1]); xcols, ycol = list(df.columns[:2]), df.columns[2]
t0 = time.perf_counter()
DigitalTwin.fit(df, xcols, ycol, trials=int(sys.argv[2]), jobs=int(sys.argv[3]), seed=int(sys.argv[4]), progress=False)
print(time.perf_counter() - t0)
"""


def fit_timing_against(
    ref: str, root, data_file, seeds: Sequence[int], trials: int, jobs: int, repeats: int = 1
) -> dict[str, Any]:
    """Wall time of the same ErCo2 fit with this tree and with git revision *ref*, alternating.

    Each fit runs in its own process (``python -c``), this tree's and *ref*'s (checked out
    with ``git worktree`` into a temporary directory, removed afterwards) taking turns, so a
    change in the machine's load hits both.
    """
    import os
    import subprocess
    import sys
    import tempfile

    tmp = tempfile.mkdtemp(prefix="bench-twin-ref-")
    work = os.path.join(tmp, "tree")
    subprocess.run(["git", "-C", str(root), "worktree", "add", "--detach", "-q", work, ref], check=True)
    try:
        times: dict[str, list[float]] = {"this tree": [], ref: []}
        for _ in range(repeats):
            for seed in seeds:
                for label, path in (("this tree", str(root)), (ref, work)):
                    env = dict(os.environ, PYTHONPATH=path)
                    out = subprocess.run(
                        [sys.executable, "-c", _TIMING_SNIPPET, str(data_file), str(trials), str(jobs), str(seed)],
                        env=env,
                        cwd=path,
                        check=True,
                        capture_output=True,
                        text=True,
                    )
                    times[label].append(float(out.stdout.strip().splitlines()[-1]))
                    print(f"fit timing: {label} seed {seed}: {times[label][-1]:.1f} s", flush=True)
    finally:
        subprocess.run(["git", "-C", str(root), "worktree", "remove", "--force", work], check=False)
    ratios = [a / b for a, b in zip(times["this tree"], times[ref])]
    return {
        "ref": ref,
        "trials": trials,
        "jobs": jobs,
        "seeds": list(seeds),
        "seconds": times,
        "median_s": {k: float(np.median(v)) for k, v in times.items()},
        "median_ratio_this_over_ref": float(np.median(ratios)),
    }
