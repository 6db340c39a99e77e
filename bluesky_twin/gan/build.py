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
  (:func:`train_classifiers`; ``ClassifierConfig.input_scale`` picks their input scaling).

What to build is one :class:`~bluesky_twin.gan.config.BuildConfig`.

:func:`retrain_classifiers` (``bluesky-twin ins train-classifiers``) retrains only the
two classifiers of an existing model directory on its recorded data recipe and leaves
the generators, the domain-score reference and calibration untouched.
"""

from __future__ import annotations

import logging
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from bluesky_twin.errors import InputError
from bluesky_twin.gan.config import BuildConfig, ClassifierConfig, recipe_from_json, recipe_to_json
from bluesky_twin.ins.resolution_config import recipe_energy_range

__all__ = [
    "build_model",
    "data_geometry",
    "data_recipe",
    "recipe_from_json",
    "recipe_to_json",
    "retrain_classifiers",
    "split_indices",
    "train_classifiers",
    "training_split",
]

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
    ds = generate_dataset(
        int(info["n"]), seed=int(info["seed"]), geometry=info["geometry"], size=int(info["size"]), **data_recipe(meta)
    )
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
        clf = DUQClassifier(input_scale=input_scale).fit(
            frames[tr], dataset.labels[tr], epochs=epochs, seed=seed, progress=progress
        )
        clf.metadata = {"trained_on": kind, "validation_accuracy": float(clf.score(frames[val], dataset.labels[val]))}
        classifiers[kind] = clf
    return classifiers, time.perf_counter() - t0


def _classifier_record(classifiers: dict[str, Any], epochs: int) -> dict[str, Any]:
    first = next(iter(classifiers.values()))
    return {
        "epochs": int(epochs),
        "input_scale": first.input_scale,
        "split": "SeedSequence([seed, 102]) 80/20",
        "validation_accuracy": {k: c.metadata["validation_accuracy"] for k, c in classifiers.items()},
    }


def data_recipe(meta: dict[str, Any]) -> dict[str, Any]:
    """The experiment-like recipe overrides recorded in a model's metadata (``{}``: defaults)."""
    return recipe_from_json(meta.get("training", {}).get("data", {}).get("recipe") or {})


def data_geometry(meta: dict[str, Any]) -> str:
    """The frame geometry a model was trained on (``"cut"`` for models that do not say)."""
    return str(meta.get("training", {}).get("data", {}).get("geometry", "cut"))


