"""Does letting the transition move with field make a magnetometer twin's dS_M curve depend less on the seed?

The seeds of an ErCo2 twin disagree most at the sharp first-order peak of |dS_M|(T),
between the coarse fields, where a network may blend the steps of two neighbouring lines
instead of moving one step with field.  This experiment gives every network a learned,
field-dependent shift of the swept axis, ``T' = T - s(H)`` (``s`` a one-hidden-layer tanh
network of ``--units`` units per ensemble member, on the standardised coordinates, its
output layer initialised to zero so that training starts from the plain network), and
fits the twin once per seed with and without it, otherwise with the product's defaults.
It reports what ``bench_twin.py --seeds`` reports: the leave-one-field-out NRMSE per
seed and the seed spread of the predicted |dS_M|(T) curve (RMS difference of two seeds
over the peak of their mean; median pair and largest pair)::

    .venv/bin/python benchmarks/research/seed_spread_warp.py --dataset erco2 --units 0,8

``--units 0`` is the product's twin.  The shift is patched into
:class:`bluesky_twin.twin.network.BatchedMLP` for the run (internal names; it is not a
product option).  The fits are seeded and have no time limit, so the numbers repeat on
any load of the same CPU kind; the wall times do not.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from _seed_study import DATASETS, ROOT, print_table, seed_study_parser, study_cells

sys.path.insert(0, str(ROOT / "benchmarks"))


def patch_shift(units: int) -> None:
    """Give every :class:`BatchedMLP` built from now on a learned shift of input 0 by input 1 (0: none)."""
    import torch
    from torch import nn

    from bluesky_twin.twin import network

    cls = network.BatchedMLP
    base_init = getattr(cls, "_unshifted_init", cls.__init__)
    base_encode = getattr(cls, "_unshifted_encode", cls.encode)
    cls._unshifted_init, cls._unshifted_encode = base_init, base_encode
    if not units:
        cls.__init__, cls.encode = base_init, base_encode
        return

    def __init__(self, members, n_in, *args, **kwargs):  # noqa: N807 - a patched constructor
        base_init(self, members, n_in, *args, **kwargs)
        gen = kwargs.get("generator")
        self.shift_w1 = nn.Parameter(torch.randn(members, 1, units, generator=gen))
        self.shift_b1 = nn.Parameter(torch.empty(members, 1, units).uniform_(-1.0, 1.0, generator=gen))
        self.shift_w2 = nn.Parameter(torch.zeros(members, units, 1))

    def encode(self, x):
        if hasattr(self, "shift_w1"):
            hidden = torch.tanh(torch.baddbmm(self.shift_b1, x[..., 1:2], self.shift_w1))
            x = torch.cat([x[..., :1] - torch.bmm(hidden, self.shift_w2), x[..., 1:]], dim=-1)
        return base_encode(self, x)

    cls.__init__, cls.encode = __init__, encode


def main(argv: list[str] | None = None) -> int:
    ap = seed_study_parser(__doc__.split("\n")[0])
    ap.add_argument("--units", default="0,8", help="comma-separated hidden units of the shift network (0: none)")
    args = ap.parse_args(argv)
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
        variants = [int(u) for u in args.units.split(",")]
        if any(u < 0 for u in variants):
            raise ValueError("--units must be >= 0")
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    import _twin_seeds as ts
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    key = DATASETS[args.dataset]
    rows = []
    for units in variants:
        patch_shift(units)
        t0 = time.perf_counter()
        r = ts.magnetometer_seeds(key, Path(args.data), seeds, args.trials, args.jobs, {})
        rows.append(f"| {units or 'none'} | {study_cells(r)}")
        print(f"shift units {units}: {time.perf_counter() - t0:.0f} s", flush=True)
    patch_shift(0)
    print_table(
        f"{ts.MAGNETOMETERS[key][0]}, seeds {args.seeds}, {args.trials} trials, jobs {args.jobs}",
        ["shift units", "LOFO NRMSE, median (per seed)", "dS_M spread, median pair", "largest pair"]
        + ["fit wall (s), median"],
        rows,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
