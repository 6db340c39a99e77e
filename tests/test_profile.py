"""The IPython profile collection loads headless, and a scan run in it lands in tiled."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "profile_collection"

CHECK = r"""
import json
uid, = RE(bp.scan([mpms], mpms.field, 0.5, 1.5, 5))
report = {
    "RE": type(RE).__name__,
    "instruments": {n: type(globals()[n]).__name__ for n in ("mpms", "ppms", "arpes", "ins")},
    "limits": list(mpms.field.limits),
    "store": TILED_LOCATION,
    # len() of a tiled container is cached client-side for a few seconds (tiled's
    # LENGTH_CACHE_TTL; the start-up banner just asked), so count by listing
    "n_runs": sum(1 for _ in catalog),
    "uid": uid,
    "headless": HEADLESS,
    "has_trainer_name": "twin_trainer" in globals(),
    "has_plans_name": "twin_plans" in globals(),
}
print("PROFILE-REPORT " + json.dumps(report))
"""


def _ipython() -> str:
    candidate = Path(sys.executable).with_name("ipython")
    if not candidate.exists():
        pytest.skip("IPython is not installed in this environment (pip install bluesky-twin[test])")
    return str(candidate)


def test_startup_files_are_the_nsls2_layout():
    names = sorted(p.name for p in (PROFILE / "startup").glob("*.py"))
    assert names == ["00-base.py", "10-instruments.py", "20-twin.py", "90-plans.py"]
    for path in (PROFILE / "startup").glob("*.py"):
        compile(path.read_text(), str(path), "exec")  # valid Python
        assert len(path.read_text().splitlines()) < 80  # thin: the code lives in the package


def test_profile_loads_headless_and_a_scan_lands_in_tiled(tmp_path):
    # A copy, so IPython's history/log/pid folders are not written into the repository.
    profile = tmp_path / "profile_collection"
    shutil.copytree(PROFILE / "startup", profile / "startup")
    store = tmp_path / "tiled"
    env = dict(
        os.environ,
        MPLBACKEND="Agg",
        BLUESKY_TWIN_TILED_DIR=str(store),
        BLUESKY_TWIN_SIM_SEED="0",
        BLUESKY_TWIN_PROFILE_TRAINER="1",
    )
    env.pop("BLUESKY_TWIN_TILED_URI", None)
    proc = subprocess.run(
        [
            _ipython(), f"--profile-dir={profile}", "--HistoryManager.hist_file=:memory:",
            "--no-banner", "--colors=NoColor", "-c", CHECK,
        ],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    output = proc.stdout + proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith("PROFILE-REPORT ")]
    assert proc.returncode == 0 and lines, output[-4000:]
    assert "Traceback" not in output, output[-4000:]
    report = json.loads(lines[-1].split(" ", 1)[1])
    assert report["RE"] == "RunEngine"
    assert report["instruments"] == {
        "mpms": "Magnetometer", "ppms": "TransportCell", "arpes": "ArpesManipulator", "ins": "InsSpectrometer",
    }
    assert report["limits"] == [0.0, 7.0]
    assert report["store"] == str(store) and report["n_runs"] == 1
    assert report["headless"] is True
    assert report["has_trainer_name"] and report["has_plans_name"]

    # the run is really in the embedded store the profile was told to use
    from bluesky_twin.storage import close_store, open_tiled, read_stream

    client = open_tiled(store)
    try:
        run = client[report["uid"]]
        data = read_stream(run, fields=["mpms_field", "mpms_magnetisation"])
        np.testing.assert_allclose(data["mpms_field"], np.linspace(0.5, 1.5, 5))
        assert np.all(np.isfinite(data["mpms_magnetisation"]))
        assert run.metadata["stop"]["exit_status"] == "success"
    finally:
        close_store(client)
