"""``bluesky-twin fit``, ``worker``, ``predict`` and ``dashboard``."""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

from bluesky_twin.errors import InputError
from bluesky_twin.twin.space import MONOTONE_DIRECTIONS


def register(sub: argparse._SubParsersAction) -> None:
    """Add the twin subcommands to *sub*."""
    p = sub.add_parser(
        "fit",
        help="tune and train a twin on scan data (CSV)",
        description="Tune an MLP twin with Optuna and write a model directory.",
    )
    p.add_argument("data", help="CSV file, one reading per row")
    p.add_argument(
        "--x",
        action="append",
        required=True,
        metavar="COL",
        help="scan-axis column (repeat for each axis, swept axis first)",
    )
    p.add_argument("--y", required=True, metavar="COL", help="measured column")
    p.add_argument("--out", required=True, metavar="MODEL_DIR", help="model directory to write")
    p.add_argument("--trials", type=int, default=None, help="Optuna trials (default 30; 4 with --warm-start)")
    p.add_argument("--timeout", type=float, default=None, help="stop starting trials after S seconds")
    p.add_argument(
        "--budget",
        type=float,
        default=None,
        metavar="S",
        help="seconds for the whole fit: the search stops early enough for the final ensemble",
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="parallel trials (threads); without --timeout/--budget the result does not depend on it",
    )
    p.add_argument(
        "--trial-batch",
        type=int,
        default=None,
        metavar="B",
        help="trials asked and told together without a time limit (default: max(2, --jobs)); "
        "a seeded fit is reproducible for a given B",
    )
    # the URL may carry a password: take it from the environment rather than the command line
    p.add_argument(
        "--storage",
        default=os.environ.get("BLUESKY_TWIN_STORAGE") or None,
        help="Optuna storage: journal:PATH, postgresql://..., mysql+pymysql://... "
        "(default: $BLUESKY_TWIN_STORAGE, else a journal file saved in MODEL_DIR); "
        "a password is never stored or printed (metadata keeps user:***@), so pass a "
        "URL with a password through BLUESKY_TWIN_STORAGE",
    )
    p.add_argument(
        "--study",
        default=None,
        help="Optuna study name: share it between workers; one study holds one data set "
        "(another data set's study is refused); re-running the same command resumes "
        "it, this worker's finished trials counting towards --trials",
    )
    p.add_argument(
        "--processes",
        type=int,
        default=None,
        metavar="N",
        help="run the search in N worker processes (bluesky-twin worker) on a database --storage, "
        "until the study holds --trials finished trials in all, then build the final ensemble "
        "once here; workers on other hosts may join the --study (0: only those); see docs/workers.md",
    )
    _heartbeat_options(p, "with --processes: ")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ensemble", type=int, default=None, help="members of the final ensemble (default 6)")
    p.add_argument(
        "--restarts",
        type=int,
        default=1,
        metavar="K",
        help="pool the ensembles of K independent seeded searches (K times the cost; the answer depends "
        "less on the seed); not with --timeout, --budget, --storage, --study or --processes",
    )
    p.add_argument(
        "--input-scale",
        action="append",
        default=[],
        metavar="COL=SCALE",
        help="read an --x column on SCALE before standardising it: linear (default) or sqrt (signed square "
        "root; e.g. the field of an M(T,H) scan whose transition moves little with field, docs/twin.md); "
        "repeat per column",
    )
    p.add_argument(
        "--monotone",
        action="append",
        default=[],
        metavar="COL=DIRECTION",
        help="the modelled quantity runs one way along an --x column: increasing or decreasing (e.g. "
        "H=increasing for a magnetisation M(T,H)); the networks are penalised where they run the other "
        "way between the data (docs/twin.md); repeat per column",
    )
    p.add_argument("--warm-start", default=None, metavar="MODEL_DIR", help="refit from this twin")
    p.add_argument("--max-epochs", type=int, default=None, help="override the 500-epoch cap")
    p.add_argument(
        "--precision",
        choices=["auto", "float32", "bfloat16"],
        default=None,
        help="training precision (default auto: bfloat16 matrix products on large maps "
        "when the CPU has native bfloat16)",
    )
    p.add_argument(
        "--overwrite",
        "--force",
        dest="overwrite",
        action="store_true",
        help="publish a new version into an existing twin MODEL_DIR (the previous versions "
        "are kept); a directory or file that holds anything else is never replaced",
    )
    p.set_defaults(func=_fit)

    p = sub.add_parser(
        "worker",
        help="run trials of a shared twin study (from any process or host)",
        description="Join a twin study in a database (prepared by bluesky-twin fit --processes) and run "
        "its trials until it holds the requested number of finished trials.",
    )
    p.add_argument(
        "--storage",
        default=os.environ.get("BLUESKY_TWIN_STORAGE") or None,
        help="the study's database URL (default: $BLUESKY_TWIN_STORAGE; pass a URL with a password "
        "through that variable: it is never stored or printed)",
    )
    p.add_argument("--study", required=True, help="the study's name")
    p.add_argument(
        "--data",
        default=None,
        metavar="CSV",
        help="the study's data file (default: the path the study records); other data are refused",
    )
    p.add_argument("--seed", type=int, default=None, help="this worker's sampler seed (default: random)")
    _heartbeat_options(p, "")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    p.set_defaults(func=_worker)

    p = sub.add_parser("predict", help="predict with a twin at the points of a CSV")
    p.add_argument("model", metavar="MODEL_DIR")
    p.add_argument("points", metavar="POINTS.csv", help="CSV with the twin's x columns by name")
    p.add_argument("--out", required=True, metavar="PRED.csv")
    p.add_argument("--overwrite", action="store_true", help="replace an existing PRED.csv (never the input)")
    p.add_argument(
        "--fast",
        action="store_true",
        help="answer from a tabulated copy of the twin (for many points; prints its error)",
    )
    p.set_defaults(func=_predict)

    p = sub.add_parser("dashboard", help="open optuna-dashboard on a twin's study")
    p.add_argument("target", metavar="MODEL_DIR_OR_STORAGE")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--host", default="127.0.0.1")
    p.set_defaults(func=_dashboard)


