"""The trust gate of the twin-steered plans: proposals where the twin extrapolates are recorded
(``untrusted="record"``) or measured first (``untrusted="measure"``), on the simulated magnetometer."""

from __future__ import annotations

import json

import numpy as np
import pytest

bp = pytest.importorskip("bluesky.plans")

from bluesky_twin.callbacks import TwinTrainer  # noqa: E402
from bluesky_twin.errors import InputError  # noqa: E402
from bluesky_twin.plans import coarse_to_fine, twin_adaptive_scan  # noqa: E402
from bluesky_twin.plans.stubs import trust_lines  # noqa: E402
from bluesky_twin.twin import TwinSearchSpace  # noqa: E402

pytestmark = [
    pytest.mark.usefixtures("one_torch_thread"),
    pytest.mark.filterwarnings("ignore:Fixed parameter .* is out of range:UserWarning"),
]

SPACE = TwinSearchSpace(max_epochs=60, min_final_epochs=60, n_layers=(2, 2), n_units=(16, 32), patience=10)
T_NUM = 10


@pytest.fixture
def RE():  # noqa: N802 - overrides conftest's: these plans return results
    from bluesky import RunEngine

    engine = RunEngine({}, call_returns_result=True)
    yield engine
    if engine.state != "idle":
        engine.halt()


@pytest.fixture
def trainer(RE):
    tr = TwinTrainer(
        ["mpms_temperature", "mpms_field"],
        "mpms_magnetisation",
        fit_kwargs={"trials": 1, "search_space": SPACE, "ensemble_size": 2},
        refit_kwargs={"trials": 1, "search_space": SPACE, "ensemble_size": 2},
    )
    RE.subscribe(tr)
    yield tr
    tr.close(wait=True)


@pytest.fixture
def docs(RE):
    out: list = []
    RE.subscribe(lambda name, doc: out.append((name, doc)))
    return out


def _decisions(docs, run_uid):
    desc = {d["uid"] for n, d in docs if n == "descriptor" and d["name"] == "decisions" and d["run_start"] == run_uid}
    return [d["data"] for n, d in docs if n == "event" and d["descriptor"] in desc]


def _c2f(mpms, trainer, **kwargs):
    return coarse_to_fine(
        [mpms],
        mpms.temperature,
        26,
        44,
        T_NUM,
        mpms.field,
        [0.0, 1.0, 2.0],
        trainer=trainer,
        field_max=3.0,  # beyond the coarse fields: the twin extrapolates above 2 T
        candidate_steps=[0.25, 0.5, 1.0],
        twin_timeout=120,
        **kwargs,
    )


class ScriptedAgent:
    """A LineAgent proposing the given field lines in order, over a grid of candidates."""

    def __init__(self, lines, candidates):
        self.lines = list(lines)
        self.candidates = np.asarray(candidates, dtype=float)
        self.measured: list[float] = []

    def suggest(self, num_points=1):
        left = [v for v in self.lines if all(abs(v - u) > 1e-9 for u in self.measured)]
        return [{"mpms_field": v} for v in left[:num_points]]

    def ingest(self, points):
        self.measured.extend(float(p["mpms_field"]) for p in points)


def test_bad_gate_arguments_are_refused_before_anything_moves(mpms, trainer):
    for make in (
        lambda **kw: _c2f(mpms, trainer, **kw),
        lambda **kw: twin_adaptive_scan([mpms], mpms.temperature, 26, 44, 5, mpms.field, [0.0], trainer=trainer, **kw),
    ):
        with pytest.raises(InputError, match="untrusted must be one of"):
            next(make(untrusted="ask"))
        with pytest.raises(InputError, match="trust_std"):
            next(make(trust_std=-1.0))
    assert mpms.elapsed_time == 0.0


