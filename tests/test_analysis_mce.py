"""Magnetocaloric entropy change against closed-form answers.

The analytic model M(T, H) = f(T - a * mu0H) (a transition that moves by
``a`` kelvin per tesla) has

    dS_M(T, H0 -> H) = int_{B0}^{B} f'(T - a B') dB' = (f(T - a B0) - f(T - a B)) / a,

so every formula can be checked exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bluesky_twin.analysis import (
    entropy_change_from_twin,
    entropy_change_isofield,
    entropy_change_isothermal,
    field_to_tesla,
)
from bluesky_twin.analysis.mce import group_levels
from bluesky_twin.errors import InputError


def f(x: np.ndarray, Tc: float = 30.0, w: float = 2.0) -> np.ndarray:
    """Decreasing step of M through a transition at Tc (ferromagnet-like)."""
    return 0.5 * (1.0 - np.tanh((x - Tc) / w))


class MovingTransition:
    """Exact twin: M(T, H[Oe]) = M0 * f(T - a * H * 1e-4), constant std."""

    x_names = ["T", "H"]
    y_name = "M"

    def __init__(self, a: float = 10.0, w: float = 2.0, M0: float = 1.0, sigma: float = 1e-3):
        self.a, self.w, self.M0, self.sigma = a, w, M0, sigma
        self.x_range = np.array([[10.0, 60.0], [100.0, 50000.0]])

    def M(self, T, H):
        return self.M0 * f(np.asarray(T) - self.a * np.asarray(H) * 1e-4, w=self.w)

    def dS(self, T, H, H0):
        B, B0 = np.asarray(H) * 1e-4, H0 * 1e-4
        return self.M0 * (f(T - self.a * B0, w=self.w) - f(T - self.a * B, w=self.w)) / self.a

    def predict(self, X):
        X = np.asarray(X, dtype=float)
        return self.M(X[:, 0], X[:, 1]), np.full(len(X), self.sigma)


class EnsembleOfTransitions(MovingTransition):
    """Ensemble twin whose members move with different rates a_k."""

    def __init__(self, rates=(9.0, 10.0, 11.0)):
        super().__init__()
        self.rates = np.asarray(rates)

    @property
    def ensemble_size(self) -> int:  # an EnsembleTwin (bluesky_twin.protocols)
        return len(self.rates)

    def predict(self, X, *, return_members: bool = False):
        X = np.asarray(X, dtype=float)
        members = np.stack([f(X[:, 0] - a * X[:, 1] * 1e-4) for a in self.rates])
        if return_members:
            return members
        return members.mean(0), members.std(0)


def scattered(model: MovingTransition, T: np.ndarray, H: np.ndarray):
    TT, HH = np.meshgrid(T, H)
    return TT.ravel(), HH.ravel(), model.M(TT, HH).ravel()


@pytest.fixture
def model() -> MovingTransition:
    return MovingTransition()


# ----------------------------------------------------------------------------- isofield


def test_isofield_reproduces_closed_form(model):
    T = np.linspace(10, 60, 1001)
    H = np.linspace(100, 50000, 101)
    res = entropy_change_isofield(*scattered(model, T, H), T_grid=T)
    exact = model.dS(T[None, :], H[:, None], 100.0)
    assert res.dS.shape == (len(H), len(T))
    # trapezoid error in H ~ (a dB)^2 / 12 * f''' with a dB = 0.5 K here: 0.4 % measured
    assert np.abs(res.dS - exact).max() < 5e-3 * np.abs(exact).max()
    assert np.all(res.dS[0] == 0)  # integral from the lowest field to itself
    assert res.H_start == 100.0
    assert res.units == "M*T/K"
    assert any("lowest measured field 100" in n for n in res.notes)


def test_isofield_error_shrinks_with_finer_fields(model):
    """The trapezoid rule converges: halving the field step cuts the top-field error."""
    T = np.linspace(10, 60, 1001)
    errors = []
    for n in (6, 11, 21, 41):
        H = np.linspace(100, 50000, n)
        res = entropy_change_isofield(*scattered(model, T, H), T_grid=T)
        errors.append(np.abs(res.dS[-1] - model.dS(T, 50000.0, 100.0)).max())
    assert all(e2 < 0.5 * e1 for e1, e2 in zip(errors, errors[1:])), errors


def test_field_units_give_identical_results(model):
    T = np.linspace(10, 60, 301)
    H = np.array([100, 1000, 5000, 10000, 20000, 30000, 40000, 50000], dtype=float)
    t, h, m = scattered(model, T, H)
    in_oe = entropy_change_isofield(t, h, m, field_unit="Oe")
    in_tesla = entropy_change_isofield(t, h * 1e-4, m, field_unit="T")
    in_apm = entropy_change_isofield(t, h * 1e3 / (4 * np.pi), m, field_unit="A/m")
    np.testing.assert_allclose(in_tesla.dS, in_oe.dS, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(in_apm.dS, in_oe.dS, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(in_tesla.mu0H, in_oe.mu0H)
    np.testing.assert_allclose(field_to_tesla(10000.0, "Oe"), 1.0)


def test_mass_and_moment_conversions(model):
    T = np.linspace(10, 60, 201)
    H = np.linspace(100, 50000, 11)
    data = scattered(model, T, H)
    raw = entropy_change_isofield(*data)
    per_kg = entropy_change_isofield(*data, mass_g=2.5)  # M in emu (assumed)
    assert per_kg.units == "J/(kg K)"
    assert any("assumed in emu" in n for n in per_kg.notes)
    # emu * T = 1e-3 J and 1 g = 1e-3 kg: J/(kg K) = raw / mass_g
    np.testing.assert_allclose(per_kg.dS, raw.dS / 2.5)
    joule = entropy_change_isofield(*data, moment_unit="emu")
    assert joule.units == "J/K"
    np.testing.assert_allclose(joule.dS, raw.dS * 1e-3)
    am2 = entropy_change_isofield(*data, moment_unit="Am2", mass_g=2.5)
    np.testing.assert_allclose(am2.dS, raw.dS / 2.5e-3)
    already = entropy_change_isofield(*data, moment_unit="emu/g")
    assert already.units == "J/(kg K)"
    np.testing.assert_allclose(already.dS, raw.dS)
    with pytest.raises(InputError, match="already per mass"):
        entropy_change_isofield(*data, moment_unit="emu/g", mass_g=1.0)
    with pytest.raises(InputError, match="positive"):
        entropy_change_isofield(*data, mass_g=-1.0)
    with pytest.raises(InputError, match="field unit"):
        entropy_change_isofield(*data, field_unit="kG")  # type: ignore[arg-type]


def test_jittery_field_readings_are_grouped(model):
    rng = np.random.default_rng(0)
    T = np.linspace(10, 60, 201)
    H = np.array([100.0, 10000.0, 30000.0, 50000.0])
    t, h, m = scattered(model, T, H)
    jitter = h + rng.normal(0, 0.5, len(h))  # magnet readback noise of ~0.5 Oe
    res = entropy_change_isofield(t, jitter, m)
    assert len(res.H) == 4
    np.testing.assert_allclose(res.H, H, atol=2.0)
    levels, labels = group_levels(jitter)
    assert np.bincount(labels).tolist() == [201] * 4


def test_isofield_unsorted_rows_and_uneven_temperatures(model):
    """Rows in any order, each field with its own temperature readings."""
    rng = np.random.default_rng(1)
    rows = []
    for H in (100.0, 20000.0, 50000.0):
        T = np.linspace(10, 60, 400) + rng.uniform(-0.03, 0.03, 400)  # sweep readback jitter
        rows.append(np.column_stack([T, np.full_like(T, H), model.M(T, H)]))
    data = np.vstack(rows)[rng.permutation(1200)]
    T_grid = np.linspace(12, 58, 300)
    res = entropy_change_isofield(data[:, 0], data[:, 1], data[:, 2], T_grid=T_grid)
    # same three fields sampled exactly on T_grid: only the interpolation differs
    exact_grid = entropy_change_from_twin(model, T_grid, np.array([100.0, 20000.0, 50000.0]))
    scale = np.abs(exact_grid.dS).max()
    assert np.abs(res.dS - exact_grid.dS).max() < 0.02 * scale


def test_isofield_bad_input(model):
    T = np.linspace(10, 60, 50)
    with pytest.raises(InputError, match="two or more fields"):
        entropy_change_isofield(T, np.full_like(T, 1000.0), model.M(T, 1000.0))
    t, h, m = scattered(model, T, np.array([100.0, 5000.0]))
    with pytest.raises(InputError, match="leaves the range"):
        entropy_change_isofield(t, h, m, T_grid=np.linspace(5, 60, 100))
    with pytest.raises(InputError, match="finite"):
        entropy_change_isofield(np.append(t, np.nan), np.append(h, 1.0), np.append(m, 1.0))
    with pytest.raises(InputError, match="same length"):
        entropy_change_isofield(t, h[:-1], m)
    few = np.array([10.0, 20.0, 10.0, 20.0, 30.0])
    with pytest.raises(InputError, match="need at least 3"):
        entropy_change_isofield(few, np.array([0, 0, 1, 1, 1.0]), np.ones(5))


# ----------------------------------------------------------------------------- isothermal


def test_isothermal_agrees_with_isofield_and_exact_on_fine_grid(model):
    T = np.linspace(10, 60, 501)
    H = np.linspace(100, 50000, 501)
    TT, HH = np.meshgrid(T, H)
    iso_t = entropy_change_isothermal(T, H, model.M(TT, HH))
    assert iso_t.dS.shape == (len(H), len(T) - 1)
    np.testing.assert_allclose(iso_t.T, 0.5 * (T[1:] + T[:-1]))
    exact = model.dS(iso_t.T[None, :], H[:, None], 100.0)
    scale = np.abs(exact).max()
    # right-point rule in H is first order: error ~ a * dH * max f' ~ 1e-2 * scale
    assert np.abs(iso_t.dS - exact).max() < 2e-2 * scale
    iso_f = entropy_change_isofield(TT.ravel(), HH.ravel(), model.M(TT, HH).ravel(), T_grid=T)
    mid = 0.5 * (iso_f.dS[:, 1:] + iso_f.dS[:, :-1])
    assert np.abs(iso_t.dS - mid).max() < 2e-2 * scale
    # same numbers from scattered readings of the complete grid
    scat = entropy_change_isothermal(TT.ravel(), HH.ravel(), model.M(TT, HH).ravel())
    np.testing.assert_allclose(scat.dS, iso_t.dS, atol=1e-12)
    left = entropy_change_isothermal(T, H, model.M(TT, HH), position="left")
    np.testing.assert_allclose(left.T, T[:-1])


def test_isothermal_formula_by_hand():
    """Three temperatures, three fields: the sum written out."""
    T = np.array([10.0, 12.0, 15.0])
    H = np.array([0.0, 1.0, 3.0])  # tesla
    M = np.array([[5.0, 4.0, 2.0], [6.0, 5.0, 2.0], [7.0, 4.0, 1.0]])  # rows: fields
    res = entropy_change_isothermal(T, H, M, field_unit="T")
    expect_h1 = np.array([(5 - 6) / 2 * 1.0, (2 - 5) / 3 * 1.0])
    expect_h2 = expect_h1 + np.array([(4 - 7) / 2 * 2.0, (1 - 4) / 3 * 2.0])
    np.testing.assert_allclose(res.dS, [[0, 0], expect_h1, expect_h2])


def test_isothermal_needs_complete_grid(model):
    T = np.linspace(10, 60, 20)
    H = np.linspace(0, 50000, 5)
    t, h, m = scattered(model, T, H)
    with pytest.raises(InputError, match="complete"):
        entropy_change_isothermal(t[:-3], h[:-3], m[:-3])
    with pytest.raises(InputError, match="shape"):
        entropy_change_isothermal(T, H, np.zeros((3, 3)))


# ----------------------------------------------------------------------------- from a twin


def test_from_twin_matches_closed_form_and_std_bound(model):
    T = np.linspace(10, 60, 501)
    H = np.linspace(100, 50000, 251)
    res = entropy_change_from_twin(model, T, H, batch_size=10_000)  # several batches
    exact = model.dS(T[None, :], H[:, None], 100.0)
    assert np.abs(res.dS - exact).max() < 1e-3 * np.abs(exact).max()
    assert res.method == "twin-isofield" and res.std_kind == "bound"
    # uniform grid, constant sigma: interior |G| sigma = 2 * sigma / (2 dT)
    dT = T[1] - T[0]
    expected_bound = model.sigma / dT * (H[:, None] - 100.0) * 1e-4
    np.testing.assert_allclose(
        res.dS_std[:, 1:-1], np.broadcast_to(expected_bound, res.dS_std[:, 1:-1].shape), rtol=1e-9
    )
    iso_t = entropy_change_from_twin(model, T, H, method="isothermal")
    assert iso_t.dS.shape == (len(H), len(T) - 1) and iso_t.std_kind == "bound"
    assert np.all(iso_t.dS_std >= 0)


def test_from_twin_uses_ensemble_members_when_available():
    twin = EnsembleOfTransitions()
    T = np.linspace(10, 60, 401)
    H = np.linspace(100, 50000, 101)
    res = entropy_change_from_twin(twin, T, H)
    assert res.std_kind == "ensemble"
    per_member = np.stack([(f(T - a * 0.01) - f(T - a * H[:, None] * 1e-4)) / a for a in twin.rates])
    assert np.abs(res.dS - per_member.mean(0)).max() < 2e-3
    assert np.abs(res.dS_std - per_member.std(0)).max() < 2e-3
    assert res.dS_std.max() > 0.01  # the members really disagree
    forced = entropy_change_from_twin(twin, T, H, use_members=False)
    assert forced.std_kind == "bound"
    with pytest.raises(InputError, match="return_members"):
        entropy_change_from_twin(MovingTransition(), T, H, use_members=True)


def test_from_twin_axis_order_and_errors(model):
    class Swapped:
        x_names = ["field", "temp"]

        def predict(self, X):
            return model.predict(X[:, ::-1])

    T = np.linspace(10, 60, 101)
    H = np.linspace(100, 50000, 21)
    a = entropy_change_from_twin(model, T, H)
    b = entropy_change_from_twin(Swapped(), T, H, T_axis="temp", H_axis="field")
    np.testing.assert_allclose(a.dS, b.dS)
    with pytest.raises(InputError, match="not one of"):
        entropy_change_from_twin(Swapped(), T, H, T_axis="T")
    with pytest.raises(InputError, match="strictly increasing"):
        entropy_change_from_twin(model, T[::-1], H)

    class ThreeAxes:
        x_names = ["T", "H", "P"]

        def predict(self, X):
            return np.zeros(len(X)), np.zeros(len(X))

    with pytest.raises(InputError, match="exactly two axes"):
        entropy_change_from_twin(ThreeAxes(), T, H)
    out = entropy_change_from_twin(model, np.linspace(5, 60, 50), H)
    assert any("outside the twin's training range" in n for n in out.notes)


def test_result_table(model):
    T = np.linspace(10, 60, 51)
    H = np.linspace(100, 50000, 6)
    res = entropy_change_from_twin(model, T, H)
    df = res.to_frame()
    assert list(df.columns) == ["H_max", "mu0H_max_T", "T", "dS_M", "dS_M_std"]
    assert len(df) == 6 * 51
    last = df[df["H_max"] == 50000.0]
    np.testing.assert_allclose(last["dS_M"].to_numpy(), res.dS[-1])
    np.testing.assert_allclose(last["mu0H_max_T"].to_numpy(), 5.0)
    assert df.attrs["units"] == "M*T/K"
    curve, std = res.curve(49000.0)
    np.testing.assert_array_equal(curve, res.dS[-1])
    json.dumps(res.summary())


# ----------------------------------------------------------------------------- CLI


def _write_scan_csv(path, model, fields=(100.0, 1000.0, 10000.0, 30000.0, 50000.0)):
    import pandas as pd

    T = np.linspace(10, 60, 101)
    t, h, m = scattered(model, T, np.asarray(fields))
    pd.DataFrame({"temp": t, "field": h, "moment": m}).to_csv(path, index=False)


def test_cli_mce_from_raw_data(tmp_path, model, capsys):
    import pandas as pd

    from bluesky_twin.cli import main

    data = tmp_path / "scan.csv"
    _write_scan_csv(data, model)
    out = tmp_path / "out" / "erco2"
    rc = main(
        [
            "mce",
            "--data",
            str(data),
            "--x",
            "temp",
            "--x",
            "field",
            "--y",
            "moment",
            "--mass-g",
            "2.0",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    table = pd.read_csv(f"{out}.csv")
    assert set(table["source"]) == {"raw trapezoid"}
    df = pd.read_csv(data)
    api = entropy_change_isofield(df["temp"], df["field"], df["moment"], mass_g=2.0)
    np.testing.assert_allclose(table["dS_M"].to_numpy(), api.dS.reshape(-1))
    info = json.loads((tmp_path / "out" / "erco2.json").read_text())
    assert info["units"] == "J/(kg K)"
    assert (tmp_path / "out" / "erco2.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "raw trapezoid: max -dS_M" in capsys.readouterr().out


def test_cli_mce_twin_and_raw_together(tmp_path, model, monkeypatch):
    import pandas as pd

    from bluesky_twin.analysis import cli as analysis_cli
    from bluesky_twin.cli import main

    class Named(MovingTransition):
        x_names = ["temp", "field"]

    monkeypatch.setattr(analysis_cli, "_load_twin", lambda path: Named())
    data = tmp_path / "scan.csv"
    _write_scan_csv(data, model)
    out = tmp_path / "both"
    rc = main(
        [
            "mce",
            "MODEL",
            "--data",
            str(data),
            "--x",
            "temp",
            "--x",
            "field",
            "--y",
            "moment",
            "--T-step",
            "0.1",
            "--H-step",
            "500",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    table = pd.read_csv(f"{out}.csv")
    assert set(table["source"]) == {"twin", "raw trapezoid", "twin-corrected"}
    twin_top = table[(table["source"] == "twin") & (table["H_max"] == 50000.0)]
    exact = model.dS(twin_top["T"].to_numpy(), 50000.0, 100.0)
    assert np.abs(twin_top["dS_M"].to_numpy() - exact).max() < 2e-3 * np.abs(exact).max()
    # the exact twin's correction removes most of the raw trapezoid's error at the top field
    errors = {}
    for source in ("raw trapezoid", "twin-corrected"):
        top = table[(table["source"] == source) & (table["H_max"] == 50000.0)]
        errors[source] = np.sqrt(np.mean((top["dS_M"].to_numpy() - model.dS(top["T"].to_numpy(), 50000.0, 100.0)) ** 2))
    assert errors["twin-corrected"] < 0.1 * errors["raw trapezoid"], errors
    assert json.loads(Path(f"{out}.json").read_text())["twin_corrected"]["method"] == "twin-corrected-isofield"
    # the measured fields are rows of the twin grid
    assert {1000.0, 10000.0, 30000.0} <= set(table.loc[table["source"] == "twin", "H_max"])
    assert np.isclose(twin_top["T"].diff().dropna().to_numpy(), 0.1).all()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--data", "{data}", "--x", "temp", "--x", "nope", "--y", "moment"], "missing column"),
        (["--data", "{data}", "--x", "temp", "--y", "moment"], "exactly twice"),
        (["--data", "{data}", "--x", "temp", "--x", "field"], "--y M_COL"),
        (["--data", "{data}", "--x", "temp", "--x", "field", "--y", "moment", "--mass-g", "0"], "positive"),
        (["--data", "{missing}", "--x", "temp", "--x", "field", "--y", "moment"], "not found"),
        ([], "MODEL_DIR"),
        (["{missing}"], "model directory not found"),
    ],
)
def test_cli_mce_bad_input_exits_2_and_keeps_old_output(tmp_path, model, capsys, argv, message):
    from bluesky_twin.cli import main

    data = tmp_path / "scan.csv"
    _write_scan_csv(data, model)
    out = tmp_path / "result"
    (tmp_path / "result.csv").write_text("previous result\n")
    argv = [a.format(data=data, missing=tmp_path / "missing.csv") for a in argv]
    rc = main(["mce", *argv, "--out", str(out), "--overwrite"])  # bad input: nothing written even so
    assert rc == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert (tmp_path / "result.csv").read_text() == "previous result\n"
    assert not (tmp_path / "result.png").exists()


def test_cli_mce_reports_dropped_nan_rows(tmp_path, model, capsys):
    import pandas as pd

    from bluesky_twin.cli import main

    data = tmp_path / "scan.csv"
    _write_scan_csv(data, model)
    df = pd.read_csv(data)
    df.loc[[3, 7], "moment"] = np.nan
    df.to_csv(data, index=False)
    rc = main(
        ["mce", "--data", str(data), "--x", "temp", "--x", "field", "--y", "moment", "--out", str(tmp_path / "r")]
    )
    assert rc == 0
    assert "dropped 2 row(s)" in capsys.readouterr().out


# ----------------------------------------------------------------------------- twin-corrected


def test_twin_corrected_keeps_the_readings_and_removes_the_trapezoid_error(model):
    """Coarse fields + a twin: the readings' result plus the twin's between-field correction."""
    from bluesky_twin.analysis import entropy_change_twin_corrected

    T = np.linspace(10, 60, 501)
    H = np.array([100.0, 5000.0, 20000.0, 50000.0])  # coarse: the trapezoid misses the curvature
    exact = model.dS(T, 50000.0, 100.0)
    rng = np.random.default_rng(0)
    t, h, m = scattered(model, T, H)
    readings = m + rng.normal(0.0, 1e-4, m.shape)
    plain = entropy_change_isofield(t, h, readings, T_grid=T)
    wrong = MovingTransition(M0=1.2)  # a twin 20 % off everywhere: only its correction is 20 % off
    for twin, tol in ((model, 0.02), (wrong, 0.25)):
        res = entropy_change_twin_corrected(t, h, readings, twin, T_grid=T)
        assert res.method == "twin-corrected-isofield" and np.array_equal(res.H, plain.H)
        err, err_plain = (np.sqrt(np.mean((d[-1] - exact) ** 2)) for d in (res.dS, plain.dS))
        assert err < tol * err_plain, (err, err_plain, tol)
    # the exact twin on noiseless readings: the twin's own fine integral at the measured fields
    res = entropy_change_twin_corrected(t, h, m, model, T_grid=T, subdivisions=50)
    fine = entropy_change_from_twin(
        model, T, np.unique(np.concatenate([np.linspace(a, b, 51) for a, b in zip(H, H[1:])]))
    )
    np.testing.assert_allclose(res.dS[-1], fine.dS[-1], atol=1e-12)
    # one subdivision is the plain trapezoid rule
    np.testing.assert_allclose(
        entropy_change_twin_corrected(t, h, readings, wrong, T_grid=T, subdivisions=1).dS, plain.dS
    )
    with pytest.raises(InputError, match="subdivisions"):
        entropy_change_twin_corrected(t, h, readings, model, T_grid=T, subdivisions=0)
