"""Replaying stored runs gives the trainer exactly what it saw live; ``bluesky-twin replay`` CLI."""

from __future__ import annotations

import numpy as np
import pytest

bp = pytest.importorskip("bluesky.plans")
bps = pytest.importorskip("bluesky.plan_stubs")

from bluesky.utils import RunEngineInterrupted  # noqa: E402
from test_callbacks_trainer import _pause_at  # noqa: E402  (tests/ is on sys.path)

from bluesky_twin.callbacks import TwinTrainer  # noqa: E402
from bluesky_twin.cli import main  # noqa: E402
from bluesky_twin.replay import replay_runs  # noqa: E402

X_FIELDS = ["mpms_temperature", "mpms_field"]
Y_FIELD = "mpms_magnetisation"
TWIN_MD = {"twin_x": X_FIELDS, "twin_y": Y_FIELD}


@pytest.fixture
def stored_runs(RE, mpms, tiled_store):
    """Three runs written live through TiledWriter and a trainer: a plain grid, one with a
    pause/resume retake, and an aborted one."""
    from bluesky_twin.storage import make_tiled_writer

    live = TwinTrainer(X_FIELDS, Y_FIELD, auto_refit=False)
    RE.subscribe(make_tiled_writer(tiled_store))
    RE.subscribe(live)
    (u1,) = RE(bp.grid_scan([mpms], mpms.field, 0, 2, 3, mpms.temperature, 26, 44, 10, md=dict(TWIN_MD)))
    with pytest.raises(RunEngineInterrupted):
        RE(
            bp.grid_scan(
                [mpms],
                mpms.field,
                0.5,
                1.5,
                2,
                mpms.temperature,
                26,
                44,
                6,
                per_step=_pause_at(4, RE),
                md=dict(TWIN_MD, sample="retake"),
            )
        )
    (u2,) = RE.resume()
    with pytest.raises(RunEngineInterrupted):
        RE(
            bp.grid_scan(
                [mpms],
                mpms.field,
                0,
                1,
                2,
                mpms.temperature,
                26,
                44,
                6,
                per_step=_pause_at(3, RE),
                md=dict(TWIN_MD),
            )
        )
    (u3,) = RE.abort("operator abort")
    return live, (u1, u2, u3)


def test_replay_from_tiled_equals_live(stored_runs, tiled_store):
    from bluesky_twin.storage import select_runs

    live, (u1, u2, u3) = stored_runs
    assert live.runs[u2].n_duplicates == 1 and live.runs[u3].state == "skipped"
    replayed = TwinTrainer(X_FIELDS, Y_FIELD, auto_refit=False)
    reports = replay_runs(select_runs(tiled_store, uids=[u1, u2, u3]), replayed)
    for uid in (u1, u2, u3):
        a, b = live.runs[uid], reports[uid]
        assert (a.state, a.exit_status, a.n_points, a.n_masked) == (b.state, b.exit_status, b.n_points, b.n_masked)
    for uid in (u1, u2):
        got, want = replayed.run_data(uid), live.run_data(uid)
        for key in ("x", "y", "seq_num"):
            assert np.array_equal(got[key], want[key]), key
    assert replayed.accepted_run_uids == live.accepted_run_uids == [u1, u2]
    assert replayed.training_frame().equals(live.training_frame())


def test_replay_cli_trains_from_start_document_fields(stored_runs, tiled_store_dir, tmp_path, capsys):
    from bluesky_twin.twin import DigitalTwin

    live, (u1, u2, u3) = stored_runs
    out = tmp_path / "model"
    rc = main(
        [
            "replay",
            "--tiled",
            str(tiled_store_dir),
            "--query",
            "sample=retake",
            "--uid",
            u1[:8],
            "--out",
            str(out),
            "--trials",
            "1",
            "--seed",
            "1",
        ]
    )
    # the query narrows the selection: u1 (no sample) does not match
    assert rc == 2 and "no stored run" in capsys.readouterr().err
    rc = main(
        [
            "replay",
            "--tiled",
            str(tiled_store_dir),
            "--out",
            str(out),
            "--trials",
            "1",
            "--seed",
            "1",
            "--max-epochs",
            "30",
        ]
    )
    text = capsys.readouterr().out
    assert rc == 0, text
    lines = {ln.split(":")[0][4:]: ln for ln in text.splitlines() if ln.startswith("run ")}
    assert "accepted" in lines[u1[:8]] and "points=30" in lines[u1[:8]]
    assert "accepted" in lines[u2[:8]] and "points=12" in lines[u2[:8]]
    assert "skipped" in lines[u3[:8]] and "abort" in lines[u3[:8]]
    twin = DigitalTwin.load(out)
    assert twin.x_names == X_FIELDS and twin.y_name == Y_FIELD
    assert twin.metadata.get("training_run_uids") == [u1, u2]


def test_replay_cli_bad_input_exits_2_and_writes_nothing(stored_runs, tiled_store_dir, tmp_path, capsys):
    out = tmp_path / "model"
    cases = [
        (["--x", "mpms_temperature"], "give both"),
        (["--query", "novalue"], "KEY=VALUE"),
        (["--x", "a", "--x", "b", "--y", "c"], "none of the"),
        (["--uid", "deadbeefdeadbeef"], "no stored run"),
    ]
    for extra, message in cases:
        rc = main(["replay", "--tiled", str(tiled_store_dir), "--out", str(out), "--trials", "1", *extra])
        err = capsys.readouterr().err
        assert rc == 2 and message in err, (extra, err)
    assert main(["replay", "--tiled", str(tmp_path / "nothing"), "--out", str(out)]) == 2
    assert not out.exists()