def test_coarse_to_fine_records_an_untrusted_proposal(RE, mpms, trainer, docs):
    res = RE(_c2f(mpms, trainer)).plan_result
    assert res.verify_uid is None and len(res.run_uids) == 2  # "record": scanned as proposed
    assert res.trusted is False and res.untrusted_lines and min(res.untrusted_lines) > 2.0
    assert max(res.fine_fields) == 3.0
    fine = _decisions(docs, res.fine_uid)[0]
    assert fine["decision_trusted"] == 0 and fine["decision_untrusted"] == "record"
    assert "outside the training range" in fine["decision_trust_reason"]
    assert json.loads(fine["decision_untrusted_lines"]) == res.untrusted_lines
    assert json.loads(fine["decision_verified_lines"]) == []
    assert np.isnan(fine["decision_trust_std"])
    # the gate's other half: an ensemble spread above the threshold
    twin = trainer.twin
    verdict = trust_lines(twin, "mpms_field", [0.5, 1.5], {"mpms_temperature": np.linspace(26, 44, T_NUM)})
    assert verdict.all_trusted and verdict.reason() == ""
    tight = trust_lines(twin, "mpms_field", [0.5, 2.5], {"mpms_temperature": np.linspace(26, 44, T_NUM)}, max_std=1e-12)
    assert tight.trusted == [False, False] and tight.outside == [False, True]
    assert tight.reasons[0].startswith("ensemble spread") and "outside the training range" in tight.reasons[1]
    assert trust_lines(None, "mpms_field", [1.0], {}).reasons == ["no twin"]


def test_coarse_to_fine_measures_untrusted_fields_first(RE, mpms, trainer, docs):
    starts: list = []
    RE.subscribe(lambda name, doc: starts.append(doc), "start")
    out = RE(_c2f(mpms, trainer, untrusted="measure"))
    res = out.plan_result
    assert res.run_uids == list(out.run_start_uids) and len(res.run_uids) == 3
    assert [s["stage"] for s in starts] == ["coarse", "verify", "fine"]
    verify = _decisions(docs, res.verify_uid)
    verified = json.loads(verify[0]["decision_proposed_lines"])
    assert verified and set(verified) <= set(res.untrusted_lines) and max(verified) == max(res.untrusted_lines)
    assert len(verified) <= 3  # thinned to the coarse run's number of fields
    assert verify[0]["decision_trusted"] == 0 and verify[0]["decision_untrusted"] == "measure"
    assert [r["decision_line_trusted"] for r in verify if r["decision_value"] > 2.05] == [0] * sum(
        r["decision_value"] > 2.05 for r in verify
    )
    # the verify run was measured there, and the fine grid comes from the twin refitted on it
    fields = np.unique(np.round(trainer.run_data(res.verify_uid)["x"][:, 1], 6))
    assert np.allclose(fields, verified)
    assert starts[2]["twin_training_runs"] == 2 and starts[2]["twin_version"] == res.twin_version
    fine = _decisions(docs, res.fine_uid)[0]
    assert res.trusted is True and fine["decision_trusted"] == 1 and fine["decision_trust_reason"] == ""
    assert json.loads(fine["decision_verified_lines"]) == verified


def test_adaptive_scan_records_or_measures_first(RE, mpms, trainer, docs):
    candidates = np.linspace(0.0, 3.0, 31)

    def scan(untrusted, agent):
        return RE(
            twin_adaptive_scan(
                [mpms],
                mpms.temperature,
                26,
                44,
                T_NUM,
                mpms.field,
                [0.0, 1.0],
                trainer=trainer,
                agent=agent,
                budget=3,
                step_range=(0.0, 3.0),
                untrusted=untrusted,
                twin_timeout=120,
            )
        ).plan_result

    # "record": the agent's line at 2.5 T is outside the training range (0-1 T): flagged, measured as proposed
    res = scan("record", ScriptedAgent([2.5, 0.5], candidates))
    assert res.lines == [[0.0, 1.0], [2.5]] and res.reason == "budget"
    first, second = (_decisions(docs, uid) for uid in res.run_uids)
    assert np.isnan(first[0]["decision_trusted"])  # the user's lines: no twin proposed them
    assert second[0]["decision_trusted"] == 0 and second[0]["decision_untrusted"] == "record"
    assert "2.5: outside the training range" in second[0]["decision_trust_reason"]
    assert json.loads(second[0]["decision_untrusted_lines"]) == [2.5]
    assert json.loads(second[0]["decision_measured_first"]) == []
    assert {r["decision_value"]: r["decision_line_trusted"] for r in second} == {2.5: 0}  # a row per suggestion
    # "measure": the agent proposes 0.5 T (inside), but the gate measures the most extrapolated line first
    docs.clear()
    res = scan("measure", ScriptedAgent([0.5, 2.5], candidates))
    assert res.lines == [[0.0, 1.0], [3.0]]
    second = _decisions(docs, res.run_uids[1])
    assert json.loads(second[0]["decision_measured_first"]) == [3.0]
    assert json.loads(second[0]["decision_proposed_lines"]) == [3.0]
    assert json.loads(second[0]["decision_suggestions"]) == [0.5]
    assert second[0]["decision_trusted"] == 0 and second[0]["decision_untrusted"] == "measure"


