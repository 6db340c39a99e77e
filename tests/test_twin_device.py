"""Twin-backed instruments: a saved twin as the sample, behind the simulated instrument's positioners."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

bp = pytest.importorskip("bluesky.plans")

from bluesky_twin.errors import InputError, LimitError  # noqa: E402
from bluesky_twin.sim import (  # noqa: E402
    Magnetometer,
    PositionerLimitError,
    TwinArpesManipulator,
    TwinMagnetometer,
    metadata_noise,
    training_noise,
    twin_instrument,
)
from bluesky_twin.twin import DigitalTwin, TwinSearchSpace  # noqa: E402

pytestmark = [
    pytest.mark.usefixtures("one_torch_thread"),
    pytest.mark.filterwarnings("ignore:Fixed parameter .* is out of range:UserWarning"),
]

SPACE = TwinSearchSpace(max_epochs=60, min_final_epochs=60, n_layers=(2, 2), n_units=(16, 32), patience=10)


def _mpms_frame() -> pd.DataFrame:
    """Last week's sample: isofield sweeps of the simulated ErCo2-like magnetometer (T in K, H in T)."""
    truth = Magnetometer(name="sample", seed=0)
    T, H = np.meshgrid(np.linspace(26.0, 44.0, 25), [0.0, 0.5, 1.0, 1.5, 2.0])
    M = truth.truth(T, H) + np.random.default_rng(0).normal(0.0, 2e-4, T.shape)
    return pd.DataFrame({"T": T.ravel(), "H": H.ravel(), "M": M.ravel()})


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return _mpms_frame()


@pytest.fixture(scope="module")
def twin(frame: pd.DataFrame) -> DigitalTwin:
    return DigitalTwin.fit(frame, ["T", "H"], "M", trials=2, seed=0, search_space=SPACE, ensemble_size=2)


@pytest.fixture
def RE():  # noqa: N802 - overrides conftest's: plans here return results
    from bluesky import RunEngine

    engine = RunEngine({}, call_returns_result=True)
    yield engine
    if engine.state != "idle":
        engine.halt()


def _device(twin, seed=0, **kwargs):
    return twin_instrument(
        twin, "magnetometer", name="mpms", seed=seed, inputs={"T": "temperature", "H": "field"}, **kwargs
    )


def _events(docs, stream="primary"):
    descs = {d["uid"] for n, d in docs if n == "descriptor" and d["name"] == stream}
    return [d for n, d in docs if n == "event" and d["descriptor"] in descs]


def test_same_device_as_the_simulated_instrument(twin, frame):
    dev = _device(twin)
    sim = Magnetometer(name="mpms", seed=0)
    assert isinstance(dev, TwinMagnetometer) and isinstance(dev, Magnetometer)
    assert dev.describe().keys() == sim.describe().keys()
    assert dev.hints == sim.hints == {"fields": ["mpms_magnetisation"]}
    assert dev.read_configuration().keys() == sim.read_configuration().keys()
    assert dev.temperature.limits == sim.temperature.limits and dev.field.limits == sim.field.limits
    path = [(30.0, 0.5), (31.0, 0.5), (31.0, 1.5)]
    assert dev.measurement_time(path) == sim.measurement_time(path)
    # the noise level is the RMS of the twin's residuals on its (freshly fitted) training data
    assert dev.noise_source == "training residual rms"
    exact = training_noise(twin, frame[["T", "H"]].to_numpy(), frame["M"].to_numpy())
    assert dev.noise_level == pytest.approx(metadata_noise(twin)) == pytest.approx(exact, rel=1e-4)
    # truth is the twin's mean, broadcast over positions given in order or by name
    mean, _ = twin.predict(np.array([[30.0, 1.0], [35.0, 1.0]]))
    assert np.allclose(dev.truth([30.0, 35.0], 1.0), mean)
    assert np.allclose(dev.truth(field=1.0, temperature=[30.0, 35.0]), mean)
    assert dev.twin_std(35.0, 1.0).shape == ()


def test_bluesky_plans_read_the_twin_with_seeded_noise(RE, twin):
    readings = []
    for seed in (7, 7, 8):
        dev = _device(twin, seed=seed)
        docs: list = []
        RE(
            bp.list_grid_scan([dev], dev.field, [0.5, 1.5], dev.temperature, [30.0, 34.0, 38.0]),
            lambda n, d, out=docs: out.append((n, d)),
        )
        RE(bp.count([dev], num=3), lambda n, d, out=docs: out.append((n, d)))
        readings.append([e["data"]["mpms_magnetisation"] for e in _events(docs)])
        assert len(readings[-1]) == 9
    assert readings[0] == readings[1]  # same seed, same readings
    assert readings[0] != readings[2]
    dev = _device(twin, seed=7, noise=0.0)  # noiseless: the readings are the truth at the readbacks
    docs = []
    RE(
        bp.grid_scan([dev], dev.field, 0.5, 1.5, 2, dev.temperature, 30, 38, 3),
        lambda n, d, out=docs: out.append((n, d)),
    )
    events = _events(docs)
    assert dev.noise_source == "explicit"
    for e in events:
        d = e["data"]
        assert d["mpms_magnetisation"] == pytest.approx(float(dev.truth(d["mpms_temperature"], d["mpms_field"])))
    assert events[-1]["data"]["mpms_elapsed"] == pytest.approx(dev.elapsed_time)


