"""What the magnetometer seed-study research scripts share: options, data, table cells and table.

The studies themselves are ``benchmarks/_twin_seeds.py``'s (imported lazily by the
scripts, so that ``--help`` stays quick).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]

#: ``--dataset`` names and their keys in ``_twin_seeds.MAGNETOMETERS``
DATASETS = {"erco2": 1, "fe3ga4": 2}


def seed_study_parser(description: str) -> argparse.ArgumentParser:
    """A parser with the options every seed study takes (data set, seeds, trials, jobs, data)."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--dataset", choices=sorted(DATASETS), default="erco2")
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--trials", type=int, default=30)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "terashima2023"))
    ap.add_argument(
        "--field-scale",
        choices=["linear", "sqrt"],
        default="linear",
        help="input scale of the field axis (TwinSearchSpace.input_scales)",
    )
    ap.add_argument(
        "--monotone",
        action="store_true",
        help="the magnetisation increases with the field (TwinSearchSpace.monotone)",
    )
    return ap


def space_options(dataset: str, data: str, scale: str, monotone: bool = False) -> dict[str, Any]:
    """``DigitalTwin.fit`` options: the field of *dataset* on *scale*, and (*monotone*) M increasing with it.

    None for the default (a linear, free field).
    """
    if scale == "linear" and not monotone:
        return {}
    from bluesky_twin.twin import TwinSearchSpace

    field = load_magnetometer(dataset, data)[3][1]
    scales = {} if scale == "linear" else {field: scale}
    return {"search_space": TwinSearchSpace(input_scales=scales, monotone={field: "increasing"} if monotone else {})}


def print_table(title: str, header: Sequence[str], rows: Sequence[str]) -> None:
    """Print *title* and a Markdown table of *header* over the already formatted *rows*."""
    print(f"\n{title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    print("\n".join(rows))


def load_magnetometer(dataset: str, data: str) -> tuple[str, float, Any, list[str], str, Any]:
    """The ``--dataset`` scan: its name, top field of the dS_M curve, frame, x and y columns, x values."""
    import _twin_seeds as ts
    import pandas as pd

    name, fname, top = ts.MAGNETOMETERS[DATASETS[dataset]]
    df = pd.read_csv(Path(data) / fname)
    xcols, ycol = list(df.columns[:2]), df.columns[2]
    return name, top, df, xcols, ycol, df[xcols].to_numpy(float)


def study_cells(result: dict[str, Any]) -> str:
    """The table cells of one ``_twin_seeds.magnetometer_seeds`` result after its label cells.

    Leave-one-field-out NRMSE (median, per seed), dS_M spread (median pair, largest pair)
    and the median fit wall time, each cell closed by ``|``.
    """
    import numpy as np

    lofo = [s["lofo_nrmse"] for s in result["seeds"]]
    fits = [s["fit_s"] for s in result["seeds"]]
    spread = result["dsm_spread"]
    per_seed = ", ".join(f"{v:.4f}" for v in lofo)
    return (
        f"{np.median(lofo):.4f} ({per_seed}) | {spread['pairwise_median_pct']:.2f} % | "
        f"{spread['pairwise_max_pct']:.2f} % | {np.median(fits):.1f} |"
    )
