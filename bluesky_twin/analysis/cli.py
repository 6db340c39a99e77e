"""``bluesky-twin mce`` and ``bluesky-twin steps``.

Only argparse is imported at module level (``bluesky-twin --help`` stays fast);
numpy, pandas, torch and matplotlib are imported inside the commands.  Every
input is validated and every result computed before the first file is written,
and files are written atomically, so a failed command never overwrites output.
"""

from __future__ import annotations

import argparse
from typing import Any

from bluesky_twin.errors import InputError
from bluesky_twin.protocols import Twin

FIELD_UNITS = ("Oe", "T", "A/m")
MOMENT_UNITS = ("emu", "emu/g", "Am2", "Am2/kg")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``mce`` and ``steps`` subcommands."""
    p = subparsers.add_parser(
        "mce",
        help="magnetocaloric entropy change dS_M(T, H) by the Maxwell relation (twin and/or raw data)",
        description=(
            "Entropy change dS_M = mu0 * int_{H0}^{H} dM/dT dH' from a twin model directory "
            "(simulated on a fine grid) and/or from raw isofield data (--data; coarse trapezoid "
            "integration); with both, also the raw result with the twin correcting the trapezoid rule "
            "between the measured fields (source 'twin-corrected').  Writes OUT.csv, OUT.json and OUT.png."
        ),
    )
    p.add_argument("model_dir", nargs="?", metavar="MODEL_DIR", help="twin model directory (from `bluesky-twin fit`)")
    p.add_argument("--data", metavar="DATA.csv", help="raw scan data; M(T) sweeps at a few fixed fields")
    p.add_argument(
        "--x",
        action="append",
        metavar="COL",
        default=None,
        help="temperature column then field column (give twice); default for a twin: its axis order",
    )
    p.add_argument("--y", metavar="COL", help="magnetisation column of --data")
    p.add_argument("--field-unit", choices=FIELD_UNITS, default="Oe", help="unit of the field column (T means mu0*H)")
    p.add_argument("--mass-g", type=float, default=None, help="sample mass in g: report J/(kg K) (M assumed in emu)")
    p.add_argument("--moment-unit", choices=MOMENT_UNITS, default=None, help="unit of M for SI conversion")
    p.add_argument(
        "--T-step", type=float, default=None, metavar="K", help="twin temperature grid step (default: range/500)"
    )
    p.add_argument("--T-range", type=float, nargs=2, default=None, metavar=("LO", "HI"), help="twin temperature range")
    p.add_argument(
        "--H-step",
        type=float,
        default=None,
        metavar="H",
        help="twin field grid step in --field-unit (default: range/200)",
    )
    p.add_argument("--H-max", type=float, default=None, metavar="H", help="top field for the twin in --field-unit")
    p.add_argument(
        "--method",
        choices=("isofield", "isothermal"),
        default="isofield",
        help="formula for the twin grid (raw data always use isofield)",
    )
    p.add_argument(
        "--out", required=True, metavar="OUT_PREFIX", help="output prefix: writes OUT.csv, OUT.json, OUT.png"
    )
    p.add_argument("--overwrite", action="store_true", help="replace existing OUT.csv/.json/.png files")
    p.set_defaults(func=_run_mce)

    s = subparsers.add_parser(
        "steps",
        help="propose the coarsest field step (MCE) or map-axis step (e.g. ARPES angle) with a twin",
        description=(
            "Simulate the measurement with the twin at candidate steps, quantify the damage against the "
            "finest step and propose the coarsest step within tolerance.  Writes OUT.csv (metrics per step), "
            "OUT.json (proposal) and OUT.png."
        ),
    )
    s.add_argument("model_dir", metavar="MODEL_DIR")
    s.add_argument("--kind", choices=("field", "angle"), required=True)
    s.add_argument(
        "--steps",
        default=None,
        metavar="S1,S2,...",
        help="candidate steps (field: tesla, mu0*H; angle: axis unit); the finest is the reference",
    )
    s.add_argument(
        "--tolerance",
        type=float,
        default=None,
        help="field: max wiggle of dS_M(T) and, unless --deviation-tolerance, max deviation from the "
        "reference (fraction of the top-field peak; default 0.02); angle: max mean peak-height error "
        "(fraction of range; default 0.05)",
    )
    s.add_argument("--time-per-point-s", type=float, default=None, help="seconds per reading (time estimate)")
    s.add_argument(
        "--members",
        action="store_true",
        help="repeat the study for every ensemble member and report the spread of proposals",
    )
    g = s.add_argument_group("field study")
    g.add_argument("--field-unit", choices=FIELD_UNITS, default="Oe", help="unit of the twin's field axis")
    g.add_argument("--T-axis", default=None, help="temperature axis name (default: first twin axis)")
    g.add_argument("--H-axis", default=None, help="field axis name (default: second twin axis)")
    g.add_argument("--field-max", type=float, default=None, metavar="TESLA", help="top field (default: twin range)")
    g.add_argument("--field-min", type=float, default=None, metavar="TESLA", help="lowest field (default: twin range)")
    g.add_argument("--T-step", type=float, default=None, metavar="K", help="temperature grid step (default: range/500)")
    g.add_argument("--extrema-tolerance", type=int, default=0, help="accepted number of extra local extrema")
    g.add_argument(
        "--deviation-tolerance",
        type=float,
        default=None,
        help="max deviation of dS_M(T, H) from the reference at any field, as a fraction of the top-field "
        "peak (default: --tolerance; inf: the wiggle alone decides)",
    )
    g.add_argument(
        "--check-fields",
        choices=("top", "all"),
        default="top",
        help="compare dS_M(T) at the top field only, or at every field of each candidate grid",
    )
    g.add_argument("--points-per-field", type=int, default=None, help="readings per temperature sweep (time estimate)")
    g.add_argument(
        "--temperature-rate-K-per-min", type=float, default=None, help="temperature sweep rate (time estimate)"
    )
    g.add_argument("--sweep-rate-T-per-min", type=float, default=None, help="field ramp rate (time estimate)")
    g.add_argument("--settle-s", type=float, default=0.0, help="settling time per field (time estimate)")
    g.add_argument("--mass-g", type=float, default=None, help="sample mass in g (M in emu) for J/(kg K)")
    a = s.add_argument_group("angle study")
    a.add_argument("--axis", default=None, help="stepped axis name (default: second twin axis)")
    a.add_argument("--min-recall", type=float, default=0.9, help="min fraction of reference peaks recovered")
    a.add_argument(
        "--max-spurious", type=float, default=0.1, help="max spurious peaks as a fraction of the reference peak count"
    )
    a.add_argument(
        "--peak-tolerance",
        type=float,
        default=None,
        help="distance (axis units) within which a peak counts as recovered (default 2.5 finest steps)",
    )
    a.add_argument("--peak-threshold", type=float, default=0.2, help="peaks must exceed this fraction of the map range")
    a.add_argument(
        "--peak-prominence",
        type=float,
        default=0.05,
        help="peaks must stand this fraction of the map range above their neighbourhood minimum",
    )
    a.add_argument(
        "--peak-window",
        type=float,
        default=None,
        help="side of the local-maximum neighbourhood in axis units (default 10 finest steps)",
    )
    a.add_argument("--other-step", type=float, default=None, help="grid step along the other axis (default range/400)")
    a.add_argument("--time-per-line-s", type=float, default=None, help="overhead seconds per line (time estimate)")
    s.add_argument(
        "--out", required=True, metavar="OUT_PREFIX", help="output prefix: writes OUT.csv, OUT.json, OUT.png"
    )
    s.add_argument("--overwrite", action="store_true", help="replace existing OUT.csv/.json/.png files")
    s.set_defaults(func=_run_steps)


# ----------------------------------------------------------------------------- helpers


def _load_twin(model_dir: str) -> Any:
    import os

    from bluesky_twin.twin import DigitalTwin

    if not os.path.isdir(model_dir):
        raise InputError(f"model directory not found: {model_dir}")
    return DigitalTwin.load(model_dir)


def _training_box(twin: Any) -> Any:
    """The twin's ``(n_axes, 2)`` training range, which the default grids need."""
    from bluesky_twin.analysis.protocols import x_range_of

    xr = x_range_of(twin)
    if xr is None:
        raise InputError("the twin declares no x_range; the default grids need it")
    return xr


