"""``bluesky-twin replay``: train a twin from stored runs, exactly as the live trainer would.

The documents of the selected runs are read back from tiled (an embedded store
directory or a server URI, with an API key) and fed, run after run, through the same
:class:`~bluesky_twin.callbacks.TwinTrainer` collector that runs live (same masking,
de-duplication of pause/resume retakes and exit-status filtering), then one fit is
made and saved to ``--out``.

Without ``--x/--y`` the fields come from the ``twin_x``/``twin_y`` keys that the
bluesky-twin plans record in their start documents.

Broken runs do not stop a replay: a run that never got a stop document (a crash,
a killed process) is closed as ``incomplete`` and not trained on unless
``--include-incomplete`` is given; aborted and failed runs are ``skipped`` unless
``--include-failed`` is given.  Each run gets one line, and a summary line counts
them.  The API key of a server comes from ``--api-key`` or the ``TILED_API_KEY``
environment variable; a missing or refused key, or a server that cannot be reached,
is bad input (exit 2, one line; the key is never printed).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

__all__ = ["register", "replay_runs", "summarize_reports"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``replay`` subcommand."""
    p = subparsers.add_parser(
        "replay",
        help="train a twin from runs stored in tiled (same collector as the live trainer)",
        description="Replay stored Bluesky runs through the TwinTrainer and save the fitted twin.",
    )
    p.add_argument(
        "--tiled",
        required=True,
        metavar="URI_OR_DIR",
        help="embedded tiled store directory or http(s):// tiled server URI",
    )
    p.add_argument(
        "--api-key",
        default=None,
        metavar="KEY",
        help="API key for a tiled server (default: the TILED_API_KEY environment variable)",
    )
    p.add_argument(
        "--uid",
        action="append",
        default=None,
        metavar="UID",
        help="run uid (repeatable; a unique prefix of >= 8 characters works)",
    )
    p.add_argument(
        "--query",
        action="append",
        default=None,
        metavar="KEY=VALUE",
        help="start-document equality filter (repeatable; VALUE parsed as JSON if possible)",
    )
    p.add_argument(
        "--x",
        action="append",
        default=None,
        metavar="FIELD",
        help="input data key (repeat for each axis; default: twin_x of the start documents)",
    )
    p.add_argument("--y", default=None, metavar="FIELD", help="measured data key (default: twin_y)")
    p.add_argument("--stream", default="primary", help="event stream to read (default: primary)")
    p.add_argument("--include-failed", action="store_true", help="also train on aborted/failed runs")
    p.add_argument(
        "--include-incomplete",
        action="store_true",
        help="also train on runs that never got a stop document (crashed or killed)",
    )
    p.add_argument("--out", required=True, metavar="MODEL_DIR", help="directory for the fitted twin")
    p.add_argument(
        "--overwrite",
        "--force",
        dest="overwrite",
        action="store_true",
        help="publish a new version into an existing twin MODEL_DIR (the previous versions are "
        "kept); a directory or file that holds anything else is never replaced",
    )
    p.add_argument("--trials", type=int, default=30, help="Optuna trials (default 30)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--max-epochs",
        type=int,
        default=None,
        help="cap on training epochs per trial (default: the twin's search space, 500)",
    )
    p.add_argument("--jobs", type=int, default=1, help="parallel trials in this process (default 1)")
    p.add_argument("--storage", default=None, help="Optuna storage URL (default: the twin's)")
    p.add_argument("--study", default=None, help="Optuna study name")
    p.set_defaults(func=_run)


def _parse_query(items: list[str] | None) -> dict[str, Any] | None:
    from bluesky_twin.errors import InputError

    if not items:
        return None
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--query {item!r}: expected KEY=VALUE")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def _fields_from_starts(starts: list[dict]) -> tuple[list[str], str]:
    from bluesky_twin.errors import InputError

    found = {(tuple(s["twin_x"]), s["twin_y"]) for s in starts if s.get("twin_x") and s.get("twin_y")}
    if not found:
        raise InputError("the selected runs record no twin_x/twin_y in their start documents; pass --x ... --y ...")
    if len(found) > 1:
        raise InputError(f"the selected runs disagree on the twin fields {sorted(found)}; pass --x ... --y ...")
    ((x, y),) = found
    return list(x), str(y)


