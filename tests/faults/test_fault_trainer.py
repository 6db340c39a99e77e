"""Faults inside the TwinTrainer: rows lost to a bug are counted, the scan goes on, state recovers.

Every test compares what was produced (the RunEngine's documents, or what TiledWriter
stored) with what the trainer kept, counted as masked, or counted as lost: nothing may
go missing silently.
"""

from __future__ import annotations

import math
import tracemalloc
import weakref

import numpy as np
import pytest

bp = pytest.importorskip("bluesky.plans")
bps = pytest.importorskip("bluesky.plan_stubs")

from bluesky.utils import RunEngineInterrupted  # noqa: E402
from ophyd import Signal, SoftPositioner  # noqa: E402
from ophyd.sim import SynSignal  # noqa: E402
from test_callbacks_trainer import _pause_at  # noqa: E402  (tests/ is on sys.path)

from bluesky_twin.callbacks import TwinTrainer  # noqa: E402
from bluesky_twin.callbacks import trainer as trainer_module  # noqa: E402


class _Fitted:
    def __init__(self, n: int) -> None:
        self.version = f"{n}-test"
        self.metadata: dict = {}


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


class _Events:
    """Records the event documents the RunEngine produced."""

    def __init__(self):
        self.docs: list[dict] = []

    def __call__(self, name, doc):
        if name == "event":
            self.docs.append(doc)


def _fail_rows_at(monkeypatch, seqs, times=None):
    """Make the collector raise on the rows with these seq_nums (*times* times each, default always)."""
    original = trainer_module._RunCollector._add_row
    left = {s: (math.inf if times is None else times) for s in seqs}

    def broken(self, desc, seq, data, t):
        if left.get(seq, 0) > 0:
            left[seq] -= 1
            raise ZeroDivisionError(f"bug in the collector at seq_num {seq}")
        return original(self, desc, seq, data, t)

    monkeypatch.setattr(trainer_module._RunCollector, "_add_row", broken)


def test_row_lost_to_a_fault_is_counted_and_marks_the_run(RE, motor, det, monkeypatch):
    _fail_rows_at(monkeypatch, {3})
    trainer = TwinTrainer(["t"], "det", auto_refit=False)
    produced = _Events()
    RE.subscribe(trainer)
    RE.subscribe(produced)
    (uid,) = RE(bp.scan([det], motor, -5, 5, 11))
    rep = trainer.runs[uid]
    assert rep.rows_lost == 1 and rep.state == "accepted_with_losses" and "lost" in rep.reason
    # produced = kept + masked (NaN/inf) + lost: nothing vanished silently
    assert len(produced.docs) == 11 == rep.n_points + rep.n_masked + rep.rows_lost
    kept = trainer.run_data(uid)["seq_num"].tolist()
    assert 3 not in kept and len(kept) == rep.n_points == 8
    status = trainer.status
    assert status["rows_lost"] == 1 and status["runs_with_losses"] == [uid]
    assert trainer.accepted_run_uids == [uid]  # the other rows are still trained on
    assert any("seq_num 3" in e for e in trainer.errors)


def test_event_page_fault_loses_only_the_bad_row():
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

    # the third row's reading is an object whose conversion raises inside the collector
    class Exploding:
        def __float__(self):
            raise RuntimeError("driver returned garbage")

    page = desc.compose_event_page(
        data={"t": [1.0, 2.0, Exploding(), 4.0], "det": [1.0, 4.0, 9.0, 16.0]},
        timestamps={"t": [0] * 4, "det": [0] * 4},
        seq_num=[1, 2, 3, 4],
        time=[0.0] * 4,
        validate=False,
    )
    for name, doc in (
        ("start", run.start_doc),
        ("descriptor", desc.descriptor_doc),
        ("event_page", page),
        ("stop", run.compose_stop()),
    ):
        trainer(name, doc)
    rep = trainer.runs[run.start_doc["uid"]]
    assert (rep.state, rep.n_points, rep.rows_lost) == ("accepted_with_losses", 3, 1)
    assert trainer.run_data(rep.uid)["seq_num"].tolist() == [1, 2, 4]