def _parse_steps(text: str | None) -> list[float] | None:

    if text is None:
        return None
    try:
        values = [float(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise InputError(f"--steps must be comma-separated numbers; got {text!r}") from None
    return values


def _grid(lo: float, hi: float, step: float | None, n_default: int, label: str):
    import numpy as np

    if not (np.isfinite(lo) and np.isfinite(hi) and hi > lo):
        raise InputError(f"{label} range is empty: [{lo:g}, {hi:g}]")
    if step is None:
        return np.linspace(lo, hi, n_default + 1)
    if not (np.isfinite(step) and step > 0):
        raise InputError(f"{label} step must be positive; got {step!r}")
    n = int(np.floor((hi - lo) / step + 1e-9))
    if n < 2:
        raise InputError(f"{label} step {step:g} leaves fewer than 3 points in [{lo:g}, {hi:g}]")
    if n > 20000:
        raise InputError(f"{label} step {step:g} gives {n} points; use a coarser step")
    g = lo + step * np.arange(n + 1)
    return g if hi - g[-1] < 1e-9 * step else np.append(g, hi)


def _out_paths(args: argparse.Namespace, *suffixes: str) -> list[str]:
    """``OUT_PREFIX + suffix`` for each suffix, checked before anything runs: an existing
    file is replaced only with ``--overwrite``, an input (``--data``) never."""
    import os

    from bluesky_twin.modeldir import check_output_file

    prefix = args.out
    if not prefix or prefix.endswith(os.sep):
        raise InputError(f"--out must be a file prefix, not a directory: {prefix!r}")
    inputs = tuple(p for p in (getattr(args, "data", None),) if p)
    paths = [prefix + s for s in suffixes]
    for path in paths:
        check_output_file(path, overwrite=args.overwrite, inputs=inputs)
    return paths


# ----------------------------------------------------------------------------- mce


def _run_mce(args: argparse.Namespace) -> int:
    import numpy as np

    from bluesky_twin.analysis.mce import entropy_change_from_twin, entropy_change_isofield
    from bluesky_twin.analysis.plotting import plot_entropy_change
    from bluesky_twin.io_utils import atomic_path, atomic_write_json

    if args.model_dir is None and args.data is None:
        raise InputError("give a MODEL_DIR, --data DATA.csv, or both")
    if args.x is not None and len(args.x) != 2:
        raise InputError(f"--x must be given exactly twice (temperature column, field column); got {args.x}")
    csv_path, json_path, png_path = _out_paths(args, ".csv", ".json", ".png")
    results: list[tuple[str, Any]] = []
    summary: dict[str, Any] = {"command": "mce", "field_unit": args.field_unit}
    # the units every estimate below shares
    units = {"field_unit": args.field_unit, "mass_g": args.mass_g, "moment_unit": args.moment_unit}

    raw = None
    if args.data is not None:
        from bluesky_twin.data import load_scan_table

        if args.x is None or args.y is None:
            raise InputError("--data needs --x T_COL --x H_COL --y M_COL")
        table = load_scan_table(args.data, args.x, args.y)
        if table.n_dropped:
            print(f"dropped {table.n_dropped} row(s) with NaN/inf from {args.data}")
        raw = entropy_change_isofield(table.X[:, 0], table.X[:, 1], table.y, **units, y_name=args.y)
        summary["raw"] = {**raw.summary(), "data": args.data, "n_rows": len(table), "n_dropped": table.n_dropped}

    twin_res = None
    if args.model_dir is not None:
        twin = _load_twin(args.model_dir)
        names = list(twin.x_names)
        if len(names) != 2:
            raise InputError(f"the twin in {args.model_dir} has axes {names}; mce needs two (T, H)")
        t_name, h_name = args.x if args.x is not None else names
        for n in (t_name, h_name):
            if n not in names:
                raise InputError(f"column {n!r} is not an axis of the twin {names}")
        xr = _training_box(twin)
        it, ih = names.index(t_name), names.index(h_name)
        t_lo, t_hi = args.T_range if args.T_range is not None else xr[it]
        T_grid = _grid(t_lo, t_hi, args.T_step, 500, "temperature")
        h_lo = float(xr[ih, 0])
        h_hi = float(args.H_max) if args.H_max is not None else float(xr[ih, 1])
        H_grid = _grid(h_lo, h_hi, args.H_step, 200, "field")
        if raw is not None:  # make the measured fields exact rows of the twin grid
            H_grid = np.unique(np.concatenate([H_grid, raw.H[(raw.H >= h_lo) & (raw.H <= h_hi)]]))
        twin_res = entropy_change_from_twin(
            twin, T_grid, H_grid, **units, T_axis=t_name, H_axis=h_name, method=args.method
        )
        summary["twin"] = {
            **twin_res.summary(),
            "model_dir": args.model_dir,
            "twin_version": twin.version if isinstance(twin, Twin) else None,
            "H": None,
            "n_H": int(len(H_grid)),
        }
        results.append(("twin", twin_res))
    if raw is not None:
        results.append(("raw trapezoid", raw))
    if raw is not None and twin_res is not None:
        # the readings, with the twin correcting only the trapezoid rule between the measured fields
        from bluesky_twin.analysis.mce import entropy_change_twin_corrected

        corrected = entropy_change_twin_corrected(
            table.X[:, 0], table.X[:, 1], table.y, twin, **units, T_axis=t_name, H_axis=h_name, y_name=args.y
        )
        summary["twin_corrected"] = corrected.summary()
        results.append(("twin-corrected", corrected))

    import pandas as pd

    frames = []
    for label, res in results:
        f = res.to_frame()
        f.insert(0, "source", label)
        frames.append(f)
    table_out = pd.concat(frames, ignore_index=True)
    fields = raw.H[1:] if raw is not None else None
    summary["units"] = results[0][1].units
    summary["outputs"] = {"csv": csv_path, "json": json_path, "png": png_path}
    # top-field peak of -dS_M for a quick look
    summary["peaks"] = {
        label: {
            "H_max": float(res.H[-1]),
            "T_at_max": float(res.T[np.argmax(-res.dS[-1])]),
            "max_minus_dS": float(np.max(-res.dS[-1])),
        }
        for label, res in results
    }
    plot_entropy_change(results, png_path, fields=fields)
    with atomic_path(csv_path) as tmp:
        table_out.to_csv(tmp, index=False)
    atomic_write_json(json_path, summary)
    for label, info in summary["peaks"].items():
        print(
            f"{label}: max -dS_M = {info['max_minus_dS']:.4g} {summary['units']} at T = {info['T_at_max']:.2f} K "
            f"for {results[0][1].H_start:g} -> {info['H_max']:g} {args.field_unit}"
        )
    print(f"wrote {csv_path}, {json_path}, {png_path}")
    return 0


# ----------------------------------------------------------------------------- steps


def _step_configs(args: argparse.Namespace) -> dict[str, Any]:
    """The study's criteria and timing from the command line (checked before anything loads)."""
    from bluesky_twin.analysis.config import AngleStepCriteria, FieldStepCriteria, FieldTiming, LineTiming

    if args.kind == "field":
        return {
            "criteria": FieldStepCriteria(
                **({} if args.tolerance is None else {"tolerance": args.tolerance}),
                deviation_tolerance=args.deviation_tolerance,
                extrema_tolerance=args.extrema_tolerance,
                check_fields=args.check_fields,
            ),
            "timing": FieldTiming(
                time_per_point_s=args.time_per_point_s,
                points_per_field=args.points_per_field,
                temperature_rate_K_per_min=args.temperature_rate_K_per_min,
                sweep_rate_T_per_min=args.sweep_rate_T_per_min,
                settle_s_per_field=args.settle_s,
            ),
        }
    return {
        "criteria": AngleStepCriteria(
            **({} if args.tolerance is None else {"tolerance": args.tolerance}),
            min_recall=args.min_recall,
            max_spurious=args.max_spurious,
            peak_tolerance=args.peak_tolerance,
            peak_threshold=args.peak_threshold,
            peak_prominence=args.peak_prominence,
            peak_window=args.peak_window,
        ),
        "timing": LineTiming(time_per_point_s=args.time_per_point_s, time_per_line_s=args.time_per_line_s),
    }


def _run_steps(args: argparse.Namespace) -> int:
    import numpy as np

    from bluesky_twin.analysis.plotting import plot_step_study
    from bluesky_twin.analysis.steps import (
        DEFAULT_ANGLE_STEPS,
        DEFAULT_FIELD_STEPS_T,
        angle_step_study,
        field_step_study,
    )
    from bluesky_twin.io_utils import atomic_path, atomic_write_json

    csv_path, json_path, png_path = _out_paths(args, ".csv", ".json", ".png")
    steps = _parse_steps(args.steps)
    configs = _step_configs(args)
    twin = _load_twin(args.model_dir)
    if args.kind == "field":
        T_grid = None
        if args.T_step is not None:
            from bluesky_twin.analysis.protocols import axis_index

            it = axis_index(twin, args.T_axis, 0)
            xr = _training_box(twin)
            T_grid = _grid(xr[it, 0], xr[it, 1], args.T_step, 500, "temperature")
        study_fn = field_step_study
        study_kwargs = dict(
            configs,
            field_max=args.field_max,
            field_min=args.field_min,
            steps=steps or DEFAULT_FIELD_STEPS_T,
            T_grid=T_grid,
            field_unit=args.field_unit,
            T_axis=args.T_axis,
            H_axis=args.H_axis,
            mass_g=args.mass_g,
        )
    else:
        study_fn = angle_step_study
        study_kwargs = dict(
            configs,
            axis=args.axis if args.axis is not None else 1,
            steps=steps or DEFAULT_ANGLE_STEPS,
            other_step=args.other_step,
        )
    study = study_fn(twin, **study_kwargs)
    info = study.to_json_dict()
    spread = None
    if args.members:
        from bluesky_twin.analysis.robustness import member_step_proposals

        spread = member_step_proposals(study_fn, twin, ensemble_study=study, **study_kwargs)
        info["member_proposals"] = spread.to_json_dict()
    info.update(
        command="steps",
        model_dir=args.model_dir,
        twin_version=twin.version if isinstance(twin, Twin) else None,
        outputs={"csv": csv_path, "json": json_path, "png": png_path},
    )
    frame = study.to_frame()
    plot_step_study(study, png_path)
    with atomic_path(csv_path) as tmp:
        frame.to_csv(tmp, index=False)
    atomic_write_json(json_path, info)
    p = study.proposed
    unit = "T" if study.kind == "field" else f"({study.axis} units)"
    extra = f", estimated time {p['time_s'] / 3600:.2f} h" if np.isfinite(p["time_s"]) else ""
    note = "" if study.proposal_ok else " (only the finest candidate passes: try finer steps)"
    print(f"proposed {study.kind} step: {study.proposed_step:g} {unit}{extra}{note}")
    if spread is not None:
        print(
            f"per member: {', '.join(f'{v:g}' for v in spread.members)} {unit}; every member accepts "
            f"{spread.conservative:g} {unit}; {spread.agreement:.0%} agree with the ensemble"
        )
    print(frame.to_string(index=False))
    print(f"wrote {csv_path}, {json_path}, {png_path}")
    return 0
