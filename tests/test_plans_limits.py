"""Twin-steered plans never command a motor outside its limits; bad arguments fail before any move."""

from __future__ import annotations

import time

import numpy as np
import pytest

bp = pytest.importorskip("bluesky.plans")

from bluesky_twin.agent import TwinLineAgent  # noqa: E402
from bluesky_twin.callbacks import TwinTrainer  # noqa: E402
from bluesky_twin.errors import LimitError  # noqa: E402
from bluesky_twin.plans import clip_to_limits, coarse_to_fine, twin_adaptive_scan, wait_for_twin  # noqa: E402
from bluesky_twin.sim import Magnetometer, SimPositioner  # noqa: E402


class RecordingPositioner(SimPositioner):
    """A SimPositioner that records every value it is commanded to (before its own check)."""

    def __init__(self, *args, **kwargs):
        self.commanded: list[float] = []
        super().__init__(*args, **kwargs)

    def set(self, value):
        self.commanded.append(float(value))
        return super().set(value)


class RecordingMagnetometer(Magnetometer):
    from ophyd import Component as Cpt

    field = Cpt(
        RecordingPositioner, limits=(0.0, 3.0), value=0.0, ramp_rate=0.01, settle_time=10.0, egu="T", kind="normal"
    )
    temperature = Cpt(
        RecordingPositioner, limits=(20.0, 60.0), value=30.0, ramp_rate=0.2, settle_time=30.0, egu="K", kind="normal"
    )


class _Fitted:
    def __init__(self, n):
        self.version = f"{n}-test"
        self.metadata: dict = {}


class HostileAgent:
    """Proposes far outside the limits, duplicates and NaN: the plan must clip, dedupe and drop."""

    def __init__(self):
        self.ingested: list = []
        self.rounds = [
            [{"mpms_field": -5.0}, {"mpms_field": 42.0}],
            [{"mpms_field": 1.0}, {"mpms_field": 1.0}, {"mpms_field": float("nan")}],
            [{"mpms_field": 3.0 + 1e-12}],
        ]

    def ingest(self, points):
        self.ingested.extend(points)

    def suggest(self, n):
        return self.rounds.pop(0) if self.rounds else []


@pytest.fixture
def mpms():
    return RecordingMagnetometer(name="mpms", seed=0)


@pytest.fixture
def trainer(RE):
    count = {"n": 0}

    def fit(frame, x, y, warm_start=None, **kwargs):
        count["n"] += 1
        return _Fitted(count["n"])

    tr = TwinTrainer(["mpms_temperature", "mpms_field"], "mpms_magnetisation", fit_function=fit, min_points=3)
    RE.subscribe(tr)
    return tr


def _all_within(motor):
    lo, hi = motor.limits
    return all(lo <= v <= hi for v in motor.commanded)


@pytest.mark.parametrize("policy", ["clip", "refuse"])
def test_out_of_limit_proposals_are_clipped_or_refused_never_commanded(RE, mpms, trainer, policy):
    starts: list = []
    RE.subscribe(lambda name, doc: starts.append(doc), "start")
    RE(
        twin_adaptive_scan(
            [mpms],
            mpms.temperature,
            30,
            40,
            3,
            mpms.field,
            [0.5],
            trainer=trainer,
            agent=HostileAgent(),
            budget=10,
            out_of_limits=policy,
            poll_interval=0.02,
        )
    )
    assert mpms.field.commanded and _all_within(mpms.field) and _all_within(mpms.temperature)
    lines = [s["plan_args"] for s in starts]
    assert len(lines) >= 2
    fields = sorted({round(v, 9) for v in mpms.field.commanded})
    if policy == "clip":
        # -5 -> 0 and 42 -> 3; then 1.0 once (deduplicated), NaN dropped; 3+1e-12 -> 3 (a repeat)
        assert fields == [0.0, 0.5, 1.0, 3.0]
    else:
        assert fields == [0.5, 1.0]
    # provenance in every run after the first twin
    for s in starts[1:]:
        assert s["twin_steered"] is True and s["twin_version"].endswith("-test")
        assert s["twin_training_runs"] >= 1 and len(s["twin_training_digest"]) == 64  # bounded provenance
        assert "twin_training_run_uids" not in s and s["twin_study_name"].startswith(trainer.study_name)
        assert s["twin_x"] == ["mpms_temperature", "mpms_field"] and s["twin_y"] == "mpms_magnetisation"


