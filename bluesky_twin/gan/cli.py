"""``bluesky-twin ins train | train-classifiers | evaluate | score`` (Exp2SimGAN).

Only argparse is imported at module level; torch, POT and the INS simulation are
imported inside the command functions.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``train``, ``train-classifiers``, ``evaluate`` and ``score`` to the ``ins`` sub-command."""
    p = subparsers.add_parser(
        "train",
        help="train an Exp2SimGAN model (+ DUQ classifiers, domain calibration)",
        description="Train an Exp2SimGAN model directory. Every option below sets one field of the build "
        "configuration (bluesky_twin.gan.config.BuildConfig); --config FILE gives all of them as "
        "JSON, and options given as well override the file. --print-config shows the result.",
    )
    p.add_argument("--out", type=Path, default=None, help="model directory to write (required unless --print-config)")
    p.add_argument(
        "--config",
        type=Path,
        default=None,
        metavar="FILE",
        help="JSON build configuration {gan, train, data, classifiers} (see docs/gan.md); options given "
        "on the command line override it",
    )
    p.add_argument(
        "--print-config",
        action="store_true",
        help="print the validated build configuration as JSON and exit without training",
    )
    g = p.add_argument_group("data (DataConfig)")
    g.add_argument("--n", type=int, default=None, help="simulated paired frames (default 2000)")
    g.add_argument("--seed", type=int, default=None, help="data, split, classifier and training seed (default 0)")
    g.add_argument("--size", type=int, default=None, help="frame size (default 64)")
    g.add_argument("--geometry", choices=["cut", "powder"], default=None, help="frame geometry (default cut)")
    g.add_argument(
        "--recipe",
        action="append",
        default=[],
        metavar="KEY=JSON",
        help="override the experiment-like recipe, e.g. --recipe 'e_init=[50,60,70]' "
        "--recipe chopper_frequency=100 (repeatable); --recipe mask_unconvolved=true gives "
        "the unconvolved maps the frames' coverage mask",
    )
    g.add_argument("--n-reference", type=int, default=None, help="domain-score reference frames (default 256)")
    g.add_argument("--n-calibration", type=int, default=None, help="domain-score calibration frames (default 200)")
    g = p.add_argument_group("architecture (GanConfig)")
    g.add_argument("--preset", choices=["small", "paper"], default=None, help="size preset (default small)")
    g.add_argument(
        "--sim2exp-resolution-layer",
        action="store_true",
        default=None,
        help="give Sim2Exp the learnable energy-resolution layer (ResolutionConfig defaults: instrument "
        "terms on, no ResNet correction); needs whole frames (no --crop)",
    )
    g.add_argument(
        "--resolution-init-sigma",
        type=float,
        default=None,
        help="initial broadening width in pixels (rows) (default 3)",
    )
    g.add_argument(
        "--resolution-maps-bounds",
        action="store_true",
        default=None,
        help="bound the width, row by row, to the MAPS resolution of the recipe's incident energies",
    )
    g.add_argument(
        "--resolution-stochastic",
        action="store_true",
        default=None,
        help="draw a width and instrument amplitudes per frame in training (learnable spreads); "
        "translation uses the central values",
    )
    g.add_argument(
        "--resolution-poisson",
        action="store_true",
        default=None,
        help="Poisson-valued counting noise in training (straight-through gradient)",
    )
    g = p.add_argument_group("training (TrainConfig)")
    g.add_argument("--iterations", type=int, default=None, help="optimiser steps (default 1500)")
    g.add_argument("--batch-size", type=int, default=None, help="frames per domain and step (default 8)")
    g.add_argument("--crop", type=int, default=None, help="train on random crops of this size")
    g.add_argument("--lr", type=float, default=None, help="Adam learning rate (default 2e-4)")
    g.add_argument(
        "--resolution-lr-scale",
        type=float,
        default=None,
        help="learning-rate multiplier of the resolution layer (default 50)",
    )
    g.add_argument(
        "--pseudo-pair-weight",
        type=float,
        default=None,
        metavar="W",
        help="weight of the pseudo-pair term L1(Exp2Sim(Sim2Exp(b)), b): Exp2Sim learns to undo "
        "Sim2Exp's output, whose ground truth is known; no real pair is used (default 0: off)",
    )
    g.add_argument(
        "--pseudo-pair-widths",
        choices=("learned", "uniform"),
        default=None,
        help="pseudo pairs broadened with Sim2Exp's learned widths, or with widths drawn uniformly "
        "across the MAPS bounds (needs --resolution-maps-bounds); default learned",
    )
    g.add_argument(
        "--pseudo-pair-finetune",
        type=int,
        default=None,
        metavar="STEPS",
        help="after the GAN, train Exp2Sim alone for STEPS more steps on pseudo pairs of the final "
        "Sim2Exp (default 0: off)",
    )
    g = p.add_argument_group("classifiers (ClassifierConfig)")
    g.add_argument("--clf-epochs", type=int, default=None, help="DUQ classifier epochs (default 15; 0: none)")
    g.add_argument(
        "--clf-input-scale",
        choices=["log", "linear"],
        default=None,
        help="DUQ classifier input scaling (default: the DUQ default)",
    )
    g = p.add_argument_group("run")
    g.add_argument("--threads", type=int, default=None, help="torch threads")
    g.add_argument(
        "--overwrite",
        "--force",
        dest="force",
        action="store_true",
        help="publish a new version into an existing Exp2SimGAN model directory (the previous "
        "versions are kept); a directory or file that holds anything else is never replaced",
    )
    g.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_run_train)

    p = subparsers.add_parser(
        "train-classifiers", help="retrain only the DUQ classifiers of a model directory (generators unchanged)"
    )
    p.add_argument("--model", required=True, type=Path, help="model directory to update in place")
    p.add_argument("--clf-epochs", type=int, default=15, help="DUQ classifier epochs (default 15)")
    p.add_argument(
        "--input-scale",
        choices=["log", "linear"],
        default=None,
        help="classifier input scaling (default: the DUQ default)",
    )
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_run_train_classifiers)

    p = subparsers.add_parser("evaluate", help="accuracy table + domain scores on a fresh test set")
    p.add_argument("--model", type=Path, default=None, help="model directory (default: the shipped model)")
    p.add_argument("--n", type=int, default=500, help="test frames (default 500)")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--n-domain", type=int, default=200, help="frames per domain-score set")
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    p.add_argument(
        "--sim2exp-unmasked-input",
        action="store_true",
        help="models trained with mask_unconvolved=true: also translate the unmasked simulations of the "
        "test frames (mask put back afterwards)",
    )
    p.set_defaults(func=_run_evaluate)

    p = subparsers.add_parser("score", help="domain-of-applicability score of frames in a .npy file")
    p.add_argument("frames", type=Path, help=".npy file holding an (N, H, W) array (NaN allowed)")
    p.add_argument("--model", type=Path, default=None, help="model directory (default: the shipped model)")
    p.add_argument("--json", type=Path, default=None, help="write per-frame scores and zones here")
    p.add_argument("--translated", type=Path, default=None, help="also write the Exp2Sim frames (.npy)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace existing --json / --translated files (never the input frames file)",
    )
    p.set_defaults(func=_run_score)


