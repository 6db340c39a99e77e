"""``bluesky-twin demo``: the whole loop on simulated instruments.

1. A coarse (T, H) scan of the simulated ErCo2-like magnetometer, stored in an
   embedded tiled store at ``OUT/tiled`` (or, with ``--tiled URL``, on a tiled server
   such as ``bluesky-twin store serve``, the API key from ``TILED_API_KEY``).
2. The streaming :class:`~bluesky_twin.callbacks.TwinTrainer` fits a twin in a
   background thread when the run stops; a derived ``twin`` run with its
   predictions is stored next to the measurement.
3. The twin's field-step study proposes the coarsest field step whose dS_M is free
   of extrinsic oscillation.
4. A fine scan at that step (steered by the twin, with provenance in its start
   document) and the comparison of measured and predicted dS_M; the instrument's
   noiseless ground truth tells how right both are.
5. Figures (PNG) and ``OUT/summary.json``.

``bluesky-twin demo --ins`` runs the INS live-translation demo instead.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: Coarse fields (tesla) of the preliminary scan: the ErCo2 layout of Terashima et al.
COARSE_FIELDS_T = (0.01, 0.1, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0)
#: Field steps (tesla) the study considers.
CANDIDATE_STEPS_T = (0.05, 0.1, 0.2, 0.25, 0.5, 1.0)


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``demo`` to the CLI."""
    p = sub.add_parser("demo", help="end-to-end demo on simulated instruments with an embedded tiled store")
    p.add_argument("--out", default="demo-out", help="output directory (default: ./demo-out)")
    p.add_argument("--ins", action="store_true", help="run the INS live-translation demo instead")
    p.add_argument("--trials", type=int, default=16, help="Optuna trials of the first twin fit")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--tiled",
        metavar="URL",
        default=None,
        help="store the runs on this tiled server (http(s)://HOST:PORT/api/v1, e.g. `bluesky-twin store serve`; "
        "API key from TILED_API_KEY) instead of the embedded store OUT/tiled",
    )
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from bluesky_twin.errors import InputError

    if args.trials < 1:
        raise InputError("--trials must be >= 1")
    out = Path(args.out)
    if args.ins and args.tiled:
        raise InputError("--tiled works with the magnetometer demo only, not with --ins")
    _check_demo_out(out, remote=args.tiled is not None)
    if args.ins:
        from bluesky_twin.ins_demo import run_ins_demo

        summary = run_ins_demo(out)
    else:
        summary = run_demo(out, trials=args.trials, seed=args.seed, tiled=args.tiled)
    print(json.dumps(summary, indent=2, default=str))
    print(f"\nwrote {out}/summary.json and figures; runs are stored in {summary.get('tiled', out / 'tiled')}")
    return 0


def _check_demo_out(out: Path, *, remote: bool = False) -> None:
    """Refuse an output that is not a demo's: a file, or a non-empty directory without a
    demo's ``summary.json`` and ``tiled/`` store (*remote*: the runs went to a tiled server,
    so ``summary.json`` alone).  A previous demo's directory is reused: its figures and
    summary are rewritten and the new runs join its store."""
    from bluesky_twin.errors import InputError

    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} exists and is a file; give a directory")
    if (
        out.is_dir()
        and any(out.iterdir())
        and not ((out / "summary.json").is_file() and (remote or (out / "tiled").is_dir()))
    ):
        raise InputError(
            f"--out {out} is a non-empty directory that holds no demo output; "
            "refusing to write into it (choose another directory)"
        )


