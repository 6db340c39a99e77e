"""``bluesky-twin trainer serve`` / ``bluesky-twin trainer status``: the trainer as a service on the document bus.

``trainer serve --bus HOST:PORT --model-dir DIR --x FIELD ... --y FIELD`` subscribes to
a 0MQ proxy (``bluesky-0MQ-proxy``), trains a :class:`~bluesky_twin.callbacks.TwinTrainer`
on the runs that arrive and publishes each refit as a new version of DIR.  With
``--tiled STORE_OR_URL`` it first catches up from the store (a restart loses nothing)
and fills the gaps 0MQ leaves (lost events, stops without their events, stops without
a start) from it.  It runs in the foreground until SIGTERM or SIGINT, and writes its
status to ``DIR.service.json`` (``trainer status --model-dir DIR`` prints it).
Bad arguments exit 2 with one line, before anything is written.
"""

from __future__ import annotations

import argparse
import re

__all__ = ["register"]

_BUS = re.compile(r"^(?P<host>[A-Za-z0-9_.\-]+|\[[0-9A-Fa-f:]+\]):(?P<port>[0-9]{1,5})$")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``trainer`` subcommands to *sub*."""
    p = sub.add_parser(
        "trainer",
        help="the twin trainer as a service on the Bluesky 0MQ document bus",
        description="`trainer serve`: train on the runs published on a 0MQ proxy and publish every refit to a "
        "shared model directory. `trainer status`: print the status the service writes.",
    )
    tsub = p.add_subparsers(dest="trainer_command", metavar="TRAINER_COMMAND")
    s = tsub.add_parser(
        "serve",
        help="subscribe to a 0MQ proxy, train the twin, publish each refit to a model directory",
        description="Subscribe to the outgoing side of a 0MQ proxy (bluesky-0MQ-proxy IN OUT) with "
        "bluesky's RemoteDispatcher, train a TwinTrainer on the runs and publish each refit as a new "
        "version of --model-dir, with the training run uids and the data digest in its metadata. With "
        "--tiled it first replays the stored runs (a restart loses nothing) and fills documents lost on "
        "the bus from the store. Runs until SIGTERM or SIGINT; the status goes to MODEL_DIR.service.json.",
    )
    s.add_argument("--bus", required=True, metavar="HOST:PORT", help="the proxy's outgoing (subscriber) address")
    s.add_argument(
        "--model-dir",
        required=True,
        metavar="DIR",
        help="shared twin model directory to publish into (created; an existing twin of the same fields is "
        "the warm start; anything else is refused)",
    )
    s.add_argument(
        "--tiled",
        default=None,
        metavar="STORE_OR_URL",
        help="embedded store directory or http(s):// tiled server: catch up on start, fill bus gaps",
    )
    s.add_argument(
        "--api-key-env",
        default=None,
        metavar="VAR",
        help="environment variable holding the tiled server's API key (default: TILED_API_KEY)",
    )
    s.add_argument("--x", action="append", required=True, metavar="FIELD", help="input data key (repeat per axis)")
    s.add_argument("--y", required=True, metavar="FIELD", help="measured data key")
    s.add_argument("--stream", default="primary", help="event stream to read (default: primary)")
    s.add_argument(
        "--twin-runs-only",
        action="store_true",
        help="train only on runs marked twin=True or made by the twin plans (default: every run with the fields)",
    )
    s.add_argument("--include-failed", action="store_true", help="also train on aborted/failed runs")
    s.add_argument("--no-train", action="store_true", help="collect and check runs but never fit (load tests)")
    s.add_argument("--trials", type=int, default=30, help="Optuna trials of the first fit (default 30)")
    s.add_argument("--refit-trials", type=int, default=5, help="Optuna trials of each warm-start refit (default 5)")
    s.add_argument("--max-epochs", type=int, default=None, help="cap on training epochs per trial")
    s.add_argument("--ensemble-size", type=int, default=None, help="networks in the final ensemble")
    s.add_argument("--budget", type=float, default=None, help="time budget of each refit in seconds")
    s.add_argument(
        "--restarts",
        type=int,
        default=1,
        help="independent searches pooled in every fit and refit (default 1; K times the cost; not with --budget)",
    )
    s.add_argument(
        "--input-scale",
        action="append",
        default=[],
        metavar="FIELD=SCALE",
        help="read an --x data key on SCALE before standardising it: linear (default) or sqrt "
        "(docs/twin.md, 'Input scales'); repeat per key",
    )
    s.add_argument(
        "--monotone",
        action="append",
        default=[],
        metavar="FIELD=DIRECTION",
        help="the --y key runs one way along an --x data key: increasing or decreasing (e.g. field=increasing "
        "for a magnetisation; docs/twin.md, 'Monotone axes'); repeat per key",
    )
    s.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    s.add_argument("--jobs", type=int, default=1, help="parallel trials in this process (default 1)")
    s.add_argument("--min-points", type=int, default=8, help="fewest usable rows to fit (default 8)")
    s.add_argument(
        "--fill-timeout",
        type=float,
        default=10.0,
        help="seconds to wait for the store to hold a run with a gap (default 10)",
    )
    s.add_argument(
        "--stop-timeout",
        type=float,
        default=30.0,
        help="seconds of silence before an open run is looked up in the store for a lost stop (default 30)",
    )
    s.add_argument(
        "--grace",
        type=float,
        default=30.0,
        help="seconds a running fit may take to finish when the service is stopped (default 30)",
    )
    s.set_defaults(func=_serve)
    st = tsub.add_parser(
        "status",
        help="print the status of the trainer service publishing to a model directory",
        description="Print the status the trainer service writes beside its model directory (JSON).",
    )
    st.add_argument("--model-dir", required=True, metavar="DIR", help="the service's model directory")
    st.set_defaults(func=_status)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _check_positive(name: str, value: float | int | None, *, integer: bool = False) -> None:
    from bluesky_twin.errors import InputError

    if value is None:
        return
    import math

    if not (math.isfinite(value) and value > 0):
        raise InputError(f"{name} must be a positive {'integer' if integer else 'number'}; got {value}")


def _config(args: argparse.Namespace) -> object:
    """Check every argument (one-line InputError) and build the ServiceConfig."""
    import os
    from pathlib import Path

    from bluesky_twin.errors import InputError

    try:
        import zmq  # noqa: F401  (bluesky.callbacks.zmq needs it)
    except ImportError:
        raise InputError("trainer serve needs pyzmq: pip install 'bluesky-twin[bus]'") from None
    m = _BUS.match(args.bus)
    if not m or not 1 <= int(m.group("port")) <= 65535:
        raise InputError(f"--bus {args.bus!r}: expected HOST:PORT of the proxy's outgoing side, e.g. 127.0.0.1:5568")
    for name in ("trials", "refit_trials", "max_epochs", "ensemble_size", "jobs", "min_points", "restarts"):
        _check_positive(f"--{name.replace('_', '-')}", getattr(args, name), integer=True)
    if args.restarts > 1 and args.budget is not None:
        raise InputError("--restarts takes no --budget: a pool of restarts is a seeded fit without a clock")
    for name in ("budget", "fill_timeout", "stop_timeout", "grace"):
        _check_positive(f"--{name.replace('_', '-')}", getattr(args, name))
    x_fields = [str(f) for f in args.x]
    if len(set(x_fields)) != len(x_fields) or args.y in x_fields:
        raise InputError(f"--x {x_fields} and --y {args.y!r} must be distinct data keys")
    from bluesky_twin.twin.cli import axis_option, input_scales_option
    from bluesky_twin.twin.space import MONOTONE_DIRECTIONS

    scales = input_scales_option(args.input_scale, x_fields)
    monotone = axis_option("--monotone", args.monotone, x_fields, MONOTONE_DIRECTIONS, "DIRECTION")
    api_key = None
    if args.api_key_env is not None:
        if args.tiled is None:
            raise InputError("--api-key-env needs --tiled")
        api_key = os.environ.get(args.api_key_env) or None
        if api_key is None:
            raise InputError(f"--api-key-env {args.api_key_env}: that environment variable is not set")
    model_dir = Path(args.model_dir)
    from bluesky_twin.modeldir import prepare_output_dir
    from bluesky_twin.twin.model import FORMAT

    prepare_output_dir(model_dir, FORMAT, overwrite=True, option="--model-dir")
    fit: dict[str, object] = {"seed": args.seed, "jobs": args.jobs}
    if args.restarts > 1:
        fit["restarts"] = args.restarts
    if args.max_epochs is not None or scales or monotone:
        from bluesky_twin.twin import TwinSearchSpace

        space = TwinSearchSpace.capped(args.max_epochs) if args.max_epochs is not None else TwinSearchSpace()
        space.input_scales = scales
        space.monotone = monotone
        fit["search_space"] = space
    if args.ensemble_size is not None:
        fit["ensemble_size"] = args.ensemble_size
    refit = dict(fit, trials=args.refit_trials)
    if args.budget is not None:
        refit["budget"] = args.budget
    fit["trials"] = args.trials
    from bluesky_twin.service._service import ServiceConfig

    return ServiceConfig(
        bus=args.bus,
        model_dir=model_dir,
        x_fields=x_fields,
        y_field=str(args.y),
        tiled=args.tiled,
        api_key=api_key,
        stream=args.stream,
        train=not args.no_train,
        fit_kwargs=fit,
        refit_kwargs=refit,
        min_points=args.min_points,
        twin_runs_only=args.twin_runs_only,
        include_failed=args.include_failed,
        fill_timeout=args.fill_timeout,
        stop_timeout=args.stop_timeout,
        grace=args.grace,
    )


def _serve(args: argparse.Namespace) -> int:
    import signal

    config = _config(args)
    from bluesky_twin.service._service import TrainerService

    service = TrainerService(config)

    def stop(signum: int, frame: object) -> None:
        service.stop_event.set()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        service.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if service._bus_error:
        import sys

        print(f"bluesky-twin: error: the bus subscriber stopped: {service._bus_error}", file=sys.stderr, flush=True)
        return 1
    print(f"trainer service: stopped ({service.status_file})", flush=True)
    return 0


def _status(args: argparse.Namespace) -> int:
    import json

    from bluesky_twin.errors import InputError
    from bluesky_twin.service._status import read_status, status_path

    status = read_status(args.model_dir)
    if status is None:
        raise InputError(f"no trainer service status at {status_path(args.model_dir)}")
    print(json.dumps(status, indent=2, sort_keys=True))
    return 0
