"""benchmarks/bench_steering.py: a tiny configuration of its core and the steering.json contract."""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sklearn")

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_steering.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_steering", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_steering"] = module  # dataclasses resolve annotations through sys.modules
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("bench_steering", None)


def test_tiny_run_writes_the_contract(bench, tmp_path):
    args = argparse.Namespace(budget=10, data=None, truth_trials=1, erco2_field_scale="sqrt", monotone_field=[])
    (inst,) = bench.build_instruments(["erco2_sim"], args, tmp_path).values()
    inst.line_points = np.linspace(26.0, 50.0, 9)  # a tiny configuration: coarse lines and grids
    inst.paper_step = 0.5
    seeds = [0, 1]
    strategies = ["uniform_paper", "uniform_double", "gp", "random", "oracle_derived"]
    data = bench.run_benchmark({"erco2_sim": inst}, seeds, {}, strategies, log=lambda s: None)
    text = json.dumps(data, default=bench._json_default)
    back = json.loads(text)
    entry = back["instruments"]["erco2_sim"]
    assert set(entry["strategies"]) == set(strategies)
    for name, res in entry["strategies"].items():
        for key in ("instrument_time_s", "lines", "error_pct"):
            assert len(res[key]) == len(seeds), (name, key)
            assert all(isinstance(v, (int, float)) and math.isfinite(v) for v in res[key]), (name, key)
        assert all(t > 0 for t in res["instrument_time_s"])
    uni = entry["strategies"]["uniform_paper"]
    assert uni["lines"] == [11, 11]
    # every steering strategy starts from the paper's 8 coarse fields and spends the same budget
    assert inst.initial_lines == list(bench.ERCO2_COARSE_FIELDS) and len(inst.initial_lines) == 8
    assert entry["strategies"]["random"]["lines"] == [10, 10] and entry["strategies"]["gp"]["lines"] == [10, 10]
    # twice the step: about half the lines, less time, a larger error
    double = entry["strategies"]["uniform_double"]
    assert double["lines"] == [6, 6] and double["instrument_time_s"][0] < 0.75 * uni["instrument_time_s"][0]
    assert double["error_pct"][0] > uni["error_pct"][0]
    # the ratio key exists (null when the twin strategy was not run or did not reach the error)
    assert "time_ratio_uniform_over_twin" in entry
    ratio = entry["time_ratio_uniform_over_twin"]
    assert ratio is None or ratio > 0
    oracle = entry["time_ratio_by_strategy"]["oracle_derived"]
    assert len(oracle["per_seed"]) == len(seeds)
    # error curves: instrument time grows, the last point is the final error
    curve = entry["strategies"]["oracle_derived"]["curve"][0]
    assert [c[0] for c in curve] == sorted(c[0] for c in curve) and curve[-1][2] == pytest.approx(
        entry["strategies"]["oracle_derived"]["error_pct"][0]
    )
    # the model the plan steered by after each run is scored at every checkpoint: the truth's own
    # estimate is exact, and the truth-corrected lines beat the bare lines' trapezoid on the coarse start
    oracle_res = entry["strategies"]["oracle_derived"]
    model_curve, assisted_curve = oracle_res["curve_model"][0], oracle_res["curve_assisted"][0]
    assert [c[:2] for c in model_curve] == [c[:2] for c in curve] == [c[:2] for c in assisted_curve]
    assert all(c[2] < 1e-6 for c in model_curve)
    assert assisted_curve[0][2] < curve[0][2]
    assert entry["strategies"]["uniform_paper"]["curve_model"] == [[], []]
    assert "time_ratio_assisted" in entry and "time_ratio_model_per_seed" in entry
    assert "time_ratio_lines_per_seed" in entry and entry["twin_estimate"] == "model"