def _heartbeat_options(p: argparse.ArgumentParser, prefix: str) -> None:
    p.add_argument(
        "--heartbeat",
        type=int,
        default=None,
        metavar="S",
        help=f"{prefix}seconds between heartbeats of a running trial (default 30)",
    )
    p.add_argument(
        "--grace",
        type=int,
        default=None,
        metavar="S",
        help=f"{prefix}a running trial without a heartbeat for S seconds is failed and retried (default 120)",
    )
    p.add_argument(
        "--max-retry",
        type=int,
        default=None,
        metavar="N",
        help=f"{prefix}times a trial of a dead worker is retried (default 2)",
    )


def _heartbeat(args: argparse.Namespace) -> object:
    from bluesky_twin.twin.workers import Heartbeat

    given = {"interval": args.heartbeat, "grace": args.grace, "max_retry": args.max_retry}
    return Heartbeat(**{k: v for k, v in given.items() if v is not None})


#: Most Optuna trials one command may ask for.
MAX_TRIALS = 100_000
#: Most members of a final ensemble.
MAX_ENSEMBLE = 64
#: Most independent searches one fit may pool (``--restarts``).
MAX_RESTARTS = 64


def _check_fit_args(args: argparse.Namespace) -> None:
    """Refuse impossible fit options with one line, before anything is read or written."""
    if args.y in args.x:
        raise InputError(f"--y {args.y} is also given as --x: the measured column cannot be a scan axis")
    if len(set(args.x)) != len(args.x):
        raise InputError(f"--x names a column twice: {args.x}")
    if args.trials is not None and not 1 <= args.trials <= MAX_TRIALS:
        raise InputError(f"--trials must be between 1 and {MAX_TRIALS}, got {args.trials}")
    if args.trial_batch is not None and not 1 <= args.trial_batch <= 256:
        raise InputError(f"--trial-batch must be between 1 and 256, got {args.trial_batch}")
    if not 1 <= args.jobs <= 256:
        raise InputError(f"--jobs must be between 1 and 256, got {args.jobs}")
    for name in ("timeout", "budget"):
        value = getattr(args, name)
        if value is not None and not (math.isfinite(value) and value > 0):
            raise InputError(f"--{name} must be a positive number of seconds, got {value}")
    if args.max_epochs is not None and not 1 <= args.max_epochs <= 1_000_000:
        raise InputError(f"--max-epochs must be between 1 and 1000000, got {args.max_epochs}")
    if args.ensemble is not None and not 1 <= args.ensemble <= MAX_ENSEMBLE:
        raise InputError(f"--ensemble must be between 1 and {MAX_ENSEMBLE}, got {args.ensemble}")
    if not 1 <= args.restarts <= MAX_RESTARTS:
        raise InputError(f"--restarts must be between 1 and {MAX_RESTARTS}, got {args.restarts}")
    if args.restarts > 1:
        given = [
            f"--{n}" for n in ("timeout", "budget", "storage", "study", "processes") if getattr(args, n) is not None
        ]
        if given:
            raise InputError(
                f"--restarts {args.restarts} does not combine with {', '.join(given)} "
                "(--storage may come from $BLUESKY_TWIN_STORAGE)"
            )
    args.input_scales = input_scales_option(args.input_scale, args.x)
    args.monotone_axes = axis_option("--monotone", args.monotone, args.x, MONOTONE_DIRECTIONS, "DIRECTION")
    if not os.path.isfile(args.data):
        what = "a directory" if os.path.isdir(args.data) else "not found"
        raise InputError(f"data file {args.data}: {what}")
    _check_process_args(args)


