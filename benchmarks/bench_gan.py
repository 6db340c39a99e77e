"""Benchmark of the Exp2SimGAN model: accuracy table, domain scores, latency, training speed.

Writes ``docs/benchmarks/gan.md`` (and ``docs/benchmarks/gan.json``)::

    nice -n 10 .venv/bin/python benchmarks/bench_gan.py [--model DIR] [--n 500] [--seed 1234]

* the paper's six-row DUQ table on a fresh test set (``ins evaluate``'s numbers);
* domain-score set means for train / test / experiment-like / near-domain / digits;
* ms per 64x64 frame for translate + score (median over repeats), split into the
  generator pass and the score, for 1 and 2 torch threads;
* seconds per training iteration (``small`` preset, batch 4, 64x64) measured over
  20 iterations, next to the value recorded when the model was trained.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times))


def latency(model, frame: np.ndarray, repeats: int) -> dict[str, float]:
    """Median ms of translate+score, translation only and score only, for one frame."""
    x = frame[None]
    feats = model.features(x)
    return {
        "translate_and_score": _median_ms(lambda: model.translate_and_score(x), repeats),
        "translate_only": _median_ms(lambda: model.exp2sim(x), repeats),
        "score_only_from_features": _median_ms(lambda: model.scorer.frame_scores(feats), repeats),
    }


def training_speed(iterations: int = 20) -> dict[str, float]:
    """Seconds per iteration of the small preset (batch 4, 64x64, 1 torch thread)."""
    import torch

    from bluesky_twin.gan.config import GanConfig, TrainConfig
    from bluesky_twin.gan.train import train_gan
    from bluesky_twin.ins.dataset import generate_dataset

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ds = generate_dataset(64, seed=5)
        res = train_gan(
            ds.convolved[:32], ds.unconvolved[32:], GanConfig(), TrainConfig(iterations=iterations, batch_size=4)
        )
    finally:
        torch.set_num_threads(old)
    return {"s_per_iteration": res.s_per_iteration, "iterations": iterations, "batch_size": 4}


def main() -> None:
    import torch

    from bluesky_twin.gan.evaluate import BIN_ACCURACY_KEYS, evaluate_model, format_table
    from bluesky_twin.gan.model import Exp2SimModel
    from bluesky_twin.ins.dataset import generate_dataset
    from bluesky_twin.io_utils import atomic_write_json, atomic_write_text

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks" / "gan.md")
    args = ap.parse_args()

    import os

    load_before = os.getloadavg()
    torch.set_num_threads(1)
    model = Exp2SimModel.load(args.model)
    t0 = time.perf_counter()
    res = evaluate_model(model, n=args.n, seed=args.seed, progress=True)
    eval_s = time.perf_counter() - t0
    frame = generate_dataset(1, seed=args.seed + 99).convolved[0]
    lat = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        lat[threads] = latency(model, frame, args.repeats)
    torch.set_num_threads(1)
    train = training_speed()
    load_after = os.getloadavg()
    meta_train = model.metadata.get("training", {})
    report = {
        "evaluate": res,
        "latency_ms": lat,
        "training_speed": train,
        "evaluate_seconds": eval_s,
        "model_training": {k: meta_train.get(k) for k in ("command", "s_per_iteration", "seconds")},
        "platform": platform.platform(),
        "torch": torch.__version__,
        "load_average": {"start": load_before, "end": load_after},
    }

    def pct(v):
        return "n/a" if v is None or not np.isfinite(v) else f"{100 * v:.1f}%"

    model_args = (
        f" --model {args.model} --out {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}"
        if args.model
        else ""
    )
    lines = [
        "# Exp2SimGAN benchmark" + (f" ({Path(args.model).name})" if args.model else ""),
        "",
        f"Command: `nice -n 10 .venv/bin/python benchmarks/bench_gan.py --n {args.n} --seed {args.seed}{model_args}`"
        f" (model: {args.model or 'shipped bluesky_twin/models/ins_exp2simgan'}; its recipe: "
        f"{res.get('geometry', 'cut')}, {json.dumps(res.get('recipe', {}))}).",
        f"Machine: {platform.platform()}, torch {torch.__version__}; shared 2-core CPU, other jobs running,",
        "so all timings are upper bounds of what an idle machine gives "
        f"(1-min load average {load_before[0]:.1f} at the start, {load_after[0]:.1f} at the end).",
        "",
        "## DUQ accuracy (sign of J2) on a fresh test set",
        "",
        f"n = {res['n']} frames, seed {res['seed']}. Paper (Anker et al. 2023) in the last column.",
        "",
        "| classifier trained on | evaluated on | accuracy | paper |",
        "|---|---|---|---|",
        f"| unconvolved | unconvolved (ground truth) | {pct(res['acc_unconvolved'])} | 98.9% |",
        f"| unconvolved | convolved, raw | {pct(res['acc_convolved_raw'])} | 93.7% |",
        f"| unconvolved | convolved -> Exp2Sim | {pct(res['acc_convolved_exp2sim'])} | 96.0% |",
        f"| convolved | convolved | {pct(res['acc_conv_clf_on_convolved'])} | 98.6% |",
        f"| convolved | unconvolved, raw | {pct(res['acc_conv_clf_on_unconvolved_raw'])} | 71.8% |",
        f"| convolved | unconvolved -> Sim2Exp | {pct(res['acc_conv_clf_on_unconvolved_sim2exp'])} | 93.6% |",
        "",
        f"Gap closed: Exp2Sim **{pct(res['gap_closed_exp2sim'])}** (target >= 60%, paper 44%; gap "
        f"{100 * res['gap_exp2sim_points']:.1f} points), "
        f"Sim2Exp **{pct(res['gap_closed_sim2exp'])}** (target >= 80%, paper 81%; gap "
        f"{100 * res['gap_sim2exp_points']:.1f} points -- 'n/a' means there is no significant gap to close: "
        f"the gap must exceed two binomial standard errors, here {100 * res['gap_sim2exp_min_points']:.1f} points).",
        "Classifier input scaling: "
        + ", ".join(f"{k} {v}" for k, v in res.get("classifier_input_scale", {}).items())
        + " (`bluesky_twin.ins.duq.scale_frames`).",
        "",
        "Per |J2| bin (small |J2| is the hard case; U = classifier trained on unconvolved, C = on convolved frames):",
        "",
        "| abs(J2) (meV) | n | U: unconvolved | U: convolved | U: exp2sim | C: convolved | C: unconvolved "
        "| C: sim2exp |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in res.get("acc_by_abs_j2", []):
        cells = " | ".join(pct(r[f"acc_{k}"]) for k in BIN_ACCURACY_KEYS)
        lines.append(f"| {r['abs_j2_min']:.2f}-{r['abs_j2_max']:.2f} | {r['n']} | {cells} |")
    lines += [
        "",
        f"Pixel L1 to the paired ground truth (model space [-1, 1], measured pixels): convolved "
        f"{res['l1_model_space']['convolved_vs_truth']:.3f}, Exp2Sim {res['l1_model_space']['exp2sim_vs_truth']:.3f}.",
        "",
        "## Domain-of-applicability score",
        "",
        "Set level: Sinkhorn (POT, eps 0.1 relative to the cost scale) between 20 reference training features",
        "and 20 frames of the set, 1000 repeats; mean +- std, zone of the mean. Frame level: fraction of",
        "the set's frames in each zone.",
        "",
        "| set | mean | std | zone | frames trustworthy / expert / untrustworthy |",
        "|---|---|---|---|---|",
    ]
    for name in ("train", "test", "experiment_like", "near_domain", "digits"):
        if name not in res["domain_score"]:
            continue
        d = res["domain_score"][name]
        fz = d["frame_zone_fractions"]
        lines.append(
            f"| {name} | {d['mean']:.0f} | {d['std']:.0f} | {d['zone']} | "
            f"{fz['trustworthy']:.2f} / {fz['expert opinion']:.2f} / {fz['untrustworthy']:.2f} |"
        )
    th = res["domain_thresholds"]
    lines += [
        "",
        f"Thresholds stored with the model: frame trustworthy <= {th['frame']['trustworthy']:.0f}, "
        f"untrustworthy >= {th['frame']['untrustworthy']:.0f}; set trustworthy <= {th['set']['trustworthy']:.0f}, "
        f"untrustworthy >= {th['set']['untrustworthy']:.0f}.",
        "Paper (its units): train 73k, test 76k, experimental PCSMO 119k, Rb2MnF4 154k, animals 201k, MNIST 240k.",
        "",
        f"## Latency (one 64x64 frame, median of {args.repeats} repeats)",
        "",
        "| torch threads | translate + score | translate only | score only (from features) |",
        "|---|---|---|---|",
    ]
    for threads, d in lat.items():
        lines.append(
            f"| {threads} | {d['translate_and_score']:.1f} ms | {d['translate_only']:.1f} ms | "
            f"{d['score_only_from_features']:.1f} ms |"
        )
    lines += [
        "",
        "Target: <= 20 ms. The score uses the model's `frame_repeats` reference subsets "
        f"({model.scorer.frame_repeats}).",
        "",
        "## Training speed",
        "",
        f"Small preset, batch 4, 64x64, 1 torch thread: **{train['s_per_iteration']:.2f} s/iteration** "
        f"(20 iterations, measured now).",
    ]
    if meta_train.get("s_per_iteration"):
        sec = meta_train.get("seconds", {})
        lines.append(
            f"Recorded when the shipped model was trained: {meta_train['s_per_iteration']:.2f} s/iteration, "
            f"GAN {sec.get('gan', float('nan')) / 60:.1f} min, total {sec.get('total', float('nan')) / 60:.1f} min "
            f"(`{meta_train.get('command')}`)."
        )
    lines += [
        "",
        f"Full numbers: `{args.out.with_suffix('.json').name}` beside this section. Evaluation took {eval_s:.0f} s.",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, "\n".join(lines))
    from bluesky_twin.gan.cli import _finite_or_none

    atomic_write_json(args.out.with_suffix(".json"), _finite_or_none(report))
    print(format_table(res))
    print(json.dumps(lat, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
