"""Oracle Sim2Exp: what the convolved-trained classifier makes of the resolution layer when it
is given each test frame's *own* MAPS width (its incident energy) and, optionally, the frame's
own nuisance parameters.

For a model trained with ``--sim2exp-resolution-layer`` on the powder recipe, on a fresh
test set of its recorded recipe (``--n`` frames, ``--seed``), prints the accuracy of the
model's convolved DUQ classifier (overall and per incident energy) on the unconvolved
maps broadened, frame by frame, with ``maps_resolution(Ei, chopper_frequency).sigma(E)``
of that frame's Ei, plus (eval mode, no noise) an elastic line and flat background that
are either the layer's learned values, the frame's own (``elastic_amplitude``,
``background_b0``) or the recipe's means, and optionally the frame's own Bose factor.
For powder models, also the recipe's Q-dependent elastic line ``A exp(-0.05 Q^2)`` and
background ``b0 + b1 Q^2`` with the frame's own values (which the layer does not model),
with and without the Q resolution (a Gaussian of ``sigma_q`` along ``|Q|``; no Bose factor,
no noise).  It separates how much of a Sim2Exp shortfall the widths explain and how much
the instrument terms do::

    .venv/bin/python benchmarks/oracle_sim2exp.py MODEL_DIR --n 300 --seed 1234

Used for the Sim2Exp section of docs/gan.md.
"""

from __future__ import annotations

import argparse

import numpy as np