def input_scales_option(given: list[str], x: list[str]) -> dict[str, str]:
    """``--input-scale COL=SCALE`` options of the axes *x* as ``TwinSearchSpace.input_scales``.

    Shared by ``bluesky-twin fit`` and ``bluesky-twin trainer serve``; a bad option raises
    :class:`InputError` with one line naming it.
    """
    from bluesky_twin.twin._scaler import INPUT_SCALES

    scales = axis_option("--input-scale", given, x, INPUT_SCALES, "SCALE")
    return {k: v for k, v in scales.items() if v != "linear"}


def axis_option(option: str, given: list[str], x: list[str], choices: Sequence[str], what: str) -> dict[str, str]:
    """Repeated ``option COL=VALUE`` arguments of the axes *x*, each VALUE one of *choices*, as a dict.

    A bad one raises :class:`InputError` with one line naming it (*what* names VALUE there).
    """
    values: dict[str, str] = {}
    for text in given:
        col, sep, value = text.partition("=")
        if not sep or value not in choices:
            raise InputError(f"{option} {text!r}: expected COL={what} with {what} one of {', '.join(choices)}")
        if col not in x:
            raise InputError(f"{option} {text!r}: {col!r} is not an --x axis ({', '.join(x)})")
        if col in values:
            raise InputError(f"{option} given twice for {col!r}")
        values[col] = value
    return values


def _check_process_args(args: argparse.Namespace) -> None:
    """``fit --processes``: a database storage, no time limit, no warm start."""
    heartbeat_given = [
        f"--{n}" for n in ("heartbeat", "grace", "max-retry") if getattr(args, n.replace("-", "_")) is not None
    ]
    if args.processes is None:
        if heartbeat_given:
            raise InputError(f"{heartbeat_given[0]} applies to worker processes: give --processes N too")
        return
    from bluesky_twin.twin.workers import MAX_PROCESSES, require_database

    if not 0 <= args.processes <= MAX_PROCESSES:
        raise InputError(f"--processes must be between 0 and {MAX_PROCESSES}, got {args.processes}")
    for name in ("timeout", "budget", "warm_start"):
        if getattr(args, name) is not None:
            raise InputError(f"--{name.replace('_', '-')} is not supported with --processes")
    require_database(args.storage or "", "--processes")
    _heartbeat(args)  # checked before anything is written


