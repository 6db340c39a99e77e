"""Benchmark the TwinTrainer callback: per-event overhead and the delay a refit adds to the next run.

1. **Overhead.** Wall time of a zero-delay simulated magnetometer grid scan with the
   trainer subscribed, divided by the same scan without it; alternated and repeated,
   reported as the median ratio (target <= 1.05).
2. **Refit delay.** Time from ``RE(plan)`` to the next run's start document while the
   trainer is refitting in the background (a real ``DigitalTwin`` warm-start fit),
   compared with the same with no refit going on (target: < 1 s added).

Run::

    nice -n 10 .venv/bin/python benchmarks/bench_callbacks.py --out docs/benchmarks/callbacks.md
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path


def _scan(mpms, n_fields: int, n_temps: int):
    import bluesky.plans as bp

    return bp.grid_scan([mpms], mpms.field, 0.0, 2.0, n_fields, mpms.temperature, 26.0, 44.0, n_temps)


def measure_overhead(n_fields: int, n_temps: int, repeats: int) -> dict:
    """Median ratio of scan wall time with / without the trainer (alternating order)."""
    from bluesky import RunEngine

    from bluesky_twin.callbacks import TwinTrainer
    from bluesky_twin.sim import Magnetometer

    mpms = Magnetometer(name="mpms", seed=0)
    plain = RunEngine({})
    with_trainer = RunEngine({})
    trainer = TwinTrainer(["mpms_temperature", "mpms_field"], "mpms_magnetisation", auto_refit=False)
    inside = {"s": 0.0, "events": 0}

    def timed_trainer(name, doc):  # the trainer, plus a clock around it
        t0 = time.perf_counter()
        trainer(name, doc)
        inside["s"] += time.perf_counter() - t0
        inside["events"] += name == "event"

    with_trainer.subscribe(timed_trainer)
    for RE in (plain, with_trainer):  # warm-up (imports, first-run caches)
        RE(_scan(mpms, 2, 5))
    inside.update(s=0.0, events=0)
    ratios, t_plain, t_with = [], [], []
    for k in range(repeats):
        order = (plain, with_trainer) if k % 2 == 0 else (with_trainer, plain)
        times = {}
        for RE in order:
            t0 = time.perf_counter()
            RE(_scan(mpms, n_fields, n_temps))
            times[RE is with_trainer] = time.perf_counter() - t0
        t_plain.append(times[False])
        t_with.append(times[True])
        ratios.append(times[True] / times[False])
    n_points = n_fields * n_temps
    collected = trainer.status["n_points"]
    expected = n_points * repeats + 10
    if collected != expected:
        raise RuntimeError(f"trainer collected {collected} rows, expected {expected}")
    return {
        "points_per_scan": n_points,
        "repeats": repeats,
        "median_ratio": statistics.median(ratios),
        "ratios": ratios,
        "median_plain_s": statistics.median(t_plain),
        "median_with_s": statistics.median(t_with),
        "per_event_overhead_ms": (statistics.median(t_with) - statistics.median(t_plain)) / n_points * 1e3,
        "in_callback_ms_per_event": inside["s"] / inside["events"] * 1e3,
        "in_callback_share": inside["s"] / sum(t_with),
    }


def measure_refit_delay(repeats: int, trials: int) -> dict:
    """Time to the next run's start document with / without a background refit in progress."""
    import torch
    from bluesky import RunEngine

    from bluesky_twin.callbacks import TwinTrainer
    from bluesky_twin.sim import Magnetometer

    torch.set_num_threads(1)
    mpms = Magnetometer(name="mpms", seed=1)
    RE = RunEngine({})
    trainer = TwinTrainer(
        ["mpms_temperature", "mpms_field"],
        "mpms_magnetisation",
        fit_kwargs={"trials": trials, "seed": 0},
        refit_kwargs={"trials": 2, "seed": 0},
    )
    RE.subscribe(trainer)
    marks: dict = {}
    RE.subscribe(lambda name, doc: marks.setdefault("start", time.perf_counter()), "start")
    (uid,) = RE(_scan(mpms, 3, 15))
    if trainer.wait_for_version(None, timeout=600, run_uid=uid) is None:
        raise RuntimeError(f"first fit failed: {trainer.status}")
    busy, idle, fit_s, busy_scan, idle_scan = [], [], [], [], []
    for _ in range(repeats):
        # a run whose stop triggers a refit; the next run starts while it trains
        version = trainer.version
        RE(_scan(mpms, 2, 10))
        marks.clear()
        t0 = time.perf_counter()
        RE(_scan(mpms, 2, 10))
        busy_scan.append(time.perf_counter() - t0)
        busy.append(marks["start"] - t0)
        was_training = trainer.training
        if trainer.wait_for_version(version, timeout=600) is None:
            raise RuntimeError(f"refit failed: {trainer.status}")
        trainer.wait_for_version(None, timeout=600)
        while trainer.training:
            time.sleep(0.05)
        fit_s.append(trainer.fit_seconds[-1])
        # the same with no refit in progress (trainer idle, auto refit off for this run)
        trainer.auto_refit = False
        marks.clear()
        t0 = time.perf_counter()
        RE(_scan(mpms, 2, 10))
        idle_scan.append(time.perf_counter() - t0)
        idle.append(marks["start"] - t0)
        trainer.auto_refit = True
        if not was_training:
            print("note: the refit had already finished when the second run ended", file=sys.stderr)
    return {
        "repeats": repeats,
        "median_start_delay_busy_s": statistics.median(busy),
        "median_start_delay_idle_s": statistics.median(idle),
        "added_start_delay_s": statistics.median(busy) - statistics.median(idle),
        "max_start_delay_busy_s": max(busy),
        "median_refit_s": statistics.median(fit_s),
        "median_scan_busy_s": statistics.median(busy_scan),
        "median_scan_idle_s": statistics.median(idle_scan),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fields", type=int, default=5)
    p.add_argument("--temps", type=int, default=60)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--refit-repeats", type=int, default=3)
    p.add_argument("--trials", type=int, default=4, help="trials of the first (cold) fit")
    p.add_argument("--out", default="docs/benchmarks/callbacks.md")
    args = p.parse_args(argv)
    cmd = "nice -n 10 .venv/bin/python benchmarks/bench_callbacks.py " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    load0 = os.getloadavg()
    ov = measure_overhead(args.fields, args.temps, args.repeats)
    print(
        f"overhead: median ratio {ov['median_ratio']:.4f} over {args.repeats} pairs of {ov['points_per_scan']}-point "
        f"scans (plain {ov['median_plain_s']:.3f} s, with trainer {ov['median_with_s']:.3f} s; "
        f"{ov['per_event_overhead_ms']:.3f} ms/event); ratios {[round(r, 4) for r in ov['ratios']]}; "
        f"time inside the trainer {ov['in_callback_ms_per_event'] * 1e3:.1f} us/event = "
        f"{ov['in_callback_share'] * 100:.2f} % of the scans' wall time"
    )
    rd = measure_refit_delay(args.refit_repeats, args.trials)
    print(
        f"refit delay: next run's start {rd['median_start_delay_busy_s'] * 1e3:.1f} ms during a refit vs "
        f"{rd['median_start_delay_idle_s'] * 1e3:.1f} ms idle (added {rd['added_start_delay_s'] * 1e3:.1f} ms, "
        f"max {rd['max_start_delay_busy_s'] * 1e3:.1f} ms); refit {rd['median_refit_s']:.2f} s; 20-point scan "
        f"{rd['median_scan_busy_s']:.3f} s during a refit vs {rd['median_scan_idle_s']:.3f} s idle"
    )
    load1 = os.getloadavg()
    text = f"""# TwinTrainer callback benchmark

Command: `{cmd.strip()}`

Machine: {platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()};
load average {load0[0]:.1f} at the start and {load1[0]:.1f} at the end (the cores were shared
with other jobs, so absolute times are noisy; the ratios alternate the order to cancel drift).

## Per-event overhead (target: ratio <= 1.05)

A zero-delay simulated magnetometer grid scan ({ov["points_per_scan"]} points,
`bp.grid_scan([mpms], mpms.field, 0, 2, {args.fields}, mpms.temperature, 26, 44, {args.temps})`),
with and without `TwinTrainer` subscribed (collection only, `auto_refit=False`), {args.repeats}
alternating pairs:

| | value |
|---|---|
| median wall time without the trainer | {ov["median_plain_s"]:.3f} s |
| median wall time with the trainer | {ov["median_with_s"]:.3f} s |
| **median ratio (with / without)** | **{ov["median_ratio"]:.4f}** |
| per-event overhead (difference of medians / points) | {ov["per_event_overhead_ms"]:.3f} ms |
| ratios of the pairs | {", ".join(f"{r:.3f}" for r in ov["ratios"])} |
| time spent inside the trainer's `__call__` per event | {ov["in_callback_ms_per_event"] * 1e3:.1f} us |
| **time inside the trainer / scan wall time** | **{ov["in_callback_share"] * 100:.2f} %** |

The ratio of wall times is what the target asks for, but on shared cores it scatters far
more than the effect being measured. The time measured inside the callback itself
(a clock around `trainer(name, doc)` on the RunEngine thread) is the direct, low-noise
measure of the same overhead.

## Delay a refit adds to the next run's start (target: < 1 s)

A run stops, the trainer starts a warm-start refit of a real `DigitalTwin` (2 trials) in
its worker thread, and the next 20-point run is started at once. Measured: time from
`RE(plan)` to that run's start document, against the same with no refit going on
({rd["repeats"]} repeats, medians):

| | value |
|---|---|
| time to start document during a refit | {rd["median_start_delay_busy_s"] * 1e3:.1f} ms \
(max {rd["max_start_delay_busy_s"] * 1e3:.1f} ms) |
| time to start document with the trainer idle | {rd["median_start_delay_idle_s"] * 1e3:.1f} ms |
| **added delay** | **{rd["added_start_delay_s"] * 1e3:.1f} ms** |
| refit duration (worker thread) | {rd["median_refit_s"]:.2f} s |
| 20-point scan wall time during a refit / idle | {rd["median_scan_busy_s"]:.3f} s / {rd["median_scan_idle_s"]:.3f} s |

The RunEngine never waits for the fit; it shares the CPU with it, which is what the
last row shows.
"""
    out = Path(args.out)
    from bluesky_twin.io_utils import atomic_write_text

    atomic_write_text(out, text)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
