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
    args = argparse.Namespace(budget=10, data=None, truth_trials=1)
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


def test_bad_input_exits_2_with_one_line_before_writing(bench, tmp_path, capsys):
    out = tmp_path / "out"
    assert bench.main(["--out", str(out), "--instruments", "erco2_sim,nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope" in err[0]
    assert bench.main(["--out", str(out), "--seeds", "a,b"]) == 2
    assert bench.main(["--out", str(out), "--budget", "3"]) == 2
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


def test_map_targets_compare_the_twin_map_with_the_uniform_lines_read_both_ways(bench):
    res = {
        "uniform_equal_lines": {"error_pct": [23.4, 23.5, 23.3], "error_pct_model": [26.5, 24.4, 24.2]},
        "adaptive_interp": {"error_pct": [24.4, 23.3, 24.6], "error_pct_model": [20.8, 19.8, 24.2]},
        "gp": {"error_pct": [48.0, 49.0, 50.0], "error_pct_model": [100.0, 110.0, 120.0]},
    }
    t = bench.targets("map", "adaptive_interp", res)
    assert t == {
        "adaptive_interp_beats_gp": True,
        "adaptive_interp_beats_uniform_equal_lines": False,  # both read linearly: 24.4 against 23.4
        "adaptive_interp_model_beats_uniform_equal_lines": True,  # twin map 20.8 against 23.4
        "adaptive_interp_model_beats_uniform_equal_lines_model": True,  # 20.8 against the uniform twin's 24.4
    }
    res["adaptive_interp"]["error_pct_model"] = [25.0, 25.0, 25.0]
    t = bench.targets("map", "adaptive_interp", res)
    assert not t["adaptive_interp_model_beats_uniform_equal_lines"]
    assert not t["adaptive_interp_model_beats_uniform_equal_lines_model"]
    # without a twin of the uniform lines (an older steering.json) that comparison is not made
    res["uniform_equal_lines"].pop("error_pct_model")
    assert "adaptive_interp_model_beats_uniform_equal_lines_model" not in bench.targets("map", "adaptive_interp", res)


def test_sparse_strategies_start_from_every_other_initial_line_with_both_ends(bench, tmp_path):
    args = argparse.Namespace(budget=None, data=None, truth_trials=1)
    (inst,) = bench.build_instruments(["erco2_sim"], args, tmp_path).values()
    assert inst.sparse_lines == [0.0, 0.5, 2.0, 4.0, 5.0]  # 8 coarse fields: the top one kept
    inst.initial_lines = list(bench.FE3GA4_COARSE_FIELDS)
    assert inst.sparse_lines == [0.0, 0.3, 0.7, 2.0]  # 7: the top one is already every other
    assert {"adaptive_std_sparse", "adaptive_derived_sparse"} <= set(bench.MCE_STRATEGIES)
