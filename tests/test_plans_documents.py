"""Twin-steered plans as bluesky writes plans: grid metadata, a ``decisions`` stream, bounded
provenance, objects by name, agents of blop's and bluesky-adaptive's shapes, pausable waits."""

import json
import threading
import time

import numpy as np
import pytest

bp = pytest.importorskip("bluesky.plans")

from bluesky_twin.agent import BlueskyAdaptiveAgent, TwinLineAgent  # noqa: E402
from bluesky_twin.callbacks import TwinTrainer  # noqa: E402
from bluesky_twin.errors import InputError  # noqa: E402
from bluesky_twin.plans import AdaptiveScanResult, twin_adaptive_scan, wait_for_twin  # noqa: E402
from bluesky_twin.plans.stubs import WAIT_MARGIN_S, fit_budget, training_digest  # noqa: E402
from bluesky_twin.registry import register, unregister  # noqa: E402


class _Fitted:
    """A fitted 'twin': most uncertain far from 1.3 T."""

    x_names = ["mpms_temperature", "mpms_field"]

    def __init__(self, n):
        self.version = f"{n}-test"
        self.metadata: dict = {}

    def predict(self, X):
        X = np.asarray(X, float)
        return X[:, 1] * 2.0 - X[:, 0] * 0.01, np.abs(X[:, 1] - 1.3) + 0.01


@pytest.fixture
def RE():  # noqa: N802
    from bluesky import RunEngine

    engine = RunEngine({}, call_returns_result=True)
    yield engine
    if engine.state != "idle":
        engine.halt()


@pytest.fixture
def trainer(RE):
    count = {"n": 0}

    def fit(frame, x, y, warm_start=None, **kwargs):
        count["n"] += 1
        return _Fitted(count["n"])

    tr = TwinTrainer(["mpms_temperature", "mpms_field"], "mpms_magnetisation", fit_function=fit, min_points=3)
    RE.subscribe(tr)
    return tr


def _collect(RE):
    docs: list = []
    RE.subscribe(lambda name, doc: docs.append((name, doc)))
    return docs


def _decisions(docs, run_uid):
    desc = {d["uid"] for n, d in docs if n == "descriptor" and d["run_start"] == run_uid and d["name"] == "decisions"}
    return [d for n, d in docs if n == "event" and d["descriptor"] in desc]


def test_adaptive_runs_are_grid_scans_with_decisions_and_bounded_provenance(RE, mpms, trainer):
    docs = _collect(RE)
    out = RE(
        twin_adaptive_scan(
            [mpms],
            mpms.temperature,
            30,
            40,
            4,
            mpms.field,
            [0.0, 3.0],
            trainer=trainer,
            budget=4,
            tolerance=0.0,
            poll_interval=0.02,
        )
    )
    res = out.plan_result
    assert isinstance(res, AdaptiveScanResult) and res.reason == "budget" and len(res.measured_lines) == 4
    starts = [d for n, d in docs if n == "start"]
    assert [s["uid"] for s in starts] == res.run_uids  # budget: no extra decision run
    for k, s in enumerate(starts):
        # what bp.list_grid_scan writes: LiveGrid-able
        assert s["plan_name"] == "twin_adaptive_scan" and s["plan_pattern"] == "outer_list_product"
        assert list(s["shape"]) == [len(res.lines[k]), 4] and s["hints"]["gridding"] == "rectilinear"
        assert len(s["extents"]) == 2 and s["hints"]["dimensions"][0][0] == ["mpms_field"]
        assert "twin_training_run_uids" not in s
        assert s["twin_training_runs"] == k and s["twin_training_digest"] == training_digest(res.run_uids[:k])
        events = _decisions(docs, s["uid"])
        rows = [e["data"] for e in events]
        assert json.loads(rows[0]["decision_proposed_lines"]) == pytest.approx(res.lines[k])
        assert [r["decision_value"] for r in rows if r["decision_proposed"]] == pytest.approx(res.lines[k])
        if k:
            assert len(rows) == 201 and rows[0]["decision_n_candidates"] == 201  # a row per candidate
            assert max(r["decision_score"] for r in rows) == pytest.approx(rows[0]["decision_max_score"])
            assert rows[0]["decision_twin_version"] == res.twin_versions[k - 1]
            assert np.isfinite(rows[0]["decision_twin_uncertainty"])
    assert _decisions(docs, starts[-1]["uid"])[0]["data"]["decision_stop_reason"] == "budget"
    assert res.decisions[-1]["stop_reason"] == "budget"
    desc = [d for n, d in docs if n == "descriptor" and d["name"] == "decisions"][1]
    assert desc["data_keys"]["decision_score"]["dtype"] == "number"  # scalar columns: any table stores them


