"""What the magnetometer seed-study research scripts share: their options and their table.

The studies themselves are ``benchmarks/_twin_seeds.py``'s (imported lazily by the
scripts, so that ``--help`` stays quick).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

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
    return ap


def print_table(title: str, header: Sequence[str], rows: Sequence[str]) -> None:
    """Print *title* and a Markdown table of *header* over the already formatted *rows*."""
    print(f"\n{title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    print("\n".join(rows))