def test_bad_input_exits_2_with_one_line_before_writing(bench, tmp_path, capsys):
    out = tmp_path / "out"
    assert bench.main(["--out", str(out), "--instruments", "erco2_sim,nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope" in err[0]
    assert bench.main(["--out", str(out), "--seeds", "a,b"]) == 2
    assert bench.main(["--out", str(out), "--budget", "3"]) == 2
    assert bench.main(["--out", str(out), "--workers", "0"]) == 2
    assert bench.main(["--out", str(out), "--budget", "8", "--instruments", "erco2_sim"]) == 2  # 8 initial lines
    assert not out.exists()


def test_shared_first_fits_fit_identical_data_once(bench):
    import pandas as pd

    from bluesky_twin.twin import TwinSearchSpace

    lines, points = np.meshgrid(np.linspace(0.0, 1.0, 5), np.linspace(0.0, 1.0, 12))
    frame = pd.DataFrame({"t": points.ravel(), "h": lines.ravel(), "m": np.sin(3 * points.ravel()) * lines.ravel()})
    kwargs = {"trials": 1, "seed": 0, "ensemble_size": 1, "search_space": TwinSearchSpace.capped(5), "progress": False}
    fits = bench.SharedFirstFits()
    first = fits(frame, x=["t", "h"], y="m", study_name="a", **kwargs)
    again = fits(frame.copy(), x=["t", "h"], y="m", study_name="b", **kwargs)
    assert fits.hits == 1 and again.version == first.version
    again.metadata["training_run_uids"] = ["x"]  # a trainer's note on its copy stays its own
    assert "training_run_uids" not in first.metadata
    other = frame.assign(m=frame["m"] + 0.1)
    assert fits(other, x=["t", "h"], y="m", **kwargs).version != first.version and fits.hits == 1
    assert fits(frame, x=["t", "h"], y="m", **{**kwargs, "seed": 1}) is not None and fits.hits == 1
    refit = fits(frame, x=["t", "h"], y="m", warm_start=first, **kwargs)  # refits always run
    assert fits.hits == 1 and refit.metadata["parent_version"] == first.version


def test_targets_read_each_strategy_as_its_user_does_and_from_its_lines(bench):
    res = {
        "uniform_equal_lines": {"error_pct": [23.4, 23.5, 23.3], "error_pct_model": [26.5, 24.4, 24.2]},
        "adaptive_interp": {"error_pct": [24.4, 23.3, 24.6], "error_pct_model": [20.8, 19.8, 24.2]},
        "gp": {"error_pct": [48.0, 49.0, 50.0], "error_pct_model": [100.0, 110.0, 120.0]},
    }
    # a twin-steered run is read by its twin; a competitor's optional model only when it is better
    assert bench.answer_errors("adaptive_interp", res["adaptive_interp"]) == [20.8, 19.8, 24.2]
    assert bench.answer_errors("uniform_equal_lines", res["uniform_equal_lines"]) == [23.4, 23.5, 23.3]
    assert bench.answer_errors("gp", {"error_pct": [5.0, 2.0], "error_pct_model": [3.0, None]}) == [3.0, 2.0]
    assert bench.answer_errors("random", {"error_pct": [4.0], "error_pct_model": [1.0]}) == [4.0]
    t = bench.targets("map", "adaptive_interp", res)
    assert t == {
        "adaptive_interp_beats_gp": True,
        "adaptive_interp_beats_uniform_equal_lines": True,  # twin map 20.8 against the lines' 23.4
        "adaptive_interp_lines_beats_gp": True,
        "adaptive_interp_lines_beats_uniform_equal_lines": False,  # both read linearly: 24.4 against 23.4
    }
    res["adaptive_interp"]["error_pct_model"] = [25.0, 25.0, 25.0]
    assert not bench.targets("map", "adaptive_interp", res)["adaptive_interp_beats_uniform_equal_lines"]
    # a better twin of the uniform lines raises the bar the twin-chosen lines must pass
    res["adaptive_interp"]["error_pct_model"] = [22.0, 22.0, 22.0]
    assert bench.targets("map", "adaptive_interp", res)["adaptive_interp_beats_uniform_equal_lines"]
    res["uniform_equal_lines"]["error_pct_model"] = [21.0, 21.0, 21.0]
    assert not bench.targets("map", "adaptive_interp", res)["adaptive_interp_beats_uniform_equal_lines"]


def test_the_time_ratio_reads_twin_steering_by_its_twin_and_lists_the_lines_alone(bench):
    # error curves: (instrument time s, lines, error %); the grid takes 30 h to reach 2 %
    grid = {"instrument_time_s": [30 * 3600.0], "error_pct": [2.0], "lines": [26]}
    lines_curve = [[5 * 3600.0, 5, 9.0], [8 * 3600.0, 8, 4.0], [12 * 3600.0, 12, 2.5]]
    model_curve = [[5 * 3600.0, 5, 3.0], [8 * 3600.0, 8, 1.5], [12 * 3600.0, 12, 0.5]]
    entry = {
        "kind": "mce",
        "twin_strategy": "adaptive_std_sparse",
        "strategies": {
            "uniform_paper": {**grid, "error_pct_model": [None], "curve": [[]], "curve_model": [[]]},
            "adaptive_std_sparse": {
                "instrument_time_s": [12 * 3600.0],
                "lines": [12],
                "error_pct": [2.5],
                "error_pct_model": [0.5],
                "curve": [lines_curve],
                "curve_model": [model_curve],
            },
            "random": {
                "instrument_time_s": [12 * 3600.0],
                "lines": [12],
                "error_pct": [2.2],
                "error_pct_model": [None],
            },
        },
    }
    bench.summarise(entry)
    assert entry["twin_estimate"] == "model"
    assert entry["time_ratio_uniform_over_twin"] == pytest.approx(30 / 8)  # its twin reaches 2 % after 8 h
    assert entry["time_ratio_lines_per_seed"] == [None] and entry["time_ratio_lines"] is None
    assert entry["targets"]["time_ratio_at_least_3"] and not entry["targets"]["time_ratio_lines_at_least_3"]
    # at the end of the budget: the twin's 0.5 % beats random's 2.2 %; from the lines, 2.5 % does not
    assert entry["targets"]["adaptive_std_sparse_beats_random"]
    assert not entry["targets"]["adaptive_std_sparse_lines_beats_random"]


def test_sparse_strategies_start_from_every_other_initial_line_with_both_ends(bench, tmp_path):
    args = argparse.Namespace(budget=None, data=None, truth_trials=1, erco2_field_scale="sqrt", monotone_field=[])
    (inst,) = bench.build_instruments(["erco2_sim"], args, tmp_path).values()
    assert inst.sparse_lines == [0.0, 0.5, 2.0, 4.0, 5.0]  # 8 coarse fields: the top one kept
    inst.initial_lines = list(bench.FE3GA4_COARSE_FIELDS)
    assert inst.sparse_lines == [0.0, 0.3, 0.7, 2.0]  # 7: the top one is already every other
    assert "adaptive_std_sparse" in bench.MCE_STRATEGIES
    assert inst.twin_strategy == "adaptive_std_sparse"


def test_the_erco2_steering_twins_read_the_field_on_the_scale_asked_for(bench, tmp_path):
    for scale, expected in (("sqrt", {"mpms_field": "sqrt"}), ("linear", {})):
        args = argparse.Namespace(budget=None, data=None, truth_trials=1, erco2_field_scale=scale, monotone_field=[])
        (inst,) = bench.build_instruments(["erco2_sim"], args, tmp_path).values()
        options = bench._steering_fit_options({"ensemble": 2}, 0, inst, inst.make(0))
        assert options["search_space"].input_scales == expected
    assert bench.parse(["--out", str(tmp_path)]).erco2_field_scale == "sqrt"  # the default since the full run
    assert bench.parse(["--out", str(tmp_path), "--erco2-field-scale", "linear"]).erco2_field_scale == "linear"


def test_the_magnetometers_steering_twins_hold_the_field_monotone_when_asked(bench, tmp_path):
    for names, expected in ((["erco2_sim"], {"mpms_field": "increasing"}), (["fe3ga4_twin"], {}), ([], {})):
        args = argparse.Namespace(
            budget=None, data=None, truth_trials=1, erco2_field_scale="linear", monotone_field=names
        )
        (inst,) = bench.build_instruments(["erco2_sim"], args, tmp_path).values()
        options = bench._steering_fit_options({"ensemble": 2}, 0, inst, inst.make(0))
        assert options["search_space"].monotone == expected
        assert options["search_space"].input_scales == {}
    assert bench.parse(["--out", str(tmp_path)]).monotone_field == ["erco2_sim"]  # the default: ErCo2 only
    assert bench.parse(["--out", str(tmp_path), "--monotone-field", ""]).monotone_field == []  # none
    parsed = bench.parse(["--out", str(tmp_path), "--monotone-field", "erco2_sim,fe3ga4_twin", "--data", str(tmp_path)])
    assert parsed.monotone_field == ["erco2_sim", "fe3ga4_twin"]
    with pytest.raises(bench.BenchInputError, match="--monotone-field names magnetometers"):
        bench.parse(["--out", str(tmp_path), "--monotone-field", "arpes_twin"])


def test_work_units_keep_the_strategies_sharing_a_first_fit_together(bench, tmp_path):
    args = argparse.Namespace(budget=None, data=None, truth_trials=1, erco2_field_scale="sqrt", monotone_field=[])
    instruments = bench.build_instruments(["erco2_sim"], args, tmp_path)
    units = bench.work_units(instruments, [0, 1])
    assert units[:4] == [
        ("erco2_sim", 0, ("coarse_to_fine", "adaptive_std", "adaptive_derived")),
        ("erco2_sim", 0, ("adaptive_std_sparse",)),
        ("erco2_sim", 1, ("coarse_to_fine", "adaptive_std", "adaptive_derived")),
        ("erco2_sim", 1, ("adaptive_std_sparse",)),
    ]
    rest = units[4:]
    assert all(len(group) == 1 and not bench._steers_with_twins(group[0]) for _, _, group in rest)
    # every run exactly once
    runs = sorted((name, s, seed) for name, seed, group in units for s in group)
    assert runs == sorted(("erco2_sim", s, seed) for s in bench.MCE_STRATEGIES for seed in (0, 1))
    picked = bench.work_units(instruments, [0], ["adaptive_derived", "random"])
    assert picked == [("erco2_sim", 0, ("adaptive_derived",)), ("erco2_sim", 0, ("random",))]


def test_workers_give_the_sequential_runs_numbers(bench, tmp_path, monkeypatch):
    """Side by side in spawned processes (one trial at a time) the runs equal the sequential loop's."""
    monkeypatch.syspath_prepend(str(BENCH.parent))  # the workers import the module by name
    args = bench.parse(["--out", str(tmp_path), "--instruments", "erco2_sim", "--budget", "9"])
    instruments = bench.build_instruments(["erco2_sim"], args, tmp_path / "twins")
    fit = {"trials": 1, "refit_trials": 1, "epochs": 5, "ensemble": 1}
    strategies = ["uniform_double", "random", "adaptive_std"]

    def numbers(data):
        return {
            (s, k): v
            for s, res in data["instruments"]["erco2_sim"]["strategies"].items()
            for k, v in res.items()
            if k != "wall_s"
        }

    from bluesky_twin.twin._fit import _one_intra_op_thread

    with _one_intra_op_thread():  # not a fresh process's count: the workers must take this one
        one = bench.run_benchmark(instruments, [0], fit, strategies, log=lambda s: None, workers=1)
        two = bench.run_benchmark(instruments, [0], fit, strategies, log=lambda s: None, workers=2, rebuild=args)
    assert two["workers"] == 2 and two["fit"]["jobs"] == 1
    assert numbers(two) == numbers(one)
    assert one["instruments"]["erco2_sim"]["strategies"]["adaptive_std"]["lines"] == [9]
    with pytest.raises(ValueError, match="rebuild"):
        bench.run_benchmark(instruments, [0], fit, strategies, log=lambda s: None, workers=2)
