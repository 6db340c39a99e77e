"""`bluesky-twin demo`: the full loop on the simulated magnetometer, stored in embedded tiled."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.filterwarnings("ignore:Fixed parameter .* is out of range:UserWarning")


@pytest.mark.slow
def test_demo_runs_end_to_end_and_writes_summary(tmp_path) -> None:
    from bluesky_twin.demo import run_demo
    from bluesky_twin.storage import close_store, open_store, select_runs

    summary = run_demo(tmp_path, trials=2, t_num=15, fine_t_num=21)
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    for key in ("proposed_field_step_T", "runs", "dsm_predicted_vs_measured_rmse_pct", "timings"):
        assert key in on_disk, key
    assert on_disk["proposed_field_step_T"] == summary["proposed_field_step_T"] > 0
    assert len(on_disk["runs"]) == 2
    assert on_disk["twin_stream_errors"] == []
    for fig in on_disk["figures"]:
        assert (tmp_path / fig.split("/")[-1]).stat().st_size > 1000
    # the runs (and the twin's derived runs) are really in the store
    client = open_store(tmp_path / "tiled")
    try:
        stored = {r.metadata["start"]["uid"] for r in select_runs(client, uids=on_disk["runs"])}
        assert stored == set(on_disk["runs"])
        derived = select_runs(client, uids=on_disk["derived_twin_runs"])
        assert len(derived) == len(on_disk["derived_twin_runs"]) >= 1
    finally:
        close_store(client)
