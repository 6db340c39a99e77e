"""`bluesky-twin fit` / `predict` / `dashboard`: the exact CLI contract."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
from test_twin import scan_frame

from bluesky_twin.cli import main
from bluesky_twin.modeldir import current_path
from bluesky_twin.twin import DigitalTwin


@pytest.fixture(scope="module")
def csv_path(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("data") / "scan.csv"
    scan_frame().to_csv(path, index=False)
    return str(path)


@pytest.fixture(scope="module")
def model_dir(csv_path, tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("models") / "twin"
    rc = main(
        [
            "fit",
            csv_path,
            "--x",
            "T",
            "--x",
            "H",
            "--y",
            "M",
            "--out",
            str(out),
            "--trials",
            "2",
            "--max-epochs",
            "40",
            "--ensemble",
            "2",
            "--seed",
            "3",
        ]
    )
    assert rc == 0
    return str(out)


def test_fit_writes_model_and_prints_scores(model_dir, capsys) -> None:
    meta = json.loads(open(current_path(model_dir) / "metadata.json").read())
    assert meta["x_names"] == ["T", "H"] and meta["y_name"] == "M"
    assert meta["search_space"]["max_epochs"] == 40
    assert meta["ensemble_size"] == 2


def test_predict_contract(model_dir, tmp_path, capsys) -> None:
    pts = pd.DataFrame({"T": [20.0, 33.0, 99.0], "H": [1.5, 2.5, 2.0], "note": ["a", "b", "c"]})
    pts.to_csv(tmp_path / "pts.csv", index=False)
    rc = main(["predict", model_dir, str(tmp_path / "pts.csv"), "--out", str(tmp_path / "pred.csv")])
    assert rc == 0
    pred = pd.read_csv(tmp_path / "pred.csv")
    assert list(pred.columns) == ["T", "H", "note", "M", "M_std", "outside_training_range"]
    assert pred["outside_training_range"].tolist() == [False, False, True]
    assert "outside the training range" in capsys.readouterr().out
    assert np.isfinite(pred["M"]).all() and (pred["M_std"] >= 0).all()
    # --fast: same contract, tabulated inside the box, the network outside it
    rc = main(["predict", model_dir, str(tmp_path / "pts.csv"), "--out", str(tmp_path / "fast.csv"), "--fast"])
    assert rc == 0 and "tabulated copy" in capsys.readouterr().out
    fast = pd.read_csv(tmp_path / "fast.csv")
    assert list(fast.columns) == list(pred.columns)
    span = float(np.ptp(pred["M"]))
    np.testing.assert_allclose(fast["M"], pred["M"], atol=0.02 * span)
    # the networks answer outside the box (float32: batch shapes may change the last digits)
    assert fast["M"].iloc[2] == pytest.approx(pred["M"].iloc[2], rel=1e-6, abs=1e-6 * span)


@pytest.mark.parametrize(
    "argv_tail, message",
    [
        (["--x", "T", "--x", "B", "--y", "M"], "missing column"),
        (["--x", "T", "--x", "H", "--y", "Q"], "missing column"),
        (["--x", "T", "--x", "H", "--y", "M", "--trials", "0"], "--trials"),
        (["--x", "T", "--x", "H", "--y", "M", "--restarts", "0"], "--restarts"),
        (["--x", "T", "--x", "H", "--y", "M", "--restarts", "2", "--budget", "60"], "--budget"),
        (["--x", "T", "--x", "H", "--y", "M", "--input-scale", "H=log"], "--input-scale 'H=log'"),
        (["--x", "T", "--x", "H", "--y", "M", "--input-scale", "H"], "expected COL=SCALE"),
        (["--x", "T", "--x", "H", "--y", "M", "--input-scale", "B=sqrt"], "not an --x axis"),
        (["--x", "T", "--x", "H", "--y", "M", "--input-scale", "H=sqrt", "--input-scale", "H=linear"], "twice"),
        (["--x", "T", "--x", "H", "--y", "M", "--monotone", "H=up"], "--monotone 'H=up': expected COL=DIRECTION"),
        (["--x", "T", "--x", "H", "--y", "M", "--monotone", "B=increasing"], "not an --x axis"),
    ],
)
def test_fit_bad_input_exits_2_and_writes_nothing(csv_path, tmp_path, capsys, argv_tail, message) -> None:
    out = tmp_path / "m"
    rc = main(["fit", csv_path, *argv_tail, "--out", str(out)])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not out.exists()


def test_fit_refuses_to_overwrite(csv_path, model_dir, capsys) -> None:
    before = open(current_path(model_dir) / "metadata.json").read()
    rc = main(["fit", csv_path, "--x", "T", "--x", "H", "--y", "M", "--out", model_dir, "--trials", "1"])
    assert rc == 2 and "--force" in capsys.readouterr().err
    assert open(current_path(model_dir) / "metadata.json").read() == before


def test_predict_bad_inputs(model_dir, tmp_path, capsys) -> None:
    pd.DataFrame({"T": [1.0]}).to_csv(tmp_path / "pts.csv", index=False)
    out = tmp_path / "pred.csv"
    out.write_text("keep me")
    assert main(["predict", model_dir, str(tmp_path / "pts.csv"), "--out", str(out), "--overwrite"]) == 2
    assert "missing column" in capsys.readouterr().err
    assert out.read_text() == "keep me"  # bad input: nothing written, even with --overwrite
    assert main(["predict", str(tmp_path), str(tmp_path / "pts.csv"), "--out", str(out), "--overwrite"]) == 2
    assert "not a twin model directory" in capsys.readouterr().err


def test_nan_rows_are_reported(tmp_path, capsys) -> None:
    df = scan_frame()
    df.loc[[1, 2], "M"] = np.nan
    df.to_csv(tmp_path / "d.csv", index=False)
    rc = main(
        [
            "fit",
            str(tmp_path / "d.csv"),
            "--x",
            "T",
            "--x",
            "H",
            "--y",
            "M",
            "--out",
            str(tmp_path / "m"),
            "--trials",
            "1",
            "--max-epochs",
            "10",
            "--ensemble",
            "1",
        ]
    )
    assert rc == 0
    assert "dropped 2 row(s)" in capsys.readouterr().out


def test_help_is_fast_and_lazy() -> None:
    code = (
        "import sys, time; t=time.perf_counter(); from bluesky_twin.cli import build_parser; build_parser(); "
        "heavy=[m for m in ('torch','optuna','tiled','bluesky','matplotlib','numpy') if m in sys.modules]; "
        "print(heavy, time.perf_counter()-t)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    heavy, seconds = out.rsplit(" ", 1)
    assert heavy == "[]", f"--help imports heavy modules: {heavy}"
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "bluesky_twin", "--help"], capture_output=True, check=True)
    assert time.perf_counter() - t0 < 5  # generous: a loaded CI box; the budget is 1 s on an idle one


def test_dashboard_opens_the_model_study(model_dir, monkeypatch, capsys) -> None:
    """The dashboard is served on the study's storage (the server call itself is replaced)."""
    optuna_dashboard = pytest.importorskip("optuna_dashboard")
    import optuna

    seen = {}

    def fake_run_server(storage, host, port):
        seen["studies"] = [s.study_name for s in optuna.get_all_study_summaries(storage)]
        seen["where"] = (host, port)

    monkeypatch.setattr(optuna_dashboard, "run_server", fake_run_server)
    assert main(["dashboard", model_dir, "--port", "8099"]) == 0
    meta = json.loads(open(current_path(model_dir) / "metadata.json").read())
    assert seen["studies"] == [meta["study_name"]]
    assert seen["where"] == ("127.0.0.1", 8099)
    assert "optuna.journal" in capsys.readouterr().out


