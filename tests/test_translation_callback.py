"""Live translation callback with a real RunEngine, ophyd devices and embedded tiled."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from bluesky_twin.callbacks.translation import TranslationCallback
from bluesky_twin.gan.model import Exp2SimModel
from bluesky_twin.gan.networks import GanConfig, ResnetGenerator
from bluesky_twin.gan.preprocess import Scaling, to_model_space

TINY = GanConfig(ngf=4, n_blocks=1, ndf=8, nce_layers=("down1", "down2", "res1"), nce_dim=16, num_patches=32)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model():
    """A small (untrained) generator pair, calibrated on simulated frames vs digits, with a DUQ classifier."""
    from bluesky_twin.ins.dataset import digits_control, generate_dataset
    from bluesky_twin.ins.duq import DUQClassifier

    torch.manual_seed(0)
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    ds = generate_dataset(90, seed=3)
    ref, _ = to_model_space(ds.convolved[:40], Scaling())
    m = Exp2SimModel(ResnetGenerator(TINY), ResnetGenerator(TINY), TINY, Scaling(), reference=ref)
    m.scorer.n_repeats = 200  # (the paper: 1000) keeps the fixture fast
    m.scorer.calibrate(m.features(ds.convolved[40:]), m.features(digits_control(50, seed=1)))
    m.classifiers["unconvolved"] = DUQClassifier(channels=(4, 4, 4, 4)).fit(ds.unconvolved, ds.labels, epochs=1)
    torch.set_num_threads(old)
    return m


class _SlowModel:
    """Wraps a model; every translation takes *delay* seconds (or raises)."""

    def __init__(self, model, delay=0.0, fail=False):
        self._m, self.delay, self.fail = model, delay, fail
        self.scorer, self.classifiers, self.metadata = model.scorer, model.classifiers, model.metadata
        self.threads: set[str] = set()

    def translate_and_score(self, frames, keep_mask=False):
        self.threads.add(threading.current_thread().name)
        time.sleep(self.delay)
        if self.fail:
            raise RuntimeError("boom")
        return self._m.translate_and_score(frames, keep_mask=keep_mask)


def _digits_detector():
    from ophyd.sim import SynSignal

    from bluesky_twin.ins.dataset import digits_control

    frames = digits_control(8, seed=5)
    counter = iter(range(10**6))
    return SynSignal(func=lambda: frames[next(counter) % 8], name="ins_frame", kind="hinted")


def test_translation_stream_is_stored_with_the_run(RE, ins_spectrometer, tiled_store, model):
    from bluesky.plans import count

    from bluesky_twin.storage import make_tiled_writer, read_stream

    cb = TranslationCallback(model, field="ins_frame")
    writer = make_tiled_writer(tiled_store)
    cb.subscribe(writer)
    RE.subscribe(cb)
    RE.subscribe(writer)
    (uid,) = RE(count([ins_spectrometer], num=3))
    run = tiled_store[uid]
    assert run.metadata["stop"]["exit_status"] == "success"
    assert "translation" in list(run)
    data = read_stream(run, "translation")
    assert data["ins_frame_exp2sim"].shape == (3, 64, 64)
    assert list(data["source_seq_num"]) == [1, 2, 3]
    assert set(np.asarray(data["domain_zone"]).astype(str)) <= {"trustworthy", "expert opinion", "untrustworthy"}
    assert np.isfinite(data["domain_score"]).all()
    assert data["p_J2_negative"].shape == data["p_J2_positive"].shape == (3,)
    assert ((data["p_J2_positive"] >= 0) & (data["p_J2_positive"] <= 1)).all()
    assert cb.stats["emitted"] == 3 and cb.stats["dropped"] == 0
    # the masked detector gaps stay NaN in the translation
    raw = read_stream(run, "primary", ["ins_frame"])["ins_frame"]
    assert np.array_equal(np.isnan(raw), np.isnan(data["ins_frame_exp2sim"]))


def test_worker_thread_does_the_work_and_drops_are_counted(RE, ins_spectrometer, model):
    from bluesky.plans import count

    docs = []
    slow = _SlowModel(model, delay=0.3)
    cb = TranslationCallback(slow, maxsize=1, drop_policy="newest", stop_timeout=0.05)
    cb.subscribe(lambda name, doc: docs.append((name, doc)))
    RE.subscribe(cb)
    t0 = time.perf_counter()
    RE(count([ins_spectrometer], num=6))
    elapsed = time.perf_counter() - t0
    assert elapsed < 6 * 0.3  # the scan did not wait for the translations
    assert slow.threads == {"translation-worker"}
    s = cb.stats
    assert s["submitted"] == 6 and s["dropped"] >= 3
    assert s["processed"] + s["dropped"] + s["unfinished"] >= 6 - 1
    events = [d for n, d in docs if n == "event"]
    assert all(e["data"]["dropped_frames"] >= 0 for e in events)
    cb.close()


def test_drop_oldest_keeps_the_newest_frame(RE, ins_spectrometer, model):
    from bluesky.plans import count

    docs = []
    cb = TranslationCallback(_SlowModel(model, delay=0.3), maxsize=1, drop_policy="oldest", stop_timeout=20)
    cb.subscribe(lambda name, doc: docs.append((name, doc)))
    RE.subscribe(cb)
    RE(count([ins_spectrometer], num=5))
    seq = [d["data"]["source_seq_num"] for n, d in docs if n == "event"]
    assert seq[-1] == 5  # the last frame is never the one dropped
    assert cb.stats["dropped"] == 5 - len(seq) and cb.stats["dropped"] >= 2
    assert cb.stats["unfinished"] == 0


def test_stop_waits_for_queued_frames(RE, ins_spectrometer, model):
    from bluesky.plans import count

    docs = []
    cb = TranslationCallback(_SlowModel(model, delay=0.05), maxsize=8, stop_timeout=20)
    cb.subscribe(lambda name, doc: docs.append((name, doc)))
    RE.subscribe(cb)
    RE(count([ins_spectrometer], num=4))
    names = [n for n, _ in docs]
    assert names == ["descriptor"] + ["event"] * 4
    desc = docs[0][1]
    assert desc["name"] == "translation"
    assert {e["descriptor"] for _, e in docs[1:]} == {desc["uid"]}
    assert [e["seq_num"] for _, e in docs[1:]] == [1, 2, 3, 4]


def test_errors_never_reach_the_run_engine(RE, ins_spectrometer, model):
    from bluesky.plans import count

    cb = TranslationCallback(_SlowModel(model, fail=True), stop_timeout=5)

    def bad_subscriber(name, doc):
        raise ValueError("writer broke")

    cb.subscribe(bad_subscriber)
    RE.subscribe(cb)
    stops = []
    RE.subscribe(lambda n, d: stops.append(d), "stop")
    RE(count([ins_spectrometer], num=2))
    assert stops[0]["exit_status"] == "success"
    assert cb.stats["errors"] == 2
    # a subscriber that raises is counted, the scan still succeeds
    cb2 = TranslationCallback(model, stop_timeout=10)
    cb2.subscribe(bad_subscriber)
    RE.subscribe(cb2)
    RE(count([ins_spectrometer], num=1))
    assert stops[-1]["exit_status"] == "success"
    assert cb2.stats["emit_errors"] >= 1


def test_untrustworthy_frames_are_flagged_and_can_pause(RE, model):
    import bluesky.plan_stubs as bps
    from bluesky.utils import RunEngineInterrupted

    det = _digits_detector()
    flagged = []
    cb = TranslationCallback(model, on_untrustworthy=flagged.append, pause_engine=RE, stop_timeout=10)
    RE.subscribe(cb)

    def plan():
        from bluesky import preprocessors as bpp

        @bpp.run_decorator()
        def inner():
            for _ in range(200):
                yield from bps.checkpoint()
                yield from bps.trigger_and_read([det])
                yield from bps.sleep(0.02)

        yield from inner()

    with pytest.raises(RunEngineInterrupted):
        RE(plan())
    assert RE.state == "paused"
    assert cb.untrustworthy.is_set()
    assert flagged and all(r.zone == "untrustworthy" for r in flagged)
    RE.abort()


def test_bad_arguments(model):
    with pytest.raises(ValueError, match="drop_policy"):
        TranslationCallback(model, drop_policy="random")
    with pytest.raises(ValueError, match="maxsize"):
        TranslationCallback(model, maxsize=0)


def test_ins_demo_runs_and_stores_translations(tmp_path, model):
    from bluesky_twin.ins_demo import run_ins_demo

    res = run_ins_demo(tmp_path, model=model, temperatures=(5.0,))
    assert set(res["runs"]) == {"temperature_scan", "short_counting", "digits_control"}
    for label, info in res["runs"].items():
        assert info["exit_status"] == "success"
        assert info["n_translated"] == info["n_frames"], label
    assert res["runs"]["digits_control"]["zones"] == ["untrustworthy"] * 3
    assert min(res["runs"]["digits_control"]["scores"]) > max(res["runs"]["temperature_scan"]["scores"])
    for f in res["figures"]:
        assert (tmp_path / "figures").joinpath(f.rsplit("/", 1)[-1]).stat().st_size > 1000
