"""Benchmark the field-step proposal against the paper's conclusions on its real preliminary data.

Terashima et al. (2023) found that a real measurement needs a field step below 0.2 T for
ErCo2 and below 0.1 T for Fe3Ga4.  For each data set and seed this script fits a twin on
the coarse preliminary fields (or loads one given with ``--twin``), runs
:func:`bluesky_twin.analysis.field_step_study` with its defaults and the same study for
every ensemble member, and tabulates the proposals with the deviation and wiggle of the
steps around the paper's bounds.  It also reports the proposal of the wiggle alone
(``deviation_tolerance=inf``), the criterion before the deviation was added.

Run::

    nice -n 10 .venv/bin/python benchmarks/bench_steps.py --seeds 0,1 --trials 16 --out docs/benchmarks/steps.md
    .venv/bin/python benchmarks/bench_steps.py --twin erco2:0=DIR --twin fe3ga4:0=DIR ...   # reuse fitted twins
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
#: data set -> (file, x columns, y column, the paper's bound on the field step in tesla)
DATASETS = {
    "erco2": ("traindata_Section3_1.csv", ["X1_demo1", "X2_demo1"], "Y_demo1", 0.2),
    "fe3ga4": ("traindata_Section3_2.csv", ["X1_demo2", "X2_demo2"], "Y_demo2", 0.1),
}
#: candidate steps: the study's defaults plus the steps between them near the paper's bounds
STEPS = (0.01, 0.02, 0.05, 0.075, 0.1, 0.125, 0.15, 0.2, 0.25, 0.5, 1.0)


def data_dir(option: str | None) -> Path:
    """``--data``, else ``$BLUESKY_TWIN_DATA``, else ``../shared/data/terashima2023`` beside the repository."""
    for candidate in (option, os.environ.get("BLUESKY_TWIN_DATA"), ROOT.parent / "shared/data/terashima2023"):
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    print("bench_steps: no data directory (give --data DIR or set BLUESKY_TWIN_DATA)", file=sys.stderr)
    raise SystemExit(2)


def study_one(twin, bound: float) -> dict:
    """The default study, the wiggle-only study and the members' proposals of one twin."""
    from bluesky_twin.analysis import field_step_study, member_step_proposals

    study = field_step_study(twin, steps=STEPS, field_unit="Oe")
    wiggle_only = field_step_study(twin, steps=STEPS, field_unit="Oe", deviation_tolerance=math.inf)
    members = member_step_proposals(field_step_study, twin, ensemble_study=study, steps=STEPS, field_unit="Oe")
    rows = {r["step"]: r for r in study.rows}
    return {
        "twin_version": twin.version,
        "proposed_step": float(study.proposed_step),
        "proposal_ok": bool(study.proposal_ok),
        "wiggle_only_step": float(wiggle_only.proposed_step),
        "member_steps": list(members.members),
        "below_bound": bool(study.proposed_step < bound),
        "members_below_bound": int(sum(s < bound for s in members.members)),
        "rows": {
            f"{s:g}": {k: rows[s][k] for k in ("deviation", "deviation_field_T", "wiggle", "extra_extrema", "passes")}
            for s in STEPS
            if 0.5 * bound <= s <= 2.5 * bound
        },
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=None, help="directory of the Terashima et al. CSV files")
    p.add_argument("--datasets", default="erco2,fe3ga4")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--trials", type=int, default=16)
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--twin", action="append", default=[], metavar="NAME:SEED=DIR", help="use this fitted twin")
    p.add_argument("--out", type=Path, default=ROOT / "docs/benchmarks/steps.md")
    args = p.parse_args()

    import optuna

    from bluesky_twin.twin import DigitalTwin

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    given = {}
    for item in args.twin:
        key, _, path = item.partition("=")
        given[key] = path
    results = {}
    for name in args.datasets.split(","):
        file, x, y, bound = DATASETS[name]
        for seed in (int(s) for s in args.seeds.split(",")):
            key = f"{name}:{seed}"
            t0 = time.perf_counter()
            if key in given:
                twin = DigitalTwin.load(given[key])
                m = twin.metadata
                how = (
                    f"fitted on {file} with seed {m['seed']}, jobs {m['jobs']}, "
                    f"{m['n_trials_complete'] + m['n_trials_pruned'] + m['n_trials_failed']} trials; loaded"
                )
            else:
                twin = DigitalTwin.fit(data_dir(args.data) / file, x, y, trials=args.trials, jobs=args.jobs, seed=seed)
                how = f"fit --trials {args.trials} --jobs {args.jobs} --seed {seed}"
            res = study_one(twin, bound)
            res.update(how=how, seconds=time.perf_counter() - t0, bound=bound)
            results[key] = res
            print(
                f"{key}: proposed {res['proposed_step']:g} T (paper: < {bound:g} T), wiggle alone "
                f"{res['wiggle_only_step']:g} T, members {res['member_steps']}",
                flush=True,
            )
    write(args, results)


