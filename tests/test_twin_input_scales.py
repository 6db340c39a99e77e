"""Input scales: a twin that reads an axis (e.g. a magnetic field) on a square-root scale."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from test_twin import TINY, scan_frame

from bluesky_twin.errors import InputError, ModelFileError
from bluesky_twin.twin import DigitalTwin, Scaler

SQRT_H = dataclasses.replace(TINY, input_scales={"H": "sqrt"})


def _fit(space=SQRT_H, **kw) -> DigitalTwin:
    options = {"trials": 2, "seed": 1, "jobs": 2, "ensemble_size": 2, "top_k": 1, **kw}
    return DigitalTwin.fit(scan_frame(), ["T", "H"], "M", search_space=space, **options)


def test_scaler_reads_a_column_on_the_signed_square_root_and_back() -> None:
    X = np.array([[10.0, -4.0], [20.0, 0.0], [30.0, 9.0], [40.0, 16.0]])
    s = Scaler.fit(X, "x", ("linear", "sqrt"))
    g = np.array([-2.0, 0.0, 3.0, 4.0])
    np.testing.assert_allclose(s.mean, [25.0, g.mean()])
    np.testing.assert_allclose(s.transform(X)[:, 1], (g - g.mean()) / g.std())
    np.testing.assert_allclose(s.transform(X)[:, 0], (X[:, 0] - 25.0) / X[:, 0].std())
    np.testing.assert_allclose(s.inverse(s.transform(X)), X)
    back = Scaler.from_dict(s.to_dict())
    assert back.warp == ("linear", "sqrt")
    np.testing.assert_array_equal(back.transform(X), s.transform(X))
    # all linear: stored as before (no "warp" key), and the same numbers as no warp at all
    plain = Scaler.fit(X, "x", ("linear", "linear"))
    assert plain.warp == () and "warp" not in plain.to_dict()
    assert Scaler.from_dict({"mean": [0.0, 0.0], "scale": [1.0, 1.0], "warp": ["linear", "linear"]}).warp == ()
    np.testing.assert_allclose(plain.transform(X), Scaler.fit(X, "x").transform(X))


@pytest.mark.parametrize("warp", [("sqrt",), ("linear", "log")])
def test_scaler_refuses_a_bad_scale(warp) -> None:
    with pytest.raises(InputError, match="input scales"):
        Scaler.fit(np.ones((3, 2)), "x", warp)


def test_the_twin_trains_and_predicts_on_the_scale_and_keeps_it(tmp_path) -> None:
    twin = _fit()
    assert twin.metadata["search_space"]["input_scales"] == {"H": "sqrt"}
    assert twin._x_scaler.warp == ("linear", "sqrt")
    H = scan_frame()["H"].to_numpy()
    assert twin._x_scaler.mean[1] == pytest.approx(np.sqrt(H).mean())
    # the same seed on the linear scale is another model
    plain = _fit(TINY)
    X = np.array([[30.0, 0.7], [45.0, 2.2]])
    assert not np.allclose(twin.predict(X)[0], plain.predict(X)[0])
    twin.save(tmp_path / "m")
    back = DigitalTwin.load(tmp_path / "m")
    assert back._x_scaler.warp == ("linear", "sqrt")
    np.testing.assert_array_equal(back.predict(X)[0], twin.predict(X)[0])
    # a warm start keeps the scale (from its twin's space) and refuses another
    refit = DigitalTwin.fit(scan_frame(), trials=1, warm_start=back, ensemble_size=2, top_k=1)
    assert refit._x_scaler.warp == ("linear", "sqrt")
    with pytest.raises(InputError, match="warm start keeps its twin's input scales"):
        DigitalTwin.fit(scan_frame(), trials=1, warm_start=back, search_space=TINY)


def test_pooled_restarts_share_the_scale() -> None:
    twin = _fit(restarts=2, trials=1)
    assert twin.metadata["restarts"] == 2 and twin._x_scaler.warp == ("linear", "sqrt")


@pytest.mark.parametrize(
    "scales, message",
    [({"B": "sqrt"}, "'B', which is not an axis"), ({"H": "log"}, "input_scales must map")],
)
def test_a_bad_scale_is_refused_before_any_trial(scales, message) -> None:
    calls = []
    with pytest.raises(InputError, match=message):
        _fit(dataclasses.replace(TINY, input_scales=scales), trial_callback=lambda *a: calls.append(a))
    assert calls == []


def test_a_model_file_with_a_bad_scale_is_refused(tmp_path) -> None:
    import json

    from bluesky_twin.modeldir import current_path

    _fit().save(tmp_path / "m")
    meta_path = current_path(tmp_path / "m") / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["x_scaler"]["warp"] = ["linear", "exp"]
    meta_path.chmod(0o644)
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ModelFileError):
        DigitalTwin.load(tmp_path / "m")
