"""TwinLivePlot (throttled, Agg) and TwinStream (derived twin-prediction runs stored by TiledWriter)."""

from __future__ import annotations

import io

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
bp = pytest.importorskip("bluesky.plans")

from bluesky_twin.callbacks import TwinLivePlot, TwinStream, TwinTrainer  # noqa: E402

WARM_START_WARNING = "ignore:Fixed parameter .* is out of range:UserWarning"
X_FIELDS = ["mpms_temperature", "mpms_field"]
Y_FIELD = "mpms_magnetisation"


@pytest.fixture(scope="module")
def space():
    from bluesky_twin.twin import TwinSearchSpace

    return TwinSearchSpace(max_epochs=40, min_final_epochs=40, n_layers=(2, 2), n_units=(16, 24), patience=10)


@pytest.fixture(scope="module")
def twin(space):
    """A small real twin of the magnetometer's noiseless M(T, H)."""
    import pandas as pd

    from bluesky_twin.sim import ErCo2Model
    from bluesky_twin.twin import DigitalTwin

    T, H = np.meshgrid(np.linspace(25, 45, 21), [0.0, 1.0, 2.0], indexing="xy")
    frame = pd.DataFrame({X_FIELDS[0]: T.ravel(), X_FIELDS[1]: H.ravel()})
    frame[Y_FIELD] = ErCo2Model().magnetisation(frame[X_FIELDS[0]].to_numpy(), frame[X_FIELDS[1]].to_numpy())
    return DigitalTwin.fit(frame, x=X_FIELDS, y=Y_FIELD, trials=1, seed=0, search_space=space, ensemble_size=2)


def test_live_plot_is_throttled_and_draws_the_twin_band(RE, mpms, twin):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    plot = TwinLivePlot(twin, x="mpms_temperature", group_by="mpms_field", ax=ax, min_interval=1e9, every=5)
    RE.subscribe(plot)
    RE(bp.grid_scan([mpms], mpms.field, 0, 2, 3, mpms.temperature, 25, 45, 7))  # 21 events
    assert plot.wait(30)  # frames are computed (and, with Agg, drawn) on a worker thread
    # first event (never drawn before), then every 5th event (6, 11, 16, 21), then at stop;
    # requests that arrive while the worker is busy are coalesced into one frame
    assert plot.n_requests == 6 and 1 <= plot.n_redraws <= 6
    assert plot.drawn_version == twin.version
    assert len(ax.collections) == 3  # one +-std band per field
    measured = [ln for ln in ax.lines if ln.get_linestyle() == "None"]
    predicted = [ln for ln in ax.lines if ln.get_linestyle() == "-"]
    assert len(measured) == 3 and len(predicted) == 3
    d = plot.data()
    assert d["X"].shape == (21, 2)
    mean, _ = twin.predict(d["X"][d["X"][:, 1] == 0.0])
    assert np.allclose(np.sort(predicted[0].get_ydata()), np.sort(mean))
    buf = io.BytesIO()
    fig.savefig(buf, format="png")  # renders headless
    assert buf.getvalue().startswith(b"\x89PNG")
    plt.close(fig)


def test_live_plot_rejects_unknown_axes(twin):
    with pytest.raises(ValueError, match="not an input"):
        TwinLivePlot(twin, x="nope")


@pytest.mark.filterwarnings(WARM_START_WARNING)
def test_twin_stream_emits_a_derived_run_that_tiled_stores(RE, mpms, twin, space, tiled_store):
    from bluesky_twin.storage import make_tiled_writer, read_stream

    trainer = TwinTrainer(
        X_FIELDS, Y_FIELD, twin=twin, refit_kwargs={"trials": 1, "search_space": space, "ensemble_size": 2}
    )
    stream = TwinStream(trainer, [make_tiled_writer(tiled_store)])
    RE.subscribe(make_tiled_writer(tiled_store))
    RE.subscribe(trainer)
    (uid,) = RE(bp.grid_scan([mpms], mpms.field, 0.5, 1.5, 2, mpms.temperature, 25, 45, 11))
    new = trainer.wait_for_version(twin.version, timeout=120, run_uid=uid)
    assert new is not None, trainer.status
    trainer.close(wait=True)  # listeners ran on the worker thread
    assert stream.errors == [] and len(stream.emitted_run_uids) == 1
    derived = tiled_store[stream.emitted_run_uids[0]]
    start = derived.metadata["start"]
    assert start["plan_name"] == "twin_prediction" and start["source_run_uid"] == uid
    assert start["twin_version"] == new.version and start["twin_study_name"] == trainer.twin_study_name
    assert start["twin_training_run_uids"] == [uid] and start["twin_points"] == "run"
    assert derived.metadata["stop"]["exit_status"] == "success"
    data = read_stream(derived, "twin")
    live = trainer.run_data(uid)
    X = np.column_stack([data[n] for n in X_FIELDS])
    assert X.shape == (22, 2) and np.allclose(X, live["x"])
    mean, std = new.predict(X)
    assert np.allclose(data[f"{Y_FIELD}_twin"], mean) and np.allclose(data[f"{Y_FIELD}_twin_std"], std)
    assert np.allclose(data[Y_FIELD], live["y"])


def test_twin_stream_grid_mode_has_fixed_shapes(twin):
    trainer = TwinTrainer(X_FIELDS, Y_FIELD, twin=twin, auto_refit=False)
    got: list = []
    stream = TwinStream(
        trainer,
        [lambda name, doc: got.append((name, doc))],
        grid={"mpms_temperature": np.linspace(20, 50, 31), "mpms_field": [0.0, 1.0]},
    )
    stream._on_refit(twin, trainer)
    names = [n for n, _ in got]
    assert names == ["start", "descriptor", "event_page", "stop"]
    desc, page = got[1][1], got[2][1]
    assert desc["name"] == "twin" and all(v["shape"] == [] for v in desc["data_keys"].values())
    assert len(page["seq_num"]) == 62 and got[0][1]["twin_points"] == "grid"
    with pytest.raises(ValueError, match="exactly the inputs"):
        TwinStream(trainer, grid={"mpms_temperature": [1, 2]})