def test_the_decisions_stream_is_stored_by_tiled_writer(RE, mpms, trainer, tiled_store):
    from bluesky_twin.storage import make_tiled_writer, read_stream

    RE.subscribe(make_tiled_writer(tiled_store))
    out = RE(
        twin_adaptive_scan(
            [mpms],
            mpms.temperature,
            30,
            40,
            4,
            mpms.field,
            [0.5],
            trainer=trainer,
            budget=2,
            tolerance=0.0,
            step_range=(0.0, 3.0),
            poll_interval=0.02,
        )
    )
    res = out.plan_result
    assert out.exit_status == "success"
    run = tiled_store[res.run_uids[1]]
    table = read_stream(run, "decisions")
    assert len(table["decision_value"]) == 201 and list(np.unique(table["decision_stop_reason"])) == ["budget"]
    assert np.sum(table["decision_proposed"]) == 1
    assert run.metadata["start"]["twin_training_runs"] == 1


def test_a_stop_without_a_next_run_is_recorded_in_a_decision_run(RE, mpms, trainer):
    docs = _collect(RE)
    out = RE(
        twin_adaptive_scan(
            [mpms],
            mpms.temperature,
            30,
            40,
            4,
            mpms.field,
            [0.5],
            trainer=trainer,
            budget=5,
            tolerance=100.0,
            poll_interval=0.02,
        )
    )
    res = out.plan_result
    assert res.reason == "converged" and res.decision_uid and res.decision_uid == out.run_start_uids[-1]
    event = _decisions(docs, res.decision_uid)[0]  # a row per candidate of the agent
    assert event["data"]["decision_stop_reason"] == "converged"
    assert event["data"]["decision_max_score"] < 100.0
    assert res.proposal  # what it would have measured next


def test_trainer_and_agent_are_passed_by_name(RE, mpms, trainer):
    agent = TwinLineAgent(
        trainer,
        step_axis="mpms_field",
        line_axis="mpms_temperature",
        line_points=np.linspace(30, 40, 4),
        bounds=(0.0, 3.0),
    )
    register("test_trainer", trainer)
    register("test_agent", agent)
    try:
        out = RE(
            twin_adaptive_scan(
                [mpms],
                mpms.temperature,
                30,
                40,
                4,
                mpms.field,
                [0.5],
                trainer="test_trainer",
                agent="test_agent",
                budget=2,
                tolerance=0.0,
                poll_interval=0.02,
            )
        )
        assert out.plan_result.reason == "budget" and agent.measured == out.plan_result.measured_lines
        with pytest.raises(InputError, match="no trainer is registered as 'nope'"):
            RE(twin_adaptive_scan([mpms], mpms.temperature, 30, 40, 4, mpms.field, [0.5], trainer="nope"))
    finally:
        unregister("test_trainer")
        unregister("test_agent")


def test_a_bluesky_adaptive_shaped_agent_spends_the_whole_budget(RE, mpms, trainer):
    inner = TwinLineAgent(
        trainer,
        step_axis="mpms_field",
        line_axis="mpms_temperature",
        line_points=np.linspace(30, 40, 4),
        bounds=(0.0, 3.0),
    )
    agent = BlueskyAdaptiveAgent(inner)
    out = RE(
        twin_adaptive_scan(
            [mpms],
            mpms.temperature,
            30,
            40,
            4,
            mpms.field,
            [0.5],
            trainer=trainer,
            agent=agent,
            budget=3,
            tolerance=0.0,
            step_range=(0.0, 3.0),
            poll_interval=0.02,
        )
    )
    res = out.plan_result
    assert res.reason == "budget" and len(res.measured_lines) == 3  # not 1 of 3 and "exhausted"
    assert agent.independent == res.measured_lines and len(agent.dependent[0]) == 4  # the line's readings
    assert agent.report()["measured"] == res.measured_lines