def _check_output(path: Path | None) -> None:
    from bluesky_twin.errors import InputError

    if path is not None and not path.parent.exists():
        raise InputError(f"output directory {path.parent} does not exist")


def _parse_recipe(items: list[str]) -> dict[str, object]:
    """``["e_init=[50,60,70]", "chopper_frequency=100"]`` -> overrides (JSON values, lists as tuples).

    The option's syntax and key names are checked here; the values are checked by
    :class:`~bluesky_twin.gan.config.DataConfig` (the recipe's own validation).
    """
    import dataclasses
    import json

    from bluesky_twin.errors import InputError
    from bluesky_twin.gan.config import recipe_from_json
    from bluesky_twin.ins.frames import Recipe

    known = {f.name for f in dataclasses.fields(Recipe)}
    out: dict[str, object] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or key not in known:
            raise InputError(f"--recipe {item!r}: expected KEY=VALUE with KEY one of {sorted(known)}")
        try:
            value = json.loads(text)
        except ValueError:
            raise InputError(f"--recipe {item!r}: the value is not JSON (e.g. 100 or [50, 60, 70])") from None
        out[key] = value
    return recipe_from_json(out)


#: ``ins train`` option -> the build-configuration fields it sets (``BuildConfig.to_dict`` paths).
TRAIN_FLAGS: dict[str, tuple[tuple[str, ...], ...]] = {
    "n": (("data", "n"),),
    "seed": (("data", "seed"), ("train", "seed")),
    "size": (("data", "size"),),
    "geometry": (("data", "geometry"),),
    "n_reference": (("data", "n_reference"),),
    "n_calibration": (("data", "n_calibration"),),
    "preset": (("gan", "preset"),),
    "resolution_init_sigma": (("gan", "resolution", "init_sigma"),),
    "resolution_maps_bounds": (("gan", "resolution", "sigma_bounds"),),
    "resolution_stochastic": (("gan", "resolution", "stochastic"),),
    "resolution_poisson": (("gan", "resolution", "poisson"),),
    "iterations": (("train", "iterations"),),
    "batch_size": (("train", "batch_size"),),
    "crop": (("train", "crop"),),
    "lr": (("train", "lr"),),
    "resolution_lr_scale": (("train", "resolution_lr_scale"),),
    "pseudo_pair_weight": (("train", "pseudo_pair", "weight"),),
    "pseudo_pair_widths": (("train", "pseudo_pair", "widths"),),
    "pseudo_pair_finetune": (("train", "pseudo_pair", "finetune"),),
    "clf_epochs": (("classifiers", "epochs"),),
    "clf_input_scale": (("classifiers", "input_scale"),),
}
#: The value a switch sets (``--resolution-maps-bounds`` names the bounds' source).
_SWITCH_VALUES = {"resolution_maps_bounds": "maps"}
#: Config class of each path prefix (their error messages start with ``Class.field``).
_CONFIG_CLASSES = {
    ("data",): "DataConfig",
    ("gan",): "GanConfig",
    ("gan", "resolution"): "ResolutionConfig",
    ("train",): "TrainConfig",
    ("train", "pseudo_pair"): "PseudoPairConfig",
    ("classifiers",): "ClassifierConfig",
}


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def _train_config(args: argparse.Namespace):
    """The :class:`~bluesky_twin.gan.config.BuildConfig` of ``ins train``: the ``--config`` file (or the
    defaults) with the options given on the command line applied; validated once, by the config classes."""
    from bluesky_twin.errors import InputError
    from bluesky_twin.gan.config import BuildConfig, read_config_file

    raw = read_config_file(args.config) if args.config is not None else {}
    given = {dest: getattr(args, dest) for dest in TRAIN_FLAGS if getattr(args, dest) is not None}
    gan = raw.get("gan") if isinstance(raw.get("gan"), dict) else None
    has_layer = bool(args.sim2exp_resolution_layer) or (gan is not None and gan.get("resolution") is not None)
    needs_layer = [_flag(d) for d in given if TRAIN_FLAGS[d][0][:2] == ("gan", "resolution")]
    if needs_layer and not has_layer:
        raise InputError(f"{', '.join(needs_layer)} need --sim2exp-resolution-layer (or gan.resolution in --config)")
    if args.sim2exp_resolution_layer and (gan is None or gan.get("resolution") is None):
        raw.setdefault("gan", {})
        if not isinstance(raw["gan"], dict):
            raise InputError("the 'gan' entry of --config must be an object")
        raw["gan"]["resolution"] = {}
    for dest, value in given.items():
        for path in TRAIN_FLAGS[dest]:
            node = raw
            for key in path[:-1]:
                node = node.setdefault(key, {})
                if not isinstance(node, dict):
                    raise InputError(f"the {'.'.join(path[:-1])} entry of --config must be an object")
            node[path[-1]] = _SWITCH_VALUES.get(dest, value)
    if args.recipe:
        data = raw.setdefault("data", {})
        recipe = data.get("recipe") or {}
        data["recipe"] = {**recipe, **_parse_recipe(args.recipe)}
    try:
        return BuildConfig.from_dict(raw)
    except InputError as exc:
        raise InputError(_name_flags(str(exc), given)) from None


