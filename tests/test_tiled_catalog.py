"""An embedded store through tiled's own server and client: a standard ``CatalogOfBlueskyRuns``.

Two runs are written with a RunEngine; ``bluesky-twin store serve-config`` writes a
config that ``tiled serve config`` (a subprocess) serves, and ``bluesky-twin store
tiled-profile`` a profile that ``tiled.client.from_profile`` opens in-process.  With the
standard tiled client, ``c[-1]``, ``c[scan_id]``, ``run.documents()`` and
``run["primary"].read()`` give back what was written.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

bp = pytest.importorskip("bluesky.plans")

from storage_helpers import Recorder, documents_equal, replay_comparable  # noqa: E402

from bluesky_twin.cli import main  # noqa: E402
from bluesky_twin.storage import make_tiled_writer  # noqa: E402

API_KEY = "catalogtestkey123"
#: Seconds ``tiled serve config`` may take to answer (a loaded 2-core machine).
SERVER_START_TIMEOUT = 60.0


@pytest.fixture
def two_runs(RE, mpms, ins_spectrometer, tiled_store, tiled_store_dir) -> tuple[Path, Recorder, list[str]]:
    """A magnetometer scan and an INS scan (2D frames, arrays under ``data/``) in the store."""
    recorder = Recorder()
    RE.subscribe(recorder)
    RE.subscribe(make_tiled_writer(tiled_store))
    (first,) = RE(bp.scan([mpms], mpms.temperature, 20, 40, 5), sample="ErCo2")
    (second,) = RE(bp.scan([ins_spectrometer], ins_spectrometer.temperature, 5.0, 15.0, 2), sample="MnF2")
    return tiled_store_dir, recorder, [first, second]


def _assert_standard_catalog(catalog: Any, recorder: Recorder, uids: list[str]) -> None:
    from bluesky_tiled_plugins import CatalogOfBlueskyRuns

    assert isinstance(catalog, CatalogOfBlueskyRuns)
    assert catalog[-1].start["uid"] == uids[-1]
    for uid in uids:
        live = recorder.run(uid)
        scan_id = live[0][1]["scan_id"]
        run = catalog[scan_id]
        assert run.start["uid"] == uid
        replayed = list(run.documents())
        assert [n for n, _ in replayed] == [n for n, _ in live]
        for (name, a), (_, b) in zip(live, replayed):
            assert documents_equal(replay_comparable(name, a), replay_comparable(name, b)), name
        events = [doc["data"] for name, doc in live if name == "event"]
        if uid == uids[0]:
            primary = run["primary"].read()
            for field in events[0]:
                np.testing.assert_array_equal(primary[field].values, [e[field] for e in events], err_msg=field)
        else:  # 64 x 64 frames: read the array node (a dataset of square frames makes xarray warn)
            frames = run["primary"]["ins_frame"].read()
            np.testing.assert_array_equal(frames, np.array([e["ins_frame"] for e in events]))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_until_serving(process: subprocess.Popen, base: str, log: Path) -> None:
    import httpx

    deadline = time.monotonic() + SERVER_START_TIMEOUT
    with httpx.Client(trust_env=False) as probe:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"tiled serve config exited with {process.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if probe.get(f"{base}/healthz", timeout=1.0).status_code == 200:
                    return
            except httpx.RequestError:
                pass
            time.sleep(0.2)
    pytest.fail(f"tiled serve config did not answer within {SERVER_START_TIMEOUT} s:\n{log.read_text()[-3000:]}")


def test_tiled_serve_config_gives_a_catalog_of_bluesky_runs(two_runs, tmp_path, capsys):
    from tiled.client import from_uri

    directory, recorder, uids = two_runs
    config = tmp_path / "config.yml"
    assert main(["store", "serve-config", str(directory), "--out", str(config)]) == 0
    assert "tiled serve config" in capsys.readouterr().out
    port = _free_port()
    log = tmp_path / "tiled-serve.log"
    env = dict(os.environ, TILED_SINGLE_USER_API_KEY=API_KEY)
    with open(log, "wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "tiled", "serve", "config", str(config), "--host", "127.0.0.1", "--port", str(port)],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_until_serving(process, base, log)
        catalog = from_uri(f"{base}/api/v1", api_key=API_KEY)
        try:
            _assert_standard_catalog(catalog, recorder, uids)
        finally:
            catalog.context.close()
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def test_tiled_profile_opens_the_store_in_process(two_runs, tmp_path, monkeypatch, capsys):
    import tiled.profiles
    from tiled.client import from_profile

    directory, recorder, uids = two_runs
    profiles = tmp_path / "profiles"
    monkeypatch.setattr(tiled.profiles, "paths", [profiles])
    tiled.profiles.load_profiles.cache_clear()
    try:
        assert main(["store", "tiled-profile", str(directory), "--name", "twin-test"]) == 0  # default --out
        assert (profiles / "twin-test.yml").is_file()
        assert "from_profile('twin-test')" in capsys.readouterr().out
        catalog = from_profile("twin-test")
        try:
            _assert_standard_catalog(catalog, recorder, uids)
        finally:
            catalog.context.close()
    finally:
        tiled.profiles.load_profiles.cache_clear()


def test_bad_input_is_one_line_and_exit_2(tiled_store, tiled_store_dir, tmp_path, capsys):
    config = tmp_path / "config.yml"
    assert main(["store", "serve-config", str(tmp_path / "missing"), "--out", str(config)]) == 2
    assert "no embedded tiled store" in capsys.readouterr().err and not config.exists()
    assert main(["store", "serve-config", str(tiled_store_dir), "--out", str(config)]) == 0
    before = config.read_text()
    assert main(["store", "serve-config", str(tiled_store_dir), "--out", str(config)]) == 2
    err = capsys.readouterr().err
    assert "--overwrite" in err and len(err.strip().splitlines()) == 1 and config.read_text() == before
    assert main(["store", "serve-config", str(tiled_store_dir), "--out", str(config), "--overwrite", "--writable"]) == 0
    assert "writable_storage" in config.read_text()
    catalog_db = tiled_store_dir / "catalog.db"
    assert main(["store", "serve-config", str(tiled_store_dir), "--out", str(catalog_db), "--overwrite"]) == 2
    assert (
        main(["store", "tiled-profile", str(tiled_store_dir), "--name", "no spaces", "--out", str(tmp_path / "p.yml")])
        == 2
    )
    assert not (tmp_path / "p.yml").exists()