def main() -> None:
    import torch

    from bluesky_twin.gan.build import data_geometry, data_recipe
    from bluesky_twin.gan.evaluate import model_test_set, unmasked_test_set
    from bluesky_twin.gan.model import Exp2SimModel
    from bluesky_twin.gan.networks import ResolutionResnetGenerator
    from bluesky_twin.gan.preprocess import from_model_space, to_model_space
    from bluesky_twin.ins.frames import Recipe
    from bluesky_twin.ins.resolution import maps_resolution
    from bluesky_twin.ins.resolution_layer import EnergyResolutionLayer

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument(
        "--unmasked-input",
        action="store_true",
        help="broaden the *unmasked* unconvolved maps (the same frames generated with "
        "mask_unconvolved=false), then put the mask back",
    )
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = Exp2SimModel.load(args.model)
    if not isinstance(model.G_B, ResolutionResnetGenerator) or not model.G_B.resolution.instrument:
        raise SystemExit("the model needs a Sim2Exp resolution layer with instrument terms")
    recipe = data_recipe(model.metadata)
    rec = Recipe.from_overrides(recipe)
    size = int(model.reference.shape[-1])
    te = model_test_set(model, args.n, args.seed)
    clf = model.classifiers["convolved"]
    mask = ~np.isfinite(te.convolved)
    source = te.unconvolved
    if args.unmasked_input:
        source = unmasked_test_set(model, te, args.n, args.seed).unconvolved
    x, valid = to_model_space(source, model.scaling)
    X, V = torch.from_numpy(x)[:, None], torch.from_numpy(valid.astype(np.float32))[:, None]
    ei = np.asarray(te.params["e_init"], dtype=float)
    e_lo, e_hi = rec.e_range
    row = (e_hi - e_lo) / size
    energies = e_lo + (np.arange(size) + 0.5) * row
    learned = model.G_B.resolution.instrument_values()
    mean = lambda v: float(np.mean(v))  # noqa: E731

    def run(name: str, elastic: str, bose: bool = False) -> None:
        out = np.empty_like(te.unconvolved)
        for i in range(len(ei)):
            sig = maps_resolution(ei[i], rec.chopper_frequency, rec.chopper_package).sigma(energies) / row
            amp, bkg = {
                "learned": (learned["elastic_amplitude"], learned["background"]),
                "own": (te.params["elastic_amplitude"][i], te.params["background_b0"][i]),
                "recipe mean": (mean(rec.elastic_amplitude), mean(rec.background_b0)),
            }[elastic]
            layer = EnergyResolutionLayer(
                degree=0,
                sigma_bounds=(tuple(sig * 0.999), tuple(sig * 1.001)),
                instrument=True,
                init_elastic=float(amp),
                init_background=float(bkg) + 1e-6,
                energy_range=(e_lo, e_hi) if bose else None,
                init_temperature=float(te.params["temperature"][i]) - 0.1,
            ).eval()
            with torch.no_grad():
                out[i] = from_model_space(layer(X[i : i + 1], V[i : i + 1])[0, 0].numpy(), model.scaling)
        out[mask] = np.nan
        pred = clf.predict(out)
        by_ei = "  ".join(
            f"Ei {v:g}: {100 * np.mean(pred[ei == v] == te.labels[ei == v]):5.1f} %" for v in np.unique(ei)
        )
        print(f"{name:<58} {100 * np.mean(pred == te.labels):5.1f} %   {by_ei}", flush=True)

    def run_q(qres: bool) -> None:
        """The simulator's own recipe, noise-free: each frame's own width, Q-dependent elastic line
        A exp(-0.05 Q^2) and background b0 + b1 Q^2 (and optionally the Q resolution sigma_q)."""
        from scipy.ndimage import gaussian_filter1d
        from scipy.special import ndtr

        q_edges = np.linspace(rec.q_range[0], rec.q_range[1], size + 1)
        q = 0.5 * (q_edges[1:] + q_edges[:-1])
        dq = q_edges[1] - q_edges[0]
        out = np.empty_like(te.unconvolved)
        e_edges = e_lo + np.arange(size + 1) * row
        for i in range(len(ei)):
            res = maps_resolution(ei[i], rec.chopper_frequency, rec.chopper_package)
            sig = res.sigma(energies) / row
            layer = EnergyResolutionLayer(degree=0, sigma_bounds=(tuple(sig * 0.999), tuple(sig * 1.001))).eval()
            xi = X[i : i + 1]
            if qres:
                lin = from_model_space(x[i], model.scaling)
                lin = gaussian_filter1d(lin, rec.sigma_q / dq, axis=1, mode="nearest")
                xi = torch.from_numpy(to_model_space(lin[None], model.scaling)[0])[:, None]
            with torch.no_grad():
                b = from_model_space(layer(xi, V[i : i + 1])[0, 0].numpy(), model.scaling).astype(float)
            s0 = float(res.sigma(0.0))
            elastic = s0 * np.sqrt(2 * np.pi) / row * np.diff(ndtr(e_edges / s0))
            p = {k: float(te.params[k][i]) for k in ("elastic_amplitude", "background_b0", "background_b1")}
            out[i] = (
                b
                + p["elastic_amplitude"] * elastic[:, None] * np.exp(-0.05 * q * q)[None, :]
                + (p["background_b0"] + p["background_b1"] * q * q)[None, :]
            )
        out[mask] = np.nan
        pred = clf.predict(out)
        by_ei = "  ".join(
            f"Ei {v:g}: {100 * np.mean(pred[ei == v] == te.labels[ei == v]):5.1f} %" for v in np.unique(ei)
        )
        name = "own-Ei width, own Q-dependent elastic + background" + (" + Q resolution" if qres else "")
        print(f"{name:<58} {100 * np.mean(pred == te.labels):5.1f} %   {by_ei}", flush=True)

    print(
        f"model {args.model}, n={args.n}, seed={args.seed}, unmasked input {args.unmasked_input}; "
        f"learned instrument terms {learned}"
    )
    pred = clf.predict(te.convolved)
    print(
        f"{'experiment-like frames (own domain)':<58} {100 * np.mean(pred == te.labels):5.1f} %   "
        + "  ".join(
            f"Ei {v:g}: {100 * np.mean(pred[ei == v] == te.labels[ei == v]):5.1f} % (n {int(np.sum(ei == v))})"
            for v in np.unique(ei)
        )
    )
    run("own-Ei width, learned elastic + background", "learned")
    run("own-Ei width, the frame's own elastic + b0", "own")
    run("own-Ei width, the frame's own elastic + b0 + Bose factor", "own", bose=True)
    run("own-Ei width, learned elastic + background + own Bose", "learned", bose=True)
    run("own-Ei width, recipe-mean elastic + b0", "recipe mean")
    if data_geometry(model.metadata) == "powder":
        run_q(qres=False)
        run_q(qres=True)


if __name__ == "__main__":
    main()