def build_model(
    out_dir: str | Path,
    config: BuildConfig | None = None,
    *,
    num_threads: int | None = None,
    progress: bool = True,
    command: str | None = None,
) -> dict[str, Any]:
    """Train and save a complete model directory.

    Parameters
    ----------
    out_dir
        Model directory to write (a new version is published atomically at the end).
    config
        What to build (:class:`~bluesky_twin.gan.config.BuildConfig`: architecture,
        training, data recipe, classifiers; validated when it was made).  ``None``: the
        defaults.  A resolution layer's ``sigma_bounds="maps"`` / ``energy_range="recipe"``
        are resolved against the data recipe, and the resolved architecture is stored.
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

    from bluesky_twin.gan.model import Exp2SimModel
    from bluesky_twin.gan.networks import count_parameters
    from bluesky_twin.gan.preprocess import Scaling, to_model_space
    from bluesky_twin.gan.train import plot_losses, train_gan
    from bluesky_twin.ins.dataset import digits_control, generate_dataset

    config = config if config is not None else BuildConfig()
    if not isinstance(config, BuildConfig):
        raise InputError(f"config must be a BuildConfig, got {type(config).__name__}")
    if num_threads:
        torch.set_num_threads(int(num_threads))
    t_start = time.perf_counter()
    data, tc = config.data, config.train
    gan = config.resolved_gan()
    scaling = Scaling()

    t0 = time.perf_counter()
    recipe = data.recipe_overrides()
    ds = generate_dataset(data.n, seed=data.seed, geometry=data.geometry, size=data.size, progress=progress, **recipe)
    t_data = time.perf_counter() - t0
    ia, ib = split_indices(data.n, data.seed)
    result = train_gan(ds.convolved[ia], ds.unconvolved[ib], gan, tc, scaling, progress=progress)
    n_parameters = count_parameters(result.G_A)  # before Exp2SimModel freezes them (count_parameters: trainable)

    # domain score: reference bank + calibration (train-vs-train, digits)
    ref_idx, cal_idx = ia[: data.n_reference], ia[data.n_reference : data.n_reference + data.n_calibration]
    reference, _ = to_model_space(ds.convolved[ref_idx], scaling)
    model = Exp2SimModel(result.G_A, result.G_B, gan, scaling, reference=reference)
    digits = digits_control(data.n_calibration, size=data.size, seed=data.seed + 1)
    t0 = time.perf_counter()
    calibration = model.scorer.calibrate(model.features(ds.convolved[cal_idx]), model.features(digits), seed=data.seed)
    t_cal = time.perf_counter() - t0

    # classifiers (sign of J2) on 80 % of the frames
    classifiers: dict[str, Any] = {}
    t_clf = 0.0
    clf = config.classifiers
    if clf.epochs > 0:
        classifiers, t_clf = train_classifiers(
            ds, seed=data.seed, epochs=clf.epochs, input_scale=clf.input_scale, progress=progress
        )

    total = time.perf_counter() - t_start
    final = {k: float(np.mean(v[-50:])) for k, v in result.history.items()}
    training = {
        "command": command,
        "seed": data.seed,
        "data": {
            "generator": "bluesky_twin.ins.generate_dataset",
            "n": data.n,
            "seed": data.seed,
            "geometry": data.geometry,
            "recipe": dict(data.recipe),
            "size": data.size,
            "split": "disjoint halves: A = convolved[first], B = unconvolved[second]",
            "n_reference": data.n_reference,
            "n_calibration": data.n_calibration,
            "ood_control": f"digits_control({data.n_calibration}, size={data.size}, seed={data.seed + 1})",
        },
        "train_config": tc.to_dict(),
        "preset": gan.preset_name(),
        "parameters_per_generator": n_parameters,
        "final_losses_last50": final,
        "s_per_iteration": result.s_per_iteration,
        "seconds": {
            "data": t_data,
            "gan": result.seconds,
            "pseudo_pair_finetune": result.extra.get("pseudo_pair_finetune_seconds", 0.0),
            "calibration": t_cal,
            "classifiers": t_clf,
            "total": total,
        },
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "calibration": calibration,
        "classifier_validation_accuracy": {k: c.metadata["validation_accuracy"] for k, c in classifiers.items()},
    }
    if classifiers:
        training["classifiers"] = _classifier_record(classifiers, clf.epochs)
    if "resolution" in result.extra:
        e_lo, e_hi = recipe_energy_range(recipe)
        rows = len(result.extra["resolution"]["sigma_rows"])
        training["sim2exp_resolution"] = dict(
            result.extra["resolution"],
            sigma_meV=[round(v * (e_hi - e_lo) / rows, 4) for v in result.extra["resolution"]["sigma_rows"]],
            energy_range_meV=[e_lo, e_hi],
        )
        if gan.resolution is not None and gan.resolution.sigma_bounds is not None:
            training["sim2exp_resolution"]["sigma_bounds_meV"] = [
                [round(v * (e_hi - e_lo) / rows, 4) for v in b] for b in gan.resolution.sigma_bounds
            ]
            training["sim2exp_resolution"]["sigma_bounds_source"] = (
                "MAPS resolution over e_init" if config.gan.resolution.sigma_bounds == "maps" else "explicit"
            )
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
    from bluesky_twin.modeldir import open_version, write_version

    clf = ClassifierConfig(epochs=clf_epochs, input_scale=input_scale)  # InputError on a bad value
    if clf.epochs < 1:
        raise InputError(f"clf_epochs must be an integer >= 1, got {clf_epochs!r}")
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
        classifiers, seconds = train_classifiers(
            split["dataset"], seed=seed, epochs=int(clf_epochs), input_scale=input_scale, progress=progress
        )
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
