"""Step proposals member by member, on analytic ensembles whose members' answers are known."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bluesky_twin.analysis import field_step_study, member_step_proposals
from bluesky_twin.analysis.robustness import MemberTwin
from bluesky_twin.errors import InputError

STEPS = [0.02, 0.05, 0.1, 0.3]


class Transition:
    """M(T, H[Oe]) = f(T - a mu0H) with width w K (see test_analysis_steps.MovingTransition)."""

    x_names = ["T", "H"]

    def __init__(self, w: float) -> None:
        self.w = w
        self.x_range = np.array([[10.0, 60.0], [100.0, 50000.0]])

    def predict(self, X):
        X = np.asarray(X, dtype=float)
        return 0.5 * (1.0 - np.tanh((X[:, 0] - 30.0 - 10.0 * X[:, 1] * 1e-4) / self.w)), np.zeros(len(X))


class TransitionEnsemble:
    """Members that disagree on the transition width: a sharper one needs a finer field step."""

    x_names = ["T", "H"]

    def __init__(self, widths=(0.5, 1.0, 2.0)) -> None:
        self.members = [Transition(w) for w in widths]
        self.x_range = self.members[0].x_range
        self.calls = 0

    @property
    def ensemble_size(self) -> int:  # an EnsembleTwin (bluesky_twin.protocols)
        return len(self.members)

    def predict(self, X, return_members: bool = False):
        self.calls += 1
        m = np.vstack([t.predict(X)[0] for t in self.members])
        return m if return_members else (m.mean(axis=0), m.std(axis=0))


def test_each_member_gets_the_proposal_of_its_own_twin() -> None:
    ens = TransitionEnsemble()
    spread = member_step_proposals(field_step_study, ens, steps=STEPS)
    alone = [field_step_study(t, steps=STEPS).proposed_step for t in ens.members]
    assert list(spread.members) == alone
    # the sharp member asks for a finer step than the broad one
    assert alone[0] < alone[2]
    assert spread.ensemble == field_step_study(ens, steps=STEPS).proposed_step
    assert spread.conservative == min(alone)
    assert spread.agreement == pytest.approx(np.mean(np.isclose(alone, spread.ensemble)))
    info = json.loads(json.dumps(spread.to_json_dict()))
    assert info["members"] == alone and info["conservative"] == min(alone)


def test_members_share_one_ensemble_pass_per_point_set() -> None:
    ens = TransitionEnsemble()
    member_step_proposals(field_step_study, ens, steps=STEPS)
    one_member = TransitionEnsemble()
    field_step_study(MemberTwin(one_member, 0), steps=STEPS)
    # three members cost the same ensemble passes as one (plus the probe and the ensemble study)
    assert ens.calls <= 1 + field_step_study_calls(STEPS) + one_member.calls


def field_step_study_calls(steps) -> int:
    counter = TransitionEnsemble()
    field_step_study(counter, steps=steps)
    return counter.calls


def test_a_twin_without_members_is_rejected() -> None:
    with pytest.raises(InputError, match="return_members"):
        member_step_proposals(field_step_study, Transition(1.0), steps=STEPS)


def test_cli_steps_members(tmp_path, monkeypatch, capsys) -> None:
    from bluesky_twin.analysis import cli as analysis_cli
    from bluesky_twin.cli import main

    monkeypatch.setattr(analysis_cli, "_load_twin", lambda path: TransitionEnsemble())
    rc = main(
        [
            "steps",
            "ens",
            "--kind",
            "field",
            "--steps",
            ",".join(map(str, STEPS)),
            "--members",
            "--out",
            str(tmp_path / "s"),
        ]
    )
    assert rc == 0
    info = json.loads((tmp_path / "s.json").read_text())
    alone = [field_step_study(t, steps=STEPS).proposed_step for t in TransitionEnsemble().members]
    assert info["member_proposals"]["members"] == alone
    assert "every member accepts" in capsys.readouterr().out


class PeakMapEnsemble:
    """Members that disagree on where along the stepped angle the peaks sit.

    A member whose peaks sit on half-integer angles is sampled by a 0.5 degree grid;
    one whose peaks sit a quarter degree off needs a finer grid.
    """

    x_names = ["theta1", "theta2"]

    def __init__(self, offsets=(0.0, 0.25, 0.0)) -> None:
        rng = np.random.default_rng(3)
        self.centres = np.column_stack(
            [rng.permutation(np.arange(-18.0, 19.0, 4.0)), rng.choice(np.arange(-12, 12) + 0.5, 10, replace=False)]
        )
        self.offsets = offsets
        self.x_range = np.array([[-20.0, 20.0], [-15.0, 15.0]])

    def member(self, X, offset):
        X = np.asarray(X, dtype=float)
        return sum(
            np.exp(-0.5 * (X[:, 0] - c1) ** 2 - 0.5 * ((X[:, 1] - c2 - offset) / 0.5) ** 2) for c1, c2 in self.centres
        )

    @property
    def ensemble_size(self) -> int:  # an EnsembleTwin (bluesky_twin.protocols)
        return len(self.offsets)

    def predict(self, X, return_members: bool = False):
        m = np.vstack([self.member(X, o) for o in self.offsets])
        return m if return_members else (m.mean(axis=0), m.std(axis=0))


def test_angle_study_member_by_member() -> None:
    from bluesky_twin.analysis import angle_step_study

    ens = PeakMapEnsemble()
    steps = [0.05, 0.1, 0.25, 0.5, 1.0, 2.0]
    spread = member_step_proposals(angle_step_study, ens, axis=1, steps=steps)
    alone = [angle_step_study(PeakMapEnsemble((o,)), axis=1, steps=steps).proposed_step for o in ens.offsets]
    assert list(spread.members) == alone
    # the member with peaks off the half-degree grid asks for a finer step than the others
    assert alone[1] < alone[0] == alone[2]
    assert spread.conservative == alone[1] and spread.agreement == pytest.approx(2 / 3)