def replay_runs(runs: list[Any], trainer: Any) -> dict[str, Any]:
    """Feed the documents of stored *runs* through *trainer*; return its per-run reports.

    Parameters
    ----------
    runs
        ``BlueskyRun`` clients (e.g. from :func:`bluesky_twin.storage.select_runs`).
    trainer
        A :class:`~bluesky_twin.callbacks.TwinTrainer` (usually ``auto_refit=False``).

    Returns
    -------
    dict
        ``{run uid: RunReport}`` of every run the trainer saw.

    Raises
    ------
    InputError
        If the documents of a run cannot be read.

    Notes
    -----
    A run that never got a stop document (the json-seq exporter closes it with an
    empty stop document, which is dropped here) is closed with ``trainer.flush()``
    right after its last document, so it is reported as ``"incomplete"`` and the
    following runs replay normally.
    """
    from bluesky_twin.errors import InputError

    for run in runs:
        try:
            for name, doc in run.documents():
                if name == "stop" and not doc:
                    continue  # the exporter's placeholder for a run that never stopped
                trainer(name, doc)
        except InputError:
            raise
        except Exception as exc:
            uid = str(run.metadata.get("start", {}).get("uid", "?"))
            raise InputError(f"reading run {uid[:8]} failed: {type(exc).__name__}: {exc}") from exc
        if trainer.open_run_uids:
            trainer.flush(reason="no stop document (the run crashed or was killed)")
    trainer.flush()
    return trainer.runs


def summarize_reports(reports: dict[str, Any]) -> str:
    """One line counting *reports* by state, e.g. ``"3 run(s): 1 accepted, 1 skipped, 1 incomplete"``."""
    counts: dict[str, int] = {}
    for rep in reports.values():
        counts[rep.state] = counts.get(rep.state, 0) + 1
    parts = [f"{n} {state}" for state, n in counts.items()]
    lost = sum(getattr(rep, "rows_lost", 0) for rep in reports.values())
    if lost:
        parts.append(f"{lost} row(s) lost to faults")
    return f"{len(reports)} run(s): " + ", ".join(parts)


def _run(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    from bluesky_twin.errors import InputError

    if (args.x is None) != (args.y is None):
        raise InputError("give both --x (one per axis) and --y, or neither")
    if args.trials < 1:
        raise InputError(f"--trials must be >= 1; got {args.trials}")
    if args.max_epochs is not None and args.max_epochs < 1:
        raise InputError(f"--max-epochs must be >= 1; got {args.max_epochs}")
    out = Path(args.out)
    from bluesky_twin.modeldir import prepare_output_dir
    from bluesky_twin.twin.model import FORMAT

    prepare_output_dir(out, FORMAT, overwrite=args.overwrite)
    query = _parse_query(args.query)

    from bluesky_twin import storage
    from bluesky_twin.callbacks.trainer import TwinTrainer

    api_key = args.api_key or os.environ.get("TILED_API_KEY") or None
    client = storage.open_tiled(args.tiled, api_key=api_key)
    try:
        runs = storage.select_runs(client, uids=args.uid, query=query)
        starts = [dict(run.metadata["start"]) for run in runs]
        if args.x is not None:
            x_fields, y_field = list(args.x), str(args.y)
        else:
            x_fields, y_field = _fields_from_starts(starts)
        fit_kwargs: dict[str, Any] = {"trials": args.trials, "seed": args.seed, "jobs": args.jobs}
        if args.storage:
            fit_kwargs["storage"] = args.storage
        if args.max_epochs is not None:
            from bluesky_twin.twin import TwinSearchSpace

            fit_kwargs["search_space"] = TwinSearchSpace.capped(args.max_epochs)
        try:
            trainer = TwinTrainer(
                x_fields,
                y_field,
                fit_kwargs=fit_kwargs,
                study_name=args.study,
                stream_name=args.stream,
                include_failed=args.include_failed,
                include_incomplete=args.include_incomplete,
                auto_refit=False,
            )
        except ValueError as exc:
            raise InputError(str(exc)) from exc
        reports = replay_runs(runs, trainer)
    finally:
        storage.close_store(client)
    try:
        for uid, rep in reports.items():
            line = (
                f"run {uid[:8]}: {rep.state:10s} points={rep.n_points} masked={rep.n_masked} retaken={rep.n_duplicates}"
            )
            if rep.rows_lost:
                line += f" lost={rep.rows_lost}"
            print(line + (f"  ({rep.reason})" if rep.reason else ""))
        print(summarize_reports(reports))
        if trainer.errors:
            raise InputError(f"reading the runs failed: {trainer.errors[0]}")
        if not trainer.accepted_run_uids:
            raise InputError(
                f"none of the {len(reports)} run(s) has usable {x_fields} -> {y_field!r} data in stream {args.stream!r}"
            )
        twin = trainer.refit(wait=True)
        if twin is None:
            err = trainer.last_error
            if isinstance(err, ValueError):
                raise InputError(f"fit failed: {err}") from err
            if err is not None:
                raise RuntimeError(f"fit failed: {type(err).__name__}: {err}") from err
            raise InputError(f"fit not attempted: fewer than {trainer.min_points} usable points")
        from bluesky_twin.modeldir import writer_lock

        with writer_lock(out):
            twin.save(out)
    finally:
        trainer.close()
    print(
        f"twin {twin.version}: {list(x_fields)} -> {y_field!r} from {len(trainer.training_run_uids)} run(s), "
        f"{trainer.status['n_points']} points; study {trainer.twin_study_name}; saved to {out}"
    )
    return 0