def test_a_raising_trainer_does_not_end_the_scan_and_its_losses_are_counted(RE, motor, det, tiled_store, monkeypatch):
    """Every event handler of the trainer raises: the scan still succeeds, TiledWriter stores
    every event, and the trainer reports each of them as lost (not an empty success)."""
    from bluesky_twin.storage import make_tiled_writer, read_stream

    def broken_event(self, doc):
        raise KeyError("bug in the event handler")

    monkeypatch.setattr(trainer_module._RunCollector, "event", broken_event)
    trainer = TwinTrainer(["t"], "det", auto_refit=False)
    produced = _Events()
    stops: list = []
    RE.subscribe(trainer)
    RE.subscribe(produced)
    RE.subscribe(make_tiled_writer(tiled_store))
    RE.subscribe(lambda name, doc: stops.append(doc), "stop")
    (uid,) = RE(bp.scan([det], motor, -5, 5, 11))
    assert [s["exit_status"] for s in stops] == ["success"]
    stored = read_stream(tiled_store[uid], fields=["t", "det"])
    assert len(stored["t"]) == len(produced.docs) == 11
    rep = trainer.runs[uid]
    assert rep.rows_lost == 11 and rep.state == "no_data" and "lost to faults" in rep.reason
    assert trainer.n_errors == 11 and trainer.status["n_errors"] == 11


def test_a_failed_descriptor_counts_its_events_as_lost(RE, motor, det, monkeypatch):
    def broken_descriptor(self, doc):
        raise ValueError("bug in the descriptor handler")

    monkeypatch.setattr(trainer_module._RunCollector, "descriptor", broken_descriptor)
    trainer = TwinTrainer(["t"], "det", auto_refit=False)
    RE.subscribe(trainer)
    (uid,) = RE(bp.scan([det], motor, -5, 5, 11))
    rep = trainer.runs[uid]
    assert rep.rows_lost == 11 and rep.n_points == 0 and rep.state == "no_data"


