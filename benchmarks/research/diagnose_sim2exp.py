"""What the convolved-trained classifier makes of Sim2Exp output, next to known-physics stand-ins.

For a trained model directory, on a fresh test set of its recorded recipe (``--n``
frames, ``--seed``), prints the accuracy of the model's *convolved* DUQ classifier on:

* the experiment-like frames (its own domain) and the raw unconvolved maps;
* Sim2Exp output with the generator's fill-in and with the input's NaN mask put back;
* Sim2Exp output smoothed by a 1-pixel Gaussian (tests whether generator texture, not
  content, misleads the classifier);
* the unconvolved maps blurred along energy by a Gaussian of ``sigma`` rows (the
  classifier's view of a plain resolution broadening, no GAN), with the frame's mask;
* for a model trained with ``--sim2exp-resolution-layer``: its learned broadening alone
  (without the ResNet correction), and the learned widths;
* for a layer with instrument terms: the layer with its training-time counting noise (and,
  for ``--resolution-stochastic``, its per-frame draws) switched on at translation;
* for a layer with width bounds (``--resolution-maps-bounds``): the layer (learned
  instrument terms) with its width set to ``lower + f (upper - lower)`` in every row, for
  each ``f`` of ``--bound-fractions`` (with MAPS bounds, f = 0 is the lowest incident
  energy's resolution and f = 1 the highest's)::

    .venv/bin/python benchmarks/diagnose_sim2exp.py MODEL_DIR --n 300 --seed 1234

Used for the Sim2Exp section of docs/gan.md.
"""

from __future__ import annotations

import argparse

import numpy as np


def main() -> None:
    import torch
    from scipy.ndimage import gaussian_filter, gaussian_filter1d

    from bluesky_twin.gan.build import data_recipe
    from bluesky_twin.gan.evaluate import model_test_set
    from bluesky_twin.gan.model import Exp2SimModel

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--sigmas", type=float, nargs="+", default=[2, 4, 6, 8])
    ap.add_argument("--bound-fractions", type=float, nargs="*", default=[0.0, 0.25, 0.5, 0.75, 1.0])
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = Exp2SimModel.load(args.model)
    recipe = data_recipe(model.metadata)
    te = model_test_set(model, args.n, args.seed)
    clf = model.classifiers["convolved"]
    mask = ~np.isfinite(te.convolved)

    def masked(x: np.ndarray) -> np.ndarray:
        x = np.array(x, dtype=np.float32, copy=True)
        x[mask] = np.nan
        return x

    def row(name: str, frames: np.ndarray) -> None:
        pred = clf.predict(frames)
        print(f"{name:<48} {100 * np.mean(pred == te.labels):5.1f} %   predicted J2 > 0: {100 * pred.mean():5.1f} %")

    print(f"model {args.model}, recipe {recipe}, n={args.n}, seed={args.seed}")
    row("convolved (own domain)", te.convolved)
    row("unconvolved, raw", te.unconvolved)
    s2e = model.sim2exp(te.unconvolved)
    row("unconvolved -> Sim2Exp (generator fill-in)", s2e)
    row("unconvolved -> Sim2Exp, frame's mask", masked(s2e))
    row("unconvolved -> Sim2Exp, 1-px smoothing, mask", masked(gaussian_filter(s2e, (0, 1, 1))))
    from bluesky_twin.gan.networks import ResolutionResnetGenerator

    if isinstance(model.G_B, ResolutionResnetGenerator):
        from bluesky_twin.gan.preprocess import from_model_space, to_model_space

        x, valid = to_model_space(te.unconvolved, model.scaling)
        with torch.inference_mode():
            b = model.G_B.resolution(torch.from_numpy(x)[:, None], torch.from_numpy(valid.astype(np.float32))[:, None])
            sig = model.G_B.resolution.sigma(x.shape[1]).numpy()
        print(
            f"learned widths (rows), low/mid/high energy: {sig[0]:.2f} / {sig[len(sig) // 2]:.2f} / {sig[-1]:.2f}; "
            f"gate {float(model.G_B.gate):.3f}"
        )
        row("unconvolved -> learned broadening only, mask", masked(from_model_space(b[:, 0].numpy(), model.scaling)))
        layer = model.G_B.resolution
        if getattr(layer, "instrument", False):  # the training-time randomness, applied at translation
            for noise, sample in ((True, False), (True, True)):
                if sample and not getattr(layer, "stochastic", False):
                    continue
                torch.manual_seed(0)
                with torch.inference_mode():
                    b = layer(
                        torch.from_numpy(x)[:, None],
                        torch.from_numpy(valid.astype(np.float32))[:, None],
                        noise=noise,
                        sample=sample,
                    )
                row(
                    "layer with counting noise" + (" and per-frame draws" if sample else "") + ", mask",
                    masked(from_model_space(b[:, 0].numpy(), model.scaling)),
                )
        if getattr(layer, "bounded", False):
            import copy
            import math

            lo, hi = layer.sigma_lower.numpy(), layer.sigma_upper.numpy()
            for f in args.bound_fractions:
                fixed = copy.deepcopy(layer).eval()
                q = min(max(f, 1e-6), 1 - 1e-6)
                with torch.no_grad():
                    fixed.coeffs.zero_()
                    fixed.coeffs[0] = math.log(q / (1 - q))
                    b = fixed(torch.from_numpy(x)[:, None], torch.from_numpy(valid.astype(np.float32))[:, None])
                w = lo + f * (hi - lo)
                row(
                    f"layer, width at f={f:g} of the bounds ({w[0]:.1f}/{w[len(w) // 2]:.1f}/{w[-1]:.1f} rows)",
                    masked(from_model_space(b[:, 0].numpy(), model.scaling)),
                )
    filled = np.nan_to_num(te.unconvolved)
    for sigma in args.sigmas:
        b = gaussian_filter1d(filled, sigma, axis=1, mode="nearest")
        b /= np.percentile(b.reshape(len(b), -1), 99.5, axis=1)[:, None, None]
        row(f"unconvolved, energy blur sigma {sigma:g} rows, mask", masked(b))


if __name__ == "__main__":
    main()
