"""Assemble ``docs/benchmarks.md`` from the per-area sections in ``docs/benchmarks/``.

Each benchmark script writes its own section (``bench_twin.py`` -> ``twin.md``,
``bench_callbacks.py`` -> ``callbacks.md``, ``bench_gan.py`` -> ``gan.md``,
``bench_ins_sim.py`` -> ``ins_sim.md``), so they can run separately; this script
only concatenates them in a fixed order and shifts their headings down a level::

    .venv/bin/python benchmarks/collect.py
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ORDER = ["twin", "selection", "selection_more", "predict", "warm_start", "callbacks", "ins_sim", "gan", "gan_powder"]


def main() -> None:
    sections_dir = ROOT / "docs" / "benchmarks"
    names = ORDER + sorted(p.stem for p in sections_dir.glob("*.md") if p.stem not in ORDER)
    out = [
        "# Benchmarks",
        "",
        "Every number below was printed by the command named in its section, on the project's",
        "2-core machine, which was shared with other work while they ran: compare the ratios, not",
        "single absolute times. Re-run a section's command, then `.venv/bin/python benchmarks/collect.py`.",
        "",
        "The twin benchmarks read the Terashima et al. (2023) CSV files from `--data DIR`, else from",
        "`$BLUESKY_TWIN_DATA`, else from `../shared/data/terashima2023` beside the repository.",
        "Some ARPES results in [twin.md](twin.md) come from two exploration scripts kept in the git",
        "history, not in the tree: `benchmarks/explore_fourier_axes.py` (per-axis Fourier scales and",
        "final-training length against between-line error) and `benchmarks/explore_line_residual.py`",
        "(the line-residual correction's effect on the angle-step study), at commit cb83bc5^",
        "(`git show cb83bc5^:benchmarks/explore_fourier_axes.py`). The GAN research scripts behind",
        "[gan.md](gan.md) (oracles, diagnostics) are in `benchmarks/research/`.",
        "",
    ]
    for name in names:
        path = sections_dir / name
        path = path.with_suffix(".md")
        if not path.exists():
            continue
        text = path.read_text()
        # links inside sections are relative to docs/benchmarks/
        text = text.replace("](../figures/", "](figures/").replace("](../", "](")
        for line in text.splitlines():
            out.append("#" + line if line.startswith("#") else line)
        out.append("")
    (ROOT / "docs" / "benchmarks.md").write_text("\n".join(out) + "\n")
    print(f"wrote docs/benchmarks.md from {', '.join(n for n in names if (sections_dir / (n + '.md')).exists())}")


if __name__ == "__main__":
    main()
