"""TwinLineAgent driven by blop's own ``optimize`` plan (blop's Optimizer protocol, ``_id``s)."""

import numpy as np
import pytest

blop_plans = pytest.importorskip("blop.plans")
blop_protocols = pytest.importorskip("blop.protocols")

from bluesky_twin.agent import TwinLineAgent  # noqa: E402


class _Twin:
    x_names = ["mpms_temperature", "mpms_field"]
    version = "analytic"

    def predict(self, X):
        X = np.asarray(X, float)
        return X[:, 1] * 2.0 - X[:, 0] * 0.01, np.abs(X[:, 1] - 1.3) + 0.01


def test_blop_optimize_drives_the_twin_agent(mpms):
    from bluesky import RunEngine

    RE = RunEngine({})  # noqa: N806
    readings: dict[str, list] = {}
    RE.subscribe(lambda name, doc: readings.setdefault(doc["descriptor"], []).append(doc["data"]), "event")
    descriptors: dict[str, str] = {}
    RE.subscribe(lambda name, doc: descriptors.__setitem__(doc["uid"], doc["run_start"]), "descriptor")
    starts: list = []
    RE.subscribe(lambda name, doc: starts.append(doc), "start")

    agent = TwinLineAgent(
        _Twin(),
        step_axis="mpms_field",
        line_axis="mpms_temperature",
        line_points=np.linspace(20, 40, 5),
        bounds=(0.0, 3.0),
        candidates=31,
    )
    assert isinstance(agent, blop_protocols.Optimizer)

    def evaluate(uid, suggestions):
        rows = [d for desc, ds in readings.items() if descriptors[desc] == uid for d in ds]
        by_field = {round(r["mpms_field"], 6): r["mpms_magnetisation"] for r in rows}
        return [{"_id": s["_id"], "mpms_magnetisation": by_field[round(s["mpms_field"], 6)]} for s in suggestions]

    problem = blop_protocols.OptimizationProblem(
        optimizer=agent, actuators=[mpms.field], sensors=[mpms], evaluation_function=evaluate
    )
    RE(blop_plans.optimize(problem, iterations=3, n_points=2))
    # every suggestion was acquired and ingested back by its _id
    assert len(agent.observations) == 6 and not agent.pending
    assert len(set(agent.measured)) == 6 and all(0.0 <= v <= 3.0 for v in agent.measured)
    assert all("mpms_magnetisation" in outcomes for _, _, outcomes in agent.observations)
    assert [s.get("run_key") for s in starts].count("default_acquire") == 3
