"""TwinTrainer with a real RunEngine: masking, rewinds, exit status, missing stops, faults, waiting."""

from __future__ import annotations

import logging
import threading
import time

import numpy as np
import pytest

bp = pytest.importorskip("bluesky.plans")
bps = pytest.importorskip("bluesky.plan_stubs")

from bluesky.utils import RunEngineInterrupted  # noqa: E402
from ophyd import SoftPositioner  # noqa: E402
from ophyd.sim import SynSignal  # noqa: E402

from bluesky_twin.callbacks import TwinTrainer  # noqa: E402
from bluesky_twin.plans import wait_for_twin  # noqa: E402

# The twin's warm start may seed Optuna with a batch size outside the new (data-capped) range.
WARM_START_WARNING = "ignore:Fixed parameter .* is out of range:UserWarning"


class _Fitted:
    """What the injected fit functions below return: enough of a twin for the trainer."""

    def __init__(self, n: int, frame) -> None:
        self.version = f"{n}-test"
        self.metadata: dict = {}
        self.frame = frame


def _recording_fit(calls: list, delay: float = 0.0):
    def fit(frame, x, y, warm_start=None, **kwargs):
        time.sleep(delay)
        calls.append({"frame": frame.copy(), "x": x, "y": y, "warm_start": warm_start, "kwargs": kwargs})
        return _Fitted(len(calls), frame)

    return fit


@pytest.fixture
def motor():
    return SoftPositioner(name="t", init_pos=0.0, limits=(-10.0, 10.0))


@pytest.fixture
def det(motor):
    """y = t**2, NaN at t == 1 and +inf at t == 2."""

    def value():
        t = float(motor.position)
        return {1.0: np.nan, 2.0: np.inf}.get(t, t * t)

    return SynSignal(func=value, name="det", kind="hinted")


def test_collects_rows_masks_nonfinite_and_refits_in_background(RE, motor, det):
    calls: list = []
    trainer = TwinTrainer(["t"], "det", fit_function=_recording_fit(calls), min_points=3)
    RE.subscribe(trainer)
    (uid,) = RE(bp.scan([det], motor, -5, 5, 11))
    twin = trainer.wait_for_version(None, timeout=10, run_uid=uid)
    assert twin is not None and trainer.version == "1-test"
    rep = trainer.runs[uid]
    assert (rep.state, rep.n_events, rep.n_points, rep.n_masked) == ("accepted", 11, 9, 2)
    assert rep.masked_by_field == {"det": 2}
    data = trainer.run_data(uid)
    assert np.array_equal(data["x"][:, 0], [-5, -4, -3, -2, -1, 0, 3, 4, 5])
    assert np.array_equal(data["y"], data["x"][:, 0] ** 2)
    assert np.isfinite(calls[0]["frame"].to_numpy()).all() and len(calls[0]["frame"]) == 9
    assert calls[0]["warm_start"] is None and calls[0]["kwargs"]["study_name"] == f"{trainer.study_name}-1"
    # second run: a warm start from the first twin on the data of both runs
    (uid2,) = RE(bp.scan([det], motor, 5.5, 9.5, 5))
    twin2 = trainer.wait_for_version(twin.version, timeout=10, run_uid=uid2)
    assert twin2 is not None and calls[1]["warm_start"] is twin and len(calls[1]["frame"]) == 14
    assert trainer.training_run_uids == [uid, uid2]
    prov = trainer.provenance()
    assert prov["twin_version"] == "2-test" and prov["twin_training_run_uids"] == [uid, uid2]
    assert prov["twin_study_name"] == f"{trainer.study_name}-2" and prov["twin_x"] == ["t"]


def test_fit_that_raises_during_the_next_scan_does_not_stop_it(RE, motor, det):
    started = threading.Event()

    def failing_fit(frame, x, y, warm_start=None, **kwargs):
        started.set()
        time.sleep(0.3)  # fails while the next scan is running
        raise RuntimeError("optimizer exploded")

    trainer = TwinTrainer(["t"], "det", fit_function=failing_fit, min_points=3)
    RE.subscribe(trainer)
    stops: list = []
    RE.subscribe(lambda name, doc: stops.append(doc), "stop")
    (uid1,) = RE(bp.scan([det], motor, -5, 5, 11))
    assert started.wait(5)
    (uid2,) = RE(bp.scan([det], motor, -5, 5, 41, per_step=_slow_step(0.02)))
    assert [s["exit_status"] for s in stops] == ["success", "success"]
    t0 = time.monotonic()
    assert trainer.wait_for_version(None, timeout=20, run_uid=uid2) is None  # failed: returns early
    assert time.monotonic() - t0 < 15
    assert isinstance(trainer.last_error, RuntimeError)
    assert trainer.status["state"] == "failed" and "optimizer exploded" in trainer.status["last_error"]
    assert trainer.twin is None and trainer.poll(run_uid=uid1) == (True, None)


