"""What limits Exp2Sim: the unconvolved-trained classifier on Exp2Sim of real frames and of Sim2Exp's own output.

For a trained model directory, on a fresh test set of its recorded recipe (``--n``
frames, ``--seed``), prints the accuracy of the model's *unconvolved* DUQ classifier on:

* the unconvolved maps (its own domain) and the raw experiment-like frames;
* Exp2Sim of the experiment-like frames (the benchmark's row);
* Sim2Exp of the unconvolved maps, raw, and translated back by Exp2Sim (a pseudo pair
  whose ground truth is known).

If Exp2Sim undoes Sim2Exp's output far better than it undoes real frames, the
shortfall lies in how closely Sim2Exp imitates the real degradation, not in
Exp2Sim's capacity::

    .venv/bin/python benchmarks/diagnose_exp2sim.py MODEL_DIR --n 300 --seed 1234
"""

from __future__ import annotations

import argparse

import numpy as np


def main() -> None:
    import torch

    from bluesky_twin.gan.evaluate import model_test_set
    from bluesky_twin.gan.model import Exp2SimModel

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = Exp2SimModel.load(args.model)
    te = model_test_set(model, args.n, args.seed)
    clf = model.classifiers["unconvolved"]

    def row(name: str, frames: np.ndarray) -> None:
        print(f"{name:<52} {100 * np.mean(clf.predict(frames) == te.labels):5.1f} %")

    print(f"model {args.model}, n={args.n}, seed={args.seed}; unconvolved-trained classifier on:")
    row("unconvolved (own domain)", te.unconvolved)
    row("experiment-like, raw", te.convolved)
    row("experiment-like -> Exp2Sim", model.exp2sim(te.convolved))
    pseudo = model.sim2exp(te.unconvolved)
    row("unconvolved -> Sim2Exp", pseudo)
    row("unconvolved -> Sim2Exp -> Exp2Sim (pseudo pair)", model.exp2sim(pseudo))


if __name__ == "__main__":
    main()