def test_fit_pools_restarts_and_says_so(csv_path, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.delenv("BLUESKY_TWIN_STORAGE", raising=False)
    out = tmp_path / "pooled"
    argv = ["fit", csv_path, "--x", "T", "--x", "H", "--y", "M", "--out", str(out)]
    rc = main([*argv, "--trials", "2", "--ensemble", "1", "--restarts", "2", "--jobs", "2"])
    assert rc == 0
    assert "restarts: 2 searches pooled" in capsys.readouterr().out
    twin = DigitalTwin.load(out)
    assert twin.metadata["restarts"] == 2 and twin.ensemble_size == 2


def test_fit_reads_a_column_on_the_scale_asked_for_and_says_so(csv_path, tmp_path, capsys) -> None:
    out = tmp_path / "sqrt"
    argv = ["fit", csv_path, "--x", "T", "--x", "H", "--y", "M", "--out", str(out), "--input-scale", "H=sqrt"]
    rc = main([*argv, "--trials", "2", "--ensemble", "1", "--max-epochs", "20"])
    assert rc == 0
    assert "input scales: H sqrt" in capsys.readouterr().out
    twin = DigitalTwin.load(out)
    assert twin.metadata["search_space"]["input_scales"] == {"H": "sqrt"}
    assert twin.metadata["x_scaler"]["warp"] == ["linear", "sqrt"]


def test_fit_holds_an_axis_to_a_direction_when_asked(csv_path, tmp_path, capsys) -> None:
    out = tmp_path / "mono"
    argv = ["fit", csv_path, "--x", "T", "--x", "H", "--y", "M", "--out", str(out), "--monotone", "H=increasing"]
    rc = main([*argv, "--trials", "2", "--ensemble", "1", "--max-epochs", "20"])
    assert rc == 0
    assert "monotone: H increasing" in capsys.readouterr().out
    assert DigitalTwin.load(out).metadata["search_space"]["monotone"] == {"H": "increasing"}
