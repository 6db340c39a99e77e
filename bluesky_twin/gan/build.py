"""End-to-end recipe of a shippable model: data, GAN, domain calibration, classifiers.

This is what ``bluesky-twin ins train`` runs.  Data recipe:

* ``generate_dataset(n, seed)`` simulates ``n`` paired cut frames; a seeded
  permutation splits them into two disjoint halves.  Domain A (experiment-like,
  convolved, NaN-masked) is taken from the first half, domain B (unconvolved) from
  the second, so the GAN never sees a pair.
* The domain-score reference bank is ``n_reference`` A frames; ``n_calibration``
  *other* A frames give the train-vs-train distribution, ``digits_control`` the
  out-of-distribution one.
* Two DUQ classifiers (sign of J2) are trained on 80 % of all ``n`` frames:
  one on the unconvolved maps, one on the convolved frames
  (:func:`train_classifiers`; ``clf_input_scale`` picks their input scaling).

:func:`retrain_classifiers` (``bluesky-twin ins train-classifiers``) retrains only the
two classifiers of an existing model directory on its recorded data recipe and leaves
the generators, the domain-score reference and calibration untouched.
"""
from __future__ import annotations

import logging
import platform
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from bluesky_twin.errors import InputError

__all__ = ["build_model", "maps_sigma_bounds", "retrain_classifiers", "split_indices", "train_classifiers",
           "training_split"]

log = logging.getLogger(__name__)


