"""Faults of the live INS translation (``TranslationCallback``) and of ``bluesky-twin ins score``.

Every frame a run produces is either translated and emitted, or counted (dropped,
skipped, failed, unfinished) in ``stats`` and in the emitted documents; bad input
to ``ins score`` exits 2 with one line and overwrites nothing.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from bluesky_twin.callbacks.translation import TranslationCallback
from bluesky_twin.cli import main
from bluesky_twin.gan.model import Exp2SimModel
from bluesky_twin.gan.networks import GanConfig, ResnetGenerator
from bluesky_twin.gan.preprocess import Scaling, to_model_space

TINY = GanConfig(ngf=4, n_blocks=1, ndf=8, nce_layers=("down1", "down2", "res1"), nce_dim=16, num_patches=32)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model() -> Exp2SimModel:
    """A small untrained generator pair (64 x 64 frames), calibrated on simulated frames vs digits.

    Built as in ``tests/test_translation_callback.py``, without the DUQ classifier.
    """
    from bluesky_twin.ins.dataset import digits_control, generate_dataset

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    ds = generate_dataset(90, seed=3)
    ref, _ = to_model_space(ds.convolved[:40], Scaling())
    m = Exp2SimModel(ResnetGenerator(TINY), ResnetGenerator(TINY), TINY, Scaling(), reference=ref)
    m.scorer.n_repeats = 200
    m.scorer.calibrate(m.features(ds.convolved[40:]), m.features(digits_control(50, seed=1)))
    torch.set_num_threads(old)
    return m


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    """Eight simulated 64 x 64 experiment-like frames (with their NaN detector gaps)."""
    from bluesky_twin.ins.dataset import generate_dataset

    return generate_dataset(8, seed=11).convolved


@pytest.fixture(scope="module")
def model_dir(model, tmp_path_factory):
    """*model* saved with ``Exp2SimModel.save`` (for the CLI)."""
    return model.save(tmp_path_factory.mktemp("fault_gan") / "model")


class _Slow:
    """Wraps a model: every translation first sleeps *delay* seconds; other attributes pass through."""

    def __init__(self, model, delay: float):
        self._m, self.delay = model, delay
        self.calls = 0

    def __getattr__(self, name):
        return getattr(self._m, name)

    def translate_and_score(self, frames, keep_mask=False):
        self.calls += 1
        time.sleep(self.delay)
        return self._m.translate_and_score(frames, keep_mask=keep_mask)


class _Opaque:
    """A model wrapper that does not tell its frame shape (no ``reference``, no ``frame_shape``)."""

    def __init__(self, model):
        self._m = model
        self.scorer, self.classifiers, self.metadata = model.scorer, model.classifiers, model.metadata

    def translate_and_score(self, frames, keep_mask=False):
        return self._m.translate_and_score(frames, keep_mask=keep_mask)


def _detector(sequence):
    """A SynSignal named ``ins_frame`` returning the items of *sequence* in turn."""
    from ophyd.sim import SynSignal

    it = iter([sequence[0], *sequence])  # SynSignal calls func once when it is made
    return SynSignal(func=lambda: next(it), name="ins_frame", kind="hinted")


def _run(RE, cb, sequence, summary=True):
    """Count len(*sequence*) frames through *cb*; returns (docs sent to its subscribers, stop doc)."""
    from bluesky.plans import count

    docs, stops = [], []
    cb.subscribe(lambda name, doc: docs.append((name, doc)))
    RE.subscribe(cb)
    RE.subscribe(lambda name, doc: stops.append(doc), "stop")
    RE(count([_detector(sequence)], num=len(sequence)))
    return docs, stops[-1]


def _stream(docs, name):
    """Events of the stream called *name* among *docs*."""
    uids = {d["uid"] for n, d in docs if n == "descriptor" and d["name"] == name}
    return [d for n, d in docs if n == "event" and d["descriptor"] in uids]


def _accounted(s):
    return s["processed"] + s["dropped"] + s["skipped"] + s["errors"] + s["unfinished"]


# ------------------------------------------------------------------ the callback
def test_a_wrong_sized_first_frame_does_not_block_the_good_frames(RE, model, frames):
    small = np.ones((32, 32), dtype=np.float32)
    cb = TranslationCallback(model, stop_timeout=30)
    docs, stop = _run(RE, cb, [small, frames[0], frames[1], frames[2]])
    assert stop["exit_status"] == "success"
    events = _stream(docs, "translation")
    assert [e["data"]["source_seq_num"] for e in events] == [2, 3, 4]
    assert cb.stats["skipped_shape"] == 1 and cb.stats["processed"] == 3 and cb.stats["errors"] == 0
    assert all(e["data"]["skipped_frames"] == 1 for e in events)
    assert cb.run_stats["submitted"] == 4 == _accounted(cb.run_stats)


def test_the_summary_stream_holds_the_runs_final_counts(RE, model, frames):
    small = np.ones((32, 32), dtype=np.float32)
    cb = TranslationCallback(model, stop_timeout=30, summary_stream="translation_summary")
    docs, stop = _run(RE, cb, [small, frames[0], frames[1]])
    assert stop["exit_status"] == "success"
    (summary,) = _stream(docs, "translation_summary")
    assert summary["data"]["submitted"] == 3 and summary["data"]["skipped_shape"] == 1
    assert summary["data"] == {k: v for k, v in cb.run_stats.items() if k != "emit_errors"}
    assert [n for n, _ in docs] == ["descriptor", "event", "event", "descriptor", "event"]


def test_frames_of_another_size_wrong_axes_or_dtype_are_skipped_and_counted(RE, model, frames):
    bad = [
        np.ones((128, 128), dtype=np.float32),  # divisible by 4, but not the model's size
        np.ones(64, dtype=np.float32),  # one axis
        np.full((64, 64), "x"),  # not numeric
        np.ones((64, 64), dtype=complex),
    ]
    cb = TranslationCallback(model, stop_timeout=30, summary_stream="translation_summary")
    docs, stop = _run(RE, cb, [frames[0], *bad, frames[1]])
    assert stop["exit_status"] == "success"
    events = _stream(docs, "translation")
    assert [e["data"]["source_seq_num"] for e in events] == [1, 6]
    assert events[-1]["data"]["skipped_frames"] == 4
    s = cb.run_stats
    assert (s["skipped_shape"], s["skipped_dtype"], s["skipped"], s["errors"]) == (2, 2, 4, 0)
    assert s["submitted"] == 6 == _accounted(s)
    (summary,) = _stream(docs, "translation_summary")
    assert summary["data"]["skipped"] == 4 and summary["data"]["processed"] == 2


def test_non_finite_frames_are_skipped_and_counted(RE, model, frames):
    inf = frames[1].copy()
    inf[10, 10] = np.inf
    all_nan = np.full((64, 64), np.nan, dtype=np.float32)
    too_big = np.full((64, 64), 1e300)  # float64 beyond float32: inf after conversion
    cb = TranslationCallback(model, stop_timeout=30)
    docs, stop = _run(RE, cb, [frames[0], inf, all_nan, too_big, frames[2]])
    assert stop["exit_status"] == "success"
    events = _stream(docs, "translation")
    assert [e["data"]["source_seq_num"] for e in events] == [1, 5]  # NaN detector gaps are fine
    assert cb.stats["errors"] == 0
    assert cb.stats["skipped_nonfinite"] == cb.stats["skipped"] == 3
    assert events[-1]["data"]["skipped_frames"] == 3


def test_a_model_that_hides_its_frame_shape_learns_it_from_an_accepted_frame(RE, model, frames):
    cb = TranslationCallback(_Opaque(model), stop_timeout=30)
    docs, stop = _run(RE, cb, [np.ones((32, 32), dtype=np.float32), frames[0], frames[1], frames[2]])
    assert stop["exit_status"] == "success"
    assert [e["data"]["source_seq_num"] for e in _stream(docs, "translation")] == [2, 3, 4]
    assert cb.frame_shape == (64, 64)  # unknown (None) until the model translated a frame
    assert cb.stats["processed"] == 3 and cb.stats["submitted"] == 4 == _accounted(cb.stats)


def test_a_subscriber_that_raises_stops_neither_the_scan_nor_later_frames(RE, model, frames):
    calls = []

    def broken(name, doc):
        calls.append(name)
        raise ValueError("writer broke")

    def broken_once(name, doc, _done=[]):  # noqa: B006 - state across calls
        if name == "event" and not _done:
            _done.append(1)
            raise OSError("disk full, once")

    cb = TranslationCallback(model, stop_timeout=30)
    cb.subscribe(broken)
    cb.subscribe(broken_once)
    docs, stop = _run(RE, cb, list(frames[:4]))
    assert stop["exit_status"] == "success"
    assert [e["data"]["source_seq_num"] for e in _stream(docs, "translation")] == [1, 2, 3, 4]
    assert calls == ["descriptor"] + ["event"] * 4
    assert cb.stats["emit_errors"] == 5 + 1
    assert cb.stats["emitted"] == 4


class _Gated(_Slow):
    """A slow model that also waits for *gate* (at most 60 s) before each translation."""

    def __init__(self, model, delay, gate):
        super().__init__(model, delay)
        self.gate = gate

    def translate_and_score(self, frames, keep_mask=False):
        self.gate.wait(60)
        return super().translate_and_score(frames, keep_mask)


@pytest.mark.parametrize("policy", ["oldest", "newest"])
def test_a_thousand_frames_through_the_bounded_queue_are_all_accounted_for(model, frames, policy):
    from event_model import compose_run

    n, maxsize = 1000, 4
    gate = threading.Event()  # the model makes no progress until every frame has been pushed
    slow = _Gated(model, delay=0.01, gate=gate)
    cb = TranslationCallback(
        slow,
        maxsize=maxsize,
        drop_policy=policy,
        stop_timeout=120,
        keep_results=3,
        summary_stream="translation_summary",
    )
    docs = []
    cb.subscribe(lambda name, doc: docs.append((name, doc)))
    bundle = compose_run()
    cb("start", bundle.start_doc)
    desc = bundle.compose_descriptor(
        name="primary", data_keys={"ins_frame": {"source": "sim", "dtype": "array", "shape": [64, 64]}}
    )
    cb("descriptor", desc.descriptor_doc)
    bad = set(range(50, n, 100))  # 10 non-finite frames among them
    inf = np.full((64, 64), np.inf, dtype=np.float32)
    for i in range(n):
        frame = inf if i in bad else frames[i % len(frames)]
        cb("event", desc.compose_event(data={"ins_frame": frame}, timestamps={"ins_frame": time.time()}))
    gate.set()
    cb("stop", bundle.compose_stop())
    cb.close()

    s = cb.stats
    assert s["submitted"] == n
    assert s["unfinished"] == 0 and s["errors"] == 0
    assert s["skipped"] == s["skipped_nonfinite"] == len(bad)
    assert s["submitted"] == s["processed"] + s["dropped"] + s["skipped"]
    assert maxsize <= s["processed"] == slow.calls <= maxsize + 1  # the queue, and the frame in the worker
    events = _stream(docs, "translation")
    assert len(events) == s["processed"] == s["emitted"]
    dropped = [e["data"]["dropped_frames"] for e in events]
    assert dropped == sorted(dropped) and dropped[-1] <= s["dropped"]
    assert all(e["data"]["skipped_frames"] == len(bad) for e in events)  # emitted after the last push
    (summary,) = _stream(docs, "translation_summary")
    assert summary["data"] == {k: v for k, v in s.items() if k != "emit_errors"}
    assert len(cb.results) == 3  # bounded; every result went out as a document
    if policy == "oldest":
        assert events[-1]["data"]["source_seq_num"] == n  # the newest frame is never the one dropped


def test_results_in_memory_are_bounded_but_every_frame_is_emitted(RE, model, frames):
    cb = TranslationCallback(model, stop_timeout=30, keep_results=2)
    docs, _ = _run(RE, cb, list(frames[:5]))
    assert len(_stream(docs, "translation")) == 5
    assert [r.source_seq_num for r in cb.results] == [4, 5]
    with pytest.raises(ValueError, match="keep_results"):
        TranslationCallback(model, keep_results=-1)


def test_frames_still_queued_at_a_stop_timeout_are_counted_unfinished(RE, model, frames):
    release = threading.Event()

    class _Blocked(_Slow):
        def translate_and_score(self, frames, keep_mask=False):
            release.wait(60)
            return super().translate_and_score(frames, keep_mask)

    cb = TranslationCallback(_Blocked(model, 0.0), maxsize=8, stop_timeout=0.2, summary_stream="translation_summary")
    docs, stop = _run(RE, cb, list(frames[:3]))
    release.set()
    cb.close()
    assert stop["exit_status"] == "success"
    s = cb.stats
    assert s["unfinished"] == 3 and s["submitted"] == 3 == _accounted(s)
    (summary,) = _stream(docs, "translation_summary")
    assert summary["data"]["unfinished"] == 3


# -------------------------------------------------------------- ins score CLI
def _score(args, capsys):
    rc = main(["ins", "score", *map(str, args)])
    err = capsys.readouterr().err
    return rc, err


@pytest.mark.parametrize("size", [32, 128])
def test_score_rejects_frames_of_another_size_with_one_line(model_dir, tmp_path, capsys, size):
    src = tmp_path / "frames.npy"
    np.save(src, np.ones((2, size, size), dtype=np.float32))
    out = tmp_path / "scores.json"
    rc, err = _score([src, "--model", model_dir, "--json", out], capsys)
    assert rc == 2
    assert err.count("\n") == 1 and f"{size}x{size}" in err and "64x64" in err
    assert not out.exists()


def test_score_reports_a_directory_garbage_and_pickles_with_one_line(model_dir, tmp_path, capsys):
    rc, err = _score([tmp_path, "--model", model_dir], capsys)
    assert rc == 2 and err.count("\n") == 1 and "is a directory" in err
    (tmp_path / "garbage.npy").write_bytes(b"\x00\x01garbage" * 10)
    (tmp_path / "truncated.npy").write_bytes(b"\x93NUMPY\x01\x00garbage")
    np.save(tmp_path / "pickle.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    for name in ("garbage.npy", "truncated.npy", "pickle.npy"):
        rc, err = _score([tmp_path / name, "--model", model_dir], capsys)
        assert rc == 2 and err.count("\n") == 1 and "error" in err, (name, err)


def test_score_json_neither_overwrites_unasked_nor_replaces_the_input(model_dir, tmp_path, capsys, frames):
    src = tmp_path / "frames.npy"
    np.save(src, frames[:2])
    before = src.read_bytes()
    out = tmp_path / "scores.json"
    out.write_text("keep me")
    rc, err = _score([src, "--model", model_dir, "--json", out], capsys)
    assert rc == 2 and "--overwrite" in err and err.count("\n") == 1
    assert out.read_text() == "keep me"
    for flag in ("--json", "--translated"):
        rc, err = _score([src, "--model", model_dir, flag, src, "--overwrite"], capsys)
        assert rc == 2 and "input" in err and err.count("\n") == 1
        link = tmp_path / "link.npy"
        link.unlink(missing_ok=True)
        link.symlink_to(src)
        rc, err = _score([src, "--model", model_dir, flag, link, "--overwrite"], capsys)
        assert rc == 2 and "input" in err
    assert src.read_bytes() == before
    rc, _ = _score([src, "--model", model_dir, "--json", out, "--overwrite"], capsys)
    assert rc == 0 and out.read_text().startswith("{")
