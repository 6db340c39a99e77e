"""Quiet trainer, opt-in training and a live plot that never blocks the RunEngine.

* A real ``DigitalTwin.fit`` inside the trainer prints no Optuna trial lines; each fit
  attempt gives ONE status line (logger and ``status_callback``).
* ``condition`` (``twin_runs_only``) filters the runs; rejected runs are only counted.
* ``TwinLivePlot`` predicts on a worker thread, redraws after a refit and keeps up
  with the RunEngine while a slow ``predict`` runs.
"""

from __future__ import annotations

import logging
import threading
import time

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
bp = pytest.importorskip("bluesky.plans")
bps = pytest.importorskip("bluesky.plan_stubs")

from ophyd import SoftPositioner  # noqa: E402
from ophyd.sim import SynSignal  # noqa: E402

from bluesky_twin.callbacks import TwinLivePlot, TwinTrainer  # noqa: E402
from bluesky_twin.callbacks.trainer import TWIN_PLAN_NAMES, quiet_optuna, twin_runs_only  # noqa: E402

TRAINER_LOGGER = "bluesky_twin.callbacks.trainer"
WARM_START_WARNING = "ignore:Fixed parameter .* is out of range:UserWarning"


@pytest.fixture
def motor():
    return SoftPositioner(name="t", init_pos=0.0, limits=(-10.0, 10.0), egu="K")


@pytest.fixture
def det(motor):
    return SynSignal(func=lambda: float(motor.position) ** 2, name="det", kind="hinted")


class _FakeTwin:
    """A twin whose predict records the thread it runs on (and may be slow)."""

    def __init__(self, version: str, delay: float = 0.0, x_names=("t",), y_name="det") -> None:
        self.version = version
        self.metadata: dict = {}
        self.x_names = list(x_names)
        self.y_name = y_name
        self.delay = delay
        self.threads: list[int] = []
        self.x_range = {n: (-10.0, 10.0) for n in self.x_names}

    def predict(self, X):
        self.threads.append(threading.get_ident())
        time.sleep(self.delay)
        X = np.asarray(X, float)
        return X[:, 0] ** 2, np.full(len(X), 0.1)


def _fake_fit(versions: list, delay: float = 0.0):
    def fit(frame, x, y, warm_start=None, **kwargs):
        twin = _FakeTwin(f"{len(versions) + 1}-fake", delay=delay, x_names=x, y_name=y)
        versions.append(twin)
        return twin

    return fit


# ------------------------------------------------------------------------------ trainer


@pytest.mark.filterwarnings(WARM_START_WARNING)
def test_a_real_fit_prints_no_optuna_trial_lines_and_one_status_line(RE, motor, det, caplog, capfd):
    import optuna

    from bluesky_twin.twin import TwinSearchSpace

    space = TwinSearchSpace(
        max_epochs=15, min_final_epochs=15, n_layers=(2, 2), n_units=(8, 8), patience=5, encodings=("raw",)
    )
    lines: list[str] = []
    trainer = TwinTrainer(
        ["t"],
        "det",
        min_points=3,
        status_callback=lines.append,
        fit_kwargs={"trials": 3, "search_space": space, "ensemble_size": 1, "seed": 0},
    )
    RE.subscribe(trainer)
    level_before = logging.getLogger("optuna").level
    optuna.logging.enable_propagation()  # let optuna's records reach caplog too, were they emitted
    try:
        with caplog.at_level(logging.INFO):
            (uid,) = RE(bp.scan([det], motor, -5, 5, 11))
            twin = trainer.wait_for_version(None, timeout=120, run_uid=uid)
    finally:
        optuna.logging.disable_propagation()
    assert twin is not None, trainer.status
    assert not [r for r in caplog.records if r.name.startswith("optuna") and r.levelno < logging.WARNING]
    assert "Trial 0 finished" not in capfd.readouterr().err
    status = [r.getMessage() for r in caplog.records if r.name == TRAINER_LOGGER and r.levelno == logging.INFO]
    assert len(status) == 1 and status[0].startswith(
        f"twin fit 1 -> version {twin.version} on 11 points from 1 run in "
    )
    assert lines == status and trainer.status["last_status"] == status[0]
    assert logging.getLogger("optuna").level == level_before  # restored after the fit


