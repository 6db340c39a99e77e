"""The profile serves bluesky-queueserver: a manager started on it runs a twin plan and a
standard plan from the queue, and the twin plan's proposal is stored in tiled.

Needs Redis at 127.0.0.1:6379 (skips otherwise, fails with BLUESKY_TWIN_REQUIRE_SERVICES=1).
The manager gets its own Redis name prefix and free 0MQ ports, the profile a temporary
tiled store (BLUESKY_TWIN_TILED_DIR) and quick fits (BLUESKY_TWIN_PROFILE_FIT).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from conftest import require_service

pytest.importorskip("bluesky_queueserver")
pytest.importorskip("bluesky_queueserver_api")

pytestmark = pytest.mark.services

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "profile_collection"
QUICK_FIT = '{"trials": 1, "budget": 15, "search_space": {"max_epochs": 40, "min_final_epochs": 40}}'


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait(predicate, timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}; manager log:\n{log.read_text()[-4000:]}")


def test_queue_runs_coarse_to_fine_and_grid_scan_and_stores_the_proposal(tmp_path):
    redis_addr = require_service("redis")
    from bluesky_queueserver_api import BPlan
    from bluesky_queueserver_api.zmq import REManagerAPI

    manager = Path(sys.executable).with_name("start-re-manager")
    startup = tmp_path / "startup"  # a copy: the manager writes existing_plans_and_devices.yaml
    shutil.copytree(PROFILE / "startup", startup)
    store = tmp_path / "tiled"
    control, info = _free_port(), _free_port()
    env = dict(
        os.environ,
        MPLBACKEND="Agg",
        BLUESKY_TWIN_TILED_DIR=str(store),
        BLUESKY_TWIN_SIM_SEED="0",
        BLUESKY_TWIN_PROFILE_FIT=QUICK_FIT,
    )
    env.pop("BLUESKY_TWIN_TILED_URI", None)
    log = tmp_path / "manager.log"
    cmd = [
        str(manager),
        "--startup-dir",
        str(startup),
        "--user-group-permissions",
        str(PROFILE / "user_group_permissions.yaml"),
        "--existing-plans-devices",
        str(tmp_path / "existing_plans_and_devices.yaml"),
        "--redis-addr",
        redis_addr,
        "--redis-name-prefix",
        f"bluesky_twin_test_{uuid.uuid4().hex[:8]}",
        "--zmq-control-addr",
        f"tcp://127.0.0.1:{control}",
        "--zmq-info-addr",
        f"tcp://127.0.0.1:{info}",
        "--zmq-publish-console",
        "ON",
    ]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
    api = None
    try:
        api = REManagerAPI(
            zmq_control_addr=f"tcp://127.0.0.1:{control}",
            zmq_info_addr=f"tcp://127.0.0.1:{info}",
            timeout_recv=10,
            timeout_send=10,
        )

        def manager_up() -> bool:
            assert proc.poll() is None, log.read_text()[-4000:]
            try:
                return api.status()["manager_state"] == "idle"
            except Exception:  # noqa: BLE001 - not listening yet
                return False

        _wait(manager_up, 60, "the manager", log)
        api.environment_open()
        api.wait_for_idle(timeout=120)
        status = api.status()
        assert status["worker_environment_exists"], log.read_text()[-4000:]
        allowed = api.plans_allowed()["plans_allowed"]
        assert {"coarse_to_fine", "twin_adaptive_scan", "count", "scan", "grid_scan"} <= set(allowed)
        assert {"mpms", "ins"} <= set(api.devices_allowed()["devices_allowed"])

        api.item_add(
            BPlan(
                "coarse_to_fine",
                ["mpms"],
                "mpms.temperature",
                26,
                44,
                7,
                "mpms.field",
                [0.0, 1.0, 2.0],
                trainer="twin_trainer",
                candidate_steps=[0.25, 0.5, 1.0],
                twin_timeout=120,
            )
        )
        api.item_add(BPlan("grid_scan", ["mpms"], "mpms.field", 0.5, 2.0, 3, "mpms.temperature", 20, 50, 6))
        api.queue_start()
        api.wait_for_idle(timeout=240)

        history = api.history_get()["items"]
        assert [item["name"] for item in history] == ["coarse_to_fine", "grid_scan"], log.read_text()[-4000:]
        for item in history:
            assert item["result"]["exit_status"] == "completed", (item["result"], log.read_text()[-4000:])
        c2f_uids, grid_uids = (item["result"]["run_uids"] for item in history)
        assert len(c2f_uids) == 2 and len(grid_uids) == 1
        assert "[bluesky-twin] coarse_to_fine: field step" in log.read_text()  # the profile's summary line

        api.environment_close()
        api.wait_for_idle(timeout=60)
    finally:
        if api is not None:
            api.close()
        proc.kill()
        proc.wait(timeout=30)

    # the proposal lives in the documents: the fine run's decisions stream, read back from tiled
    from bluesky_twin.storage import close_store, open_tiled, read_stream

    client = open_tiled(store)
    try:
        fine = client[c2f_uids[1]]
        assert fine.metadata["start"]["plan_name"] == "coarse_to_fine"
        assert fine.metadata["start"]["stage"] == "fine"
        decisions = read_stream(fine, "decisions")
        proposed = decisions["decision_value"][decisions["decision_proposed"].astype(bool)]
        assert proposed.shape == (1,) and proposed[0] in (0.25, 0.5, 1.0)
        fine_fields = np.unique(read_stream(fine, fields=["mpms_field"])["mpms_field"].round(6))
        assert np.allclose(np.diff(fine_fields), proposed[0])  # the fine run used the proposed step
        grid = client[grid_uids[0]]
        assert grid.metadata["stop"]["exit_status"] == "success"
        assert grid.metadata["start"]["scan_id"] == 3  # numbering continued in the worker
    finally:
        close_store(client)
