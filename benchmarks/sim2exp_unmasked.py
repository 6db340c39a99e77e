"""Sim2Exp of the *unmasked* simulation: the convolved-trained classifier on G_B's translation
of the full unconvolved maps, with the instrument's mask put back afterwards.

Models trained with ``--recipe mask_unconvolved=true`` see masked simulations, and
``ins evaluate`` translates masked maps.  A resolution broadening near the coverage
edge then lacks the intensity just outside it, which the real (experiment-like) frames
contain.  For each model directory (all on the same recipe), on the test set of
``ins evaluate`` (``--n``, ``--seed``; the same frames regenerated with
``mask_unconvolved=false``, checked to reproduce the experiment-like frames), prints the
classifier's accuracy on its own domain, on the raw maps, on Sim2Exp of the masked maps
(as ``ins evaluate``) and on Sim2Exp of the unmasked maps, and the gap closed by each::

    .venv/bin/python benchmarks/sim2exp_unmasked.py MODEL_DIR [MODEL_DIR ...] --n 500 --seed 1234

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

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args()
    torch.set_num_threads(1)
    cache: dict = {}
    for path in args.models:
        model = Exp2SimModel.load(path)
        recipe = data_recipe(model.metadata)
        if not recipe.get("mask_unconvolved"):
            raise SystemExit(f"{path}: the model was not trained with mask_unconvolved=true")
        key = (repr(sorted(recipe.items())), data_geometry(model.metadata), int(model.reference.shape[-1]))
        if key not in cache:  # models of one recipe share the test set
            te = model_test_set(model, args.n, args.seed)
            cache[key] = (te, unmasked_test_set(model, te, args.n, args.seed), np.isnan(te.convolved))
        te, full, mask = cache[key]
        clf = model.classifiers["convolved"]

        def acc(frames: np.ndarray) -> float:
            return float(np.mean(clf.predict(frames) == te.labels))

        own, raw = acc(te.convolved), acc(te.unconvolved)
        masked_in = acc(model.sim2exp(te.unconvolved, keep_mask=True))
        out = model.sim2exp(full.unconvolved)
        out[mask] = np.nan
        unmasked_in = acc(out)
        gap = lambda v: 100 * (v - raw) / (own - raw)  # noqa: E731
        print(f"{path}: own {100 * own:.1f} %, raw {100 * raw:.1f} %, Sim2Exp of masked maps {100 * masked_in:.1f} % "
              f"(gap closed {gap(masked_in):.1f} %), of unmasked maps {100 * unmasked_in:.1f} % "
              f"(gap closed {gap(unmasked_in):.1f} %)", flush=True)


if __name__ == "__main__":
    main()