def _name_flags(message: str, given: dict[str, object]) -> str:
    """Name the option the user typed in a config error (``PseudoPairConfig.weight must ...`` ->
    ``--pseudo-pair-weight must ...``)."""
    for dest in given:
        for path in TRAIN_FLAGS[dest]:
            field = f"{_CONFIG_CLASSES.get(path[:-1], '')}.{path[-1]}"
            if message.startswith(field + " "):
                return _flag(dest) + message[len(field) :]
    return message


def _run_train(args: argparse.Namespace) -> int:
    import json

    from bluesky_twin.errors import InputError
    from bluesky_twin.gan.checkpoint import FORMAT
    from bluesky_twin.modeldir import prepare_output_dir

    if args.out is None and not args.print_config:
        raise InputError("ins train needs --out DIR (or --print-config)")
    if args.out is not None and not args.print_config:
        prepare_output_dir(args.out, FORMAT, overwrite=args.force)
    config = _train_config(args)
    if args.print_config:
        print(json.dumps(config.to_dict(), indent=2))
        return 0
    from bluesky_twin.gan.build import build_model

    command = "bluesky-twin ins train " + " ".join(sys.argv[3:]) if sys.argv[1:3] == ["ins", "train"] else None
    from bluesky_twin.modeldir import current_path, writer_lock

    with writer_lock(args.out):
        info = build_model(args.out, config, num_threads=args.threads, progress=not args.quiet, command=command)
    sec = info["seconds"]
    print(
        f"wrote {args.out} ({sec['total']:.0f} s total, GAN {sec['gan']:.0f} s, "
        f"{info['s_per_iteration']:.3f} s/iteration); loss curves in {current_path(args.out) / 'plots'}"
    )
    return 0


