"""Figures for the analyses (matplotlib, Agg backend, written atomically).

The dependency goes one way: this module draws the results of
:mod:`~bluesky_twin.analysis.mce` and :mod:`~bluesky_twin.analysis.steps`; they do not
know about it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from bluesky_twin.io_utils import atomic_path

if TYPE_CHECKING:  # pragma: no cover
    from bluesky_twin.analysis.mce import EntropyChange
    from bluesky_twin.analysis.steps import StepStudy

__all__ = ["plot_entropy_change", "plot_step_study"]


def _figure(*args, **kwargs):
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    return Figure(*args, **kwargs)  # no pyplot: no global state, thread-safe


def _save(fig, path: str) -> None:
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120, format="png")


def plot_entropy_change(
    results: Sequence[tuple[str, EntropyChange]],
    path: str,
    *,
    fields: Sequence[float] | None = None,
    title: str | None = None,
) -> None:
    """Plot -dS_M(T) for several top fields, one line style per result.

    Parameters
    ----------
    results
        ``(label, EntropyChange)`` pairs, e.g. ``[("twin", a), ("raw trapezoid", b)]``.
    path
        PNG destination.
    fields
        Top fields to draw (input field unit); default the non-zero fields of the
        last result, at most eight.
    title
        Figure title.
    """
    fig = _figure(figsize=(7.5, 5.0))
    ax = fig.add_subplot(1, 1, 1)
    if fields is None:
        H = results[-1][1].H[1:]
        fields = H[np.unique(np.linspace(0, len(H) - 1, min(len(H), 8)).round().astype(int))]
    import matplotlib as mpl
    from matplotlib.lines import Line2D

    cmap = mpl.colormaps["viridis"]
    styles = ["-", "--", ":", "-."]
    handles = []
    for c, H in enumerate(fields):
        color = cmap(c / max(len(fields) - 1, 1))
        ref = results[0][1]
        k0 = int(np.argmin(np.abs(ref.H - H)))
        handles.append(
            Line2D(
                [],
                [],
                color=color,
                lw=2,
                label=f"{ref.H_start:g} -> {ref.H[k0]:g} {ref.field_unit} ({ref.mu0H[k0]:.3g} T)",
            )
        )
        for r, (_label, res) in enumerate(results):
            k = int(np.argmin(np.abs(res.H - H)))
            ax.plot(res.T, -res.dS[k], styles[r % len(styles)], color=color, lw=1.3)
            if res.dS_std is not None and np.any(res.dS_std[k] > 0):
                ax.fill_between(
                    res.T, -res.dS[k] - res.dS_std[k], -res.dS[k] + res.dS_std[k], color=color, alpha=0.2, lw=0
                )
    for r, (label, res) in enumerate(results):
        band = f" (band: {res.std_kind} std)" if res.dS_std is not None else ""
        handles.append(Line2D([], [], color="0.3", ls=styles[r % len(styles)], label=f"{label}{band}"))
    units = results[0][1].units
    ax.set_xlabel("T (K)")
    ax.set_ylabel(f"$-\\Delta S_M$ ({units})")
    ax.set_title(title or f"Magnetic entropy change from {results[0][1].H_start:g} {results[0][1].field_unit}")
    ax.legend(handles=handles, fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    _save(fig, path)


def plot_step_study(study: StepStudy, path: str) -> None:
    """Write the figure of a field or angle step study."""
    if study.kind == "field":
        _plot_field(study, path)
    else:
        _plot_angle(study, path)


def _plot_field(study: StepStudy, path: str) -> None:
    import matplotlib as mpl

    fig = _figure(figsize=(11, 4.5))
    ax, bx = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    T, dS = study.curves["T"], study.curves["dS"]
    cmap = mpl.colormaps["plasma"]
    for k, step in enumerate(study.steps):
        row = study.rows[k]
        lw = 2.2 if np.isclose(step, study.proposed_step) else 1.0
        ax.plot(
            T,
            -dS[k],
            color=cmap(k / max(len(study.steps) - 1, 1)),
            lw=lw,
            label=f"{step:g} T{' (ref)' if k == 0 else ''}{' *' if np.isclose(step, study.proposed_step) else ''}"
            f"{'' if row['passes'] else ' x'}",
        )
    ax.set_xlabel(f"{study.meta.get('T_axis', 'T')} (K)")
    ax.set_ylabel(f"$-\\Delta S_M$ ({study.curves.get('units', '')})")
    ax.set_title(f"{study.meta['field_min_T']:g} -> {study.meta['field_max_T']:g} T, per field step")
    ax.legend(fontsize=7, title="step (* proposed, x fails)", title_fontsize=7)
    ax.grid(alpha=0.3)
    bx.plot(study.steps, [r["wiggle"] for r in study.rows], "o-", label="wiggle (decides)")
    bx.plot(study.steps, [r["excess_tv"] for r in study.rows], ".--", color="0.5", lw=0.8, label="excess TV")
    bx.set_xscale("log")
    bx.set_yscale("symlog", linthresh=1e-3)
    bx.axhline(study.criteria["tolerance_wiggle"], color="k", ls="--", lw=0.8, label="tolerance")
    bx.axvline(study.proposed_step, color="tab:green", lw=1.0, label=f"proposed {study.proposed_step:g} T")
    cx = bx.twinx()
    cx.plot(study.steps, [r["extra_extrema"] for r in study.rows], "s:", color="tab:red", ms=4)
    cx.set_ylabel("extra local extrema", color="tab:red")
    bx.set_xlabel("field step (T)")
    bx.set_ylabel("oscillation / TV_ref (symlog)")
    bx.set_title("extrinsic oscillation vs field step")
    bx.legend(fontsize=7, loc="upper left")
    bx.grid(alpha=0.3, which="both")
    fig.tight_layout()
    _save(fig, path)


def _plot_angle(study: StepStudy, path: str) -> None:
    fig = _figure(figsize=(13, 4.2))
    axv, oth = study.curves["axis_values"], study.curves["other_values"]
    ref = study.curves["reference"]
    coarsest_failing = next((float(s) for s, r in zip(study.steps, study.rows) if not r["passes"]), None)
    panels = [
        (f"reference {study.steps[0]:g}", ref),
        (f"proposed {study.proposed_step:g}", study.curves["maps"][study.proposed_step]),
    ]
    if coarsest_failing is not None:
        panels.append((f"first failing {coarsest_failing:g}", study.curves["maps"][coarsest_failing]))
    extent = [oth[0], oth[-1], axv[0], axv[-1]]
    vmin, vmax = float(ref.min()), float(ref.max())
    peaks = np.asarray(study.meta["reference_peaks"]).reshape(-1, 2)
    for k, (title, img) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels) + 1, k + 1)
        ax.imshow(img, origin="lower", aspect="auto", extent=extent, vmin=vmin, vmax=vmax, cmap="magma")
        ax.plot(peaks[:, 1], peaks[:, 0], "c+", ms=4, lw=0.6)
        ax.set_title(f"{study.axis} step: {title}", fontsize=9)
        ax.set_xlabel(study.meta["other_axis"])
        ax.set_ylabel(study.axis)
    bx = fig.add_subplot(1, len(panels) + 1, len(panels) + 1)
    bx.plot(study.steps, [r["recall"] for r in study.rows], "o-", label="peak recall")
    bx.plot(study.steps, [r["height_error"] for r in study.rows], "s-", label="peak height error")
    bx.plot(study.steps, [r["nrmse"] for r in study.rows], "^-", label="map NRMSE")
    bx.axhline(study.criteria["tolerance_height_error"], color="k", ls="--", lw=0.8)
    bx.axhline(study.criteria["min_recall"], color="k", ls=":", lw=0.8)
    bx.axvline(study.proposed_step, color="tab:green", lw=1.0, label=f"proposed {study.proposed_step:g}")
    bx.set_xlabel(f"{study.axis} step")
    bx.legend(fontsize=7)
    bx.grid(alpha=0.3)
    fig.tight_layout()
    _save(fig, path)