def test_measure_mode_does_not_stop_as_converged_where_the_twin_extrapolates(RE, mpms, trainer, docs):
    def scan(untrusted):
        return RE(
            twin_adaptive_scan(
                [mpms],
                mpms.temperature,
                26,
                44,
                T_NUM,
                mpms.field,
                [0.0, 1.0],
                trainer=trainer,
                budget=4,
                step_range=(0.0, 3.0),
                tolerance=1e6,  # any score "converges"
                untrusted=untrusted,
                twin_timeout=120,
            )
        ).plan_result

    recorded = scan("record")
    assert recorded.reason == "converged" and len(recorded.run_uids) == 1
    rows = _decisions(docs, recorded.decision_uid)  # a row per candidate of the agent, each judged
    assert len(rows) == 201 and rows[0]["decision_stop_reason"] == "converged"
    assert {r["decision_line_trusted"] for r in rows if r["decision_value"] > 1.05} == {0}
    assert {r["decision_line_trusted"] for r in rows if r["decision_value"] < 0.95} == {1}
    docs.clear()
    measured = scan("measure")
    assert measured.lines[1] == [3.0]  # measured where the twin extrapolated, instead of stopping
    assert measured.reason == "converged" and len(measured.run_uids) == 2
    stop = _decisions(docs, measured.decision_uid)[0]
    assert stop["decision_trusted"] == 1 and json.loads(stop["decision_measured_first"]) == []


# ----------------------------------------------------------------------------- INS: steering on translated frames


@pytest.fixture(scope="module")
def shipped_gan():
    from bluesky_twin.gan.model import Exp2SimModel

    return Exp2SimModel.load(None)  # bluesky_twin/models/ins_exp2simgan


def _translation(RE, docs, model, **kwargs):
    from bluesky_twin.callbacks import TranslationCallback

    cb = TranslationCallback(model, field="ins_frame", **kwargs)
    cb.subscribe(lambda name, doc: docs.append((name, doc)))
    RE.subscribe(cb)
    return cb


def _digits_detector():
    """Frames no spectrometer makes (handwritten digits): the domain score calls them untrustworthy."""
    from ophyd.sim import SynSignal

    from bluesky_twin.ins.dataset import digits_control

    frames = digits_control(8, seed=5)
    counter = iter(range(10**6))
    return SynSignal(func=lambda: frames[next(counter) % 8], name="ins_frame", kind="hinted")