@pytest.mark.parametrize("bad", [([{"x": 1}], [1.0]), [1.0, 2.0], [{"mpms_temperature": 3.0}], "1.0"])
def test_malformed_suggestions_raise_instead_of_stopping_as_exhausted(RE, mpms, trainer, bad):
    class Agent:
        def ingest(self, points):
            pass

        def suggest(self, n):
            return bad

    with pytest.raises(InputError, match="suggest"):
        RE(
            twin_adaptive_scan(
                [mpms],
                mpms.temperature,
                30,
                40,
                4,
                mpms.field,
                [0.5],
                trainer=trainer,
                agent=Agent(),
                budget=3,
                poll_interval=0.02,
            )
        )


def test_adaptive_shaped_agent_must_return_docs_and_points(RE, mpms, trainer):
    class Agent:
        def ingest(self, x, y):
            pass

        def suggest(self, n):
            return [{"mpms_field": 1.0}]

        def report(self):
            return {}

    with pytest.raises(InputError, match=r"not \(docs, points\)"):
        RE(
            twin_adaptive_scan(
                [mpms],
                mpms.temperature,
                30,
                40,
                4,
                mpms.field,
                [0.5],
                trainer=trainer,
                agent=Agent(),
                budget=3,
                poll_interval=0.02,
            )
        )


def test_twin_line_agent_implements_blop_protocols(trainer):
    blop_protocols = pytest.importorskip("blop.protocols")
    twin = _Fitted(1)
    agent = TwinLineAgent(
        twin,
        step_axis="mpms_field",
        line_axis="mpms_temperature",
        line_points=np.linspace(30, 40, 4),
        bounds=(0.0, 3.0),
        tolerance=0.5,
    )
    assert isinstance(agent, blop_protocols.Optimizer)
    assert isinstance(agent, blop_protocols.SupportsStoppingCriteria)
    (best,) = agent.get_best_points()
    assert best[0] is None and best[1] == {"mpms_field": 3.0} and best[2]["score"] > 0
    assert agent.should_stop() == (False, None)


class _StuckSource:
    """A TwinSource whose fit never finishes (until ``done`` is set)."""

    x_fields = ["a"]
    y_field = "b"
    status = {"state": "training", "last_error": None}
    version = None
    fit_kwargs = {"trials": 3, "timeout": 5.0}
    refit_kwargs = {"budget": 2.0}

    def __init__(self):
        self.done = False
        self.twin = None

    def poll(self, *, newer_than=None, run_uid=None):
        return (True, "twin") if self.done else (False, None)

    def wait_for_version(self, newer_than=None, timeout=None, *, run_uid=None):
        return None

    def provenance(self):
        return {}


def test_wait_for_twin_pauses_at_once_and_resumes(RE):
    src = _StuckSource()

    def plan():
        return (yield from wait_for_twin(src, timeout=60, poll_interval=0.5))

    from bluesky.utils import RunEngineInterrupted

    threading.Timer(0.3, RE.request_pause).start()
    t0 = time.monotonic()
    with pytest.raises(RunEngineInterrupted):
        RE(plan())
    assert RE.state == "paused" and time.monotonic() - t0 < 2.0
    src.done = True
    assert RE.resume().plan_result == "twin"


def test_wait_for_twin_waits_at_least_the_fit_budget():
    src = _StuckSource()
    assert fit_budget(src) == 5.0
    assert fit_budget(object()) is None
    gen = wait_for_twin(src, timeout=0.0, poll_interval=1.0)
    msgs = [next(gen).command]  # checkpoint
    msgs.append(gen.send(None).command)  # sleep: a zero timeout was raised to the budget + margin
    assert msgs == ["checkpoint", "sleep"] and WAIT_MARGIN_S > 0
