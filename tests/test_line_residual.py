"""The line-residual correction: smoothing along lines, carrying between lines, persistence."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bluesky_twin.errors import ModelFileError
from bluesky_twin.modeldir import current_path
from bluesky_twin.twin import LINE_RESIDUAL_FILE, DigitalTwin, TwinSearchSpace
from bluesky_twin.twin.line_residual import LineResidual

LINES = np.arange(0.0, 10.0, 1.0)


def line_points(n: int = 200, lines: np.ndarray = LINES, seed: int = 0) -> np.ndarray:
    """``(len(lines) * n, 2)`` points: column 0 swept (unevenly), column 1 the line coordinate."""
    rng = np.random.default_rng(seed)
    return np.concatenate([np.column_stack([np.sort(rng.uniform(0, 1, n)), np.full(n, h)]) for h in lines])


def test_a_residual_shared_by_all_lines_is_carried_between_them() -> None:
    X = line_points()
    shared = lambda x: 0.2 * np.sin(12 * x)  # noqa: E731 -- the same leftover on every line
    lr = LineResidual.fit(X, shared(X[:, 0]), line_axis=1)
    assert lr.line_axis == 1 and lr.dense_axis == 0
    assert lr.alpha > 0.95
    between = np.column_stack([np.linspace(0.05, 0.95, 50), np.full(50, 4.5)])
    np.testing.assert_allclose(lr(between), shared(between[:, 0]), atol=0.02)


def test_a_residual_private_to_each_line_stays_on_its_line() -> None:
    rng = np.random.default_rng(1)
    X = line_points()
    phases = rng.uniform(0, 2 * np.pi, len(LINES))
    own = 0.2 * np.sin(12 * X[:, 0] + phases[np.searchsorted(LINES, X[:, 1])])
    lr = LineResidual.fit(X, own, line_axis=1)
    assert lr.alpha < 0.2
    # on a measured line the correction reproduces that line's residual ...
    on_line = X[:, 1] == 3.0
    np.testing.assert_allclose(lr(X[on_line]), own[on_line], atol=0.03)
    # ... and half-way to the next one, what neighbours cannot predict is not carried
    mid = np.column_stack([X[on_line, 0], np.full(on_line.sum(), 3.5)])
    assert np.sqrt(np.mean(lr(mid) ** 2)) < 0.03


def test_noise_is_smoothed_not_memorised() -> None:
    rng = np.random.default_rng(2)
    X = line_points()
    signal = 0.5 * np.cos(3 * X[:, 0])
    noisy = signal + 0.1 * rng.standard_normal(len(X))
    lr = LineResidual.fit(X, noisy, line_axis=1)
    spacing = 1.0 / 200
    assert lr.bandwidth > 3 * spacing  # real smoothing for white noise
    assert lr.noise_rms == pytest.approx(0.1, rel=0.1)
    on = lr(X)
    assert np.sqrt(np.mean((on - signal) ** 2)) < 0.04  # closer to the signal than the 0.1 noise
    assert np.sqrt(np.mean((on - noisy) ** 2)) > 0.08


def test_the_correction_is_continuous_across_lines() -> None:
    rng = np.random.default_rng(3)
    X = line_points(seed=3)
    lr = LineResidual.fit(X, rng.standard_normal(len(X)) * 0.1 + np.sin(5 * X[:, 0]), line_axis=1)
    h = np.linspace(0, 9, 2001)
    path = lr(np.column_stack([np.full_like(h, 0.37), h]))
    assert np.max(np.abs(np.diff(path))) < 0.05


def test_bad_input_and_saved_arrays() -> None:
    X = line_points()
    with pytest.raises(ValueError, match=">= 3 lines"):
        LineResidual.fit(X[X[:, 1] < 2], np.zeros(int((X[:, 1] < 2).sum())), line_axis=1)
    with pytest.raises(ValueError, match=r"\(n, 2\)"):
        LineResidual.fit(X[:, :1], np.zeros(len(X)), line_axis=1)
    lr = LineResidual.fit(X, np.sin(4 * X[:, 0]), line_axis=1)
    again = LineResidual.from_saved(lr.to_metadata(), lr.arrays())
    np.testing.assert_array_equal(again(X), lr(X))
    broken = dict(lr.arrays(), values=lr.values[:, :-1])
    with pytest.raises(ValueError, match="do not match"):
        LineResidual.from_saved(lr.to_metadata(), broken)


def map_frame(n: int = 150, seed: int = 0) -> pd.DataFrame:
    """A map with detail along each line that a tiny network will not follow."""
    X = line_points(n, np.linspace(-1, 1, 9), seed)
    y = np.sin(3 * X[:, 0]) * np.cos(X[:, 1]) + 0.3 * np.sin(40 * X[:, 0] + X[:, 1])
    return pd.DataFrame({"theta1": X[:, 0], "theta2": X[:, 1], "I": y})


SMALL = TwinSearchSpace(
    n_layers=(2, 2),
    n_units=(16, 16),
    lr=(5e-3, 5e-3),
    max_epochs=30,
    lr_drop_epoch=20,
    patience=10,
    activations=("tanh",),
    encodings=("raw",),
)


def test_twin_adds_the_correction_and_saves_it(tmp_path, reseal_model) -> None:
    df = map_frame()
    X = df[["theta1", "theta2"]].to_numpy()
    space = TwinSearchSpace(**{**SMALL.to_dict(), "line_residual": True})
    twin = DigitalTwin.fit(df, ["theta1", "theta2"], "I", trials=2, seed=0, search_space=space, ensemble_size=2)
    meta = twin.metadata["line_residual"]
    assert meta["line_axis"] == 1 and meta["n_lines"] == 9
    assert twin.metadata["search_space"]["line_residual"] is True
    assert twin.metadata["train_r2"] > meta["network_train_r2"] + 0.05
    members = twin.predict(X, return_members=True)
    mean, std = twin.predict(X)
    np.testing.assert_allclose(members.mean(axis=0), mean)
    twin.save(tmp_path / "m")
    loaded = DigitalTwin.load(tmp_path / "m")
    np.testing.assert_allclose(loaded.predict(X)[0], mean)
    vdir = current_path(tmp_path / "m")
    (vdir / LINE_RESIDUAL_FILE).write_bytes(b"not a zip file")
    with pytest.raises(ModelFileError, match="line_residual.npz does not match its checksum"):
        DigitalTwin.load(tmp_path / "m")
    reseal_model(tmp_path / "m")  # a crafted file with a consistent checksum: still refused
    with pytest.raises(ModelFileError, match="cannot read .*line_residual.npz safely"):
        DigitalTwin.load(tmp_path / "m")
    (vdir / LINE_RESIDUAL_FILE).unlink()
    with pytest.raises(ModelFileError, match="line_residual.npz is missing"):
        DigitalTwin.load(tmp_path / "m")


def test_small_scans_keep_the_networks_alone() -> None:
    df = map_frame()
    twin = DigitalTwin.fit(df, ["theta1", "theta2"], "I", trials=1, seed=0, search_space=SMALL, ensemble_size=1)
    assert twin.metadata["search_space"]["line_residual"] is False  # "auto" below LARGE_DATA_ROWS
    assert twin.metadata["line_residual"] is None
    with pytest.raises(ValueError, match="line_residual"):
        TwinSearchSpace(line_residual="yes").resolved(100, 10)


def test_step_studies_simulate_with_the_networks_alone() -> None:
    from bluesky_twin.analysis.protocols import smooth_model

    df = map_frame()
    X = df[["theta1", "theta2"]].to_numpy()
    space = TwinSearchSpace(**{**SMALL.to_dict(), "line_residual": True})
    twin = DigitalTwin.fit(df, ["theta1", "theta2"], "I", trials=1, seed=0, search_space=space, ensemble_size=1)
    networks = twin.networks_only()
    assert networks.line_residual is None and networks.version == twin.version + "-networks"
    np.testing.assert_allclose(networks.predict(X)[0] + twin.line_residual(X), twin.predict(X)[0])
    assert smooth_model(twin).line_residual is None
    plain = object()
    assert smooth_model(plain) is plain
    assert smooth_model(networks) is networks


def test_the_tabulated_copy_adds_the_correction_exactly() -> None:
    df = map_frame()
    X = df[["theta1", "theta2"]].to_numpy()
    space = TwinSearchSpace(**{**SMALL.to_dict(), "line_residual": True})
    twin = DigitalTwin.fit(df, ["theta1", "theta2"], "I", trials=1, seed=0, search_space=space, ensemble_size=1)
    table = twin.tabulate((400, 60))
    fast, _ = table.predict(X)
    exact, _ = twin.predict(X)
    networks, _ = twin.networks_only().predict(X)
    # the table's error is the networks' interpolation error alone, not the correction's fine detail
    assert np.max(np.abs(fast - exact)) <= 2 * table.max_abs_error + 1e-9
    assert np.max(np.abs(exact - networks)) > 10 * table.max_abs_error


def test_entropy_change_differentiates_the_networks_alone() -> None:
    from bluesky_twin.analysis.mce import entropy_change_from_twin

    rng = np.random.default_rng(4)
    T = np.linspace(10, 60, 120)
    fields = np.linspace(0.2, 5.0, 9)
    TT, HH = np.meshgrid(T, fields)
    M = np.tanh(HH) * 0.5 * (1 - np.tanh((TT - 30) / 4)) + 0.01 * rng.standard_normal(TT.shape)
    df = pd.DataFrame({"T": TT.ravel(), "H": HH.ravel(), "M": M.ravel()})
    space = TwinSearchSpace(**{**SMALL.to_dict(), "line_residual": True})
    twin = DigitalTwin.fit(df, ["T", "H"], "M", trials=1, seed=0, search_space=space, ensemble_size=1)
    assert twin.line_residual is not None
    T_grid, H_grid = np.linspace(12, 58, 60), np.linspace(0.2, 5.0, 9)
    with_twin = entropy_change_from_twin(twin, T_grid, H_grid, field_unit="T")
    networks = entropy_change_from_twin(twin.networks_only(), T_grid, H_grid, field_unit="T")
    np.testing.assert_array_equal(with_twin.dS, networks.dS)