def test_ins_scan_steers_on_trusted_translations(RE, docs, ins_spectrometer, shipped_gan):
    from bluesky_twin.plans import translated_ins_scan

    cb = _translation(RE, docs, shipped_gan)
    ins = ins_spectrometer
    ins.counting_time.put(60.0)
    res = RE(
        translated_ins_scan([ins], ins.temperature, [5, 50, 100], translation=cb, budget=5, min_step=2)
    ).plan_result
    assert res.reason == "budget" and len(res.temperatures) == 5 and res.pauses == 0
    assert res.temperatures[:3] == [5.0, 50.0, 100.0] and all(res.trusted)
    assert set(res.zones) <= {"trustworthy", "expert opinion"}
    streams = {d["name"] for n, d in docs if n == "descriptor"}
    assert {"primary", "translation", "decisions"} <= streams
    decisions = _decisions(docs, res.run_uid)
    per_frame = {}
    for row in decisions:
        per_frame.setdefault(row["decision_seq_num"], []).append(row)
    assert sorted(per_frame) == [1, 2, 3, 4, 5]
    for seq, rows in per_frame.items():
        assert rows[0]["decision_trusted"] == 1 and rows[0]["decision_untrusted"] == "pause"
        assert rows[0]["decision_temperature"] == res.temperatures[seq - 1]
    # each steered temperature is the midpoint of the interval whose translations changed the most
    for seq in (3, 4):
        rows = per_frame[seq]
        best = max(rows, key=lambda r: r["decision_score"])
        assert best["decision_proposed"] == 1 and rows[0]["decision_next_temperature"] == best["decision_value"]
        assert res.temperatures[seq] == best["decision_value"]
    assert per_frame[5][0]["decision_stop_reason"] == "budget"


def test_ins_scan_stops_steering_on_an_untrustworthy_frame(RE, docs, ins_spectrometer, shipped_gan):
    from bluesky_twin.plans import translated_ins_scan

    cb = _translation(RE, docs, shipped_gan)
    det = _digits_detector()
    out = RE(
        translated_ins_scan(
            [det], ins_spectrometer.temperature, [5, 50, 100], translation=cb, budget=6, untrusted="stop"
        )
    )
    res = out.plan_result
    assert out.exit_status == "success" and res.reason == "untrustworthy"
    assert res.temperatures == [5.0] and res.zones == ["untrustworthy"] and res.trusted == [False]
    (row,) = _decisions(docs, res.run_uid)
    assert row["decision_trusted"] == 0 and row["decision_stop_reason"] == "untrustworthy"
    assert "untrustworthy zone" in row["decision_trust_reason"] and np.isnan(row["decision_next_temperature"])
    assert row["decision_domain_score"] == pytest.approx(res.scores[0])


@pytest.mark.parametrize("engine_pause", [False, True], ids=["plan-pause", "callback-pause"])
def test_ins_scan_pauses_on_each_untrustworthy_frame(RE, docs, ins_spectrometer, shipped_gan, engine_pause):
    from bluesky.utils import RunEngineInterrupted

    from bluesky_twin.plans import translated_ins_scan

    cb = _translation(RE, docs, shipped_gan, pause_engine=RE if engine_pause else None)
    plan = translated_ins_scan([_digits_detector()], ins_spectrometer.temperature, [5, 50], translation=cb)
    with pytest.raises(RunEngineInterrupted):
        RE(plan)
    assert RE.state == "paused"
    frames = [d for n, d in docs if n == "event" and "ins_frame" in d["data"]]
    assert len(frames) == 1  # paused after the first frame, before the second
    with pytest.raises(RunEngineInterrupted):
        RE.resume()  # the second frame is untrustworthy too: paused again, once
    out = RE.resume()
    res = out.plan_result
    assert out.exit_status == "success" and res.pauses == 2 and res.temperatures == [5.0, 50.0]
    rows = _decisions(docs, res.run_uid)
    assert [r["decision_trusted"] for r in rows] == [0, 0] and rows[-1]["decision_stop_reason"] == "budget"


def test_ins_scan_arguments_are_checked_before_anything_moves(ins_spectrometer, shipped_gan):
    from bluesky_twin.callbacks import TranslationCallback
    from bluesky_twin.plans import translated_ins_scan

    cb = TranslationCallback(shipped_gan)
    ins = ins_spectrometer
    bad = [
        ({"untrusted": "record"}, "untrusted must be one of"),
        ({"translation": object()}, "translation"),
        ({"translation": "no_such_callback"}, "no translation is registered"),
        ({"budget": 1}, "budget"),
        ({"min_step": 0}, "min_step"),
    ]
    for kwargs, match in bad:
        with pytest.raises(InputError, match=match):
            next(translated_ins_scan([ins], ins.temperature, [5, 50], **{"translation": cb, **kwargs}))
    assert ins.elapsed_time == 0.0