def test_quiet_optuna_is_reference_counted_and_restores_the_level():
    import optuna  # noqa: F401

    log = logging.getLogger("optuna")
    before = log.level
    log.setLevel(logging.INFO)
    try:
        with quiet_optuna():
            assert log.level == logging.WARNING
            with quiet_optuna():
                assert log.level == logging.WARNING
            assert log.level == logging.WARNING  # the outer fit is still running
        assert log.level == logging.INFO
        log.setLevel(logging.ERROR)  # a user's quieter setting is left alone
        with quiet_optuna():
            assert log.level == logging.ERROR
        assert log.level == logging.ERROR
    finally:
        log.setLevel(before)


def test_one_status_line_per_fit_attempt_failures_included(RE, motor, det, caplog):
    calls = {"n": 0}

    def flaky(frame, x, y, warm_start=None, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("optimizer exploded")
        return _FakeTwin(f"{calls['n']}-fake")

    lines: list[str] = []
    trainer = TwinTrainer(["t"], "det", fit_function=flaky, min_points=6, status_callback=lines.append)
    RE.subscribe(trainer)
    with caplog.at_level(logging.DEBUG, logger=TRAINER_LOGGER):
        RE(bp.scan([det], motor, 0, 1, 2))  # 2 points: not attempted
        assert trainer.wait_for_version(None, timeout=0.5) is None
        for _ in range(3):
            (uid,) = RE(bp.scan([det], motor, -5, 5, 11))
            trainer.wait_for_version(None, timeout=10, run_uid=uid)
            deadline = time.monotonic() + 10
            while trainer.training and time.monotonic() < deadline:
                time.sleep(0.01)
    assert len(lines) == 4, lines
    assert "not attempted: only 2 usable points from 1 run; need >= 6" in lines[0]
    assert lines[1].startswith("twin fit 1 -> version 1-fake on 13 points from 2 runs in ")
    assert lines[2].startswith("twin fit 2 failed on 24 points from 3 runs") and "optimizer exploded" in lines[2]
    assert lines[3].startswith("twin fit 2 -> version 3-fake on 35 points from 4 runs")
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in errors] == [lines[2]]  # one ERROR line; the traceback is at DEBUG


def test_runs_without_the_data_keys_are_not_training_on_at_debug_only(RE, motor, caplog):
    other = SynSignal(func=lambda: 1.0, name="other", kind="hinted")
    trainer = TwinTrainer(["t"], "det", auto_refit=False)
    RE.subscribe(trainer)
    with caplog.at_level(logging.DEBUG, logger=TRAINER_LOGGER):
        (uid,) = RE(bp.scan([other], motor, 0, 1, 3))
    assert trainer.runs[uid].state == "no_data"
    msgs = [r for r in caplog.records if "not training on run" in r.getMessage()]
    assert len(msgs) == 1 and msgs[0].levelno == logging.DEBUG


def test_condition_filters_runs_and_counts_the_ignored_ones(RE, motor, det):
    versions: list = []
    trainer = TwinTrainer(["t"], "det", fit_function=_fake_fit(versions), min_points=3, condition=twin_runs_only)
    RE.subscribe(trainer)
    plain = RE(bp.scan([det], motor, -5, 5, 11))
    opted_out = RE(bp.scan([det], motor, -5, 5, 11), twin=False)
    (tagged,) = RE(bp.scan([det], motor, -5, 5, 11), twin=True)
    (twin_plan,) = RE(bp.scan([det], motor, 0, 4, 5, md={"plan_name": "coarse_to_fine"}))
    assert "coarse_to_fine" in TWIN_PLAN_NAMES
    twin = trainer.wait_for_version(None, timeout=10, run_uid=twin_plan)
    assert twin is not None
    assert (
        set(trainer.runs) == {tagged, twin_plan} and plain[0] not in trainer.runs and opted_out[0] not in trainer.runs
    )
    status = trainer.status
    assert status["ignored_runs"] == 2 and status["n_points"] == 16
    # nothing of a rejected run is kept once it stopped
    assert not trainer._rejected and not trainer._ignored_starts and not trainer._ignored_descriptors


