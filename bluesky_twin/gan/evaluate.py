"""The paper's evaluation: DUQ accuracy table and domain-score distributions.

On a freshly generated test set (``generate_dataset(n, seed)``):

====================  ======================================
classifier trained    evaluated on
====================  ======================================
unconvolved           unconvolved (ground truth)
unconvolved           convolved, raw
unconvolved           convolved -> Exp2Sim
convolved             convolved
convolved             unconvolved, raw
convolved             unconvolved -> Sim2Exp
====================  ======================================

Frames reach the classifiers in frame units (divided by the 99.5th percentile, as the
simulator writes them): the generators' outputs are mapped back from model space
([-1, 1]) by :meth:`~bluesky_twin.gan.model.Exp2SimModel.exp2sim` /
:meth:`~bluesky_twin.gan.model.Exp2SimModel.sim2exp`, and each classifier then applies
its own stored input scaling (``"log"`` or ``"linear"``, see
:func:`bluesky_twin.ins.duq.scale_frames`) to raw and translated frames alike; the
scalings are reported under ``classifier_input_scale``.

Gap closed: ``(acc_translated - acc_raw) / (acc_reference - acc_raw)``; undefined
(NaN, ``null`` in JSON) when there is no gap to speak of: the gap
``acc_reference - acc_raw`` (``gap_*_points``) must exceed twice its binomial
standard error ``sqrt(p_ref (1 - p_ref) / n + p_raw (1 - p_raw) / n)``
(``gap_*_min_points``); otherwise a gap of a few frames would give ratios such as
133 % that mean nothing.

``acc_by_abs_j2`` repeats the six accuracies per |J2| bin (``ABS_J2_BINS``: below
0.05, 0.05-0.1, 0.1-0.2 meV; |J2| is sampled from 0.02); a small |J2| is the hard case.

Domain scores (set level, 20 reference vs 20 frames, repeated) for:
``train`` (held-out training A frames, regenerated from the model's recorded data
recipe), ``test`` (the test set's experiment-like frames), ``experiment_like``
(experiment-like frames under *shifted* conditions -- low counts, higher
temperature and background, stronger elastic line: the stand-in for real data
that differs from the simulation recipe), ``near_domain`` (stripe-phase frames,
another Hamiltonian, in the model's geometry and recipe), ``digits``.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from bluesky_twin.errors import InputError, ModelFileError

__all__ = [
    "evaluate_model",
    "format_table",
    "measure_ms_per_frame",
    "model_test_set",
    "unmasked_test_set",
    "SHIFTED_RECIPE",
    "ABS_J2_BINS",
]

#: Edges (meV) of the |J2| bins of ``acc_by_abs_j2``: the sign of a small J2 is the hard case.
ABS_J2_BINS: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2 + 1e-9)

#: Recipe overrides of the 'experiment_like' (shifted conditions) control set.
SHIFTED_RECIPE: dict[str, Any] = {
    "counts_scale": (5.0, 20.0),
    "temperature": (25.0, 40.0),
    "background_b0": (0.05, 0.15),
    "elastic_amplitude": (2.0, 4.0),
}


#: The accuracies reported per |J2| bin (``acc_by_abs_j2``), in table order: the
#: unconvolved-trained classifier on unconvolved, convolved and Exp2Sim frames, then the
#: convolved-trained classifier on convolved, raw unconvolved and Sim2Exp frames.
BIN_ACCURACY_KEYS = (
    "unconvolved",
    "convolved_raw",
    "convolved_exp2sim",
    "conv_clf_on_convolved",
    "conv_clf_on_unconvolved_raw",
    "conv_clf_on_unconvolved_sim2exp",
)


def _min_gap(raw: float, reference: float, n: int) -> float:
    """Twice the binomial standard error of ``reference - raw`` (accuracies on ``n`` frames each)."""
    return 2.0 * float(np.sqrt((reference * (1 - reference) + raw * (1 - raw)) / max(int(n), 1)))


def _gap(translated: float, raw: float, reference: float, n: int | None = None) -> float:
    """Fraction of the gap closed; NaN (JSON null) when there is no significant gap.

    The gap ``reference - raw`` must be positive and, if ``n`` is given, larger than
    :func:`_min_gap` (two standard errors).
    """
    denom = reference - raw
    floor = 1e-12 if n is None else max(1e-12, _min_gap(raw, reference, n))
    return float((translated - raw) / denom) if denom > floor else float("nan")


def measure_ms_per_frame(model: Any, frame: np.ndarray, repeats: int = 50) -> dict[str, float]:
    """Median / min wall time (ms) of ``translate_and_score`` on one frame."""
    model.translate_and_score(frame[None])  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model.translate_and_score(frame[None])
        times.append((time.perf_counter() - t0) * 1e3)
    return {"median": float(np.median(times)), "min": float(np.min(times)), "repeats": repeats}


def model_test_set(model: Any, n: int, seed: int, **overrides: Any) -> Any:
    """A fresh data set of the recipe *model* was trained on, at its frame size.

    The geometry and recipe come from the model's metadata (cuts with the default
    recipe for models that record none); *overrides* replace recipe entries.
    """
    from bluesky_twin.gan.build import data_geometry, data_recipe
    from bluesky_twin.ins.dataset import generate_dataset

    return generate_dataset(
        n,
        seed=seed,
        size=int(model.reference.shape[-1]),
        geometry=data_geometry(model.metadata),
        **{**data_recipe(model.metadata), **overrides},
    )


def unmasked_test_set(model: Any, test_set: Any, n: int, seed: int) -> Any:
    """*test_set* (``model_test_set(model, n, seed)``) regenerated with unmasked unconvolved maps.

    Raises
    ------
    RuntimeError
        The regeneration does not reproduce the test set's experiment-like frames and masks.
    """
    full = model_test_set(model, n, seed, mask_unconvolved=False)
    mask = np.isnan(test_set.convolved)
    if not (
        np.array_equal(np.isnan(full.convolved), mask)
        and np.allclose(np.nan_to_num(full.convolved), np.nan_to_num(test_set.convolved))
    ):
        raise RuntimeError("the unmasked regeneration of the test set does not reproduce its frames")
    return full


def evaluate_model(
    model: Any,
    n: int = 500,
    seed: int = 1234,
    n_domain: int = 200,
    progress: bool = False,
    sim2exp_unmasked_input: bool = False,
) -> dict[str, Any]:
    """Run the full evaluation of a loaded :class:`~bluesky_twin.gan.model.Exp2SimModel`.

    Parameters
    ----------
    model
        The model; it needs both classifiers and a calibrated domain scorer.
    n
        Test-set size.
    seed
        Seed of the test set (and of the control sets, offset).
    n_domain
        Frames per control set for the domain scores.
    progress
        Print stage messages.
    sim2exp_unmasked_input
        For a model whose recipe masks the unconvolved maps (``mask_unconvolved``): also
        translate the *unmasked* maps of the same test frames (regenerated with
        ``mask_unconvolved=false``) and put the mask back afterwards, so a resolution
        broadening sees the intensity just outside the coverage, as the real frames'
        did.  Adds ``acc_conv_clf_on_unconvolved_sim2exp_unmasked_input`` and
        ``gap_closed_sim2exp_unmasked_input`` (same raw and reference accuracies: the raw
        maps with the mask put back are the masked maps).

    Returns
    -------
    dict
        All numbers of the table and the domain scores (the ``ins evaluate`` JSON).
    """
    from bluesky_twin.gan.build import data_geometry, data_recipe, recipe_to_json, training_split
    from bluesky_twin.ins.dataset import digits_control, near_domain_control

    missing = [k for k in ("unconvolved", "convolved") if k not in model.classifiers]
    if missing:
        raise ModelFileError(f"the model has no '{missing[0]}' classifier; evaluation needs both")
    if model.scorer is None or "set" not in model.scorer.thresholds:
        raise ModelFileError("the model's domain score is not calibrated")

    def say(msg: str) -> None:
        if progress:
            print(f"[evaluate] {msg}", flush=True)

    size = int(model.reference.shape[-1])
    say(f"generating test set n={n} seed={seed}")
    # the test set follows the recipe the model was trained on (cuts with the default
    # resolution for models that record none)
    geometry, recipe = data_geometry(model.metadata), data_recipe(model.metadata)
    if sim2exp_unmasked_input and not recipe.get("mask_unconvolved", False):
        raise InputError("the unmasked-input Sim2Exp needs a model trained with --recipe mask_unconvolved=true")
    te = model_test_set(model, n, seed)
    clf_u, clf_c = model.classifiers["unconvolved"], model.classifiers["convolved"]
    say("translating")
    # frame units (model space mapped back), so each classifier applies its own scaling;
    # when both domains carry the instrument's mask (recipe mask_unconvolved), the
    # translations keep it too, so each classifier sees masks as in its training
    keep_mask = bool(recipe.get("mask_unconvolved", False))
    exp2sim = model.exp2sim(te.convolved, keep_mask=keep_mask)
    sim2exp = model.sim2exp(te.unconvolved, keep_mask=keep_mask)
    out: dict[str, Any] = {"n": n, "seed": seed, "geometry": geometry, "recipe": recipe_to_json(recipe)}
    out["classifier_input_scale"] = {
        k: str(getattr(c, "input_scale", "log")) for k, c in (("unconvolved", clf_u), ("convolved", clf_c))
    }
    out["acc_unconvolved"] = float(clf_u.score(te.unconvolved, te.labels))
    out["acc_convolved_raw"] = float(clf_u.score(te.convolved, te.labels))
    out["acc_convolved_exp2sim"] = float(clf_u.score(exp2sim, te.labels))
    out["gap_closed_exp2sim"] = _gap(out["acc_convolved_exp2sim"], out["acc_convolved_raw"], out["acc_unconvolved"], n)
    out["acc_conv_clf_on_convolved"] = float(clf_c.score(te.convolved, te.labels))
    out["acc_conv_clf_on_unconvolved_raw"] = float(clf_c.score(te.unconvolved, te.labels))
    out["acc_conv_clf_on_unconvolved_sim2exp"] = float(clf_c.score(sim2exp, te.labels))
    out["gap_exp2sim_points"] = out["acc_unconvolved"] - out["acc_convolved_raw"]
    out["gap_sim2exp_points"] = out["acc_conv_clf_on_convolved"] - out["acc_conv_clf_on_unconvolved_raw"]
    out["gap_closed_sim2exp"] = _gap(
        out["acc_conv_clf_on_unconvolved_sim2exp"],
        out["acc_conv_clf_on_unconvolved_raw"],
        out["acc_conv_clf_on_convolved"],
        n,
    )
    if sim2exp_unmasked_input:
        say("translating the unmasked maps")
        full = unmasked_test_set(model, te, n, seed)
        mask = np.isnan(te.convolved)
        s2e_full = model.sim2exp(full.unconvolved)
        s2e_full[mask] = np.nan
        out["acc_conv_clf_on_unconvolved_sim2exp_unmasked_input"] = float(clf_c.score(s2e_full, te.labels))
        out["gap_closed_sim2exp_unmasked_input"] = _gap(
            out["acc_conv_clf_on_unconvolved_sim2exp_unmasked_input"],
            out["acc_conv_clf_on_unconvolved_raw"],
            out["acc_conv_clf_on_convolved"],
            n,
        )
    out["gap_exp2sim_min_points"] = _min_gap(out["acc_convolved_raw"], out["acc_unconvolved"], n)
    out["gap_sim2exp_min_points"] = _min_gap(
        out["acc_conv_clf_on_unconvolved_raw"], out["acc_conv_clf_on_convolved"], n
    )
    # the same six accuracies per |J2| bin (small |J2|: the hard case)
    preds = {
        "unconvolved": clf_u.predict(te.unconvolved),
        "convolved_raw": clf_u.predict(te.convolved),
        "convolved_exp2sim": clf_u.predict(exp2sim),
        "conv_clf_on_convolved": clf_c.predict(te.convolved),
        "conv_clf_on_unconvolved_raw": clf_c.predict(te.unconvolved),
        "conv_clf_on_unconvolved_sim2exp": clf_c.predict(sim2exp),
    }
    abs_j2 = np.abs(np.asarray(te.params["J2"], dtype=float))
    by_bin = []
    for lo, hi in zip(ABS_J2_BINS[:-1], ABS_J2_BINS[1:]):
        sel = (abs_j2 >= lo) & (abs_j2 < hi)
        row: dict[str, Any] = {"abs_j2_min": float(lo), "abs_j2_max": float(min(hi, 0.2)), "n": int(sel.sum())}
        for key, pred in preds.items():
            row[f"acc_{key}"] = float((pred[sel] == te.labels[sel]).mean()) if sel.any() else float("nan")
        by_bin.append(row)
    out["acc_by_abs_j2"] = by_bin
    # pixel-level check of the translation against the paired ground truth (log scale)
    from bluesky_twin.gan.preprocess import to_model_space

    u_ms, _ = to_model_space(te.unconvolved, model.scaling)
    c_ms, valid = to_model_space(te.convolved, model.scaling)
    y_ms, _ = to_model_space(exp2sim, model.scaling)
    out["l1_model_space"] = {
        "convolved_vs_truth": float(np.abs(c_ms - u_ms)[valid].mean()),
        "exp2sim_vs_truth": float(np.abs(y_ms - u_ms)[valid].mean()),
    }

    say("domain scores")
    scorer = model.scorer
    sets: dict[str, np.ndarray] = {}
    meta = model.metadata
    if "training" in meta and "data" in meta.get("training", {}):
        split = training_split(meta)
        sets["train"] = split["dataset"].convolved[split["calibration"]]
    sets["test"] = te.convolved[:n_domain]
    sets["experiment_like"] = model_test_set(model, n_domain, seed + 1, **SHIFTED_RECIPE).convolved
    # the same geometry and recipe as the model's data, another Hamiltonian (for a
    # powder model, a cut of it would be further out than the digits)
    sets["near_domain"] = near_domain_control(n_domain, seed=seed + 2, size=size, geometry=geometry, **recipe)
    sets["digits"] = digits_control(n_domain, size=size, seed=seed + 3)
    domain: dict[str, Any] = {}
    for i, (name, frames) in enumerate(sets.items()):
        feats = model.features(frames)
        summary = scorer.set_summary(feats, seed=seed + 10 + i)
        fs = scorer.frame_scores(feats)
        zones = scorer.frame_zones(fs)
        summary["frame_score_median"] = float(np.median(fs))
        summary["frame_zone_fractions"] = {
            z: float(np.mean([q == z for q in zones])) for z in ("trustworthy", "expert opinion", "untrustworthy")
        }
        domain[name] = summary
    out["domain_score"] = domain
    out["domain_thresholds"] = scorer.settings()["thresholds"]
    ms = measure_ms_per_frame(model, te.convolved[0])
    out["ms_per_frame"] = ms["median"]
    out["ms_per_frame_min"] = ms["min"]
    out["shifted_recipe"] = {k: list(v) for k, v in SHIFTED_RECIPE.items()}
    return out


def format_table(res: dict[str, Any]) -> str:
    """Human-readable table of :func:`evaluate_model`'s result."""
    pct = lambda v: f"{100 * v:5.1f}%"  # noqa: E731
    rows = [
        ("unconvolved", "unconvolved (ground truth)", res["acc_unconvolved"]),
        ("unconvolved", "convolved, raw", res["acc_convolved_raw"]),
        ("unconvolved", "convolved -> Exp2Sim", res["acc_convolved_exp2sim"]),
        ("convolved", "convolved", res["acc_conv_clf_on_convolved"]),
        ("convolved", "unconvolved, raw", res["acc_conv_clf_on_unconvolved_raw"]),
        ("convolved", "unconvolved -> Sim2Exp", res["acc_conv_clf_on_unconvolved_sim2exp"]),
    ]
    lines = [f"{'classifier trained on':<22} {'evaluated on':<28} accuracy", "-" * 60]
    lines += [f"{a:<22} {b:<28} {pct(v)}" for a, b, v in rows]

    def gap(key: str, points: str) -> str:
        v = res[key]
        if v is None or v != v:
            floor = res.get(points.replace("_points", "_min_points"))
            need = f", needs > {100 * floor:.1f}" if floor is not None else ""
            return f"undefined (no significant gap: reference - raw = {100 * res[points]:+.1f} points{need})"
        return pct(v)

    lines.append(
        f"gap closed: Exp2Sim {gap('gap_closed_exp2sim', 'gap_exp2sim_points')}, "
        f"Sim2Exp {gap('gap_closed_sim2exp', 'gap_sim2exp_points')}   (n={res['n']}, seed={res['seed']})"
    )
    if "acc_conv_clf_on_unconvolved_sim2exp_unmasked_input" in res:
        lines.append(
            f"Sim2Exp of the unmasked maps (mask put back): "
            f"{pct(res['acc_conv_clf_on_unconvolved_sim2exp_unmasked_input'])}, gap closed "
            f"{gap('gap_closed_sim2exp_unmasked_input', 'gap_sim2exp_points')}"
        )
    if res.get("acc_by_abs_j2"):
        lines.append("by |J2| (meV)      n   U:unconv  U:conv  U:exp2sim   C:conv  C:unconv  C:sim2exp")
        for r in res["acc_by_abs_j2"]:
            vals = [r[f"acc_{k}"] for k in BIN_ACCURACY_KEYS]
            cells = " ".join(f"{'-' if v is None or v != v else f'{100 * v:.1f}%':>8}" for v in vals)
            lines.append(f"{r['abs_j2_min']:.2f}-{r['abs_j2_max']:.2f}  {r['n']:6d}  {cells}")
    scales = res.get("classifier_input_scale")
    if scales:
        lines.append("classifier input scale: " + ", ".join(f"{k} {v}" for k, v in scales.items()))
    lines.append("")
    lines.append(f"{'domain score (set)':<18} {'mean':>12} {'std':>10}  zone")
    order = ["train", "test", "experiment_like", "near_domain", "digits"]
    names = [k for k in order if k in res["domain_score"]] + [k for k in res["domain_score"] if k not in order]
    for name in names:
        d = res["domain_score"][name]
        lines.append(f"{name:<18} {d['mean']:12.1f} {d['std']:10.1f}  {d['zone']}")
    lines.append(f"translate + score: {res['ms_per_frame']:.1f} ms per frame (median)")
    return "\n".join(lines)