def _slow_step(seconds):
    def per_step(detectors, step, pos_cache):
        yield from bps.one_nd_step(detectors, step, pos_cache)
        yield from bps.sleep(seconds)

    return per_step


def test_exception_inside_the_callback_is_logged_and_the_scan_succeeds(RE, motor, det, monkeypatch, caplog):
    from bluesky_twin.callbacks import trainer as trainer_module

    original = trainer_module._RunCollector._add_row

    def broken(self, desc, seq, data, t):
        if seq == 3:
            raise ZeroDivisionError("bug in the collector")
        return original(self, desc, seq, data, t)

    monkeypatch.setattr(trainer_module._RunCollector, "_add_row", broken)
    trainer = TwinTrainer(["t"], "det", auto_refit=False)
    RE.subscribe(trainer)
    stops: list = []
    RE.subscribe(lambda name, doc: stops.append(doc), "stop")
    with caplog.at_level(logging.ERROR):
        RE(bp.scan([det], motor, -5, 5, 11))
    assert stops[-1]["exit_status"] == "success"
    assert any("bug in the collector" in e for e in trainer.errors)
    assert isinstance(trainer.last_error, ZeroDivisionError)


def test_failed_and_aborted_runs_are_skipped_unless_asked(RE, motor, det):
    strict = TwinTrainer(["t"], "det", auto_refit=False)
    lenient = TwinTrainer(["t"], "det", auto_refit=False, include_failed=True)
    RE.subscribe(strict)
    RE.subscribe(lenient)

    def failing_plan():
        yield from bp.scan([det], motor, -5, 5, 11, per_step=_fail_at(3))

    with pytest.raises(ValueError, match="hardware fault"):
        RE(failing_plan())
    # abort: pause mid-scan, then abort
    with pytest.raises(RunEngineInterrupted):
        RE(bp.scan([det], motor, -5, 5, 11, per_step=_pause_at(4, RE)))
    RE.abort("operator abort")
    reports = list(strict.runs.values())
    assert [r.exit_status for r in reports] == ["fail", "abort"]
    assert all(r.state == "skipped" for r in reports)
    assert strict.accepted_run_uids == [] and len(strict.training_frame()) == 0
    assert [r.state for r in lenient.runs.values()] == ["accepted", "accepted"]
    assert lenient.runs[reports[0].uid].n_points == 3


def _fail_at(k):
    count = {"n": 0}

    def per_step(detectors, step, pos_cache):
        count["n"] += 1
        if count["n"] > k:
            raise ValueError("hardware fault")
        yield from bps.one_nd_step(detectors, step, pos_cache)

    return per_step


def _pause_at(k, RE):
    """per_step that requests an immediate pause after step *k* and dwells, so the pause lands
    after that step's event was saved and before the next checkpoint (a rewind re-takes it)."""
    state = {"n": 0}
    landed = threading.Event()

    def pause():
        RE.request_pause(defer=False)
        landed.set()

    def per_step(detectors, step, pos_cache):
        yield from bps.one_nd_step(detectors, step, pos_cache)
        state["n"] += 1
        if state["n"] == k:
            threading.Thread(target=pause).start()
            for _ in range(400):  # dwell (at most 20 s) until the pause has landed
                if landed.is_set():
                    break
                yield from bps.sleep(0.05)

    return per_step


def test_pause_resume_rewind_duplicates_are_deduplicated(RE, motor, det):
    trainer = TwinTrainer(["t"], "det", auto_refit=False)
    RE.subscribe(trainer)
    events: list = []
    RE.subscribe(lambda name, doc: events.append(doc), "event")
    with pytest.raises(RunEngineInterrupted):
        RE(bp.scan([det], motor, 3, 8, 6, per_step=_pause_at(3, RE)))
    assert RE.state == "paused"
    RE.resume()
    seqs = [e["seq_num"] for e in events]
    # the rewind re-emitted the event of step 3 with the same seq_num (and a new uid)
    assert len(seqs) == 7 and seqs.count(3) == 2 and len({e["uid"] for e in events}) == 7
    (uid,) = trainer.runs
    rep = trainer.runs[uid]
    assert (rep.state, rep.n_events, rep.n_duplicates, rep.n_points) == ("accepted", 7, 1, 6)
    data = trainer.run_data(uid)
    assert data["seq_num"].tolist() == [1, 2, 3, 4, 5, 6]
    assert data["x"][:, 0].tolist() == [3, 4, 5, 6, 7, 8]