def test_a_condition_that_raises_ignores_the_run_and_records_the_error(RE, motor, det):
    def broken(doc):
        raise KeyError("no such key")

    trainer = TwinTrainer(["t"], "det", auto_refit=False, condition=broken)
    RE.subscribe(trainer)
    stops: list = []
    RE.subscribe(lambda name, doc: stops.append(doc["exit_status"]), "stop")
    RE(bp.scan([det], motor, -5, 5, 11))
    assert stops == ["success"] and trainer.runs == {}
    assert trainer.status["ignored_runs"] == 1 and "no such key" in trainer.errors[0]
    with pytest.raises(ValueError, match="condition"):
        TwinTrainer(["t"], "det", condition="twin")


def test_twin_runs_only():
    assert twin_runs_only({"twin": True, "plan_name": "scan"})
    assert not twin_runs_only({"twin": False, "plan_name": "coarse_to_fine"})
    assert twin_runs_only({"plan_name": "twin_adaptive_scan"})
    assert not twin_runs_only({"plan_name": "grid_scan"}) and not twin_runs_only({})
    assert not twin_runs_only({"twin": "yes", "plan_name": "scan"})


# ---------------------------------------------------------------------------- live plot


def _axes():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    return fig, ax


def _idle(trainer, timeout: float = 10.0) -> None:
    """Wait until the trainer's worker (and so its refit listeners) is done."""
    deadline = time.monotonic() + timeout
    while trainer.training and time.monotonic() < deadline:
        time.sleep(0.01)


def _re_thread(RE) -> dict:
    """Record the thread the RunEngine delivers documents on."""
    seen: dict = {}
    RE.subscribe(lambda name, doc: seen.setdefault("ident", threading.get_ident()), "event")
    return seen


def test_live_plot_predicts_off_the_run_engine_thread_and_labels_units(RE, motor, det):
    import matplotlib.pyplot as plt

    twin = _FakeTwin("fixed-1")
    fig, ax = _axes()
    plot = TwinLivePlot(twin, x="t", ax=ax, min_interval=0.0)
    assert plot.draw_mode == "worker"  # Agg: headless, drawn on the worker
    seen = _re_thread(RE)
    RE.subscribe(plot)
    RE(bp.scan([det], motor, -5, 5, 11))
    assert plot.wait(10)
    assert twin.threads and seen["ident"] not in set(twin.threads)
    assert threading.get_ident() not in set(twin.threads)
    assert plot.drawn_version == "fixed-1" and plot.n_redraws >= 1
    assert ax.get_xlabel() == "t [K]" and ax.get_ylabel() == "det"  # the motor's egu
    (measured,) = [ln for ln in ax.lines if ln.get_linestyle() == "None"]
    assert len(measured.get_xdata()) == 11  # the final frame has every point
    plt.close(fig)


def test_live_plot_redraws_after_a_refit_of_the_trainer(RE, motor, det):
    import matplotlib.pyplot as plt

    versions: list = []
    trainer = TwinTrainer(["t"], "det", fit_function=_fake_fit(versions), min_points=3)
    fig, ax = _axes()
    plot = TwinLivePlot(trainer, x="t", ax=ax, min_interval=1e9)
    RE.subscribe(trainer)
    RE.subscribe(plot)
    (uid,) = RE(bp.scan([det], motor, -5, 5, 11))
    twin = trainer.wait_for_version(None, timeout=10, run_uid=uid)
    assert twin is not None
    _idle(trainer)  # the refit listener ran
    assert plot.wait(10)
    # first event and stop: frames without a twin, or with it if the refit was quick; then the
    # refit's own request draws the run again with the new twin, after the run stopped
    assert plot.n_requests == 3 and plot.drawn_version == twin.version
    assert len(twin.threads) >= 1 and len(ax.collections) == 1  # the twin's band
    drawn = plot.n_redraws
    trainer.refit(wait=True)  # a later refit (no new run) redraws again
    _idle(trainer)
    assert plot.wait(10) and plot.n_redraws == drawn + 1 and plot.drawn_version == versions[-1].version
    plt.close(fig)