def split_indices(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint halves (domain A indices, domain B indices) of ``range(n)``."""
    perm = np.random.default_rng(np.random.SeedSequence([int(seed), 101])).permutation(n)
    return np.sort(perm[: n // 2]), np.sort(perm[n // 2 :])


def training_split(meta: dict[str, Any]) -> dict[str, np.ndarray]:
    """Regenerate the training data recorded in a model's metadata.

    Returns
    -------
    dict
        ``reference``, ``calibration`` (A frames), ``A``, ``B`` index arrays and the
        dataset under ``dataset``.
    """
    from bluesky_twin.ins.dataset import generate_dataset

    info = meta["training"]["data"]
    ds = generate_dataset(int(info["n"]), seed=int(info["seed"]), geometry=info["geometry"], size=int(info["size"]),
                          **data_recipe(meta))
    ia, ib = split_indices(len(ds), int(info["seed"]))
    n_ref, n_cal = int(info["n_reference"]), int(info["n_calibration"])
    return {"dataset": ds, "A": ia, "B": ib, "reference": ia[:n_ref], "calibration": ia[n_ref : n_ref + n_cal]}


def train_classifiers(
    dataset: Any,
    *,
    seed: int,
    epochs: int = 15,
    input_scale: str | None = None,
    progress: bool = False,
) -> tuple[dict[str, Any], float]:
    """Train the two DUQ classifiers (sign of J2) of a model on 80 % of ``dataset``.

    A permutation seeded by ``SeedSequence([seed, 102])`` picks the 80 % training and
    20 % validation frames; both classifiers (one on ``dataset.unconvolved``, one on
    ``dataset.convolved``) use the same split and weight seed.

    Parameters
    ----------
    dataset
        A :class:`bluesky_twin.ins.InsDataset` (the model's training data).
    seed
        Split and weight seed.
    epochs
        DUQ epochs (>= 1).
    input_scale
        ``"log"`` or ``"linear"`` (see :func:`bluesky_twin.ins.duq.scale_frames`);
        ``None``: the DUQ default.
    progress
        tqdm bars.

    Returns
    -------
    classifiers, seconds
        ``{"unconvolved": clf, "convolved": clf}`` (``clf.metadata`` holds
        ``trained_on`` and ``validation_accuracy``) and the wall time of both fits.
    """
    from bluesky_twin.ins.duq import DUQClassifier

    n = len(dataset)
    perm = np.random.default_rng(np.random.SeedSequence([int(seed), 102])).permutation(n)
    tr, val = perm[: int(0.8 * n)], perm[int(0.8 * n) :]
    classifiers: dict[str, Any] = {}
    t0 = time.perf_counter()
    for kind, frames in (("unconvolved", dataset.unconvolved), ("convolved", dataset.convolved)):
        clf = DUQClassifier(input_scale=input_scale).fit(frames[tr], dataset.labels[tr], epochs=epochs,
                                                         seed=seed, progress=progress)
        clf.metadata = {"trained_on": kind, "validation_accuracy": float(clf.score(frames[val], dataset.labels[val]))}
        classifiers[kind] = clf
    return classifiers, time.perf_counter() - t0


def _classifier_record(classifiers: dict[str, Any], epochs: int) -> dict[str, Any]:
    first = next(iter(classifiers.values()))
    return {"epochs": int(epochs), "input_scale": first.input_scale, "split": "SeedSequence([seed, 102]) 80/20",
            "validation_accuracy": {k: c.metadata["validation_accuracy"] for k, c in classifiers.items()}}


def data_recipe(meta: dict[str, Any]) -> dict[str, Any]:
    """The experiment-like recipe overrides recorded in a model's metadata (``{}``: defaults)."""
    return recipe_from_json(meta.get("training", {}).get("data", {}).get("recipe") or {})


def recipe_to_json(recipe: dict[str, Any]) -> dict[str, Any]:
    """Recipe overrides as JSON values (tuples become lists); :func:`recipe_from_json` inverts it."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in recipe.items()}


def recipe_from_json(recipe: dict[str, Any]) -> dict[str, Any]:
    """Recipe overrides from JSON values (lists become tuples, as the recipe's ranges are)."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in recipe.items()}


def _energy_range(recipe: dict[str, Any]) -> tuple[float, float]:
    """The energy axis (meV) of frames generated with *recipe* (rows span it evenly)."""
    from bluesky_twin.ins.frames import Recipe

    lo, hi = Recipe.from_overrides(recipe).e_range
    return float(lo), float(hi)


def maps_sigma_bounds(recipe: dict[str, Any] | None, n_rows: int,
                      margin: float = 1.0) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-row bounds (pixels) of the Sim2Exp broadening width from the instrument's resolution.

    For each energy row of a frame generated with *recipe* (``n_rows`` rows spanning its
    ``e_range``), the MAPS width ``sigma(E)`` of every incident energy in the recipe's
    ``e_init`` at its chopper setting (:func:`bluesky_twin.ins.resolution.maps_resolution`,
    what a user of the instrument knows); the lower bound is the smallest of them divided
    by *margin*, the upper bound the largest times *margin*, both in rows.

    Parameters
    ----------
    recipe
        Experiment-like recipe overrides (``{}`` or ``None``: the defaults).
    n_rows
        Energy rows of the frames.
    margin
        Widening factor (>= 1) of the range on both sides.

    Returns
    -------
    lower, upper
        Tuples of ``n_rows`` widths in pixels (rows).

    Raises
    ------
    InputError
        For ``n_rows < 1``, ``margin < 1`` or a recipe the resolution model rejects.
    """
    from bluesky_twin.ins.frames import Recipe
    from bluesky_twin.ins.resolution import maps_resolution

    if int(n_rows) < 1:
        raise InputError(f"n_rows must be >= 1, got {n_rows}")
    if not (np.isfinite(margin) and margin >= 1.0):
        raise InputError(f"the width-bound margin must be a number >= 1, got {margin!r}")
    rec = Recipe.from_overrides(recipe)
    lo_e, hi_e = rec.e_range
    row = (hi_e - lo_e) / int(n_rows)
    energies = lo_e + (np.arange(int(n_rows)) + 0.5) * row
    sig = np.stack([maps_resolution(ei, rec.chopper_frequency, rec.chopper_package).sigma(energies)
                    for ei in rec.e_init]) / row
    lower = sig.min(axis=0) / float(margin)
    upper = sig.max(axis=0) * float(margin)
    if len(rec.e_init) == 1 and margin == 1.0:
        raise InputError("one incident energy and margin 1 leave no range for the width; use a margin > 1")
    return tuple(round(float(v), 5) for v in lower), tuple(round(float(v), 5) for v in upper)


def data_geometry(meta: dict[str, Any]) -> str:
    """The frame geometry a model was trained on (``"cut"`` for models that do not say)."""
    return str(meta.get("training", {}).get("data", {}).get("geometry", "cut"))


def build_model(
    out_dir: str | Path,
    *,
    n: int = 2000,
    seed: int = 0,
    size: int = 64,
    preset: str = "small",
    iterations: int = 1500,
    batch_size: int = 8,
    crop: int | None = None,
    lr: float = 2e-4,
    n_reference: int = 256,
    n_calibration: int = 200,
    clf_epochs: int = 15,
    clf_input_scale: str | None = None,
    geometry: str = "cut",
    recipe: dict[str, Any] | None = None,
    sim2exp_resolution: bool = False,
    resolution_init_sigma: float = 3.0,
    resolution_lr_scale: float = 50.0,
    resolution_instrument: bool = True,
    resolution_residual: bool = False,
    resolution_bose: bool = False,
    resolution_maps_bounds: bool = False,
    resolution_bounds_margin: float = 1.0,
    resolution_stochastic: bool = False,
    resolution_poisson: bool = False,
    resolution_spread_max: float | None = None,
    resolution_column_terms: bool = False,
    refill_masked: bool = False,
    pseudo_pair_weight: float = 0.0,
    pseudo_pair_widths: str = "learned",
    pseudo_pair_finetune: int = 0,
    num_threads: int | None = None,
    progress: bool = True,
    command: str | None = None,
) -> dict[str, Any]:
    """Train and save a complete model directory.

    Parameters
    ----------
    out_dir
        Model directory to write (replaced atomically at the end).
    n, seed, size
        Simulated frames, seed and frame size.
    preset, iterations, batch_size, crop, lr
        GAN architecture preset and optimisation.
    n_reference, n_calibration
        Domain-score reference bank and calibration set sizes (A frames).
    clf_epochs
        DUQ classifier epochs; 0 skips the classifiers.
    clf_input_scale
        The classifiers' input scaling, ``"log"`` or ``"linear"``; ``None``: the DUQ
        default (:data:`bluesky_twin.ins.duq.DEFAULT_INPUT_SCALE`).
    geometry, recipe
        ``generate_dataset``'s geometry (``"cut"`` or ``"powder"``) and overrides of
        its experiment-like recipe (e.g. ``{"e_init": (50, 60, 70),
        "chopper_frequency": 100}`` for coarser energy resolution); both are recorded
        in the metadata and reused by ``ins evaluate`` and ``train-classifiers``.
    sim2exp_resolution, resolution_init_sigma, resolution_lr_scale, resolution_instrument, resolution_residual, resolution_bose
        Give Sim2Exp the explicit, learnable energy-resolution broadening
        (``GanConfig(sim2exp_resolution=True, resolution_init_sigma=...)``, widths in
        pixels), the learning-rate multiplier of its parameters
        (``TrainConfig.resolution_lr_scale``) and optionally its learnable elastic
        line, background and counting noise (``GanConfig.resolution_instrument``) and
        the gated ResNet correction or not (``GanConfig.resolution_residual``), and with
        the instrument terms a Bose factor on the recipe's energy axis
        (``resolution_bose``: ``GanConfig.resolution_energy_range``); the
        learned values are recorded under ``training.sim2exp_resolution``.  The defaults
        here (and on the command line) are the measured best, instrument terms on and no
        residual; ``GanConfig``'s own defaults keep older metadata meaning what it meant.
    resolution_maps_bounds, resolution_bounds_margin
        Bound the broadening width, row by row, to the MAPS resolution range of the
        recipe's incident energies widened by the margin (:func:`maps_sigma_bounds`,
        ``GanConfig.resolution_sigma_bounds``).
    resolution_stochastic
        Per-frame widths and instrument amplitudes in training
        (``GanConfig.resolution_stochastic``).
    resolution_poisson
        Poisson-valued counting noise in training (``GanConfig.resolution_poisson``; needs
        the instrument terms).
    resolution_spread_max
        Cap of the per-frame spreads (``GanConfig.resolution_spread_max``; needs
        ``resolution_stochastic``).
    resolution_column_terms
        Elastic line and background that vary along the columns (``|Q|``)
        (``GanConfig.resolution_column_terms``; needs the instrument terms).
    refill_masked
        Fill translations at their input's masked pixels as real frames are filled before
        the discriminators see them (``TrainConfig.refill_masked``).
    pseudo_pair_weight, pseudo_pair_widths, pseudo_pair_finetune
        The pseudo-pair term for Exp2Sim and its Exp2Sim-only fine-tune after the GAN
        (``TrainConfig.pseudo_pair_weight``, ``pseudo_pair_widths``, ``pseudo_pair_finetune``).
    num_threads
        ``torch.set_num_threads`` for the whole build.
    progress
        Progress bars.
    command
        The command line, recorded in the metadata.

    Returns
    -------
    dict
        The training section of the metadata (timings, final losses, calibration).
    """
    import torch

    from bluesky_twin.gan.domain import DomainScorer
    from bluesky_twin.gan.model import Exp2SimModel
    from bluesky_twin.gan.networks import GanConfig, count_parameters
    from bluesky_twin.gan.preprocess import Scaling, to_model_space
    from bluesky_twin.gan.train import TrainConfig, plot_losses, train_gan
    from bluesky_twin.ins.dataset import digits_control, generate_dataset

    if n < 2 * (n_reference + n_calibration):
        raise InputError(f"n={n} is too small: need n >= 2 * (n_reference + n_calibration) = "
                         f"{2 * (n_reference + n_calibration)}")
    if num_threads:
        torch.set_num_threads(int(num_threads))
    t_start = time.perf_counter()
    if (resolution_maps_bounds or resolution_stochastic or resolution_poisson) and not sim2exp_resolution:
        raise InputError("resolution_maps_bounds, resolution_stochastic and resolution_poisson need "
                         "sim2exp_resolution")
    if resolution_spread_max is not None and not resolution_stochastic:
        raise InputError("resolution_spread_max needs resolution_stochastic")
    if resolution_column_terms and not (sim2exp_resolution and resolution_instrument):
        raise InputError("resolution_column_terms needs sim2exp_resolution with the instrument terms")
    if resolution_poisson and not resolution_instrument:
        raise InputError("resolution_poisson needs the instrument terms (resolution_instrument)")
    if sim2exp_resolution:
        bounds = maps_sigma_bounds(recipe, size, resolution_bounds_margin) if resolution_maps_bounds else None
        config = GanConfig.preset(preset, sim2exp_resolution=True, resolution_init_sigma=float(resolution_init_sigma),
                                  resolution_instrument=bool(resolution_instrument),
                                  resolution_residual=bool(resolution_residual),
                                  resolution_energy_range=(_energy_range(recipe)
                                                           if resolution_instrument and resolution_bose else None),
                                  resolution_sigma_bounds=bounds,
                                  resolution_stochastic=bool(resolution_stochastic),
                                  resolution_poisson=bool(resolution_poisson),
                                  resolution_spread_max=resolution_spread_max,
                                  resolution_column_terms=bool(resolution_column_terms))
    else:
        config = GanConfig.preset(preset)
    tc = TrainConfig(iterations=iterations, batch_size=batch_size, crop=crop, lr=lr, seed=seed,
                     resolution_lr_scale=float(resolution_lr_scale), refill_masked=bool(refill_masked),
                     pseudo_pair_weight=float(pseudo_pair_weight), pseudo_pair_widths=str(pseudo_pair_widths),
                     pseudo_pair_finetune=int(pseudo_pair_finetune))
    scaling = Scaling()

    t0 = time.perf_counter()
    recipe = dict(recipe or {})
    ds = generate_dataset(n, seed=seed, geometry=geometry, size=size, progress=progress, **recipe)
    t_data = time.perf_counter() - t0
    ia, ib = split_indices(n, seed)
    result = train_gan(ds.convolved[ia], ds.unconvolved[ib], config, tc, scaling, progress=progress)
    n_parameters = count_parameters(result.G_A)  # before Exp2SimModel freezes them (count_parameters: trainable)

    # domain score: reference bank + calibration (train-vs-train, digits)
    ref_idx, cal_idx = ia[:n_reference], ia[n_reference : n_reference + n_calibration]
    reference, _ = to_model_space(ds.convolved[ref_idx], scaling)
    model = Exp2SimModel(result.G_A, result.G_B, config, scaling, reference=reference)
    digits = digits_control(n_calibration, size=size, seed=seed + 1)
    t0 = time.perf_counter()
    calibration = model.scorer.calibrate(model.features(ds.convolved[cal_idx]), model.features(digits), seed=seed)
    t_cal = time.perf_counter() - t0

    # classifiers (sign of J2) on 80 % of the frames
    classifiers: dict[str, Any] = {}
    t_clf = 0.0
    if clf_epochs > 0:
        classifiers, t_clf = train_classifiers(ds, seed=seed, epochs=clf_epochs, input_scale=clf_input_scale,
                                               progress=progress)

    total = time.perf_counter() - t_start
    final = {k: float(np.mean(v[-50:])) for k, v in result.history.items()}
    training = {
        "command": command,
        "seed": seed,
        "data": {"generator": "bluesky_twin.ins.generate_dataset", "n": n, "seed": seed, "geometry": geometry,
                 "recipe": recipe_to_json(recipe),
                 "size": size, "split": "disjoint halves: A = convolved[first], B = unconvolved[second]",
                 "n_reference": n_reference, "n_calibration": n_calibration,
                 "ood_control": f"digits_control({n_calibration}, size={size}, seed={seed + 1})"},
        "train_config": asdict(tc),
        "preset": preset,
        "parameters_per_generator": n_parameters,
        "final_losses_last50": final,
        "s_per_iteration": result.s_per_iteration,
        "seconds": {"data": t_data, "gan": result.seconds,
                    "pseudo_pair_finetune": result.extra.get("pseudo_pair_finetune_seconds", 0.0),
                    "calibration": t_cal, "classifiers": t_clf, "total": total},
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "calibration": calibration,
        "classifier_validation_accuracy": {k: c.metadata["validation_accuracy"] for k, c in classifiers.items()},
    }
    if classifiers:
        training["classifiers"] = _classifier_record(classifiers, clf_epochs)
    if "resolution" in result.extra:
        e_lo, e_hi = _energy_range(recipe)
        rows = len(result.extra["resolution"]["sigma_rows"])
        training["sim2exp_resolution"] = dict(result.extra["resolution"],
                                              sigma_meV=[round(v * (e_hi - e_lo) / rows, 4)
                                                         for v in result.extra["resolution"]["sigma_rows"]],
                                              energy_range_meV=[e_lo, e_hi])
        if config.resolution_sigma_bounds is not None:
            training["sim2exp_resolution"]["sigma_bounds_meV"] = [
                [round(v * (e_hi - e_lo) / rows, 4) for v in b] for b in config.resolution_sigma_bounds]
            training["sim2exp_resolution"]["sigma_bounds_source"] = (
                f"MAPS resolution over e_init, margin {float(resolution_bounds_margin):g}")
    model.metadata = {"training": training}
    model.classifiers = classifiers
    history = result.history

    def write_plots(tmp: Path) -> None:
        tmp.mkdir()
        plot_losses(history, tmp)

    out_dir = Path(out_dir)
    model.save(out_dir, extra_writers={"plots": write_plots})
    return training


def retrain_classifiers(
    model_dir: str | Path,
    *,
    clf_epochs: int = 15,
    input_scale: str | None = None,
    num_threads: int | None = None,
    progress: bool = True,
    command: str | None = None,
) -> dict[str, Any]:
    """Retrain only the two DUQ classifiers of an existing model directory.

    The training data are regenerated from the recipe recorded in the model's
    ``metadata.json`` (``training.data``: ``generate_dataset(n, seed, geometry, size)``)
    and split as :func:`build_model` splits them (:func:`train_classifiers`, seeded by
    the recorded seed).  The generators, the domain-score reference and its calibration
    are not touched (their files and checksums stay byte-identical).  The result is
    published as a new version of the model directory (the previous one is kept); its
    ``metadata.json`` has ``classifiers``,
    ``training.classifier_validation_accuracy`` and ``training.classifiers`` are
    updated and the run is recorded under ``training.classifier_retraining`` (command,
    input scale, epochs, seconds, threads, torch version, time stamp).  The recorded
    GAN training timings (``training.seconds``) describe the original ``ins train``
    run and are kept.

    Parameters
    ----------
    model_dir
        A model directory written by ``ins train`` (needs ``training.data``).
    clf_epochs
        DUQ epochs (>= 1).
    input_scale
        ``"log"`` or ``"linear"``; ``None``: the DUQ default.
    num_threads
        ``torch.set_num_threads`` during the fits.
    progress
        Progress bars.
    command
        The command line, recorded in the metadata.

    Returns
    -------
    dict
        The ``training.classifier_retraining`` record.

    Raises
    ------
    ModelFileError
        If the directory is not a readable model or lacks the data recipe.
    InputError
        For ``clf_epochs < 1`` or an unknown ``input_scale``.
    """
    import datetime

    import torch

    from bluesky_twin.errors import ModelFileError
    from bluesky_twin.gan.checkpoint import FORMAT, check_metadata
    from bluesky_twin.gan.model import CLASSIFIER_DIRS
    from bluesky_twin.ins.duq import INPUT_SCALES
    from bluesky_twin.modeldir import open_version, write_version

    if isinstance(clf_epochs, bool) or not isinstance(clf_epochs, (int, np.integer)) or clf_epochs < 1:
        raise InputError(f"clf_epochs must be an integer >= 1, got {clf_epochs!r}")
    if input_scale is not None and input_scale not in INPUT_SCALES:
        raise InputError(f"input_scale must be one of {INPUT_SCALES}, got {input_scale!r}")
    path = Path(model_dir)
    version = open_version(path, FORMAT)  # held in memory: the files carried over are these bytes
    meta = dict(check_metadata(version))
    training = meta.get("training")
    if not isinstance(training, dict) or not isinstance(training.get("data"), dict):
        raise ModelFileError(f"{path}/metadata.json records no training data recipe (training.data)")
    try:
        split = training_split(meta)
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(f"{path}/metadata.json has an invalid training.data recipe: {exc!r}") from None
    seed = int(training["data"]["seed"])
    old_threads = torch.get_num_threads()
    if num_threads:
        torch.set_num_threads(int(num_threads))
    try:
        classifiers, seconds = train_classifiers(split["dataset"], seed=seed, epochs=int(clf_epochs),
                                                 input_scale=input_scale, progress=progress)
        threads = torch.get_num_threads()
    finally:
        torch.set_num_threads(old_threads)
    record = {
        "command": command,
        "input_scale": next(iter(classifiers.values())).input_scale,
        "epochs": int(clf_epochs),
        "seconds": seconds,
        "torch_threads": threads,
        "torch": torch.__version__,
        "platform": platform.platform(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "note": "only the classifiers were retrained; generators, reference and calibration unchanged",
    }
    meta["classifiers"] = {k: CLASSIFIER_DIRS[k] for k in classifiers}
    training["classifier_validation_accuracy"] = {k: c.metadata["validation_accuracy"] for k, c in classifiers.items()}
    training["classifiers"] = _classifier_record(classifiers, clf_epochs)
    training["classifier_retraining"] = record
    replaced = tuple(f"{d}/" for d in CLASSIFIER_DIRS.values())

    def write_files(tmp: Path) -> None:
        for rel, data in version.files.items():  # everything else, byte for byte
            if rel == "metadata.json" or rel.startswith(replaced):
                continue
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / rel).write_bytes(data)
        for kind, clf in classifiers.items():
            clf.write_files(tmp / CLASSIFIER_DIRS[kind])

    write_version(path, {k: v for k, v in meta.items() if k != "files"}, write_files)
    return record
