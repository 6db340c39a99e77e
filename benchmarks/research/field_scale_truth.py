"""Does reading the field on a square-root scale make a twin's dS_M closer to the truth?

On the real ErCo2 scan the square-root field scale (``TwinSearchSpace.input_scales``) makes
the predicted |dS_M|(T) depend less on the seed, but the real scan has no finer truth to
score against.  The simulated ErCo2-like magnetometer (:class:`bluesky_twin.sim.Magnetometer`)
has one.  This study measures lines on it (49 temperatures, 26-50 K, with the instrument's
noise model: ``sigma = noise_floor + relative_noise |M|``, seeded per seed), fits the
product's twin on each field scale with the same seed, and scores the twin's 0->5 T
|dS_M| on the interior temperatures against the noiseless truth (RMS in % of the truth's
peak, as ``bench_steering.py`` scores a steering twin).  Per scale it reports the error of
each seed, their median, and the error of the seeds' mean curve::

    .venv/bin/python benchmarks/research/field_scale_truth.py --fields 0,0.1,0.5,1,2,3,4,5
    .venv/bin/python benchmarks/research/field_scale_truth.py --fields 0,0.5,2,4,5,0.15,0.05 --trials 10

The first line set is the paper's coarse preliminary fields; the second is the sparse start
of ``bench_steering.py``'s ``adaptive_std_sparse`` plus the first two lines its ``std``
acquisition measures in seed 0, fitted with a steering twin's 10 trials.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

#: the measured temperatures of a line (K), as in ``bench_steering.py``'s ErCo2 instrument
LINE_POINTS = (26.0, 50.0, 49)
#: fine field levels (T) of the truth and of the twin's estimate
LEVELS = (0.0, 5.0, 401)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fields", default="0,0.1,0.5,1,2,3,4,5", help="comma-separated measured fields (T), 0-5")
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--trials", type=int, default=30)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--scales", default="linear,sqrt", help="comma-separated field scales to compare")
    ap.add_argument(
        "--monotone",
        action="store_true",
        help="on every scale, M increases with the field (TwinSearchSpace.monotone)",
    )
    args = ap.parse_args(argv)
    try:
        fields = [float(v) for v in args.fields.split(",")]
        seeds = [int(s) for s in args.seeds.split(",")]
        scales = args.scales.split(",")
        if not fields or min(fields) < 0 or max(fields) > 5 or len(set(fields)) < 2:
            raise ValueError("--fields: at least two distinct fields from 0 to 5 T")
        if set(scales) - {"linear", "sqrt"}:
            raise ValueError("--scales: linear and/or sqrt")
        if args.trials < 1:
            raise ValueError("--trials must be >= 1")
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    import numpy as np
    import optuna
    import pandas as pd
    from bench_steering import dsm_top

    from bluesky_twin.sim import Magnetometer
    from bluesky_twin.twin import DigitalTwin, TwinSearchSpace

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    device = Magnetometer(name="mpms")
    floor, rel = float(device.noise_floor.get()), float(device.relative_noise.get())
    T_line = np.linspace(*LINE_POINTS)
    T_in = T_line[1:-1]
    TT, HH = np.meshgrid(T_in, np.linspace(*LEVELS))
    truth = dsm_top(TT.ravel(), HH.ravel(), device.truth(temperature=TT, field=HH).ravel(), T_in)
    peak = float(truth.max())

    def error(curve: np.ndarray) -> float:
        return float(100 * np.sqrt(np.mean((curve - truth) ** 2)) / peak)

    rows = []
    for scale in scales:
        space = TwinSearchSpace(
            input_scales={} if scale == "linear" else {"field": scale},
            monotone={"field": "increasing"} if args.monotone else {},
        )
        errors, curves, walls = [], [], []
        for seed in seeds:
            rng = np.random.default_rng(100 + seed)
            T, H = (a.ravel() for a in np.meshgrid(T_line, fields))
            m = device.truth(temperature=T, field=H)
            frame = pd.DataFrame({"temperature": T, "field": H, "M": m + rng.normal(0.0, floor + rel * np.abs(m))})
            t0 = time.perf_counter()
            twin = DigitalTwin.fit(
                frame, ["temperature", "field"], "M", trials=args.trials, jobs=args.jobs, seed=seed, search_space=space
            )
            walls.append(time.perf_counter() - t0)
            curve = dsm_top(TT.ravel(), HH.ravel(), twin.predict(np.column_stack([TT.ravel(), HH.ravel()]))[0], T_in)
            errors.append(error(curve))
            curves.append(curve)
            print(f"{scale} seed {seed}: dS_M error {errors[-1]:.2f} % ({walls[-1]:.1f} s)", flush=True)
        per_seed = ", ".join(f"{e:.2f}" for e in errors)
        rows.append(
            f"| {scale} | {per_seed} | {np.median(errors):.2f} | {error(np.mean(curves, axis=0)):.2f} | "
            f"{np.median(walls):.1f} |"
        )
    print(
        f"\nsimulated ErCo2 magnetometer, fields {fields} T, {args.trials} trials, seeds {args.seeds}, "
        f"monotone field {args.monotone}\n"
    )
    print("| field scale | dS_M error per seed (%) | median | seeds' mean curve | fit wall (s), median |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