def test_a_slow_predict_does_not_hold_up_the_run_engine(RE, motor, det):
    import matplotlib.pyplot as plt

    twin = _FakeTwin("slow-1", delay=0.5)
    fig, ax = _axes()
    plot = TwinLivePlot(twin, x="t", ax=ax, min_interval=0.0)  # asks for a frame at every event
    RE.subscribe(plot)
    times: list = []
    RE.subscribe(lambda name, doc: times.append(time.monotonic()), "event")
    t0 = time.monotonic()
    RE(bp.scan([det], motor, -5, 5, 21))
    elapsed = time.monotonic() - t0
    # 21 synchronous predicts would take 10.5 s; the RunEngine does not wait for any of them
    assert elapsed < 5.0, elapsed
    assert plot.n_requests == 22 and len(times) == 21
    assert plot.wait(30)
    # requests made while the worker predicted were coalesced: far fewer predicts than requests
    assert 1 <= plot.n_predicts < 12 and plot.n_predicts == len(twin.threads)
    (measured,) = [ln for ln in ax.lines if ln.get_linestyle() == "None"]
    assert len(measured.get_xdata()) == 21  # the last frame is complete
    plt.close(fig)


def test_live_plot_polls_the_version_of_a_source_without_refit_listeners(RE, motor, det):
    import matplotlib.pyplot as plt

    class Source:
        """A minimal TwinSource without add_refit_listener."""

        x_fields = ["t"]
        y_field = "det"
        twin = None

        @property
        def version(self):
            return None if self.twin is None else self.twin.version

        def poll(self, *, newer_than=None, run_uid=None):
            return self.twin is not None, self.twin

        def wait_for_version(self, newer_than=None, timeout=None, *, run_uid=None):
            return self.twin

        def provenance(self):
            return {}

        @property
        def status(self):
            return {}

    source = Source()
    fig, ax = _axes()
    plot = TwinLivePlot(source, x="t", ax=ax, min_interval=1e9)

    def plan():
        def per_step(detectors, step, pos_cache):
            yield from bps.one_nd_step(detectors, step, pos_cache)
            if step[motor] == 0.0:
                plot.wait(10)
                source.twin = _FakeTwin("polled-1")  # "a refit" mid-run

        return (yield from bp.scan([det], motor, -5, 5, 11, per_step=per_step))

    RE.subscribe(plot)
    RE(plan())
    assert plot.wait(10)
    # first event, the event after the new version appeared, stop
    assert plot.n_requests == 3 and plot.drawn_version == "polled-1"
    plt.close(fig)


def test_with_a_qt_backend_documents_and_frames_are_teleported_to_the_main_thread(RE, motor, det, monkeypatch):
    """No Qt binding is needed: bluesky's teleporter is replaced by a queue that the test's
    main thread drains, as Qt's event loop would."""
    import queue

    import matplotlib.pyplot as plt
    from bluesky.callbacks import mpl_plotting

    from bluesky_twin.callbacks import live_plot

    delivered: queue.Queue = queue.Queue()

    class Signal:
        def emit(self, name, doc, obj):
            delivered.put((name, doc, obj))

    class Teleporter:
        name_doc_escape = Signal()

    def fake_get_teleporter():
        return Teleporter

    fake_get_teleporter.cache_info = lambda: type("Info", (), {"currsize": 1})()
    monkeypatch.setattr(mpl_plotting, "_get_teleporter", fake_get_teleporter)
    draws: list = []
    original_apply = live_plot.TwinLivePlot._apply

    def recording_apply(self, frame):
        draws.append(threading.get_ident())
        return original_apply(self, frame)

    monkeypatch.setattr(live_plot.TwinLivePlot, "_apply", recording_apply)
    twin = _FakeTwin("qt-1")
    fig, ax = _axes()
    plot = TwinLivePlot(twin, x="t", ax=ax, min_interval=0.0, use_teleporter=True)
    assert plot.draw_mode == "qt"
    RE.subscribe(plot)
    RE(bp.scan([det], motor, -5, 5, 5))
    assert plot.n_requests == 0 and not draws  # nothing ran yet: documents wait for the main thread

    def drain():
        while not delivered.empty():
            name, doc, obj = delivered.get()
            obj(name, doc, escape=True)

    drain()  # the documents: points stored, frames requested, predicted on the worker
    assert plot.n_requests == 6 and plot.wait(10)
    drain()  # the frames
    assert draws and set(draws) == {threading.get_ident()}  # drawn on the "Qt" main thread only
    assert threading.get_ident() not in set(twin.threads)
    assert plot.drawn_version == "qt-1"
    plt.close(fig)