def test_user_values_outside_limits_are_refused_before_anything_moves(RE, mpms, trainer):
    with pytest.raises(LimitError, match="outside the limits"):
        RE(twin_adaptive_scan([mpms], mpms.temperature, 30, 40, 5, mpms.field, [1.0, 5.0], trainer=trainer))
    with pytest.raises(LimitError, match="mpms_temperature"):
        RE(coarse_to_fine([mpms], mpms.temperature, 10, 40, 5, mpms.field, [0, 1], trainer=trainer))
    with pytest.raises(LimitError, match="field range end"):
        RE(coarse_to_fine([mpms], mpms.temperature, 25, 40, 5, mpms.field, [0, 1], trainer=trainer, field_max=9))
    with pytest.raises(ValueError, match="not an input of the trainer"):
        RE(twin_adaptive_scan([mpms], mpms.temperature, 30, 40, 5, mpms.elapsed, [1.0], trainer=trainer))
    assert mpms.field.commanded == [] and mpms.temperature.commanded == []


def test_the_default_agent_stays_in_bounds_and_skips_measured_lines():
    class FlatStdTwin:
        x_names = ["T", "H"]
        version = "x"

        def predict(self, X):
            X = np.asarray(X, float)
            return X[:, 0] * 0 + X[:, 1], np.abs(X[:, 1] - 1.3) + 0.01  # most uncertain far from H=1.3

    agent = TwinLineAgent(
        FlatStdTwin(),
        step_axis="H",
        line_axis="T",
        line_points=np.linspace(20, 40, 5),
        bounds=(0.0, 2.0),
        candidates=21,
        min_separation=0.15,
    )
    first = agent.suggest(2)
    assert [{"H": p["H"]} for p in first] == [{"H": 0.0}, {"H": 0.2}]  # greedy, min_separation apart
    assert len({p["_id"] for p in first}) == 2  # blop's Optimizer: a unique _id per suggestion
    agent.ingest([{"_id": p["_id"]} for p in first])  # ingested by _id alone
    nxt = agent.suggest(3)
    assert all(0.0 <= p["H"] <= 2.0 for p in nxt)
    assert all(abs(p["H"] - m) >= 0.15 for p in nxt for m in (0.0, 0.2))
    assert [p["H"] for p in nxt] == pytest.approx([0.4, 0.6, 2.0])
    with pytest.raises(KeyError):
        agent.ingest([{"T": 1.0}])


def test_clip_to_limits_policies(mpms):
    assert clip_to_limits(mpms.field, [-1, 1, 4, float("inf")]).tolist() == [0.0, 1.0, 3.0]
    assert clip_to_limits(mpms.field, [-1, 1, 4], policy="refuse").tolist() == [1.0]


def test_wait_for_twin_returns_none_when_the_fit_fails_and_the_plan_continues(RE, mpms):
    def fit(frame, x, y, warm_start=None, **kwargs):
        raise RuntimeError("no convergence")

    tr = TwinTrainer(["mpms_temperature", "mpms_field"], "mpms_magnetisation", fit_function=fit, min_points=3)
    RE.subscribe(tr)
    result = RE(
        twin_adaptive_scan(
            [mpms], mpms.temperature, 30, 40, 4, mpms.field, [0.5, 1.0], trainer=tr, twin_timeout=30, poll_interval=0.02
        ),
    )
    # one measurement run, then it stopped (no twin) instead of waiting 30 s; the second run only
    # records that decision (a "decisions" stream, no readings)
    assert len(result) == 2
    assert tr.status["state"] == "failed"
    t0 = time.monotonic()
    RE(_wait_plan(tr, result[0]))
    assert time.monotonic() - t0 < 5


def _wait_plan(tr, uid):
    twin = yield from wait_for_twin(tr, run_uid=uid, timeout=30)
    assert twin is None