def _run_train_classifiers(args: argparse.Namespace) -> int:
    from bluesky_twin.errors import InputError

    if args.clf_epochs < 1:
        raise InputError("--clf-epochs must be >= 1")
    from bluesky_twin.gan.build import retrain_classifiers
    from bluesky_twin.gan.checkpoint import read_metadata
    from bluesky_twin.modeldir import writer_lock

    read_metadata(args.model)  # a readable model, before anything trains
    argv = sys.argv[1:3]
    command = (
        "bluesky-twin ins train-classifiers " + " ".join(sys.argv[3:]) if argv == ["ins", "train-classifiers"] else None
    )
    with writer_lock(args.model, option="--model"):
        rec = retrain_classifiers(
            args.model,
            clf_epochs=args.clf_epochs,
            input_scale=args.input_scale,
            num_threads=args.threads,
            progress=not args.quiet,
            command=command,
        )
    from bluesky_twin.gan.checkpoint import read_metadata

    acc = read_metadata(args.model)["training"]["classifier_validation_accuracy"]
    print(
        f"retrained the classifiers of {args.model} ({rec['input_scale']} input scale, {rec['epochs']} epochs, "
        f"{rec['seconds']:.0f} s; new version, the previous one kept); validation accuracy "
        + ", ".join(f"{k} {100 * v:.2f}%" for k, v in acc.items())
    )
    return 0


def _load(model_dir: Path | None):
    from bluesky_twin.gan.model import Exp2SimModel

    return Exp2SimModel.load(model_dir)


def _run_evaluate(args: argparse.Namespace) -> int:
    from bluesky_twin.errors import InputError

    if args.n < 20 or args.n_domain < 20:
        raise InputError("--n and --n-domain must be >= 20 (20 frames per Sinkhorn repeat)")
    _check_output(args.json)
    if args.json is not None:
        from bluesky_twin.modeldir import check_output_file

        check_output_file(args.json, overwrite=args.overwrite, option="--json")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from bluesky_twin.gan.evaluate import evaluate_model, format_table
    from bluesky_twin.io_utils import atomic_write_json, finite_json_data

    model = _load(args.model)
    res = evaluate_model(
        model,
        n=args.n,
        seed=args.seed,
        n_domain=args.n_domain,
        progress=True,
        sim2exp_unmasked_input=args.sim2exp_unmasked_input,
    )
    print(format_table(res))
    if args.json is not None:
        atomic_write_json(args.json, finite_json_data(res))
        print(f"wrote {args.json}")
    return 0


