"""The analyses against a real (small) DigitalTwin fitted on an analytic M(T, H)."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("torch")
twin_module = pytest.importorskip("bluesky_twin.twin")

FIELDS = np.array([100.0, 1e4, 2e4, 3e4, 4e4, 5e4])  # Oe, coarse like the paper's scans


def f(x):
    return 0.5 * (1.0 - np.tanh((x - 30.0) / 3.0))


def exact_dS(T, H, H0=100.0, a=4.0):
    return (f(T - a * H0 * 1e-4) - f(T - a * H * 1e-4)) / a


@pytest.fixture(scope="module")
def scan_csv(tmp_path_factory):
    import pandas as pd

    T = np.linspace(10, 60, 51)
    TT, HH = np.meshgrid(T, FIELDS)
    path = tmp_path_factory.mktemp("data") / "scan.csv"
    pd.DataFrame({"T": TT.ravel(), "H": HH.ravel(), "M": f(TT - 4.0 * HH * 1e-4).ravel()}).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def model_dir(scan_csv, tmp_path_factory):
    from bluesky_twin.twin import DigitalTwin, TwinSearchSpace
    from bluesky_twin.twin._fit import _one_intra_op_thread

    with _one_intra_op_thread():  # restored afterwards: later test modules run with the process's own count
        space = TwinSearchSpace(n_layers=(2, 3), n_units=(50, 64), max_epochs=150, patience=15, activations=("tanh",))
        twin = DigitalTwin.fit(scan_csv, x=["T", "H"], y="M", trials=2, seed=0, search_space=space, ensemble_size=2)
    path = tmp_path_factory.mktemp("models") / "twin"
    twin.save(path)
    return path


def test_entropy_change_from_real_twin(model_dir, scan_csv):
    import pandas as pd

    from bluesky_twin.analysis import entropy_change_from_twin, entropy_change_isofield
    from bluesky_twin.analysis.protocols import supports_members
    from bluesky_twin.twin import DigitalTwin

    twin = DigitalTwin.load(model_dir)
    assert supports_members(twin)
    T = np.linspace(10, 60, 201)
    H = np.linspace(100, 5e4, 101)
    res = entropy_change_from_twin(twin, T, H)
    assert res.std_kind == "ensemble"
    assert np.isfinite(res.dS_std).all() and res.dS_std[-1].max() > 0
    exact = exact_dS(T, 5e4)
    assert np.abs(res.dS[-1] - exact).max() < 0.1 * np.abs(exact).max()
    # the twin's mean equals dS of the mean prediction (dS is linear in M)
    bound = entropy_change_from_twin(twin, T, H, use_members=False)
    np.testing.assert_allclose(res.dS, bound.dS, atol=1e-9 * np.abs(exact).max())
    raw_df = pd.read_csv(scan_csv)
    raw = entropy_change_isofield(raw_df["T"], raw_df["H"], raw_df["M"])
    assert raw.H.tolist() == FIELDS.tolist()


def test_cli_mce_and_steps_with_real_model_dir(model_dir, scan_csv, tmp_path, capsys):
    import pandas as pd

    from bluesky_twin.cli import main

    out = tmp_path / "mce"
    rc = main(
        [
            "mce",
            str(model_dir),
            "--data",
            str(scan_csv),
            "--x",
            "T",
            "--x",
            "H",
            "--y",
            "M",
            "--T-step",
            "0.25",
            "--H-step",
            "2500",
            "--out",
            str(out),
        ]
    )
    assert rc == 0, capsys.readouterr().err
    table = pd.read_csv(f"{out}.csv")
    assert set(table["source"]) == {"twin", "raw trapezoid", "twin-corrected"}
    # the twin-corrected result sits at the measured fields, as the raw one does
    raw_fields = set(table.loc[table["source"] == "raw trapezoid", "H_max"])
    assert set(table.loc[table["source"] == "twin-corrected", "H_max"]) == raw_fields
    twin_rows = table[table["source"] == "twin"]
    assert twin_rows["dS_M_std"].notna().all()
    info = json.loads((tmp_path / "mce.json").read_text())
    assert info["twin"]["std_kind"] == "ensemble" and info["twin"]["twin_version"]

    rc = main(
        [
            "steps",
            str(model_dir),
            "--kind",
            "field",
            "--steps",
            "0.05,0.1,1.0",
            "--T-step",
            "0.5",
            "--time-per-point-s",
            "1",
            "--out",
            str(tmp_path / "steps"),
        ]
    )
    assert rc == 0, capsys.readouterr().err
    steps = json.loads((tmp_path / "steps.json").read_text())
    assert steps["proposed_step"] in (0.05, 0.1, 1.0)
    assert {r["step"] for r in steps["steps"]} == {0.05, 0.1, 1.0}
    # a 1 T step on a transition moving 4 K/T with 3 K width leaves visible ripple
    assert steps["steps"][-1]["excess_tv"] > steps["steps"][1]["excess_tv"]


def test_cli_unreadable_model_dir_exits_2(tmp_path, capsys):
    from bluesky_twin.cli import main

    bad = tmp_path / "broken"
    bad.mkdir()
    (bad / "metadata.json").write_text("{not json")
    rc = main(["steps", str(bad), "--kind", "field", "--out", str(tmp_path / "s")])
    assert rc == 2
    assert capsys.readouterr().err.startswith("bluesky-twin: error:")
    assert not list(tmp_path.glob("s.*"))