def _fit(args: argparse.Namespace) -> int:
    from bluesky_twin.modeldir import prepare_output_dir, writer_lock
    from bluesky_twin.twin import FORMAT

    out = Path(args.out)
    _check_fit_args(args)
    prepare_output_dir(out, FORMAT, overwrite=args.overwrite)
    if args.warm_start is not None and not Path(args.warm_start).is_dir():
        raise InputError(f"--warm-start {args.warm_start}: not a model directory")
    with writer_lock(out):
        return _fit_locked(args, out)


def _fit_locked(args: argparse.Namespace, out: Path) -> int:
    import optuna

    from bluesky_twin.data import load_scan_table
    from bluesky_twin.twin import DigitalTwin, TwinSearchSpace

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    table = load_scan_table(args.data, args.x, args.y)
    if table.n_dropped:
        print(f"dropped {table.n_dropped} row(s) with NaN/inf values")
    warm = DigitalTwin.load(args.warm_start) if args.warm_start else None
    space = None
    if args.max_epochs is not None or args.precision is not None or args.input_scale or args.monotone:
        base = TwinSearchSpace.from_dict(warm.metadata["search_space"]) if warm else TwinSearchSpace()
        if args.max_epochs is not None:
            base.max_epochs = args.max_epochs
        if args.precision is not None:
            base.precision = args.precision
        if args.input_scale:
            base.input_scales = args.input_scales
        if args.monotone:
            base.monotone = args.monotone_axes
        space = base
    kw = {}
    if args.ensemble is not None:
        kw["ensemble_size"] = args.ensemble
    if args.processes is not None:
        twin = _fit_processes(args, table, space, kw)
    else:
        twin = DigitalTwin.fit(
            table,
            args.x,
            args.y,
            trials=args.trials,
            timeout=args.timeout,
            budget=args.budget,
            jobs=args.jobs,
            trial_batch=args.trial_batch,
            storage=args.storage,
            study_name=args.study,
            seed=args.seed,
            warm_start=warm,
            search_space=space,
            progress=True,
            restarts=args.restarts,
            **kw,
        )
    twin.save(out)
    m = twin.metadata
    print(f"best params: {json.dumps(m['best_params'])}")
    print(f"selection ({m['selection']}): {m['selection_score']:.5g}  (cv rmse {m['cv_rmse']:.4g} {args.y} units)")
    print(f"train R^2: {m['train_r2']:.5f}")
    scales = m["search_space"].get("input_scales") or {}
    if scales:
        print("input scales: " + ", ".join(f"{k} {v}" for k, v in scales.items()))
    monotone = m["search_space"].get("monotone") or {}
    if monotone:
        print("monotone: " + ", ".join(f"{k} {v}" for k, v in monotone.items()))
    if m.get("line_residual"):
        lr = m["line_residual"]
        print(
            f"  networks alone {lr['network_train_r2']:.5f}; line-residual correction: "
            f"kernel width {lr['bandwidth']:.4g}, half-way weight {lr['alpha']:.3f}, "
            f"noise RMS {lr['noise_rms']:.4g} {m['y_name']} units"
        )
    print(
        f"trials: {m['n_trials_complete']} complete, {m['n_trials_pruned']} pruned; "
        f"fit {m['fit_seconds']:.1f} s ({m['training_precision']} training); study {m['study_name']!r}"
    )
    if m.get("restarts", 1) > 1:
        print(f"restarts: {m['restarts']} searches pooled (seeds {m['restart_seeds']}); best {m['best_restart']}")
    print(f"wrote {out} (twin {twin.version}, model-directory version {twin.model_version})")
    return 0