def test_limits_are_enforced(RE, twin):
    dev = _device(twin)
    with pytest.raises(PositionerLimitError):
        dev.field.set(7.5)
    with pytest.raises(LimitError):
        dev.point_time((30.0, 0.0), (30.0, 8.0))
    before = dev.elapsed_time
    with pytest.raises(Exception):  # noqa: B017 - the RunEngine re-raises the limit error
        RE(bp.scan([dev], dev.field, 1.0, 7.5, 3))
    assert dev.field.setpoint.get() <= dev.field.high_limit  # the 7.5 T move was refused
    assert dev.elapsed_time >= before


def test_bad_arguments_are_one_line_input_errors(twin):
    with pytest.raises(InputError, match="unknown instrument kind"):
        twin_instrument(twin, "cryostat")
    with pytest.raises(InputError, match="give inputs="):
        twin_instrument(twin, "magnetometer")  # "T", "H" are no positioner names
    with pytest.raises(InputError, match="unknown positioners"):
        twin_instrument(twin, inputs={"T": "temperature", "H": "magnet"})
    with pytest.raises(InputError, match="noise"):
        _device(twin, noise=-1.0)
    with pytest.raises(InputError, match="input_scale"):
        _device(twin, input_scale={"B": 1e4})


def test_a_saved_twin_drives_an_arpes_manipulator(tmp_path, RE):
    from bluesky_twin.sim import ArpesModel

    t1, t2 = np.meshgrid(np.linspace(-20, 20, 21), np.linspace(-14, 14, 8))
    counts = ArpesModel().rate(t1, t2)
    df = pd.DataFrame({"arpes_theta1": t1.ravel(), "arpes_theta2": t2.ravel(), "I": counts.ravel()})
    DigitalTwin.fit(df, ["arpes_theta1", "arpes_theta2"], "I", trials=1, search_space=SPACE, ensemble_size=1).save(
        tmp_path / "arpes"
    )
    dev = twin_instrument(tmp_path / "arpes", "arpes", seed=0, noise=5.0)  # inputs matched by data key
    assert isinstance(dev, TwinArpesManipulator) and dev.name == "arpes"
    assert dev.inputs == {"arpes_theta1": "theta1", "arpes_theta2": "theta2"}
    docs: list = []
    RE(bp.grid_scan([dev], dev.theta1, -10, 10, 3, dev.theta2, -5, 5, 2), lambda n, d, out=docs: out.append((n, d)))
    values = [e["data"]["arpes_intensity"] for e in _events(docs)]
    assert len(values) == 6 and all(isinstance(v, float) for v in values)
    with pytest.raises(PositionerLimitError):
        dev.theta2.set(20.0)


def test_coarse_to_fine_rehearses_on_the_twin(RE, twin):
    from bluesky_twin.callbacks import TwinTrainer
    from bluesky_twin.plans import coarse_to_fine

    dev = _device(twin, seed=3)
    trainer = TwinTrainer(
        ["mpms_temperature", "mpms_field"],
        "mpms_magnetisation",
        fit_kwargs={"trials": 2, "search_space": SPACE, "ensemble_size": 2},
    )
    RE.subscribe(trainer)
    try:
        out = RE(
            coarse_to_fine(
                [dev],
                dev.temperature,
                26,
                44,
                13,
                dev.field,
                [0.0, 1.0, 2.0],
                trainer=trainer,
                candidate_steps=[0.25, 0.5, 1.0],
                twin_timeout=120,
            )
        )
    finally:
        trainer.close(wait=True)
    res = out.plan_result
    assert out.exit_status == "success" and res.fine_uid and res.proposed_field_step in (0.25, 0.5, 1.0)
    fine = trainer.run_data(res.fine_uid)
    assert np.allclose(np.unique(np.round(fine["x"][:, 1], 6)), res.fine_fields)
    assert res.dsm_rmse_pct is not None and np.isfinite(res.dsm_rmse_pct)
    assert dev.elapsed_time > 0


def test_twin_adaptive_scan_rehearses_on_the_twin(RE, twin):
    from bluesky_twin.callbacks import TwinTrainer
    from bluesky_twin.plans import twin_adaptive_scan

    dev = _device(twin, seed=4)
    trainer = TwinTrainer(
        ["mpms_temperature", "mpms_field"],
        "mpms_magnetisation",
        fit_kwargs={"trials": 1, "search_space": SPACE, "ensemble_size": 2},
    )
    RE.subscribe(trainer)
    try:
        res = RE(
            twin_adaptive_scan(
                [dev], dev.temperature, 26, 44, 8, dev.field, [0.0, 2.0], trainer=trainer, budget=3, twin_timeout=120
            )
        ).plan_result
    finally:
        trainer.close(wait=True)
    assert res.reason == "budget" and len(res.measured_lines) == 3
    assert all(0.0 <= v <= dev.field.high_limit for v in res.measured_lines)
