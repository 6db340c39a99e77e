"""coarse_to_fine and twin_adaptive_scan end to end: simulated magnetometer, real (tiny) twin fits."""

from __future__ import annotations

import json

import numpy as np
import pytest

bp = pytest.importorskip("bluesky.plans")

from bluesky_twin.callbacks import TwinTrainer  # noqa: E402
from bluesky_twin.plans import CoarseToFineResult, coarse_to_fine, twin_adaptive_scan  # noqa: E402
from bluesky_twin.plans.stubs import training_digest  # noqa: E402

WARM_START_WARNING = "ignore:Fixed parameter .* is out of range:UserWarning"
pytestmark = pytest.mark.filterwarnings(WARM_START_WARNING)


@pytest.fixture
def RE():  # noqa: N802 - overrides conftest's: these plans return results
    from bluesky import RunEngine

    engine = RunEngine({}, call_returns_result=True)
    yield engine
    if engine.state != "idle":
        engine.halt()


@pytest.fixture
def trainer(RE):
    from bluesky_twin.twin import TwinSearchSpace

    space = TwinSearchSpace(max_epochs=60, min_final_epochs=60, n_layers=(2, 2), n_units=(16, 32), patience=10)
    tr = TwinTrainer(
        ["mpms_temperature", "mpms_field"],
        "mpms_magnetisation",
        fit_kwargs={"trials": 2, "search_space": space, "ensemble_size": 2},
        refit_kwargs={"trials": 1, "search_space": space, "ensemble_size": 2},
    )
    RE.subscribe(tr)
    yield tr
    tr.close(wait=True)


def test_coarse_to_fine_proposes_a_step_scans_within_limits_and_reports_dsm(RE, mpms, trainer):
    starts: list = []
    RE.subscribe(lambda name, doc: starts.append(doc), "start")
    docs: list = []
    RE.subscribe(lambda name, doc: docs.append((name, doc)))
    steps = [0.1, 0.25, 0.5, 1.0]
    out = RE(
        coarse_to_fine(
            [mpms],
            mpms.temperature,
            26,
            44,
            19,
            mpms.field,
            [0.0, 1.0, 2.0],
            trainer=trainer,
            candidate_steps=steps,
            twin_timeout=120,
            md={"sample": "ErCo2-sim"},
        )
    )
    res = out.plan_result
    assert isinstance(res, CoarseToFineResult) and out.exit_status == "success"
    assert res.run_uids == list(out.run_start_uids)
    assert res.proposed_field_step in steps
    lo, hi = mpms.field.limits
    assert res.fine_fields[0] == 0.0 and res.fine_fields[-1] == 2.0
    assert all(lo <= h <= hi for h in res.fine_fields)
    assert np.allclose(np.diff(res.fine_fields), res.proposed_field_step)
    # the fine run really was measured at those fields
    fine = trainer.run_data(res.fine_uid)
    measured_fields = np.unique(np.round(fine["x"][:, 1], 6))
    assert np.allclose(measured_fields, res.fine_fields)
    assert res.dsm_rmse_pct is not None and np.isfinite(res.dsm_rmse_pct)
    assert res.dsm_measured.dS.shape == res.dsm_predicted.dS.shape
    coarse_start, fine_start = starts
    assert coarse_start["stage"] == "coarse" and coarse_start["twin_steered"] is False
    assert coarse_start["twin_x"] == ["mpms_temperature", "mpms_field"] and coarse_start["sample"] == "ErCo2-sim"
    assert fine_start["stage"] == "fine" and fine_start["twin_steered"] is True
    assert fine_start["twin_version"] == res.twin_version
    assert fine_start["twin_training_runs"] == 1 and "twin_training_run_uids" not in fine_start
    assert fine_start["twin_training_digest"] == training_digest([res.coarse_uid])
    assert fine_start["twin_study_name"] and fine_start["source_run_uid"] == res.coarse_uid
    assert fine_start["proposed_field_step"] == res.proposed_field_step
    assert fine_start["plan_name"] == "coarse_to_fine" and "plan_args" in fine_start
    # grid runs as bluesky writes them (BestEffortCallback draws a LiveGrid)
    assert list(coarse_start["shape"]) == [3, 19] and list(fine_start["shape"]) == [len(res.fine_fields), 38]
    assert fine_start["hints"]["gridding"] == "rectilinear" and fine_start["plan_pattern"] == "outer_list_product"
    assert [list(e) for e in coarse_start["extents"]] == [[0.0, 2.0], [26.0, 44.0]]
    # the decision is a document: the fine run's "decisions" stream
    desc = [
        d["uid"] for n, d in docs if n == "descriptor" and d["name"] == "decisions" and d["run_start"] == res.fine_uid
    ]
    rows = [d["data"] for n, d in docs if n == "event" and d["descriptor"] in desc]  # a row per candidate
    assert [r["decision_value"] for r in rows] == steps and all(np.isfinite(r["decision_score"]) for r in rows)
    assert [r["decision_value"] for r in rows if r["decision_proposed"]] == [res.proposed_field_step]
    data = rows[0]
    assert data["decision_proposed_step"] == res.proposed_field_step
    assert json.loads(data["decision_proposed_lines"]) == res.fine_fields
    assert data["decision_twin_version"] == res.twin_version and data["decision_twin_uncertainty"] > 0
    assert res.decisions[-1]["proposed_step"] == res.proposed_field_step
    assert fine_start["hints"]["dimensions"] == [
        (["mpms_field"], "primary"),
        (["mpms_temperature"], "primary"),
    ] or fine_start["hints"]["dimensions"] == [[["mpms_field"], "primary"], [["mpms_temperature"], "primary"]]


def test_adaptive_scan_spends_its_budget_on_new_lines_with_provenance(RE, mpms, trainer):
    starts: list = []
    RE.subscribe(lambda name, doc: starts.append(doc), "start")
    out = RE(
        twin_adaptive_scan(
            [mpms],
            mpms.temperature,
            26,
            44,
            10,
            mpms.field,
            [0.0, 3.0],
            trainer=trainer,
            budget=4,
            step_range=(0.0, 3.0),
            acquisition="derived",
            tolerance=0.0,
            twin_timeout=120,
        )
    )
    res = out.plan_result
    assert res.reason == "budget" and len(res.measured_lines) == 4
    assert len(set(np.round(res.measured_lines, 6))) == 4
    assert all(0.0 <= v <= 3.0 for v in res.measured_lines)
    assert len(res.run_uids) == 3 and len(res.twin_versions) == 3 and len(set(res.twin_versions)) == 3
    assert starts[0]["twin_steered"] is False
    for k, s in enumerate(starts[1:], start=1):
        assert s["twin_steered"] is True and s["adaptive_iteration"] == k
        assert s["twin_version"] == res.twin_versions[k - 1]
        assert s["twin_training_runs"] == k and s["twin_training_digest"] == training_digest(res.run_uids[:k])
        assert s["twin_study_name"].startswith(trainer.study_name)