def _fit_processes(args: argparse.Namespace, table: object, space: object, kw: dict) -> object:
    """``fit --processes N``: the search in worker processes, the final ensemble here."""
    from functools import partial

    from bluesky_twin.twin import DigitalTwin, FitConfig
    from bluesky_twin.twin._fit import fit_twin
    from bluesky_twin.twin.workers import process_search

    config = FitConfig(
        trials=args.trials,
        jobs=args.jobs,
        storage=args.storage,
        study_name=args.study,
        seed=args.seed,
        progress=True,
        trial_batch=args.trial_batch,
        **kw,
    )
    runner = partial(process_search, processes=args.processes, heartbeat=_heartbeat(args))
    twin = fit_twin(DigitalTwin, table, args.x, args.y, config, search_space=space, search_runner=runner)
    twin.metadata["reproducible"] = False  # trials ran as worker processes freed up
    twin.metadata["worker_processes"] = args.processes
    return twin


def _worker(args: argparse.Namespace) -> int:
    import signal

    import optuna

    from bluesky_twin.twin.storage_url import mask_url
    from bluesky_twin.twin.workers import run_worker

    if not args.storage:
        raise InputError("no storage: give --storage URL or set BLUESKY_TWIN_STORAGE")
    if args.seed is not None and not 0 <= args.seed <= 2**32 - 1:
        raise InputError(f"--seed must be an integer from 0 to {2**32 - 1}, got {args.seed}")
    heartbeat = _heartbeat(args)
    if args.data is not None and not os.path.isfile(args.data):
        raise InputError(f"data file {args.data}: {'a directory' if os.path.isdir(args.data) else 'not found'}")

    def _terminate(signum: int, frame: object) -> None:  # the running trial is told failed
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminate)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    echo = None if args.quiet else print
    summary = run_worker(args.storage, args.study, data=args.data, seed=args.seed, heartbeat=heartbeat, echo=echo)
    if not args.quiet:
        print(
            f"worker {summary.worker}: ran {summary.ran} trial(s); study {args.study!r} in "
            f"{mask_url(args.storage)} holds {summary.finished} of {summary.target} finished trial(s)"
        )
    return 0


def _predict(args: argparse.Namespace) -> int:
    from bluesky_twin.data import read_csv
    from bluesky_twin.io_utils import atomic_path
    from bluesky_twin.modeldir import check_output_file
    from bluesky_twin.twin import DigitalTwin

    check_output_file(args.out, overwrite=args.overwrite, inputs=(args.points,))
    twin = DigitalTwin.load(args.model)
    points = read_csv(args.points)
    pred = twin.predict_frame(points, fast=args.fast)
    if args.fast:
        t = twin.table
        print(
            f"tabulated copy {t.shape}: max error {t.max_abs_error:.4g} {twin.y_name} "
            f"({t.max_error_over_std:.2f} x the ensemble std at worst)"
        )
    n_out = int(pred["outside_training_range"].sum())
    if n_out:
        print(
            f"warning: {n_out} of {len(pred)} point(s) lie outside the training range "
            f"(flagged in column outside_training_range)"
        )
    with atomic_path(args.out, suffix=".csv") as tmp:
        pred.to_csv(tmp, index=False)
    print(f"wrote {len(pred)} prediction(s) of {twin.y_name} to {args.out}")
    return 0


def _dashboard(args: argparse.Namespace) -> int:
    target = args.target
    if os.path.isdir(target):
        from bluesky_twin.twin import DigitalTwin

        twin = DigitalTwin.load(target)  # holds its private copy of the study journal
        url = twin.storage_url()
    else:
        url = target
    try:
        import optuna_dashboard
    except ImportError as exc:
        raise InputError("optuna-dashboard is not installed: pip install 'bluesky-twin[dashboard]'") from exc
    from bluesky_twin.twin.storage_url import mask_url, open_storage

    storage = open_storage(url)
    print(f"optuna-dashboard on http://{args.host}:{args.port} for {mask_url(url)} (Ctrl-C to stop)")
    optuna_dashboard.run_server(storage, host=args.host, port=args.port)
    return 0
