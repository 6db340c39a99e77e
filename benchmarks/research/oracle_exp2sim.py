"""Upper bound for Exp2Sim on a recipe: the generator trained *with* the true pairs.

The GAN never sees pairs.  This diagnostic trains the same Exp2Sim generator
(``small`` preset) by masked L1 on the simulator's true pairs (experiment-like frame ->
its unconvolved map) and reports the unconvolved-trained DUQ classifier on its output,
next to the raw frames, on a fresh test set.  If even supervised Exp2Sim cannot close
the gap, the information is not in the frames and no unpaired method will close it;
if it can, the shortfall is in the unpaired training signal.

With ``--pseudo-from MODEL_DIR`` the pairs are instead *pseudo pairs*: each training
step broadens the unconvolved maps with that model's learned Sim2Exp (in training
mode: per-frame amplitudes, Poisson noise; with ``--widths uniform`` each frame's width
drawn uniformly across the layer's MAPS bounds) and G_A learns to undo it -- the
pseudo-pair term alone, without the GAN's other terms.  The gap between this and the
true-pair bound measures how far Sim2Exp's imitation of the instrument falls short.

Command::

    .venv/bin/python benchmarks/oracle_exp2sim.py --n 2000 --seed 0 --iterations 1500 --test-n 500 --test-seed 1234 \
        --geometry powder --recipe 'e_init=[50,60,70]' --recipe chopper_frequency=100 --recipe mask_unconvolved=true
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    import torch

    from bluesky_twin.gan.build import train_classifiers
    from bluesky_twin.gan.cli import _parse_recipe
    from bluesky_twin.gan.config import GanConfig
    from bluesky_twin.gan.losses import masked_l1
    from bluesky_twin.gan.model import Exp2SimModel
    from bluesky_twin.gan.networks import init_weights, make_generators
    from bluesky_twin.gan.preprocess import Scaling, to_model_space
    from bluesky_twin.ins.dataset import generate_dataset

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--iterations", type=int, default=1500)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--clf-epochs", type=int, default=15)
    ap.add_argument("--test-n", type=int, default=500)
    ap.add_argument("--test-seed", type=int, default=1234)
    ap.add_argument("--geometry", default="powder")
    ap.add_argument("--recipe", action="append", default=[], metavar="KEY=JSON")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--pseudo-from",
        default=None,
        metavar="MODEL_DIR",
        help="train on pseudo pairs made by this model's Sim2Exp instead of the true pairs",
    )
    ap.add_argument("--widths", choices=("learned", "uniform"), default="uniform")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    recipe = _parse_recipe(args.recipe)  # as `ins train --recipe`: known keys, JSON values

    t0 = time.perf_counter()
    ds = generate_dataset(args.n, seed=args.seed, geometry=args.geometry, size=64, progress=False, **recipe)
    te = generate_dataset(args.test_n, seed=args.test_seed, geometry=args.geometry, size=64, progress=False, **recipe)
    classifiers, _ = train_classifiers(ds, seed=args.seed, epochs=args.clf_epochs)
    clf = classifiers["unconvolved"]
    print(f"data + classifiers {time.perf_counter() - t0:.0f} s")

    scaling = Scaling()
    config = GanConfig.preset("small")
    torch.manual_seed(args.seed)
    G_A, G_B = make_generators(config, scaling)
    init_weights(G_A)
    xa, va = to_model_space(ds.convolved, scaling)
    xb, vb = to_model_space(ds.unconvolved, scaling)
    valid = (va & vb).astype(np.float32)
    G_src = None
    if args.pseudo_from:
        from bluesky_twin.gan.train import pseudo_pair_frames

        G_src = Exp2SimModel.load(args.pseudo_from, load_classifiers=False).G_B.train()
        vb_t = torch.from_numpy(vb.astype(np.float32))[:, None]
    opt = torch.optim.Adam(G_A.parameters(), lr=2e-4, betas=(0.5, 0.999))
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    G_A.train()
    for it in range(args.iterations):
        idx = rng.integers(0, len(xa), args.batch_size)
        a = torch.from_numpy(xa[idx])[:, None]
        b = torch.from_numpy(xb[idx])[:, None]
        v = torch.from_numpy(valid[idx])[:, None]
        if G_src is not None:  # a pseudo frame of b instead of b's real partner
            v = vb_t[idx]
            a = pseudo_pair_frames(G_src, b, v, uniform_widths=args.widths == "uniform")
        loss = masked_l1(G_A(a), b, v)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if it % 250 == 0 or it == args.iterations - 1:
            print(f"iteration {it}: L1 {float(loss.detach()):.4f}", flush=True)
    source = f"pseudo pairs of {args.pseudo_from} ({args.widths} widths)" if args.pseudo_from else "true pairs"
    print(f"supervised Exp2Sim on {source}: {time.perf_counter() - t0:.0f} s")
    model = Exp2SimModel(G_A, G_B, config, scaling)
    keep = bool(recipe.get("mask_unconvolved", False))

    def acc(frames: np.ndarray) -> float:
        return 100 * float(np.mean(clf.predict(frames) == te.labels))

    print(f"unconvolved-trained classifier, n={args.test_n}, seed={args.test_seed}:")
    print(f"  unconvolved (own domain)         {acc(te.unconvolved):5.1f} %")
    print(f"  experiment-like, raw             {acc(te.convolved):5.1f} %")
    print(f"  experiment-like -> supervised G  {acc(model.exp2sim(te.convolved, keep_mask=keep)):5.1f} %")


if __name__ == "__main__":
    main()
