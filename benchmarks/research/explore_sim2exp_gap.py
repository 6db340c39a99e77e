"""Look for an experiment-like recipe with a Sim2Exp classifier gap (classifiers only).

For each candidate recipe ``R`` a DUQ classifier of sign(J2) is trained on the
experiment-like (resolution-convolved) frames of ``R`` and evaluated on held-out
experiment-like frames of ``R`` ("own domain") and on the *paired* raw unconvolved maps of
the same held-out parameters ("raw unconv").  The gap ``own - raw`` is what Sim2Exp would
have to close (paper: 98.6 % - 71.8 % = 26.8 points).  No GAN is trained.

The standard error of the gap is the paired (McNemar-type) binomial one,
``sqrt((b + c)/n - ((b - c)/n)**2) / sqrt(n)`` with ``b`` (``c``) the held-out frames
right only on the own domain (only on raw); the accuracies' own errors are
``sqrt(p (1 - p) / n)``.  A diagnostic column evaluates the raw maps with the paired
frame's NaN mask (detector stripes, or the powder kinematic coverage) applied, to tell a
gap caused by the resolution from one caused by the mask.

Command used for docs/gan.md ("Looking for a recipe with a Sim2Exp gap"), run from the
repository root on the shared 2-core CPU::

    nice -n 10 .venv/bin/python benchmarks/explore_sim2exp_gap.py --n-train 1000 \
        --n-test 500 --epochs 12 --seed 0 --threads 1
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Any

import numpy as np

from bluesky_twin.ins.dataset import generate_dataset
from bluesky_twin.ins.duq import DUQClassifier
from bluesky_twin.ins.resolution import maps_resolution

#: Candidate recipes: name -> (geometry, Recipe overrides, one-line description).
RECIPES: dict[str, tuple[str, dict[str, Any], str]] = {
    "default": ("cut", {}, "shipped recipe: MAPS S 200 Hz, Ei 25/30/35 meV, sigma_Q 0.03 1/A"),
    "ei60_200hz": (
        "cut",
        {"e_init": (50.0, 60.0, 70.0)},
        "higher Ei 50/60/70 meV at 200 Hz (coarser energy resolution)",
    ),
    "ei60_100hz": (
        "cut",
        {"e_init": (50.0, 60.0, 70.0), "chopper_frequency": 100},
        "higher Ei 50/60/70 meV at 100 Hz (relaxed, high-flux setting)",
    ),
    "sigq_0.12": ("cut", {"sigma_q": 0.12}, "sigma_Q 0.12 1/A (coarser Q resolution)"),
    "ei60_100hz_sigq_0.12": (
        "cut",
        {"e_init": (50.0, 60.0, 70.0), "chopper_frequency": 100, "sigma_q": 0.12},
        "coarse E (Ei 50-70, 100 Hz) and coarse Q (0.12 1/A)",
    ),
    "noisy": (
        "cut",
        {"counts_scale": (5.0, 30.0), "background_b0": (0.05, 0.2), "elastic_amplitude": (2.0, 8.0)},
        "fewer counts (5-30), 4x background, 4x elastic line",
    ),
    "ei60_100hz_counts": (
        "cut",
        {"e_init": (50.0, 60.0, 70.0), "chopper_frequency": 100, "counts_scale": (300.0, 3000.0)},
        "Ei 50/60/70 meV at 100 Hz with 10x counts (the relaxed setting's extra flux)",
    ),
    "powder": ("powder", {}, "powder geometry, default instrument"),
    "powder_ei60_200hz": (
        "powder",
        {"e_init": (50.0, 60.0, 70.0)},
        "powder, Ei 50/60/70 meV at 200 Hz",
    ),
    "powder_ei60_100hz": (
        "powder",
        {"e_init": (50.0, 60.0, 70.0), "chopper_frequency": 100},
        "powder, Ei 50/60/70 meV at 100 Hz",
    ),
}


def fwhm_range(overrides: dict[str, Any]) -> tuple[float, float]:
    """Energy-resolution FWHM (meV) over 0-16 meV and the recipe's Ei values: (min, max)."""
    eis = overrides.get("e_init", (25.0, 30.0, 35.0))
    freq = int(overrides.get("chopper_frequency", 200))
    values = np.concatenate([maps_resolution(float(ei), freq, "S").fwhm(np.array([0.0, 16.0])) for ei in eis])
    return float(values.min()), float(values.max())