def test_state_recovers_after_a_later_good_fit(RE, motor, det):
    calls = {"n": 0}

    def flaky_fit(frame, x, y, warm_start=None, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("optimizer exploded")
        return _Fitted(calls["n"])

    trainer = TwinTrainer(["t"], "det", fit_function=flaky_fit, min_points=3)
    RE.subscribe(trainer)
    (uid1,) = RE(bp.scan([det], motor, -5, 5, 11))
    assert trainer.wait_for_version(None, timeout=20, run_uid=uid1) is None
    assert trainer.status["state"] == "failed"
    (uid2,) = RE(bp.scan([det], motor, 3, 8, 6))
    twin = trainer.wait_for_version(None, timeout=20, run_uid=uid2)
    assert twin is not None and twin.version == "2-test"
    status = trainer.status
    assert status["state"] == "idle", status
    # the history is kept
    assert "optimizer exploded" in status["last_error"] and status["n_errors"] == 1


def test_nonfinite_readings_are_dropped_and_counted_against_the_store(RE, motor, det, tiled_store):
    from bluesky_twin.storage import make_tiled_writer, read_stream

    trainer = TwinTrainer(["t"], "det", auto_refit=False)
    RE.subscribe(trainer)
    RE.subscribe(make_tiled_writer(tiled_store))
    (uid,) = RE(bp.scan([det], motor, -5, 5, 11))
    stored = read_stream(tiled_store[uid], fields=["t", "det"])
    bad = ~np.isfinite(stored["det"])
    assert bad.sum() == 2  # NaN at t=1, inf at t=2, as produced
    rep = trainer.runs[uid]
    assert (rep.n_masked, rep.masked_by_field, rep.rows_lost) == (int(bad.sum()), {"det": 2}, 0)
    assert rep.n_points + rep.n_masked == len(stored["det"])
    data = trainer.run_data(uid)
    np.testing.assert_array_equal(data["x"][:, 0], stored["t"][~bad])
    np.testing.assert_array_equal(data["y"], stored["det"][~bad])
    assert trainer.status["n_masked"] == 2


def test_rewind_neither_double_counts_nor_keeps_a_retaken_row_lost(RE, motor, det, monkeypatch):
    """Step 4's row fails in the collector the first time; the pause/resume rewind re-takes it:
    every row is counted once and nothing stays lost."""
    _fail_rows_at(monkeypatch, {4}, times=1)
    trainer = TwinTrainer(["t"], "det", auto_refit=False)
    produced = _Events()
    RE.subscribe(trainer)
    RE.subscribe(produced)
    with pytest.raises(RunEngineInterrupted):
        RE(bp.scan([det], motor, 3, 8, 6, per_step=_pause_at(4, RE)))
    (uid,) = RE.resume()
    seqs = [e["seq_num"] for e in produced.docs]
    assert len(seqs) == 7 and seqs.count(4) == 2  # the RunEngine re-emitted step 4
    rep = trainer.runs[uid]
    assert (rep.state, rep.n_events, rep.n_duplicates, rep.n_points, rep.rows_lost) == ("accepted", 6, 0, 6, 0)
    data = trainer.run_data(uid)
    assert data["seq_num"].tolist() == [1, 2, 3, 4, 5, 6]
    # the retaken reading of step 4 is the one kept
    retaken = [e for e in produced.docs if e["seq_num"] == 4][-1]
    assert data["y"][3] == retaken["data"]["det"]
    assert trainer.status["rows_lost"] == 0 and trainer.n_errors == 1


@pytest.mark.slow
def test_100k_events_through_a_real_run_engine_with_bounded_memory(RE):
    """100,000 events, one per step, into a TwinTrainer: while the run is open the trainer
    holds one small row per event (what a rewind may replace); after the stop it keeps only
    the compact arrays, and the per-run collector is released."""
    import bluesky.preprocessors as bpp
    from bluesky.utils import Msg

    n = 100_000
    x = Signal(name="x", value=0.0)
    y = Signal(name="y", value=1.0)
    trainer = TwinTrainer(["x"], "y", auto_refit=False)
    RE.subscribe(trainer)
    only_trainer = [tracemalloc.Filter(True, trainer_module.__file__)]
    window = (60_000, 65_000)
    seen: dict = {}

    def traced() -> int:
        snapshot = tracemalloc.take_snapshot().filter_traces(only_trainer)
        return sum(stat.size for stat in snapshot.statistics("filename"))

    def plan():
        @bpp.run_decorator()
        def inner():
            for i in range(n):
                x.put(float(i))
                if i == window[0]:
                    tracemalloc.start()
                    seen["collector"] = weakref.ref(next(iter(trainer._open.values())))
                elif i == window[1]:
                    seen["window"] = traced()
                    tracemalloc.stop()
                elif i == n - 1:
                    tracemalloc.start()  # trace what the stop document leaves behind
                yield Msg("create", name="primary")
                yield Msg("read", x)
                yield Msg("read", y)
                yield Msg("save")

        return (yield from inner())

    try:
        (uid,) = RE(plan())
        retained = traced()
    finally:
        tracemalloc.stop()
    per_event = seen["window"] / (window[1] - window[0])
    assert per_event < 400, f"{per_event:.0f} bytes per event while the run is open"
    data = trainer.run_data(uid)
    compact = sum(a.nbytes for a in data.values())
    assert compact == n * 4 * 8  # x (one column), y, seq_num, time
    assert retained < 1.2 * compact + 256 * 1024, (retained, compact)
    assert seen["collector"]() is None  # the per-run rows were released at the stop
    rep = trainer.runs[uid]
    assert (rep.n_events, rep.n_points, rep.n_masked, rep.rows_lost) == (n, n, 0, 0)
    np.testing.assert_array_equal(data["seq_num"], np.arange(1, n + 1))
    np.testing.assert_array_equal(data["x"][:, 0], np.arange(n, dtype=float))
    np.testing.assert_array_equal(data["y"], np.ones(n))


def test_a_failed_fit_does_not_reuse_its_study_for_the_retry(RE, motor, det) -> None:
    """Before: studies were numbered by successful fits, so the retry after a failed fit reused the
    failed attempt's study, which (with a persistent storage) then refused the new data."""
    names: list[str] = []

    def fit(frame, x, y, warm_start=None, study_name=None, **kwargs):
        names.append(study_name)
        if len(names) == 1:
            raise RuntimeError("connection lost after two trials")
        return _Fitted(len(names))

    tr = TwinTrainer(["t"], "det", fit_function=fit, min_points=3, study_name="beam")
    RE.subscribe(tr)
    RE(bp.scan([det], motor, 3, 6, 4))  # its stop starts the first fit, which fails
    import time

    deadline = time.monotonic() + 30
    while tr.status["state"] != "failed" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert tr.status["state"] == "failed" and names == ["beam-1"]
    RE(bp.scan([det], motor, 3, 7, 5))  # the next run's fit is attempt 2
    while tr.status["state"] != "idle" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert names == ["beam-1", "beam-2"] and tr.status["state"] == "idle"
