"""GPLineAgent and fit_gp_twin: the Gaussian-process baseline behind the twin agent's interface."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("sklearn")

from bluesky_twin.errors import InputError  # noqa: E402
from bluesky_twin.gp_agent import GaussianProcessTwin, GPLineAgent, fit_gp_twin  # noqa: E402
from bluesky_twin.protocols import LineAgent, ScoringLineAgent, Twin  # noqa: E402

LINE = np.linspace(0.0, 1.0, 11)


def _lines(values):
    """Readings of y = sin(3 s) + l along lines at step values *values*."""
    s, line = np.meshgrid(values, LINE, indexing="ij")
    return {"s": s.ravel(), "l": line.ravel(), "y": np.sin(3 * s.ravel()) + line.ravel()}


def _agent(twin, **kw):
    return GPLineAgent(twin, step_axis="s", line_axis="l", line_points=LINE, bounds=(0.0, 1.0), candidates=101, **kw)


def test_fit_gp_twin_is_a_twin_and_interpolates():
    twin = fit_gp_twin(_lines([0.0, 0.25, 0.5, 0.75, 1.0]), ["l", "s"], "y")
    assert isinstance(twin, (Twin, GaussianProcessTwin)) and isinstance(twin, Twin)
    assert twin.x_names == ["l", "s"] and twin.y_name == "y" and twin.version.startswith("gp-")
    X = np.array([[0.5, 0.6], [0.2, 0.1]])
    mean, std = twin.predict(X)
    assert mean.shape == std.shape == (2,) and np.all(std >= 0)
    assert np.allclose(mean, np.sin(3 * X[:, 1]) + X[:, 0], atol=0.05)
    # a refit warm-starts from the previous kernel and its version follows the data
    again = fit_gp_twin(_lines([0.0, 0.25, 0.5, 0.6, 0.75, 1.0]), ["l", "s"], "y", warm_start=twin)
    assert again.version != twin.version and again.n_points == 66


def test_fit_gp_twin_refuses_bad_data_in_one_line():
    with pytest.raises(InputError, match="no column"):
        fit_gp_twin({"a": [1, 2, 3]}, ["l", "s"], "y")
    with pytest.raises(InputError, match="at least 3"):
        fit_gp_twin({"l": [0.0, np.nan], "s": [0.0, 1.0], "y": [1.0, 2.0]}, ["l", "s"], "y")


def test_interface_and_protocols():
    twin = fit_gp_twin(_lines([0.0, 0.5, 1.0]), ["l", "s"], "y")
    agent = _agent(twin)
    assert isinstance(agent, LineAgent) and isinstance(agent, ScoringLineAgent)
    out = agent.suggest(2)
    assert len(out) == 2 and all(set(p) == {"s", "_id"} and 0.0 <= p["s"] <= 1.0 for p in out)
    assert len({p["_id"] for p in out}) == 2 and agent.last_scores.shape == (101,)
    agent.ingest([{"_id": out[0]["_id"], "y_mean": 0.3}])  # by id, as blop does
    assert agent.measured == [out[0]["s"]] and out[0]["_id"] not in agent.pending
    (best,) = agent.get_best_points()
    assert best[1]["s"] != out[0]["s"] and best[2]["score"] > 0
    with pytest.raises(InputError, match="num_points"):
        agent.suggest(0)


def test_picks_the_most_uncertain_line():
    measured = [0.0, 0.1, 0.2, 1.0]  # the widest gap is 0.2 .. 1.0
    twin = fit_gp_twin(_lines(measured), ["l", "s"], "y")
    agent = _agent(twin)
    agent.ingest([{"s": v} for v in measured])
    (p,) = agent.suggest(1)
    assert 0.4 < p["s"] < 0.8
    scores = agent.last_scores
    assert p["s"] == pytest.approx(agent.candidates[int(np.argmax(scores))])
    # lines next to measured ones are the least uncertain
    assert scores[int(np.argmin(np.abs(agent.candidates - 0.1)))] < 0.2 * scores.max()


def test_needs_a_gaussian_process():
    class Exact:
        x_names = ["l", "s"]

        def predict(self, X):
            X = np.asarray(X)
            return X[:, 0], np.zeros(len(X))

    with pytest.raises(InputError, match="GaussianProcessTwin"):
        _agent(Exact()).suggest(1)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_runs_inside_twin_adaptive_scan_on_the_simulated_magnetometer(RE, mpms):
    from bluesky_twin.callbacks import TwinTrainer
    from bluesky_twin.plans import twin_adaptive_scan

    trainer = TwinTrainer(["mpms_temperature", "mpms_field"], "mpms_magnetisation", fit_function=fit_gp_twin)
    RE.subscribe(trainer)
    starts = []
    RE.subscribe(lambda name, doc: starts.append(doc), "start")
    line = np.linspace(26, 44, 10)
    agent = GPLineAgent(
        trainer, step_axis="mpms_field", line_axis="mpms_temperature", line_points=line, bounds=(0.0, 2.0)
    )
    try:
        RE(
            twin_adaptive_scan(
                [mpms],
                mpms.temperature,
                26,
                44,
                10,
                mpms.field,
                [0.0, 2.0],
                trainer=trainer,
                agent=agent,
                budget=4,
                tolerance=0.0,
                twin_timeout=60,
            )
        )
    finally:
        trainer.close(wait=True)
    assert isinstance(trainer.twin, GaussianProcessTwin)
    assert len(agent.measured) == 4 and agent.measured[:2] == [0.0, 2.0]
    new = agent.measured[2:]
    assert all(0.0 < v < 2.0 for v in new) and len(set(new)) == 2
    assert trainer.twin.n_points == 40
    # no step_range given: the plan proposes in the agent's own bounds, not the magnet's limits
    assert {tuple(d["plan_args"]["step_range"]) for d in starts if "step_range" in d.get("plan_args", {})} == {
        (0.0, 2.0)
    }


# ---- the twin agent's model-based acquisitions the benchmark compares the GP with ------------------


class _Exact:
    """An exact analytic twin of ``f(line, step)``."""

    def __init__(self, f):
        self.f = f
        self.x_names = ["l", "s"]

    def predict(self, X):
        X = np.asarray(X, dtype=float)
        return self.f(X[:, 0], X[:, 1]), np.zeros(len(X))


def test_derived_scores_the_dsm_error_a_line_removes():
    from bluesky_twin.agent import TwinLineAgent
    from bluesky_twin.sim.magnetometer import ErCo2Model

    model = ErCo2Model()
    twin = _Exact(lambda t, h: model.magnetisation(t, h))
    line = np.linspace(26, 50, 49)
    agent = TwinLineAgent(
        twin, step_axis="s", line_axis="l", line_points=line, bounds=(0.0, 5.0), acquisition="derived"
    )
    agent.ingest([{"s": v} for v in (0.0, 2.5, 5.0)])
    (p,) = agent.suggest(1)
    scores = agent.last_scores
    # the transition is sharpest and moves fastest at low field: the first line goes below 2.5 T
    assert p["s"] < 2.5 and np.all(scores >= 0)
    assert scores[np.isin(agent.candidates, [0.0, 2.5, 5.0])].max() == 0.0
    # a line in the wide high-field interval removes more error than one next to a measured line
    near = int(np.argmin(np.abs(agent.candidates - 2.55)))
    mid = int(np.argmin(np.abs(agent.candidates - 3.75)))
    assert scores[mid] > scores[near]


def test_interp_scores_the_map_error_a_line_removes():
    from bluesky_twin.agent import TwinLineAgent

    # flat map with one narrow ridge at s = 0.7, between measured lines at 0.5 and 1.0
    twin = _Exact(lambda line, s: np.exp(-(((s - 0.7) / 0.05) ** 2)) * (1 + line))
    agent = TwinLineAgent(
        twin, step_axis="s", line_axis="l", line_points=LINE, bounds=(0.0, 1.0), candidates=101, acquisition="interp"
    )
    agent.ingest([{"s": v} for v in (0.0, 0.5, 1.0)])
    (p,) = agent.suggest(1)
    assert abs(p["s"] - 0.7) <= 0.05
    scores = agent.last_scores
    assert scores[agent.candidates < 0.45].max() < 1e-6  # nothing to learn in the flat part
    with pytest.raises(InputError, match="acquisition"):
        TwinLineAgent(twin, step_axis="s", line_axis="l", line_points=LINE, bounds=(0, 1), acquisition="nope")