def run_demo(
    out_dir: str | Path,
    *,
    trials: int = 16,
    seed: int = 0,
    t_num: int = 51,
    fine_t_num: int = 101,
    twin_timeout: float = 600.0,
    tiled: str | None = None,
) -> dict[str, Any]:
    """Run the magnetometer demo; return (and write) the summary.

    Parameters
    ----------
    out_dir
        Output directory; the tiled store goes to ``out_dir/tiled``.
    trials
        Optuna trials of the first fit (refits are warm starts with fewer).
    seed
        Seed of the instrument noise and of the twin.
    t_num, fine_t_num
        Temperatures per field line in the coarse and the fine scan.
    twin_timeout
        How long the plan waits for the twin after the coarse run.
    tiled
        A tiled server URI (API key from ``TILED_API_KEY``) to store the runs in instead
        of the embedded store ``out_dir/tiled``; opened before anything is written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import numpy as np
    import optuna
    from bluesky import RunEngine

    from bluesky_twin.callbacks import TwinStream, TwinTrainer
    from bluesky_twin.io_utils import atomic_write_json
    from bluesky_twin.plans import coarse_to_fine
    from bluesky_twin.sim import make_instruments
    from bluesky_twin.storage import (
        close_store,
        make_tiled_writer,
        open_store,
        open_tiled,
        read_stream,
        redact_uri,
        select_runs,
    )

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out = Path(out_dir)
    timings: dict[str, float] = {}
    t_all = time.perf_counter()

    t = time.perf_counter()
    client = open_tiled(tiled) if tiled else open_store(out / "tiled")
    timings["open_tiled_s"] = time.perf_counter() - t
    out.mkdir(parents=True, exist_ok=True)
    RE = RunEngine({}, call_returns_result=True)
    # The scan's writer (RunEngine thread) and the twin stream's writer (trainer
    # thread) share the store; make_tiled_writer makes them take turns.
    RE.subscribe(make_tiled_writer(client))
    hw = make_instruments(seed=seed, include=("mpms",))
    mpms = hw.mpms
    x_fields = [mpms.temperature.name, mpms.field.name]
    y_field = mpms.magnetisation.name
    trainer = TwinTrainer(
        x_fields,
        y_field,
        fit_kwargs={"trials": trials, "jobs": 2, "seed": seed},
        refit_kwargs={"trials": 3, "jobs": 1, "seed": seed},
        study_name="demo-erco2",
    )
    RE.subscribe(trainer)
    # the twin's predictions on a fixed grid become a derived run in the same store
    stream = TwinStream(
        trainer,
        [make_tiled_writer(client)],
        grid={x_fields[0]: np.linspace(10, 60, 101), x_fields[1]: np.linspace(0.01, 5.0, 51)},
    )
    fit_log: list[dict[str, Any]] = []
    trainer.add_refit_listener(
        lambda twin, tr: fit_log.append(
            {"version": twin.version, "fit_seconds": twin.metadata["fit_seconds"], "t": time.perf_counter()}
        )
    )

    t = time.perf_counter()
    result = RE(
        coarse_to_fine(
            [mpms],
            mpms.temperature,
            10.0,
            60.0,
            t_num,
            mpms.field,
            COARSE_FIELDS_T,
            trainer=trainer,
            fine_t_num=fine_t_num,
            candidate_steps=CANDIDATE_STEPS_T,
            tolerance=0.05,
            field_unit="T",
            twin_timeout=twin_timeout,
            md={"sample": "ErCo2 (simulated)", "purpose": "bluesky-twin demo"},
        )
    )
    timings["plan_total_s"] = time.perf_counter() - t
    res = result.plan_result
    if result.exit_status != "success" or res is None:
        raise RuntimeError(f"demo plan ended with {result.exit_status}: {result.reason}")
    trainer.close(wait=True)
    if fit_log:
        timings["first_twin_fit_s"] = float(fit_log[0]["fit_seconds"])

    # ground truth: what a noiseless, infinitely fine measurement gives
    from bluesky_twin.analysis.mce import entropy_change_isofield

    T = np.asarray(res.dsm_measured.T if res.dsm_measured is not None else np.linspace(10, 60, fine_t_num))
    H = np.asarray(res.fine_fields, dtype=float)
    TT, HH = np.meshgrid(T, H)
    truth_M = mpms.truth(TT.ravel(), HH.ravel())
    dsm_truth = entropy_change_isofield(TT.ravel(), HH.ravel(), truth_M, T_grid=T, field_unit="T")
    coarse = trainer.run_data(res.coarse_uid)
    lines = [coarse["x"][coarse["x"][:, 1] == h, 0] for h in np.unique(coarse["x"][:, 1])]
    T_common = T[(T >= max(t.min() for t in lines)) & (T <= min(t.max() for t in lines))]
    dsm_coarse = entropy_change_isofield(
        coarse["x"][:, 0], coarse["x"][:, 1], coarse["y"], T_grid=T_common, field_unit="T"
    )
    twin = trainer.twin
    ref = dsm_truth.curve(H[-1])[0]
    scale = float(np.max(np.abs(ref)))

    def rmse_pct(curve: Any) -> float:
        return float(100 * np.sqrt(np.mean((np.asarray(curve) - ref) ** 2)) / scale)

    pred_at_max = res.dsm_predicted.curve(H[-1])[0]
    meas_at_max = res.dsm_measured.curve(H[-1])[0]
    coarse_at_max = dsm_coarse.curve(dsm_coarse.H[-1])[0]

    # replay check: the stored runs read back from tiled
    stored = select_runs(client, uids=res.run_uids)
    n_events = {r.metadata["start"]["uid"]: len(read_stream(r)[x_fields[0]]) for r in stored}

    figures = _figures(out, mpms, coarse, twin, res, dsm_truth, dsm_coarse, x_fields)
    close_store(client)
    timings["total_s"] = time.perf_counter() - t_all
    summary: dict[str, Any] = {
        "proposed_field_step_T": res.proposed_field_step,
        "proposal_ok": res.proposal_ok,
        "runs": res.run_uids,
        "derived_twin_runs": list(stream.emitted_run_uids),
        "twin_stream_errors": list(stream.errors),
        "dsm_predicted_vs_measured_rmse_pct": res.dsm_rmse_pct,
        "dsm_vs_truth_rmse_pct": {
            "twin_predicted": rmse_pct(pred_at_max),
            "fine_measurement": rmse_pct(meas_at_max),
            "coarse_fields_trapezoid": rmse_pct(np.interp(T, dsm_coarse.T, coarse_at_max)),
        },
        "field_max_T": float(H[-1]),
        "n_fine_fields": len(H),
        "paper_reference": "Terashima et al. 2023 needed a field step < 0.2 T for ErCo2",
        "twin_version": res.twin_version,
        "twin_study_name": trainer.twin_study_name,
        "twin_train_r2": twin.metadata["train_r2"] if twin is not None else None,
        "events_stored": n_events,
        "simulated_instrument_time_h": float(mpms.elapsed.get()) / 3600 if hasattr(mpms, "elapsed") else None,
        "timings": timings,
        "figures": figures,
        "tiled": redact_uri(tiled) if tiled else str(out / "tiled"),
        "notes": res.notes,
    }
    atomic_write_json(out / "summary.json", summary)
    return summary


def _figures(
    out: Path, mpms: Any, coarse: dict, twin: Any, res: Any, dsm_truth: Any, dsm_coarse: Any, x_fields: list[str]
) -> list[str]:
    import matplotlib.pyplot as plt
    import numpy as np

    paths = []
    # 1. coarse data, twin, truth at fields between the coarse lines
    fig, ax = plt.subplots(figsize=(7, 4.5))
    X, y = coarse["x"], coarse["y"]
    for h in np.unique(X[:, 1]):
        sel = X[:, 1] == h
        ax.plot(X[sel, 0], y[sel], ".", ms=3, color="0.5")
    T = np.linspace(10, 60, 201)
    for h, c in zip((0.25, 0.75, 1.5, 2.5), ("C0", "C1", "C2", "C3")):
        mean, std = twin.predict(np.column_stack([T, np.full_like(T, h)]))
        ax.plot(T, mean, color=c, label=f"twin at {h} T (not measured)")
        ax.fill_between(T, mean - 2 * std, mean + 2 * std, color=c, alpha=0.2)
        ax.plot(T, mpms.truth(T, np.full_like(T, h)), "--", color=c, lw=1)
    ax.set_xlabel("T (K)")
    ax.set_ylabel("M (raw)")
    ax.set_title("coarse scan (grey), twin +-2 std (solid), ground truth (dashed)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(str(out / "twin_vs_truth.png"))
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    # 2. dS_M
    fig, ax = plt.subplots(figsize=(7, 4.5))
    H = np.asarray(res.fine_fields)
    ax.plot(dsm_truth.T, -dsm_truth.curve(H[-1])[0], "k-", lw=2, label="ground truth")
    ax.plot(
        res.dsm_measured.T,
        -res.dsm_measured.curve(H[-1])[0],
        ".",
        ms=4,
        label=f"fine scan, step {res.proposed_field_step} T",
    )
    pred, pstd = res.dsm_predicted.curve(H[-1])
    ax.plot(res.dsm_predicted.T, -pred, "C1-", label="twin prediction")
    if pstd is not None:
        ax.fill_between(res.dsm_predicted.T, -pred - 2 * pstd, -pred + 2 * pstd, color="C1", alpha=0.2)
    ax.plot(dsm_coarse.T, -dsm_coarse.curve(dsm_coarse.H[-1])[0], "C3--", label="coarse fields, trapezoid")
    ax.set_xlabel("T (K)")
    ax.set_ylabel(f"-dS_M, 0 -> {H[-1]:g} T ({res.dsm_measured.units})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(str(out / "dsm_measured_vs_predicted.png"))
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    # 3. the step study
    if res.step_study is not None:
        paths.append(str(out / "field_step_study.png"))
        from bluesky_twin.analysis.plotting import plot_step_study

        plot_step_study(res.step_study, paths[-1])
    return paths