def run_recipe(name: str, n_train: int, n_test: int, epochs: int, seed: int, threads: int) -> dict[str, Any]:
    """Train on experiment-like frames of one recipe and evaluate on both domains.

    Parameters
    ----------
    name
        Key of :data:`RECIPES`.
    n_train, n_test
        Frames for training and for the held-out evaluation (disjoint data seeds).
    epochs
        DUQ training epochs.
    seed
        Data seed (test uses ``seed + 1``) and classifier seed.
    threads
        torch threads for training.

    Returns
    -------
    dict
        Accuracies, gap, standard errors and timing.
    """
    geometry, overrides, _ = RECIPES[name]
    t0 = time.perf_counter()
    train = generate_dataset(n_train, seed=seed, geometry=geometry, **overrides)
    test = generate_dataset(n_test, seed=seed + 1, geometry=geometry, **overrides)
    t_data = time.perf_counter() - t0
    clf = DUQClassifier().fit(train.convolved, train.labels, epochs=epochs, seed=seed, num_threads=threads)
    t_fit = time.perf_counter() - t0 - t_data
    right_own = clf.predict(test.convolved) == test.labels
    right_raw = clf.predict(test.unconvolved) == test.labels
    # diagnostic: the raw maps with the paired frame's NaN mask (stripes / powder coverage)
    masked_raw = np.where(np.isnan(test.convolved), np.nan, test.unconvolved)
    acc_raw_masked = float((clf.predict(masked_raw) == test.labels).mean())
    n = len(test.labels)
    acc_own, acc_raw = float(right_own.mean()), float(right_raw.mean())
    b = int(np.sum(right_own & ~right_raw))
    c = int(np.sum(~right_own & right_raw))
    gap = acc_own - acc_raw
    se_gap = math.sqrt(max((b + c) / n - ((b - c) / n) ** 2, 0.0) / n)
    return {
        "recipe": name,
        "acc_own": acc_own,
        "acc_raw": acc_raw,
        "gap": gap,
        "acc_raw_masked": acc_raw_masked,
        "se_own": math.sqrt(acc_own * (1 - acc_own) / n),
        "se_raw": math.sqrt(acc_raw * (1 - acc_raw) / n),
        "se_gap": se_gap,
        "n_test": n,
        "b": b,
        "c": c,
        "fwhm": fwhm_range(overrides),
        "t_data": t_data,
        "t_fit": t_fit,
    }


def markdown(rows: list[dict[str, Any]]) -> str:
    """Markdown table of :func:`run_recipe` results (percentages and points)."""
    lines = [
        "| recipe | E FWHM (meV) | own domain (conv) | raw unconvolved | gap (points) +- SE |"
        " only-own / only-raw right | raw + frame's mask | data + fit (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lo, hi = r["fwhm"]
        lines.append(
            f"| {r['recipe']} | {lo:.1f}-{hi:.1f} | {100 * r['acc_own']:.1f} +- "
            f"{100 * r['se_own']:.1f} % | {100 * r['acc_raw']:.1f} +- {100 * r['se_raw']:.1f} % "
            f"| {100 * r['gap']:+.1f} +- {100 * r['se_gap']:.1f} | {r['b']} / {r['c']} "
            f"| {100 * r['acc_raw_masked']:.1f} % | {r['t_data']:.0f} + {r['t_fit']:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=1000)
    parser.add_argument("--n-test", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--recipes", nargs="*", default=list(RECIPES), choices=list(RECIPES))
    args = parser.parse_args(argv)
    rows = []
    for name in args.recipes:
        rows.append(run_recipe(name, args.n_train, args.n_test, args.epochs, args.seed, args.threads))
        r = rows[-1]
        print(
            f"# {name}: own {100 * r['acc_own']:.1f} %, raw {100 * r['acc_raw']:.1f} %, "
            f"gap {100 * r['gap']:+.1f} +- {100 * r['se_gap']:.1f}",
            flush=True,
        )
    print()
    print(markdown(rows))
    print()
    for name in args.recipes:
        geometry, overrides, text = RECIPES[name]
        print(f"* `{name}` ({geometry}): {text}; overrides {overrides}")


if __name__ == "__main__":
    main()
