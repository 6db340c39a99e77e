"""ARPES: what the line-residual correction does to the training fit and to the angle-step study.

Loads a twin fitted on the ARPES map (any ``bluesky-twin fit`` model directory of
``traindata_Section3_4.csv``), takes its networks alone, fits
:class:`~bluesky_twin.twin.line_residual.LineResidual` to their residual and prints,
for the networks alone and with the correction:

* the training R^2;
* the angle-step study of theta2 (``angle_step_study`` defaults, 60 s a line).  With the
  correction the study is run on purpose *without* the ``smooth_model`` guard the
  library applies, to show why the library applies it.

::

    bluesky-twin fit ../shared/data/terashima2023/traindata_Section3_4.csv --x X1_demo4 --x X2_demo4 \\
        --y Y_demo4 --out /tmp/arpes --trials 30 --jobs 2 --budget 180
    .venv/bin/python benchmarks/explore_line_residual.py /tmp/arpes

Prints its numbers; those quoted in docs/twin.md name the model they came from.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "terashima2023" / "traindata_Section3_4.csv"


class _WithCorrection:
    """A twin-like view that adds a correction and hides ``networks_only`` from the step study."""

    def __init__(self, networks, correction) -> None:
        self.networks, self.correction = networks, correction
        self.x_names, self.x_range = networks.x_names, networks.x_range

    def predict(self, X):
        mean, std = self.networks.predict(X)
        return mean + self.correction(np.atleast_2d(X)), std


def main() -> None:
    import torch

    from bluesky_twin.analysis import angle_step_study
    from bluesky_twin.twin import DigitalTwin
    from bluesky_twin.twin.line_residual import LineResidual

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="twin model directory fitted on the ARPES map")
    ap.add_argument("--data", default=str(DATA))
    args = ap.parse_args()
    torch.set_num_threads(1)
    df = pd.read_csv(args.data)
    networks = DigitalTwin.load(args.model).networks_only()
    X = df[networks.x_names].to_numpy(float)
    y = df[networks.y_name].to_numpy(float)
    mean, _ = networks.predict(X)
    correction = LineResidual.fit(X, y - mean, line_axis=1)
    print("correction:", correction.to_metadata())
    print(f"data std {y.std():.2f}, noise RMS {correction.noise_rms:.2f} "
          f"(R^2 ceiling {1 - correction.noise_rms ** 2 / y.var():.4f})")
    for label, twin in (("networks alone", networks), ("with the correction", _WithCorrection(networks, correction))):
        pred, _ = twin.predict(X)
        r2 = 1 - np.sum((y - pred) ** 2) / np.sum((y - y.mean()) ** 2)
        study = angle_step_study(twin, axis=networks.x_names[1], time_per_line_s=60)
        rows = study.to_frame()[["step", "recall", "n_peaks", "n_peaks_ref", "spurious", "passes"]]
        print(f"\n{label}: training R^2 {r2:.4f}; angle study proposes {study.proposed_step:g}")
        print(rows.to_string(index=False))


if __name__ == "__main__":
    main()
