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
import json, sys
startup_imports = {"torch": "torch" in sys.modules, "tiled.catalog": "tiled.catalog" in sys.modules}
uid, = RE(bp.scan([mpms], mpms.field, 0.5, 1.5, 5)).run_start_uids
report = {
    "RE": [c.__name__ for c in type(RE).__mro__[:2]],
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
    "standard_plans": [n for n in ("count", "scan", "grid_scan", "list_grid_scan", "rel_scan") if n in globals()],
    "call_returns_result": RE.call_returns_result,
    "registered": sorted(__import__("bluesky_twin.registry").registry.registered()),
    "trainer_ignored": twin_trainer.status["ignored_runs"],
    "tokens": [translation_token is not None, tiled_writer_token is not None, translation_token < tiled_writer_token],
    "torch_loaded": "torch" in sys.modules,
    "startup_imports": startup_imports,
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
        # thin: the code lives in the package
        assert len(path.read_text().splitlines()) < 80


#: Small fits for tests (the profile reads BLUESKY_TWIN_PROFILE_FIT).
QUICK_FIT = '{"trials": 1, "budget": 15, "search_space": {"max_epochs": 40, "min_final_epochs": 40}}'


def _run_profile(tmp_path: Path, code: str, timeout: float = 300) -> tuple[subprocess.CompletedProcess, Path]:
    """Run *code* in IPython after the profile's startup files (headless, a store in *tmp_path*)."""
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
        BLUESKY_TWIN_PROFILE_FIT=QUICK_FIT,
    )
    env.pop("BLUESKY_TWIN_TILED_URI", None)
    proc = subprocess.run(
        [
            _ipython(),
            f"--profile-dir={profile}",
            "--HistoryManager.hist_file=:memory:",
            "--no-banner",
            "--colors=NoColor",
            "-c",
            code,
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return proc, store


def test_profile_loads_headless_and_a_scan_lands_in_tiled(tmp_path):
    proc, store = _run_profile(tmp_path, CHECK)
    output = proc.stdout + proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith("PROFILE-REPORT ")]
    assert proc.returncode == 0 and lines, output[-4000:]
    assert "Traceback" not in output, output[-4000:]
    report = json.loads(lines[-1].split(" ", 1)[1])
    assert report["RE"] == ["TwinRunEngine", "RunEngine"]  # a RunEngine that summarises twin plans' results
    assert report["instruments"] == {
        "mpms": "Magnetometer",
        "ppms": "TransportCell",
        "arpes": "ArpesManipulator",
        "ins": "InsSpectrometer",
    }
    assert report["limits"] == [0.0, 7.0]
    assert report["store"] == str(store) and report["n_runs"] == 1
    assert report["headless"] is True
    assert report["has_trainer_name"] and report["has_plans_name"]
    assert report["standard_plans"] == ["count", "scan", "grid_scan", "list_grid_scan", "rel_scan"]
    assert report["call_returns_result"] is True
    assert {"twin_trainer", "translation"} <= set(report["registered"])
    assert report["trainer_ignored"] == 1  # opt-in: a plain scan is not trained on
    assert report["tokens"] == [True, True, True]  # translation subscribed before the writer
    assert report["torch_loaded"] is False  # no INS run: torch was never imported
    assert report["startup_imports"] == {"torch": False, "tiled.catalog": False}  # both lazy

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


def _docs_session() -> str:
    """The python block of docs/bluesky.md's "The session in the IPython profile"."""
    text = (REPO / "docs" / "bluesky.md").read_text()
    section = text.split("## The session in the IPython profile", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_the_ipython_session_of_the_docs_runs_in_the_profile(tmp_path):
    session = _docs_session()
    assert "coarse_to_fine(" in session and "catalog[" in session
    check = (
        session
        + """
import json
print("SESSION-REPORT " + json.dumps({
    "step": out.plan_result.proposed_field_step, "proposed": [float(v) for v in proposed],
    "ins_streams": sorted(catalog[-4]), "translated": translation.stats["processed"],
    "scan_ids": [catalog[i].start["scan_id"] for i in (-4, -3, -2, -1)],
    "ignored": twin_trainer.status["ignored_runs"], "trainer_errors": twin_trainer.n_errors,
}))
"""
    )
    proc, _ = _run_profile(tmp_path, check, timeout=600)
    output = proc.stdout + proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith("SESSION-REPORT ")]
    assert proc.returncode == 0 and lines, output[-4000:]
    assert "Traceback" not in output, output[-4000:]
    report = json.loads(lines[-1].split(" ", 1)[1])
    assert report["step"] is not None and report["proposed"] == [report["step"]]
    assert "[bluesky-twin] coarse_to_fine: field step" in proc.stdout  # the one-line summary
    assert "twin fit 1 -> version" in proc.stdout  # status_callback=print
    assert report["ins_streams"] == ["primary", "translation", "translation_summary"]
    assert report["translated"] == 2
    assert report["scan_ids"] == [1, 2, 3, 4]
    assert report["ignored"] == 2 and report["trainer_errors"] == 0
