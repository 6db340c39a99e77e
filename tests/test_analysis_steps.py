"""Step studies on analytic twins whose answer is known."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from bluesky_twin.analysis import angle_step_study, field_step_study, oscillation_metric
from bluesky_twin.analysis.plotting import plot_step_study
from bluesky_twin.analysis.steps import count_extrema, field_levels, find_peaks_2d, propose_coarsest
from bluesky_twin.errors import InputError


class MovingTransition:
    """M(T, H[Oe]) = f(T - a mu0H): a transition moving a K/T, width w K."""

    x_names = ["T", "H"]
    y_name = "M"

    def __init__(self, a: float = 10.0, w: float = 1.0):
        self.a, self.w = a, w
        self.x_range = np.array([[10.0, 60.0], [100.0, 50000.0]])

    def predict(self, X):
        X = np.asarray(X, dtype=float)
        m = 0.5 * (1.0 - np.tanh((X[:, 0] - 30.0 - self.a * X[:, 1] * 1e-4) / self.w))
        return m, np.full(len(X), 1e-4)


class PeakMap:
    """Sum of 2D Gaussians; peaks sit at half-integer theta2 (known sampling answer)."""

    x_names = ["theta1", "theta2"]
    y_name = "intensity"

    def __init__(self, sigma2: float = 0.5):
        rng = np.random.default_rng(3)
        self.centres = np.column_stack(
            [
                rng.permutation(np.arange(-18.0, 19.0, 4.0)),
                rng.choice(np.arange(-12, 12) + 0.5, 10, replace=False),
            ]
        )
        self.heights = rng.uniform(0.5, 1.0, 10)
        self.sigma2 = sigma2
        self.x_range = np.array([[-20.0, 20.0], [-15.0, 15.0]])

    def predict(self, X):
        X = np.asarray(X, dtype=float)
        v = np.zeros(len(X))
        for (c1, c2), h in zip(self.centres, self.heights):
            v += h * np.exp(-0.5 * ((X[:, 0] - c1) / 1.0) ** 2 - 0.5 * ((X[:, 1] - c2) / self.sigma2) ** 2)
        return v, np.zeros(len(X))


# ----------------------------------------------------------------------------- metric


def test_oscillation_metric_zero_for_identical_and_grows_with_ripple():
    T = np.linspace(10, 60, 501)
    ref = -0.1 * np.exp(-0.5 * ((T - 35) / 6) ** 2)
    same = oscillation_metric(ref, ref)
    assert same.wiggle == 0 and same.excess_tv == 0 and same.extra_extrema == 0 and same.rms == 0
    assert same.n_extrema_ref == 1
    previous = same
    for amp in (0.002, 0.01, 0.03):
        m = oscillation_metric(ref * (1 + amp * np.sin(2 * np.pi * T / 2.0)), ref)
        assert m.wiggle > previous.wiggle
        assert m.excess_tv > previous.excess_tv
        assert m.rms > previous.rms
        assert m.extra_extrema >= previous.extra_extrema
        previous = m
    assert previous.extra_extrema >= 4  # ripples on the flanks of the peak become extrema
    # a scaled and shifted curve has no wiggle and no extra extrema (excess TV sees the scale)
    biased = oscillation_metric(1.05 * ref + 0.01, ref)
    assert biased.extra_extrema == 0 and biased.wiggle == pytest.approx(0, abs=1e-12)
    assert biased.excess_tv == pytest.approx(0.05)
    # a peak moved by one grid step is (almost) no wiggle either
    assert abs(oscillation_metric(np.roll(ref, 1), ref).wiggle) < 1e-3
    with pytest.raises(InputError, match="constant"):
        oscillation_metric(ref, np.zeros_like(ref))


def test_count_extrema_ignores_tiny_jitter():
    x = np.linspace(0, 1, 200)
    y = np.sin(2 * np.pi * x) + 1e-6 * np.cos(300 * x)
    assert count_extrema(y, prominence=0.01) == 2


def test_propose_coarsest_needs_every_finer_step_to_pass():
    steps = np.array([0.01, 0.05, 0.1, 0.5, 1.0])
    assert propose_coarsest(steps, np.array([True, True, True, False, True])) == (0.1, True)
    assert propose_coarsest(steps, np.array([True, False, True, True, True])) == (0.01, False)
    assert propose_coarsest(steps[::-1], np.array([True, False, True, True, True])) == (0.1, True)


def test_field_levels_like_an_experimenter():
    np.testing.assert_allclose(field_levels(0.2, 0.01, 1.0), [0.01, 0.2, 0.4, 0.6, 0.8, 1.0])
    np.testing.assert_allclose(field_levels(0.3, 0.0, 1.0), [0.0, 0.3, 0.6, 0.9, 1.0])
    np.testing.assert_allclose(field_levels(0.005, 0.01, 0.02), [0.01, 0.015, 0.02])


# ----------------------------------------------------------------------------- field study


def test_field_step_study_proposes_the_known_step(tmp_path):
    """a = 10 K/T, w = 1 K: a step s moves the dM/dT peak by d = 10 s kelvin between fields.

    The trapezoid sum is a comb of sech^2 bumps spaced d; its relative ripple is
    ~ 2 x / sinh(x), x = pi^2 w / d: 1e-7 for d = 0.5 K (0.05 T), 2e-3 for 1 K
    (0.1 T; x 50 ripples ~ 0.2 excess TV), 0.5 for 3 K (0.3 T).  So 0.05 T is
    the coarsest clean step at 5 % tolerance, 0.1 T at 50 %.
    """
    twin = MovingTransition()
    study = field_step_study(twin, steps=[0.3, 0.02, 0.05, 0.1, 0.6], time_per_point_s=2.0)
    assert study.steps.tolist() == [0.02, 0.05, 0.1, 0.3, 0.6]
    assert study.proposed_step == 0.05 and study.proposal_ok
    tv = [r["excess_tv"] for r in study.rows]
    # the reference adds every candidate's fields to the finest grid, so the finest step is ~0
    assert abs(tv[0]) < 0.01 and all(b > a for a, b in zip(tv[1:], tv[2:])), tv
    assert study.rows[1]["excess_tv"] < 1e-3 < 0.05 < study.rows[2]["excess_tv"] < 0.5 < study.rows[3]["excess_tv"]
    assert study.rows[3]["extra_extrema"] > 5 and study.rows[1]["extra_extrema"] == 0
    # time: n_fields x points per sweep x seconds per point
    row = study.proposed
    assert row["n_fields"] == 101 and row["time_s"] == pytest.approx(101 * 501 * 2.0)
    looser = field_step_study(twin, steps=[0.02, 0.05, 0.1, 0.3], tolerance=0.5)
    assert looser.proposed_step == 0.1
    # outputs
    df = study.to_frame()
    assert df.loc[df["proposed"], "step"].tolist() == [0.05]
    info = json.loads(json.dumps(study.to_json_dict()))
    assert info["proposed_step"] == 0.05 and info["meta"]["field_max_T"] == 5.0
    plot_step_study(study, str(tmp_path / "field.png"))
    assert (tmp_path / "field.png").read_bytes()[:4] == b"\x89PNG"


class BroadeningTransition(MovingTransition):
    """The transition moves 10 K/T and broadens with field: w = 0.3 K + 1 K/T * mu0H.

    Sharp low-field peaks ripple the low-field curves (0 -> s, 0 -> 2s, ...) long
    before the top-field curve shows it."""

    def predict(self, X):
        X = np.asarray(X, dtype=float)
        B = X[:, 1] * 1e-4
        return 0.5 * (1.0 - np.tanh((X[:, 0] - 30.0 - 10.0 * B) / (0.3 + B))), np.zeros(len(X))


def test_field_step_study_checking_every_field_is_stricter():
    twin = BroadeningTransition()
    steps = [0.01, 0.02, 0.05, 0.1, 0.2]
    wiggle_only = {"tolerance": 0.05, "deviation_tolerance": math.inf}  # the wiggle part of the criterion
    top = field_step_study(twin, steps=steps, check_fields="top", **wiggle_only)
    every = field_step_study(twin, steps=steps, check_fields="all", **wiggle_only)
    assert top.proposed_step == 0.05 and every.proposed_step == 0.02
    row = {r["step"]: r for r in every.rows}[0.05]
    assert row["extra_extrema"] >= 1 and not row["passes"]
    # the top-field numbers agree between the two modes (same reference row)
    assert {r["step"]: r for r in top.rows}[0.1]["excess_tv"] == pytest.approx(
        {r["step"]: r for r in every.rows}[0.1]["excess_tv"]
    )
    with pytest.raises(InputError, match="check_fields"):
        field_step_study(twin, steps=steps, check_fields="some")


def test_field_step_study_time_from_rates_and_bad_input():
    twin = MovingTransition()
    study = field_step_study(
        twin,
        steps=[0.05, 0.5],
        T_grid=np.linspace(10, 60, 201),
        temperature_rate_K_per_min=2.0,
        sweep_rate_T_per_min=0.5,
        settle_s_per_field=60.0,
    )
    n = study.rows[1]["n_fields"]  # 0.01, 0.5, 1.0, ..., 5.0
    assert n == 11
    expected = n * (50.0 / 2.0 * 60.0) + (5.0 - 0.01) / 0.5 * 60.0 + n * 60.0
    assert study.rows[1]["time_s"] == pytest.approx(expected)
    assert np.isnan(field_step_study(twin, steps=[0.05, 0.5]).rows[0]["time_s"])
    with pytest.raises(InputError, match="two distinct"):
        field_step_study(twin, steps=[0.1])
    with pytest.raises(InputError, match="positive"):
        field_step_study(twin, steps=[0.1, -0.2])
    with pytest.raises(InputError, match="must exceed"):
        field_step_study(twin, steps=[0.1, 0.2], field_max=0.001)
    with pytest.raises(InputError, match="positive number"):
        field_step_study(twin, steps=[0.1, 0.2], time_per_point_s=0)


# ----------------------------------------------------------------------------- angle study


def test_find_peaks_2d():
    y, x = np.mgrid[0:50, 0:60]
    img = np.exp(-((x - 10) ** 2 + (y - 20) ** 2) / 8) + 0.5 * np.exp(-((x - 40) ** 2 + (y - 30) ** 2) / 8)
    peaks = find_peaks_2d(img, size=(5, 5), threshold=0.2)
    assert sorted(map(tuple, peaks)) == [(20, 10), (30, 40)]
    assert len(find_peaks_2d(img, size=(5, 5), threshold=0.6)) == 1
    assert len(find_peaks_2d(np.ones((5, 5)), size=(3, 3), threshold=0)) == 0  # a plateau is no peak


def test_angle_step_study_keeps_peaks_down_to_the_known_step(tmp_path):
    """Peaks at half-integer theta2, sigma 0.5: steps 0.1/0.25/0.5 sample every peak top
    exactly; 1.0 and 2.0 sample them 0.5 off (position error 0.5 > 0.25 tolerance, height
    down by 1 - exp(-0.5) = 39 %).  The answer is 0.5."""
    twin = PeakMap()
    study = angle_step_study(twin, axis="theta2", steps=[0.1, 0.25, 0.5, 1.0, 2.0], time_per_point_s=0.5)
    rows = {r["step"]: r for r in study.rows}
    assert rows[0.1]["n_peaks_ref"] == 10
    assert study.proposed_step == 0.5 and study.proposal_ok
    for s in (0.25, 0.5):
        assert rows[s]["recall"] == 1.0 and rows[s]["height_error"] < 1e-6
    assert rows[1.0]["recall"] < 0.5 and rows[2.0]["recall"] < 0.5
    assert rows[0.5]["nrmse"] < rows[1.0]["nrmse"] < rows[2.0]["nrmse"]
    assert rows[1.0]["n_lines"] == 31 and rows[1.0]["time_s"] == pytest.approx(31 * 401 * 0.5)
    plot_step_study(study, str(tmp_path / "angle.png"))
    assert (tmp_path / "angle.png").stat().st_size > 1000
    assert json.loads(json.dumps(study.to_json_dict()))["axis"] == "theta2"


def test_angle_step_study_height_tolerance_decides_for_narrow_peaks():
    """Narrow peaks (sigma 0.3) and a position tolerance that forgives 0.5 off: only the
    height criterion can reject 1.0 (peak tops sampled 0.5 off lose 75 %)."""
    twin = PeakMap(sigma2=0.3)
    study = angle_step_study(twin, axis=1, steps=[0.1, 0.5, 1.0], peak_tolerance=0.6, tolerance=0.05)
    rows = {r["step"]: r for r in study.rows}
    assert rows[1.0]["height_error"] > 0.3
    assert study.proposed_step == 0.5


def test_angle_step_study_bad_input():
    twin = PeakMap()
    with pytest.raises(InputError, match="not one of"):
        angle_step_study(twin, axis="phi")
    with pytest.raises(InputError, match="fewer than 3"):
        angle_step_study(twin, steps=[20.0, 40.0])
    with pytest.raises(InputError, match="no peaks"):
        angle_step_study(twin, steps=[0.5, 1.0], peak_threshold=1.5)

    class Flat(PeakMap):
        def predict(self, X):
            return np.ones(len(X)), np.zeros(len(X))

    with pytest.raises(InputError, match="constant"):
        angle_step_study(Flat(), steps=[0.5, 1.0])


# ----------------------------------------------------------------------------- CLI


@pytest.fixture
def fake_loader(monkeypatch):
    from bluesky_twin.analysis import cli as analysis_cli

    twins = {"transition": MovingTransition(), "map": PeakMap()}

    def load(path):
        import os

        name = os.path.basename(path)
        if name not in twins:
            raise InputError(f"model directory not found: {path}")
        return twins[name]

    monkeypatch.setattr(analysis_cli, "_load_twin", load)


def test_cli_steps_field_writes_proposal(tmp_path, fake_loader, capsys):
    import pandas as pd

    from bluesky_twin.cli import main

    out = tmp_path / "steps"
    rc = main(
        [
            "steps",
            "transition",
            "--kind",
            "field",
            "--steps",
            "0.02,0.05,0.1,0.3",
            "--time-per-point-s",
            "1",
            "--T-step",
            "0.2",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    info = json.loads((tmp_path / "steps.json").read_text())
    assert info["proposed_step"] == 0.05 and info["kind"] == "field"
    df = pd.read_csv(tmp_path / "steps.csv")
    assert df["step"].tolist() == [0.02, 0.05, 0.1, 0.3]
    assert (tmp_path / "steps.png").exists()
    assert "proposed field step: 0.05 T" in capsys.readouterr().out


def test_cli_steps_angle_writes_proposal(tmp_path, fake_loader):
    from bluesky_twin.cli import main

    rc = main(
        ["steps", "map", "--kind", "angle", "--axis", "theta2", "--steps", "0.25,0.5,1,2", "--out", str(tmp_path / "a")]
    )
    assert rc == 0
    info = json.loads((tmp_path / "a.json").read_text())
    assert info["proposed_step"] == 0.5 and info["axis"] == "theta2"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["nowhere", "--kind", "field"], "not found"),
        (["transition", "--kind", "field", "--steps", "0.1,abc"], "comma-separated"),
        (["transition", "--kind", "field", "--steps", "0.1"], "two distinct"),
        (["transition", "--kind", "field", "--H-axis", "B"], "not one of"),
        (["map", "--kind", "angle", "--axis", "phi"], "not one of"),
    ],
)
def test_cli_steps_bad_input_exits_2(tmp_path, fake_loader, capsys, argv, message):
    from bluesky_twin.cli import main

    (tmp_path / "s.json").write_text("{}")
    rc = main(["steps", *argv, "--out", str(tmp_path / "s"), "--overwrite"])  # bad input: nothing written even so
    assert rc == 2
    assert message in capsys.readouterr().err
    assert (tmp_path / "s.json").read_text() == "{}"
    assert not (tmp_path / "s.csv").exists()


def test_the_deviation_sees_a_shoulder_that_the_wiggle_misses():
    """A coarse step first goes wrong at low field, where the peak moves fastest; the error
    is carried into every higher-field curve as a shoulder on a slope, which has no
    oscillation to count.  The deviation (any field, over the top-field peak) sees it."""
    twin = BroadeningTransition()
    steps = [0.01, 0.02, 0.05, 0.1, 0.2]
    study = field_step_study(twin, steps=steps, tolerance=0.05)
    rows = {r["step"]: r for r in study.rows}
    assert study.criteria["deviation_tolerance"] == study.criteria["tolerance_wiggle"] == 0.05
    assert rows[0.05]["wiggle"] <= 0.05 < rows[0.05]["deviation"]  # the wiggle alone passes 0.05 T
    assert rows[0.05]["deviation_field_T"] == pytest.approx(0.05) and 29 < rows[0.05]["deviation_T"] < 32
    wiggle_only = field_step_study(twin, steps=steps, tolerance=0.05, deviation_tolerance=math.inf)
    assert study.proposed_step == 0.02 < wiggle_only.proposed_step == 0.05
    assert all(rows[a]["deviation"] <= rows[b]["deviation"] for a, b in zip(steps, steps[1:]))
    # the defaults: 2 % for both parts
    assert field_step_study(twin, steps=steps).criteria["deviation_tolerance"] == 0.02
    # the known-answer case keeps its answers: 0.05 T at 5 %, 0.1 T at 50 %
    assert field_step_study(MovingTransition(), steps=[0.02, 0.05, 0.1, 0.3], tolerance=0.05).proposed_step == 0.05
    assert field_step_study(MovingTransition(), steps=[0.02, 0.05, 0.1, 0.3], tolerance=0.5).proposed_step == 0.1
    with pytest.raises(InputError, match="deviation_tolerance"):
        field_step_study(twin, steps=steps, deviation_tolerance=-1)