def summarize(results: dict) -> dict:
    """Per data set: the seeds' proposals, their median, and how many members of all seeds fall below the bound."""
    out: dict = {}
    for key, r in results.items():
        name = key.split(":")[0]
        s = out.setdefault(name, {"proposals": [], "member_steps": [], "bound": r["bound"]})
        s["proposals"].append(r["proposed_step"])
        s["member_steps"].extend(r["member_steps"])
    for s in out.values():
        s["seeds"] = len(s["proposals"])
        s["median"] = float(np.median(s["proposals"]))
        s["members"] = len(s["member_steps"])
        s["members_below"] = int(sum(x < s["bound"] for x in s["member_steps"]))
        s["largest"] = float(max(s["proposals"] + s["member_steps"]))
    return out


def write(args: argparse.Namespace, results: dict) -> None:
    """Write the Markdown table and the JSON beside it."""
    cmd = ".venv/bin/python benchmarks/bench_steps.py " + " ".join(sys.argv[1:])
    lines = [
        "# Field-step proposals on the paper's preliminary data",
        "",
        f"Command: `{cmd}`",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}.",
        "",
        "Candidate steps " + ", ".join(f"{s:g}" for s in STEPS) + " T; `field_step_study` defaults "
        "(tolerance 0.02 for the deviation and the wiggle). The paper (Terashima et al. 2023) found "
        "that a step below 0.2 T is needed for ErCo2 and below 0.1 T for Fe3Ga4.",
        "",
        "| data set, seed | twin | proposed | paper's bound | below it | members (proposals) | wiggle alone |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, r in results.items():
        lines.append(
            f"| {key} | `{r['twin_version']}` ({r['how']}) | **{r['proposed_step']:g} T** | < {r['bound']:g} T | "
            f"{'yes' if r['below_bound'] else 'no'} | {', '.join(f'{s:g}' for s in r['member_steps'])} "
            f"({r['members_below_bound']} of {len(r['member_steps'])} below) | {r['wiggle_only_step']:g} T |"
        )
    lines += [
        "",
        "The answer with its uncertainty: every seed's proposal and every member's, per data set.",
        "",
        "| data set | seeds | proposals over seeds | median | members below the bound (all seeds) | "
        "largest proposal of any seed or member | paper's bound |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, s in summarize(results).items():
        lines.append(
            f"| {name} | {s['seeds']} | {', '.join(f'{x:g}' for x in s['proposals'])} | {s['median']:g} T | "
            f"{s['members_below']} of {s['members']} | {s['largest']:g} T | < {s['bound']:g} T |"
        )
    lines += ["", "Deviation (fraction of the top-field peak) and top-field wiggle around the bound:", ""]
    lines += [
        "| data set, seed | step (T) | deviation (at field T) | wiggle | extra extrema | passes |",
        "|---|---|---|---|---|---|",
    ]
    for key, r in results.items():
        for step, row in r["rows"].items():
            lines.append(
                f"| {key} | {step} | {row['deviation']:.4f} ({row['deviation_field_T']:.2f}) | {row['wiggle']:.4f} | "
                f"{row['extra_extrema']} | {'yes' if row['passes'] else 'no'} |"
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    args.out.with_suffix(".json").write_text(
        json.dumps({"command": cmd, "results": results, "summary": summarize(results)}, indent=2) + "\n"
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