def _check_score_outputs(args: argparse.Namespace) -> None:
    """Refuse outputs that would overwrite the input, each other, or (without --overwrite) a file."""
    import os

    from bluesky_twin.errors import InputError

    outputs = [
        (flag, path) for flag, path in (("--json", args.json), ("--translated", args.translated)) if path is not None
    ]
    for flag, path in outputs:
        _check_output(path)
        if path.is_dir():
            raise InputError(f"{flag} {path} is a directory; give a file name")
        same_as_input = os.path.abspath(path) == os.path.abspath(args.frames) or (
            path.exists() and args.frames.exists() and os.path.samefile(path, args.frames)
        )
        if same_as_input:
            raise InputError(f"{flag} {path} is the input frames file; write the output elsewhere")
        if path.exists() and not args.overwrite:
            raise InputError(f"{flag} {path} exists; pass --overwrite to replace it")
    if len(outputs) == 2 and os.path.abspath(outputs[0][1]) == os.path.abspath(outputs[1][1]):
        raise InputError("--json and --translated name the same file")


def _read_frames_npy(path: Path):
    """The array of a .npy file (no pickles), or InputError with one line."""
    import numpy as np

    from bluesky_twin.errors import InputError

    if path.is_dir():
        raise InputError(f"{path} is a directory, not a .npy file of frames")
    if not path.is_file():
        raise InputError(f"{path} does not exist")
    try:
        with open(path, "rb") as fh:
            magic = fh.read(6)
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
    if magic != b"\x93NUMPY":
        raise InputError(f"{path} is not a .npy file (save the frames with numpy.save)")
    try:
        frames = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, SyntaxError, TypeError, MemoryError) as exc:
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise InputError(f"cannot read {path} as a .npy array: {reason}") from None
    return frames


def _model_frame_shape(model) -> tuple[int, ...] | None:
    """Frame shape the model takes (``model.frame_shape``, else its reference frames' shape)."""
    shape = getattr(model, "frame_shape", None)
    if shape is not None:
        return tuple(int(s) for s in shape)
    reference = getattr(model, "reference", None)
    return None if reference is None else tuple(int(s) for s in reference.shape[1:])


def _run_score(args: argparse.Namespace) -> int:
    import numpy as np

    from bluesky_twin.errors import InputError

    _check_score_outputs(args)
    frames = _read_frames_npy(args.frames)
    if not isinstance(frames, np.ndarray) or frames.ndim != 3:
        raise InputError(f"{args.frames} must hold an (N, H, W) array, got shape {getattr(frames, 'shape', None)}")
    model = _load(args.model)
    from bluesky_twin.gan.preprocess import validate_frames

    frames = validate_frames(frames, model.config.dims)
    if any(s % 4 for s in frames.shape[1:]):
        raise InputError(f"frame sizes must be divisible by 4, got {frames.shape[1:]}")
    expected = _model_frame_shape(model)
    if expected is not None and frames.shape[1:] != expected:
        size = "x".join(map(str, expected))
        raise InputError(
            f"{args.frames} holds {'x'.join(map(str, frames.shape[1:]))} frames; the model takes {size} frames"
        )
    out = model.translate_and_score(frames, keep_mask=True)
    res = {
        "model": str(args.model) if args.model else "shipped",
        "n": int(len(frames)),
        "thresholds": model.scorer.settings()["thresholds"],
        "frames": [
            {"index": i, "score": float(s), "zone": z} for i, (s, z) in enumerate(zip(out["scores"], out["zones"]))
        ],
    }
    for item in res["frames"][:20]:
        print(f"frame {item['index']:4d}  score {item['score']:12.1f}  {item['zone']}")
    if len(frames) > 20:
        print(f"... ({len(frames)} frames)")
    if args.translated is not None:
        from bluesky_twin.io_utils import atomic_path

        with atomic_path(args.translated) as tmp:
            np.save(tmp, out["translated"])
    if args.json is not None:
        from bluesky_twin.io_utils import atomic_write_json, finite_json_data

        atomic_write_json(args.json, finite_json_data(res))
    return 0
