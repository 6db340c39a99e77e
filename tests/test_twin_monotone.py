"""Monotone axes: a twin held to a known direction along an axis (``TwinSearchSpace.monotone``)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch
from test_twin import TINY, scan_frame

from bluesky_twin.errors import InputError
from bluesky_twin.twin import DigitalTwin
from bluesky_twin.twin.network import BatchedMLP
from bluesky_twin.twin.training import MonotonePenalty, train_members

FIELD_UP = dataclasses.replace(TINY, monotone={"H": "increasing"})


def test_the_penalty_is_the_squared_wrong_way_slope_along_each_axis() -> None:
    low, high = torch.tensor([-1.0, -2.0]), torch.tensor([1.0, 2.0])
    penalty = MonotonePenalty(axes=((1, 1), (0, -1)), weight=0.5, low=low, high=high, step=0.1, points=16)
    x = penalty.probes(3, torch.Generator().manual_seed(0))
    assert x.shape == (3, 48, 2)
    at, along_h, along_t = x.split(16, dim=1)
    torch.testing.assert_close(along_h - at, torch.tensor([0.0, 0.1]).expand(3, 16, 2))
    torch.testing.assert_close(along_t - at, torch.tensor([0.1, 0.0]).expand(3, 16, 2))
    assert bool((at >= low).all() and (at <= high).all())

    def loss(f):
        return penalty.loss(f(x[..., 0:1], x[..., 1:2]))

    # rising with H and falling with T, as asked: nothing to pay, however steep
    torch.testing.assert_close(loss(lambda t, h: 5 * h - 3 * t), torch.zeros(3))
    # falling with H at slope 2 (and flat in T): weight * 2^2
    torch.testing.assert_close(loss(lambda t, h: -2 * h), torch.full((3,), 0.5 * 4.0), rtol=1e-4, atol=0.0)
    # rising with T at slope 3 (and flat in H): weight * 3^2
    torch.testing.assert_close(loss(lambda t, h: 3 * t), torch.full((3,), 0.5 * 9.0), rtol=1e-4, atol=0.0)


def test_the_penalty_is_built_only_for_axes_with_a_direction() -> None:
    X = torch.tensor([[0.0, 5.0], [2.0, -1.0]])
    assert MonotonePenalty.over(X, ["T", "H"], {}) is None
    penalty = MonotonePenalty.over(X, ["T", "H"], {"H": "decreasing"})
    assert penalty.axes == ((1, -1),)
    assert penalty.low.tolist() == [0.0, -1.0] and penalty.high.tolist() == [2.0, 5.0]


def _gap_scan() -> tuple[torch.Tensor, torch.Tensor]:
    """A transition that moves with field: dense lines up to 1, then one far line at 3 (standardised)."""
    rng = np.random.default_rng(0)
    rows = []
    for h in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 3.0):
        t = np.sort(rng.uniform(10, 60, 30))
        rows.append(np.column_stack([t, np.full_like(t, h), np.tanh(2 * h) * (1 - np.tanh((t - 30 - 5 * h) / 4)) / 2]))
    data = torch.tensor(np.vstack(rows), dtype=torch.float32)
    X, y = data[:, :2], data[:, 2:]
    return (X - X.mean(0)) / X.std(0), (y - y.mean()) / y.std()


def _train(X: torch.Tensor, y: torch.Tensor, monotone: MonotonePenalty | None) -> BatchedMLP:
    gen = torch.Generator().manual_seed(3)
    params = {"n_layers": 3, "n_units": 32, "activation": "tanh", "dropout": 0.0}
    model = BatchedMLP.from_params(4, 2, params, generator=gen)
    idx = torch.arange(len(X))
    train_members(
        model, X, y, [idx] * 4, None, lr=5e-3, batch_size=64, max_epochs=200, generator=gen, monotone=monotone
    )
    return model


def test_training_with_the_penalty_stops_the_networks_running_back_between_lines() -> None:
    X, y = _gap_scan()
    t = torch.linspace(float(X[:, 0].min()), float(X[:, 0].max()), 40)
    h = torch.linspace(float(X[:, 1].min()), float(X[:, 1].max()), 60)
    grid = torch.stack(torch.meshgrid(t, h, indexing="ij"), dim=-1).reshape(-1, 2)

    def wrong_way_and_fit(model: BatchedMLP) -> tuple[float, float]:
        with torch.no_grad():
            f = model(grid.expand(4, -1, -1))[..., 0].reshape(4, 40, 60)
            mse = float(((model(X.expand(4, -1, -1)) - y) ** 2).mean())
        return float((f.diff(dim=2) < -1e-4).float().mean()), mse

    free_back, free_mse = wrong_way_and_fit(_train(X, y, None))
    held_back, held_mse = wrong_way_and_fit(_train(X, y, MonotonePenalty.over(X, ["T", "H"], {"H": "increasing"})))
    assert free_back > 0.1  # the free networks fall with H on a good part of the box
    assert held_back < free_back / 4
    assert held_mse < 1.5 * free_mse + 1e-4  # and fit the (monotone) data as well


def test_a_fit_records_the_directions_and_is_deterministic() -> None:
    options = {"trials": 2, "seed": 1, "jobs": 2, "ensemble_size": 2, "top_k": 1}
    twin = DigitalTwin.fit(scan_frame(), ["T", "H"], "M", search_space=FIELD_UP, **options)
    assert twin.metadata["search_space"]["monotone"] == {"H": "increasing"}
    plain = DigitalTwin.fit(scan_frame(), ["T", "H"], "M", search_space=TINY, **options)
    assert plain.metadata["search_space"]["monotone"] == {}
    X = np.array([[30.0, 0.7], [45.0, 2.2]])
    assert not np.allclose(twin.predict(X)[0], plain.predict(X)[0])
    again = DigitalTwin.fit(scan_frame(), ["T", "H"], "M", search_space=FIELD_UP, **options)
    np.testing.assert_array_equal(again.predict(X)[0], twin.predict(X)[0])


def test_a_warm_start_and_pooled_restarts_keep_the_directions(tmp_path) -> None:
    twin = DigitalTwin.fit(
        scan_frame(), ["T", "H"], "M", search_space=FIELD_UP, trials=1, restarts=2, ensemble_size=1, top_k=1
    )
    assert twin.metadata["search_space"]["monotone"] == {"H": "increasing"}
    twin.save(tmp_path / "m")
    refit = DigitalTwin.fit(scan_frame(), trials=1, warm_start=DigitalTwin.load(tmp_path / "m"), ensemble_size=2)
    assert refit.metadata["search_space"]["monotone"] == {"H": "increasing"}


@pytest.mark.parametrize(
    "monotone, message",
    [
        ({"B": "increasing"}, "monotone direction for 'B', which is not an axis"),
        ({"H": "up"}, "monotone must map column names"),
        (["H"], "monotone must map column names"),
    ],
)
def test_a_bad_direction_is_refused_before_any_trial(monotone, message) -> None:
    calls = []
    with pytest.raises(InputError, match=message):
        DigitalTwin.fit(
            scan_frame(),
            ["T", "H"],
            "M",
            search_space=dataclasses.replace(TINY, monotone=monotone),
            trials=1,
            trial_callback=lambda *a: calls.append(a),
        )
    assert calls == []


def test_random_rows_take_a_direction_too() -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"T": rng.uniform(10, 60, 200), "H": rng.uniform(0, 3, 200)})
    frame["M"] = np.tanh(frame["H"]) / frame["T"]
    twin = DigitalTwin.fit(frame, ["T", "H"], "M", search_space=FIELD_UP, trials=1, ensemble_size=1, top_k=1)
    assert twin.metadata["line_axis"] is None and twin.metadata["search_space"]["monotone"] == {"H": "increasing"}
