"""Out-of-limit proposals (a case that already held): never commanded, and every move is stored."""

from __future__ import annotations

import pytest

# the recording magnetometer and the hostile agent of the plan tests (tests/ is on sys.path)
from test_plans_limits import HostileAgent, RecordingMagnetometer  # noqa: E402

from bluesky_twin.callbacks import TwinTrainer
from bluesky_twin.plans import twin_adaptive_scan


class _Fitted:
    def __init__(self, n: int) -> None:
        self.version = f"{n}-test"
        self.metadata: dict = {}


@pytest.mark.parametrize("policy", ["clip", "refuse"])
def test_hostile_proposals_stay_inside_the_limits_and_every_move_is_stored(RE, policy) -> None:
    mpms = RecordingMagnetometer(name="mpms", seed=0)
    fits = {"n": 0}

    def fit(frame, x, y, warm_start=None, **kwargs):
        fits["n"] += 1
        return _Fitted(fits["n"])

    trainer = TwinTrainer(["mpms_temperature", "mpms_field"], "mpms_magnetisation", fit_function=fit, min_points=3)
    RE.subscribe(trainer)
    events: list[dict] = []
    RE.subscribe(lambda name, doc: events.append(doc), "event")
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
    lo, hi = mpms.field.limits
    assert mpms.field.commanded and all(lo <= v <= hi for v in mpms.field.commanded)
    events = [e for e in events if "mpms_field" in e["data"]]  # readings, not the "decisions" stream
    stored = {round(e["data"]["mpms_field"], 6) for e in events}
    commanded = {round(v, 6) for v in mpms.field.commanded}
    assert all(lo <= v <= hi for v in stored)
    assert commanded <= stored  # every field the plan moved to was measured and stored
    assert trainer.status["n_points"] == len(events)  # and every stored reading reached the trainer