def test_event_pages_and_runs_without_stop(caplog):
    from event_model import compose_run

    trainer = TwinTrainer(["t"], "det", auto_refit=False)
    run = compose_run()
    desc = run.compose_descriptor(
        name="primary",
        data_keys={
            "t": {"dtype": "number", "shape": [], "source": "sim"},
            "det": {"dtype": "number", "shape": [], "source": "sim"},
        },
    )
    page = desc.compose_event_page(
        data={"t": [1.0, 2.0, 3.0], "det": [1.0, float("nan"), 9.0]},
        timestamps={"t": [0, 0, 0], "det": [0, 0, 0]},
        seq_num=[1, 2, 3],
        time=[0.0, 0.0, 0.0],
    )
    for name, doc in (("start", run.start_doc), ("descriptor", desc.descriptor_doc), ("event_page", page)):
        trainer(name, doc)  # ... and no stop document
    assert trainer.open_run_uids == [run.start_doc["uid"]]
    other = compose_run()
    with caplog.at_level(logging.WARNING, logger="bluesky_twin.callbacks.trainer"):
        trainer("start", other.start_doc)
    assert "have no stop document" in caplog.text
    trainer("stop", other.compose_stop())
    closed = trainer.flush()
    assert closed == [run.start_doc["uid"]]
    rep = trainer.runs[run.start_doc["uid"]]
    assert (rep.state, rep.n_points, rep.n_masked) == ("incomplete", 2, 1)
    assert trainer.accepted_run_uids == [] and trainer.status["incomplete_runs"] == [rep.uid]
    # the same documents again: a run already seen is ignored, not double-counted
    trainer("start", run.start_doc)
    assert trainer.runs[rep.uid].n_events == 3


def test_wait_for_version_times_out_and_plans_poll_without_blocking(RE, motor, det):
    trainer = TwinTrainer(["t"], "det", fit_function=_recording_fit([], delay=3.0), min_points=3)
    RE.subscribe(trainer)
    t0 = time.monotonic()
    assert trainer.wait_for_version(None, timeout=0.3) is None
    assert 0.25 < time.monotonic() - t0 < 2
    got: dict = {}

    def plan():
        (uid,) = [(yield from bp.scan([det], motor, -5, 5, 11))]
        t1 = time.monotonic()
        got["twin"] = yield from wait_for_twin(trainer, run_uid=uid, timeout=0.5, poll_interval=0.05)
        got["waited"] = time.monotonic() - t1
        got["uid"] = uid

    RE(plan())
    assert got["twin"] is None and 0.45 < got["waited"] < 2.5
    assert trainer.wait_for_version(None, timeout=10, run_uid=got["uid"]) is not None  # the slow fit lands


def test_argument_validation():
    with pytest.raises(ValueError, match="at least one"):
        TwinTrainer([], "y")
    with pytest.raises(ValueError, match="distinct"):
        TwinTrainer(["a", "y"], "y")


@pytest.mark.filterwarnings(WARM_START_WARNING)
def test_real_twin_fit_and_warm_start_on_the_magnetometer(RE, mpms):
    from bluesky_twin.twin import TwinSearchSpace

    space = TwinSearchSpace(max_epochs=40, min_final_epochs=40, n_layers=(2, 2), n_units=(16, 24), patience=10)
    trainer = TwinTrainer(
        ["mpms_temperature", "mpms_field"],
        "mpms_magnetisation",
        fit_kwargs={"trials": 2, "search_space": space, "ensemble_size": 2},
        refit_kwargs={"trials": 1, "search_space": space, "ensemble_size": 2, "budget": 60.0},
    )
    RE.subscribe(trainer)
    (uid,) = RE(bp.grid_scan([mpms], mpms.field, 0, 2, 3, mpms.temperature, 25, 45, 11))
    twin = trainer.wait_for_version(None, timeout=120, run_uid=uid)
    assert twin is not None, trainer.status
    assert twin.x_names == ["mpms_temperature", "mpms_field"] and twin.y_name == "mpms_magnetisation"
    mean, std = twin.predict(np.array([[30.0, 1.0], [40.0, 1.0]]))
    assert mean[0] > mean[1] and (std >= 0).all()  # ordered (large M) below Tc, paramagnetic above
    t0 = time.perf_counter()
    (uid2,) = RE(bp.grid_scan([mpms], mpms.field, 0.5, 1.5, 2, mpms.temperature, 25, 45, 11))
    assert time.perf_counter() - t0 < 10  # the refit does not hold up the next run
    twin2 = trainer.wait_for_version(twin.version, timeout=120, run_uid=uid2)
    assert twin2 is not None and twin2.version != twin.version
    # the warm refit ran under the refit budget, the first fit without one
    assert twin2.metadata["budget_seconds"] == 60.0 and twin.metadata["budget_seconds"] is None
    assert trainer.training_run_uids == [uid, uid2] and trainer.twin_study_name
