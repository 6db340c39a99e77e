"""The measurement twin: fitting, selection on held-out lines, warm start, persistence."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from bluesky_twin.errors import InputError, ModelFileError
from bluesky_twin.modeldir import current_path
from bluesky_twin.twin import DigitalTwin, TwinSearchSpace
from bluesky_twin.twin.training import line_folds

FIELDS = [0.1, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0]


def scan_frame(fields=FIELDS, n_t: int = 40, noise: float = 0.0, seed: int = 0) -> pd.DataFrame:
    """Isofield T sweeps of a smooth ferromagnet-like M(T, H)."""
    rng = np.random.default_rng(seed)
    rows = []
    for h in fields:
        t = np.sort(rng.uniform(10, 60, n_t))
        m = np.tanh(h) * 0.5 * (1 - np.tanh((t - 30 - 2 * h) / 4)) + 0.02 * h
        rows.append(pd.DataFrame({"T": t, "H": h, "M": m + noise * rng.normal(size=n_t)}))
    return pd.concat(rows, ignore_index=True)


TINY = TwinSearchSpace(
    n_layers=(2, 3),
    n_units=(16, 32),
    lr=(3e-3, 1e-2),
    batch_size=(32, 256),
    max_epochs=60,
    lr_drop_epoch=40,
    patience=15,
    activations=("tanh", "silu"),
)


def trial_distributions(units: tuple[int, int], batch: tuple[int, int]) -> dict:
    """Optuna distributions of a small raw-encoded configuration (for hand-made trials)."""
    import optuna

    return {
        "n_layers": optuna.distributions.IntDistribution(2, 3),
        "n_units": optuna.distributions.IntDistribution(*units),
        "batch_size": optuna.distributions.IntDistribution(*batch),
        "lr": optuna.distributions.FloatDistribution(1e-3, 1e-2),
        "weight_decay": optuna.distributions.FloatDistribution(1e-8, 1e-3),
        "activation": optuna.distributions.CategoricalDistribution(["tanh"]),
    }


@pytest.fixture(scope="module")
def data() -> pd.DataFrame:
    return scan_frame()


@pytest.fixture(scope="module")
def twin(data: pd.DataFrame) -> DigitalTwin:
    return DigitalTwin.fit(data, ["T", "H"], "M", trials=4, seed=1, search_space=TINY, ensemble_size=3)


def test_fit_learns_and_records_metadata(twin: DigitalTwin, data: pd.DataFrame) -> None:
    assert twin.score(data[["T", "H"]].to_numpy(), data["M"].to_numpy()) > 0.9
    m = twin.metadata
    for key in (
        "x_names",
        "y_name",
        "x_scaler",
        "y_scaler",
        "search_space",
        "best_params",
        "train_r2",
        "selection_score",
        "n_trials_complete",
        "n_trials_pruned",
        "fit_seconds",
        "study_name",
        "storage",
        "data_sha256",
        "versions",
    ):
        assert key in m, key
    assert m["line_axis"] == "H"
    assert m["n_trials_complete"] + m["n_trials_pruned"] == 4
    assert m["train_r2"] == pytest.approx(twin.score(data[["T", "H"]].to_numpy(), data["M"].to_numpy()))
    # top-k ensemble: members spread over the best configurations, best first
    assert sum(e["members"] for e in m["ensemble"]) == twin.ensemble_size == 3
    scores = [e["cv_score"] for e in m["ensemble"]]
    assert scores == sorted(scores) and scores[-1] <= 1.5 * scores[0]
    assert m["best_params"] == m["ensemble"][0]["params"]


def test_predict_shapes_std_and_range_flags(twin: DigitalTwin) -> None:
    X = np.array([[20.0, 1.5], [35.0, 4.5], [80.0, 2.0]])
    mean, std = twin.predict(X)
    assert mean.shape == std.shape == (3,)
    assert (std >= 0).all() and std.max() > 0  # members differ
    members = twin.predict(X, return_members=True)
    assert members.shape == (3, 3)
    np.testing.assert_allclose(members.mean(axis=0), mean)
    frame = twin.predict_frame(pd.DataFrame({"H": X[:, 1], "T": X[:, 0]}))
    assert list(frame.columns) == ["H", "T", "M", "M_std", "outside_training_range"]
    assert frame["outside_training_range"].tolist() == [False, False, True]
    with pytest.raises(InputError, match=r"shape \(n, 2\)"):
        twin.predict(np.zeros((4, 3)))
    with pytest.raises(InputError, match="NaN"):
        twin.predict(np.array([[np.nan, 1.0]]))


def test_fit_is_reproducible_with_a_seed(data: pd.DataFrame) -> None:
    a = DigitalTwin.fit(data, ["T", "H"], "M", trials=2, seed=5, search_space=TINY, ensemble_size=2)
    b = DigitalTwin.fit(data, ["T", "H"], "M", trials=2, seed=5, search_space=TINY, ensemble_size=2)
    X = data[["T", "H"]].to_numpy()[:50]
    np.testing.assert_allclose(a.predict(X)[0], b.predict(X)[0], rtol=1e-5, atol=1e-6)
    assert a.best_params == b.best_params


def test_line_folds_hold_out_whole_interior_lines() -> None:
    df = scan_frame()
    X = df[["T", "H"]].to_numpy()
    axis, folds = line_folds(X, 3, seed=0)
    assert axis == 1
    held = [set(np.unique(X[f, 1])) for f in folds]
    assert all(held)
    for lines, rows in zip(held, folds):
        # whole lines: every row of a held-out field is in the fold
        assert len(rows) == int(np.isin(X[:, 1], list(lines)).sum())
        assert min(FIELDS) not in lines and max(FIELDS) not in lines
    assert set().union(*held) == set(FIELDS[1:-1])
    # no line structure -> random rows
    rng = np.random.default_rng(0)
    axis, folds = line_folds(rng.uniform(size=(60, 2)), 3)
    assert axis == -1 and sum(len(f) for f in folds) == 60


def test_save_load_roundtrip_and_corruption(twin: DigitalTwin, tmp_path) -> None:
    path = twin.save(tmp_path / "m")
    loaded = DigitalTwin.load(path)
    X = np.array([[25.0, 2.5], [45.0, 0.7]])
    np.testing.assert_array_equal(loaded.predict(X)[0], twin.predict(X)[0])
    assert loaded.version == twin.version
    path = current_path(path)  # the files of the version just published
    assert (path / "optuna.journal").exists()

    meta = json.loads((path / "metadata.json").read_text())
    (path / "metadata.json").write_text("{not json")
    with pytest.raises(ModelFileError, match="corrupt"):
        DigitalTwin.load(path.parent.parent)
    first = meta["ensemble"][0]
    meta_bad = dict(
        meta,
        ensemble=[dict(first, params=dict(first["params"], n_units=first["params"]["n_units"] + 1))]
        + meta["ensemble"][1:],
    )
    (path / "metadata.json").write_text(json.dumps(meta_bad))
    with pytest.raises(ModelFileError, match="does not match"):
        DigitalTwin.load(path.parent.parent)
    (path / "metadata.json").write_text(json.dumps(meta))
    (path / "ensemble.pt").write_bytes(b"garbage")
    with pytest.raises(ModelFileError, match="corrupt"):
        DigitalTwin.load(path.parent.parent)
    with pytest.raises(ModelFileError, match="not found"):
        DigitalTwin.load(tmp_path / "missing")
    (tmp_path / "other").mkdir()
    with pytest.raises(ModelFileError, match="not a twin model directory"):
        DigitalTwin.load(tmp_path / "other")


def test_save_publishes_a_whole_new_version(twin: DigitalTwin, tmp_path) -> None:
    path = tmp_path / "m"
    twin.save(path)
    first = current_path(path)
    (first / "stale.txt").write_text("old")  # a file no save wrote
    twin.save(path)
    second = current_path(path)
    assert second != first and not (second / "stale.txt").exists()  # nothing of the old version leaks in
    assert (first / "stale.txt").exists()  # ... and nothing is deleted
    assert [p.name for p in tmp_path.iterdir()] == ["m"]
    assert not [p for p in (path / "versions").iterdir() if p.name.startswith(".")]


def test_warm_start_reuses_parameters_and_weights(twin: DigitalTwin) -> None:
    more = scan_frame(fields=FIELDS + [2.5, 3.5], seed=3)
    refit = DigitalTwin.fit(more, warm_start=twin, trials=2, seed=2, ensemble_size=3)
    assert refit.x_names == twin.x_names and refit.y_name == twin.y_name
    assert refit.metadata["refit_count"] == 1
    assert refit.metadata["parent_version"] == twin.version
    assert refit.version != twin.version
    assert refit.metadata["search_space"] == twin.metadata["search_space"]
    # the first (enqueued) trial is the previous best configuration
    assert refit.metadata["n_points"] == len(more)
    with pytest.raises(InputError, match="warm start"):
        DigitalTwin.fit(more, ["T", "H"], "T", warm_start=twin, trials=1)


def test_warm_start_search_trials_train_from_fresh_weights(twin: DigitalTwin, monkeypatch) -> None:
    """A refit's search never starts from the previous twin's weights (they have seen
    every held-out line); only its final ensemble does."""
    from bluesky_twin.twin._search import TwinSearch
    from bluesky_twin.twin.network import BatchedMLP

    searching, loads = [False], []
    run, load = TwinSearch.run, BatchedMLP.load_members_from

    def tracked_run(self):
        searching[0] = True
        try:
            return run(self)
        finally:
            searching[0] = False

    def tracked_load(self, other):
        loads.append(searching[0])
        return load(self, other)

    monkeypatch.setattr(TwinSearch, "run", tracked_run)
    monkeypatch.setattr(BatchedMLP, "load_members_from", tracked_load)
    more = scan_frame(fields=FIELDS + [2.5, 3.5], seed=3)
    # one trial: the enqueued previous configuration, so the final ensemble matches it
    refit = DigitalTwin.fit(more, warm_start=twin, trials=1, seed=2, ensemble_size=2)
    assert loads and not any(loads)
    assert refit.metadata["refit_count"] == 1


def test_data_validation_errors(tmp_path) -> None:
    df = scan_frame()
    with pytest.raises(InputError, match=r"missing column\(s\) \['B'\]"):
        DigitalTwin.fit(df, ["T", "B"], "M", trials=1, search_space=TINY)
    bad = df.astype({"M": object})
    bad.loc[3, "M"] = "oops"
    with pytest.raises(InputError, match="not numeric"):
        DigitalTwin.fit(bad, ["T", "H"], "M", trials=1, search_space=TINY)
    with pytest.raises(InputError, match="constant"):
        DigitalTwin.fit(df.assign(H=1.0), ["T", "H"], "M", trials=1, search_space=TINY)
    with pytest.raises(InputError, match="only 5 valid"):
        DigitalTwin.fit(df.head(5), ["T", "H"], "M", trials=1, search_space=TINY)


def test_nan_rows_are_dropped_and_counted() -> None:
    df = scan_frame()
    df.loc[[0, 10, 20], "M"] = np.nan
    df.loc[5, "T"] = np.inf
    twin = DigitalTwin.fit(df, ["T", "H"], "M", trials=1, search_space=TINY, ensemble_size=2)
    assert twin.metadata["n_dropped_nonfinite"] == 4
    assert twin.metadata["n_points"] == len(df) - 4


def test_tabulated_twin_matches_the_network(twin: DigitalTwin) -> None:
    tab = twin.tabulate((200, 100))
    rng = np.random.default_rng(1)
    X = rng.uniform(twin.x_range[:, 0], twin.x_range[:, 1], size=(500, 2))
    mean, std = tab.predict(X)
    ref_mean, ref_std = twin.predict(X)
    span = np.ptp(ref_mean)
    assert np.max(np.abs(mean - ref_mean)) < 0.01 * span
    assert tab.max_abs_error < 0.01 * span
    # the recorded error-to-uncertainty ratio is measured on the seeded check points
    check = np.random.default_rng(0).uniform(twin.x_range[:, 0], twin.x_range[:, 1], size=(2000, 2))
    c_mean, c_std = twin.predict(check)
    expected = np.max(np.abs(tab.predict(check)[0] - c_mean) / c_std)
    assert tab.max_error_over_std == pytest.approx(expected, rel=1e-6)
    assert np.max(np.abs(std - ref_std)) < 0.01 * span and (std >= 0).all()
    # outside the box the network answers
    out = np.array([[80.0, 2.0]])
    np.testing.assert_allclose(tab.predict(out)[0], twin.predict(out)[0])
    assert tab.x_names == twin.x_names and tab.version.startswith(twin.version)
    # predict(fast=True) answers from one cached table of the default shape
    fast_mean, fast_std = twin.predict(X, fast=True)
    assert twin.table is twin.table and twin.table.shape == (1000, 200)
    np.testing.assert_allclose(fast_mean, twin.table.predict(X)[0])
    assert np.max(np.abs(fast_mean - ref_mean)) < 0.01 * span
    with pytest.raises(InputError, match="members"):
        twin.predict(X, fast=True, return_members=True)


def test_fourier_encoding_roundtrips_and_warm_starts(data: pd.DataFrame, tmp_path) -> None:
    space = TwinSearchSpace(
        **{
            **TINY.to_dict(),
            "encodings": ["fourier"],
            "fourier_scale": [1.0, 2.0],
            "fourier_features": 8,
            "fourier_per_axis": True,
        }
    )
    twin = DigitalTwin.fit(data, ["T", "H"], "M", trials=2, seed=3, search_space=space, ensemble_size=2)
    params = twin.best_params
    assert params["encoding"] == "fourier" and params["fourier_features"] == 8
    # one scale per axis (T, H), each from the searched range
    assert len(params["fourier_scale"]) == 2 and all(1.0 <= v <= 2.0 for v in params["fourier_scale"])
    b = twin._models[0].fourier_b  # (members, axes, features): each axis' frequencies follow its scale
    assert b.shape[1:] == (2, 8)
    X = data[["T", "H"]].to_numpy()[::7]
    mean, std = twin.predict(X)
    loaded = DigitalTwin.load(twin.save(tmp_path / "fourier"))
    mean2, std2 = loaded.predict(X)
    # the random frequencies are part of the saved state, not redrawn on load
    np.testing.assert_allclose(mean2, mean, rtol=0, atol=1e-6)
    np.testing.assert_allclose(std2, std, rtol=0, atol=1e-6)
    refit = DigitalTwin.fit(data, trials=1, seed=4, warm_start=loaded, ensemble_size=2)
    first = refit.metadata["ensemble"][0]["params"]
    assert first["encoding"] == "fourier" and first["fourier_scale"] == pytest.approx(params["fourier_scale"])
    # the default ("auto") searches one scale shared by every axis on a small scan
    shared = TwinSearchSpace(**{**space.to_dict(), "fourier_per_axis": TwinSearchSpace().fourier_per_axis})
    one = DigitalTwin.fit(data, ["T", "H"], "M", trials=1, seed=3, search_space=shared, ensemble_size=1)
    assert isinstance(one.best_params["fourier_scale"], float)


def test_per_axis_fourier_scales_shape_the_frequencies() -> None:
    import torch

    from bluesky_twin.twin.network import BatchedMLP

    gen = torch.Generator().manual_seed(0)
    net = BatchedMLP(3, 2, 1, 2, 8, generator=gen, fourier_features=4000, fourier_scale=[10.0, 0.5])
    std = net.fourier_b.std(dim=(0, 2))
    assert std[0] == pytest.approx(10.0, rel=0.05) and std[1] == pytest.approx(0.5, rel=0.05)
    assert net.architecture[-1] == (10.0, 0.5)
    same = BatchedMLP(1, 2, 1, 2, 8, fourier_features=4, fourier_scale=[2.0, 2.0])
    assert same.fourier_scale == 2.0  # equal scales are one scale, as in older models
    with pytest.raises(ValueError, match="one value per input axis"):
        BatchedMLP(1, 2, 1, 2, 8, fourier_features=4, fourier_scale=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="fourier_scale > 0"):
        BatchedMLP(1, 2, 1, 2, 8, fourier_features=4, fourier_scale=[1.0, 0.0])


def test_search_folds_and_final_groups(data: pd.DataFrame) -> None:
    from bluesky_twin.twin import split_groups

    twin = DigitalTwin.fit(
        data, ["T", "H"], "M", trials=2, seed=1, search_space=TINY, ensemble_size=2, search_folds=1, jobs=2
    )
    assert "1-fold" in twin.metadata["selection"]
    assert twin.ensemble_size == 2
    with pytest.raises(InputError, match="search_folds"):
        DigitalTwin.fit(data, ["T", "H"], "M", trials=1, search_space=TINY, search_folds=0)
    # one configuration of 6 members over 2 threads: two groups of 3
    assert split_groups([("a", 6)], 2) == [("a", 3), ("a", 3)]
    assert split_groups([("a", 1), ("b", 1)], 4) == [("a", 1), ("b", 1)]
    assert split_groups([("a", 2), ("b", 2), ("c", 2)], 2) == [("a", 2), ("b", 2), ("c", 2)]
    from bluesky_twin.twin import LARGE_DATA_ROWS, group_count

    assert group_count(2, 6, 808) == 2  # small data: members batched per thread
    assert group_count(2, 6, LARGE_DATA_ROWS) == 6  # a large map: one member per group
    assert split_groups([("a", 2), ("b", 2), ("c", 2)], group_count(2, 6, 30_000)) == [
        ("a", 1),
        ("a", 1),
        ("b", 1),
        ("b", 1),
        ("c", 1),
        ("c", 1),
    ]


def test_budget_stops_the_search_in_time_for_the_final_ensemble(data: pd.DataFrame) -> None:
    twin = DigitalTwin.fit(data, ["T", "H"], "M", trials=500, budget=3.0, seed=0, search_space=TINY, ensemble_size=2)
    m = twin.metadata
    assert m["budget_seconds"] == 3.0
    assert m["n_trials_complete"] >= 1
    # far fewer than asked for: the budget, not the trial count, ended the search
    assert m["n_trials_complete"] + m["n_trials_pruned"] < 500
    with pytest.raises(InputError, match="budget"):
        DigitalTwin.fit(data, ["T", "H"], "M", trials=1, budget=0.0, search_space=TINY)


def test_budget_time_boxes_a_costly_final_ensemble(data: pd.DataFrame) -> None:
    from bluesky_twin.twin import MIN_FINAL_EPOCHS

    # a final ensemble of 20000 epochs cannot fit in 4 s: the search still gets its share
    # and the final members are shortened (schedule included) instead of blowing the budget
    costly = TwinSearchSpace(**{**TINY.to_dict(), "min_final_epochs": 20_000})
    twin = DigitalTwin.fit(data, ["T", "H"], "M", trials=500, budget=4.0, seed=0, search_space=costly, ensemble_size=2)
    m = twin.metadata
    assert 0 < m["final_epoch_scale"] < 0.5
    assert all(MIN_FINAL_EPOCHS <= e["epochs"] < 20_000 for e in m["ensemble"])
    assert m["n_trials_complete"] >= 1
    assert twin.score(data[["T", "H"]].to_numpy(), data["M"].to_numpy()) > 0.5
    plain = DigitalTwin.fit(data, ["T", "H"], "M", trials=2, seed=0, search_space=TINY, ensemble_size=1)
    assert plain.metadata["final_epoch_scale"] == 1.0  # no budget: the full schedule


def test_final_ensemble_cost_estimate_from_trial_speed() -> None:
    import optuna

    from bluesky_twin.twin import estimate_final_seconds

    space = TwinSearchSpace(
        n_layers=(2, 3),
        n_units=(16, 32),
        batch_size=(10, 100),
        max_steps_per_epoch=0,
        min_final_epochs=100,
        encodings=("raw",),
    )
    study = optuna.create_study()
    assert estimate_final_seconds(study, space, 4, 2, 1, n_train=200, n_all=300) == 0.0
    dist = trial_distributions(units=(16, 32), batch=(10, 100))
    for value, best_epoch in ((1.0, 300), (1.2, 50), (9.0, 400)):
        study.add_trial(
            optuna.trial.create_trial(
                params={
                    "n_layers": 2,
                    "n_units": 16,
                    "batch_size": 100,
                    "lr": 1e-3,
                    "weight_decay": 1e-6,
                    "activation": "tanh",
                },
                distributions=dist,
                value=value,
                user_attrs={"best_epoch": best_epoch, "seconds_per_member_epoch": 0.01},
            )
        )
    # top 2 within 1.5x of the best (the third is not): 2 members each, epochs max(best, 100),
    # an epoch on 300 rows is 3 steps of 100 against 2 on 200 rows: x 1.5
    expected = 2 * 300 * 0.01 * 1.5 + 2 * 100 * 0.01 * 1.5
    assert estimate_final_seconds(study, space, 4, 2, 1, n_train=200, n_all=300) == pytest.approx(expected)
    # two threads: one group each, so the longer group (the first configuration) sets the time
    assert estimate_final_seconds(study, space, 4, 2, 2, n_train=200, n_all=300) == pytest.approx(2 * 300 * 0.01 * 1.5)
    # three equal groups on two threads take two groups' time
    three = optuna.create_study()
    for value in (1.0, 1.1, 1.2):
        three.add_trial(
            optuna.trial.create_trial(
                params={
                    "n_layers": 2,
                    "n_units": 16,
                    "batch_size": 100,
                    "lr": 1e-3,
                    "weight_decay": 1e-6,
                    "activation": "tanh",
                },
                distributions=dist,
                value=value,
                user_attrs={"best_epoch": 100, "seconds_per_member_epoch": 0.01},
            )
        )
    group = 2 * 100 * 0.01 * 1.5
    assert estimate_final_seconds(three, space, 6, 3, 2, n_train=200, n_all=300) == pytest.approx(2 * group)


def test_temporary_study_journal_is_removed_with_the_twin(data: pd.DataFrame, tmp_path) -> None:
    import gc

    twin = DigitalTwin.fit(data, ["T", "H"], "M", trials=1, seed=0, search_space=TINY, ensemble_size=1)
    journal = twin._journal
    assert journal is not None and journal.exists()
    saved = twin.save(tmp_path / "m")
    del twin
    gc.collect()
    assert not journal.parent.exists()  # no stray study directories in the temp dir
    assert (current_path(saved) / "optuna.journal").exists()  # the saved copy stays


def test_training_precision_is_resolved_and_recorded(data: pd.DataFrame, monkeypatch) -> None:
    from bluesky_twin.twin import training
    from bluesky_twin.twin.training import resolve_precision

    assert resolve_precision("float32", 10**6, 10_000) == "float32"
    assert resolve_precision("bfloat16", 10, 10_000) == "bfloat16"
    assert resolve_precision("auto", 9_999, 10_000) == "float32"  # small data: overhead-bound
    monkeypatch.setattr(training, "native_bfloat16", lambda: True)
    assert resolve_precision("auto", 10_000, 10_000) == "bfloat16"
    monkeypatch.setattr(training, "native_bfloat16", lambda: False)
    assert resolve_precision("auto", 10**6, 10_000) == "float32"  # emulated bf16 would be slower
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("float16", 10, 10_000)
    with pytest.raises(InputError, match="precision"):
        DigitalTwin.fit(data, ["T", "H"], "M", trials=1, search_space=TwinSearchSpace(precision="half"))
    twin = DigitalTwin.fit(
        data,
        ["T", "H"],
        "M",
        trials=1,
        seed=0,
        ensemble_size=1,
        search_space=TwinSearchSpace(**{**TINY.to_dict(), "precision": "bfloat16"}),
    )
    assert twin.metadata["training_precision"] == "bfloat16"
    assert twin.metadata["search_space"]["precision"] == "bfloat16"
    assert all(p.dtype.is_floating_point and p.dtype.itemsize == 4 for p in twin._models.parameters())


def test_bfloat16_training_learns_like_float32() -> None:
    import torch

    from bluesky_twin.twin.network import BatchedMLP
    from bluesky_twin.twin.training import train_members

    gen = torch.Generator().manual_seed(0)
    X = torch.rand(2000, 2, generator=gen) * 2 - 1
    y = torch.sin(3 * X[:, :1]) * torch.cos(2 * X[:, 1:])
    idx = torch.arange(1500)
    val = torch.arange(1500, 2000)
    losses = {}
    for precision in ("float32", "bfloat16"):
        net = BatchedMLP(2, 2, 1, 3, 64, activation="silu", generator=torch.Generator().manual_seed(1))
        res = train_members(
            net,
            X,
            y,
            [idx, idx],
            [val, val],
            lr=3e-3,
            batch_size=128,
            max_epochs=60,
            generator=torch.Generator().manual_seed(2),
            precision=precision,
        )
        losses[precision] = res.best_val_loss
        assert all(p.dtype == torch.float32 for p in net.parameters())
    var = float(y[val].var())
    # both learn the function (a constant would score ~var), and bf16 costs little accuracy
    assert losses["float32"] < 0.02 * var and losses["bfloat16"] < 0.04 * var
    with pytest.raises(ValueError, match="precision"):
        train_members(
            BatchedMLP(1, 2, 1, 2, 8), X, y, [idx], None, lr=1e-3, batch_size=64, max_epochs=1, precision="float16"
        )


def test_final_step_cap_is_used_by_the_cost_estimate() -> None:
    import optuna

    from bluesky_twin.twin import estimate_final_seconds

    dist = {
        "n_layers": optuna.distributions.IntDistribution(2, 3),
        "batch_size": optuna.distributions.IntDistribution(10, 1024),
    }
    study = optuna.create_study()
    study.add_trial(
        optuna.trial.create_trial(
            params={"n_layers": 2, "batch_size": 1024},
            distributions=dist,
            value=1.0,
            user_attrs={"best_epoch": 10, "seconds_per_member_epoch": 0.01},
        )
    )
    capped = TwinSearchSpace(max_steps_per_epoch=8, min_final_epochs=100, encodings=("raw",))
    passes = TwinSearchSpace(max_steps_per_epoch=8, min_final_epochs=100, encodings=("raw",), final_steps_per_epoch=0)
    # a search epoch is 8 steps of 1024; a final full pass over 30000 rows is 30 steps
    one = estimate_final_seconds(study, capped, 1, 1, 1, n_train=20_000, n_all=30_000)
    assert one == pytest.approx(100 * 0.01)
    assert estimate_final_seconds(study, passes, 1, 1, 1, n_train=20_000, n_all=30_000) == pytest.approx(one * 30 / 8)
    # with the optimiser steps timed alone (no validation pass), those are what count
    study.add_trial(
        optuna.trial.create_trial(
            params={"n_layers": 3, "batch_size": 1024},
            distributions=dist,
            value=0.9,
            user_attrs={"best_epoch": 10, "seconds_per_member_epoch": 0.05, "seconds_per_member_step": 0.001},
        )
    )
    assert estimate_final_seconds(study, passes, 1, 1, 1, n_train=20_000, n_all=30_000) == pytest.approx(
        100 * 30 * 0.001
    )
    # a trial that needed 500 search epochs of 8 steps gets as many steps in full passes:
    # ceil(500 * 8 / 30) = 134 epochs, not 500 (and the capped final keeps its 500 epochs)
    from bluesky_twin.twin import final_epochs

    long = optuna.trial.create_trial(
        params={"n_layers": 2, "batch_size": 1024}, distributions=dist, value=1.0, user_attrs={"best_epoch": 500}
    )
    assert final_epochs(long, passes, False, 8, 30) == 134
    assert final_epochs(long, capped, False, 8, 8) == 500
    assert final_epochs(long, passes, True, 8, 300) == passes.min_final_epochs // 3  # warm floor
    space = TwinSearchSpace(max_steps_per_epoch=8)
    assert space.final_step_cap == 8
    full = TwinSearchSpace(max_steps_per_epoch=8, final_steps_per_epoch=0)
    assert full.final_step_cap == 0
    back = TwinSearchSpace.from_dict(json.loads(json.dumps(full.to_dict())))
    assert back.final_step_cap == 0 and back.precision == "auto"
    # metadata written before these fields existed loads with the defaults
    old = {k: v for k, v in space.to_dict().items() if k not in ("final_steps_per_epoch", "precision")}
    assert TwinSearchSpace.from_dict(old).final_step_cap == 8


def test_search_space_defaults_settle_with_the_data_size() -> None:
    auto = TwinSearchSpace()
    small = auto.resolved(808, 10_000)
    large = auto.resolved(29_977, 10_000)
    assert small.fourier_per_axis is False and large.fourier_per_axis is True
    # the final ensemble keeps the search's epochs (chosen on held-out lines) at every size
    assert small.final_step_cap == large.final_step_cap == auto.max_steps_per_epoch
    assert small.precision == "float32" and large.precision in ("float32", "bfloat16")
    assert small.min_final_epochs == large.min_final_epochs == 150
    assert auto.fourier_per_axis == "auto" and auto.final_steps_per_epoch is None  # the input is not changed
    explicit = TwinSearchSpace(fourier_per_axis=False, final_steps_per_epoch=4, precision="float32")
    kept = explicit.resolved(10**6, 10_000)
    assert (kept.fourier_per_axis, kept.final_step_cap, kept.precision) == (False, 4, "float32")
    with pytest.raises(ValueError, match="fourier_per_axis"):
        TwinSearchSpace(fourier_per_axis="yes").resolved(10, 10_000)


def test_small_scans_search_narrower_networks_and_record_the_widths_searched() -> None:
    auto = TwinSearchSpace()
    small, medium, large = (auto.resolved(n, 10_000) for n in (808, 2737, 29_977))
    assert small.n_units == (50, 128)
    assert medium.n_units == large.n_units == (50, 200)  # the paper's widths from small_data_rows on
    # the recorded space is settled: read back (a warm start, a worker) it searches the same widths
    for resolved in (small, medium, large):
        assert resolved.small_data_max_units is None
        back = TwinSearchSpace.from_dict(json.loads(json.dumps(resolved.to_dict())))
        assert back.resolved(808, 10_000).n_units == resolved.n_units
    assert TwinSearchSpace(small_data_rows=3000).resolved(2737, 10_000).n_units == (50, 128)
    # a twin saved before the cap existed keeps the widths it searched
    old = {k: v for k, v in TwinSearchSpace().to_dict().items() if k != "small_data_max_units"}
    assert TwinSearchSpace.from_dict(old).resolved(808, 10_000).n_units == (50, 200)
    assert TwinSearchSpace(small_data_max_units=None).resolved(808, 10_000).n_units == (50, 200)
    assert TwinSearchSpace(n_units=(8, 32), small_data_max_units=16).resolved(808, 10_000).n_units == (8, 16)
    assert TwinSearchSpace(small_data_max_units=40).resolved(808, 10_000).n_units == (40, 40)
    with pytest.raises(ValueError, match="small_data_max_units"):
        TwinSearchSpace(small_data_max_units=0).resolved(808, 10_000)
    with pytest.raises(ValueError, match="small_data_rows"):
        TwinSearchSpace(small_data_rows=-1).resolved(808, 10_000)


# ---------------------------------------------------------------------- the split modules' public names
def test_fit_config_checks_every_option_once() -> None:
    from bluesky_twin.twin import DEFAULT_TRIALS, DEFAULT_WARM_TRIALS, LARGE_DATA_ROWS, FitConfig

    config = FitConfig(trials=8, budget=60.0, jobs=2, seed=3)
    assert config.trial_count(warm_start=False) == 8 and config.search_seconds() == 60.0
    assert FitConfig().trial_count(warm_start=False) == DEFAULT_TRIALS
    assert FitConfig().trial_count(warm_start=True) == DEFAULT_WARM_TRIALS
    assert FitConfig(timeout=5.0, budget=9.0).search_seconds() == 5.0
    assert FitConfig().search_seconds() == float("inf")
    assert FitConfig().folds_to_search(3, LARGE_DATA_ROWS - 1) == 3
    assert FitConfig().folds_to_search(3, LARGE_DATA_ROWS) == 1
    assert FitConfig(search_folds=2).folds_to_search(3, LARGE_DATA_ROWS) == 2
    with pytest.raises(AttributeError):
        config.trials = 1  # frozen: checked once, never changed
    bad = [
        ({"trials": 0}, "trials"),
        ({"trials": 2.5}, "trials"),
        ({"jobs": 0}, "jobs"),
        ({"budget": 0.0}, "budget"),
        ({"budget": float("nan")}, "budget"),
        ({"timeout": -1}, "timeout"),
        ({"ensemble_size": 0}, "ensemble_size"),
        ({"top_k": 0}, "top_k"),
        ({"n_folds": 0}, "n_folds"),
        ({"search_folds": 0}, "search_folds"),
        ({"seed": -1}, "seed"),
        ({"seed": 2**32}, "seed"),
        ({"seed": None}, "seed"),
        ({"storage": 3}, "storage"),
        ({"study_name": 1}, "study_name"),
    ]
    for kwargs, field in bad:
        with pytest.raises(InputError, match=field):
            FitConfig(**kwargs)


def test_fit_refuses_bad_options_before_reading_the_data(tmp_path) -> None:
    missing = tmp_path / "missing.csv"  # never opened: the options are checked first
    for kwargs, field in (({"seed": -1}, "seed"), ({"timeout": 0}, "timeout"), ({"jobs": 0}, "jobs")):
        with pytest.raises(InputError, match=field):
            DigitalTwin.fit(missing, ["T", "H"], "M", search_space=TINY, **kwargs)


def test_plan_ensemble_deals_members_to_the_best_configurations() -> None:
    from types import SimpleNamespace

    from bluesky_twin.twin import TOP_K_SCORE_RATIO, plan_ensemble

    trials = [SimpleNamespace(value=v) for v in (1.3, 1.0, 9.0, 1.2)]
    chosen, shares = plan_ensemble(trials, 5, 3)
    assert [t.value for t in chosen] == [1.0, 1.2, 1.3] and shares == [2, 2, 1]
    chosen, shares = plan_ensemble(trials, 2, 3)  # never more configurations than members
    assert [t.value for t in chosen] == [1.0, 1.2] and shares == [1, 1]
    chosen, shares = plan_ensemble(trials, 6, 4)  # the fourth is more than TOP_K_SCORE_RATIO worse
    assert all(t.value <= TOP_K_SCORE_RATIO * 1.0 for t in chosen) and sum(shares) == 6 and len(chosen) == 3


def test_train_ensemble_is_seeded_and_grouped() -> None:
    import optuna
    import torch

    from bluesky_twin.twin import MIN_FINAL_EPOCHS, train_ensemble

    dist = trial_distributions(units=(8, 16), batch=(16, 64))
    complete = [
        optuna.trial.create_trial(
            params={
                "n_layers": 2,
                "n_units": n,
                "batch_size": 32,
                "lr": 5e-3,
                "weight_decay": 1e-6,
                "activation": "tanh",
            },
            distributions=dist,
            value=value,
            user_attrs={"best_epoch": 3},
        )
        for n, value in ((8, 1.0), (16, 1.1))
    ]
    for i, t in enumerate(complete):
        t.number = i
    space = TwinSearchSpace(
        n_layers=(2, 3), n_units=(8, 16), batch_size=(16, 64), encodings=("raw",), min_final_epochs=30
    )
    gen = torch.Generator().manual_seed(0)
    X = torch.rand(120, 2, generator=gen)
    y = X[:, :1] ** 2
    kw = dict(n_train=80, seed=4, ensemble_size=3, top_k=2, jobs=2)
    models, entries = train_ensemble(complete, space, X, y, **kw)
    again, _ = train_ensemble(complete, space, X, y, **kw)
    assert [(e["trial"], e["members"], e["epochs"]) for e in entries] == [(0, 2, 30), (1, 1, 30)]
    assert sum(m.members for m in models) == 3
    for a, b in zip(models.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)  # each group has its own seeded generator: thread timing does not matter
    _, short = train_ensemble(complete, space, X, y, **kw, epoch_scale=0.1)
    assert all(e["epochs"] == MIN_FINAL_EPOCHS for e in short)  # the time box keeps a floor


def test_the_tabulated_copy_takes_any_twin(twin: DigitalTwin) -> None:
    from bluesky_twin.protocols import CorrectedTwin, Twin
    from bluesky_twin.twin import TabulatedTwin

    assert isinstance(twin, Twin) and isinstance(twin, CorrectedTwin)
    table = twin.tabulate((50, 20))
    assert isinstance(table, Twin) and not isinstance(table, CorrectedTwin)

    class Plane:  # any Twin can be tabulated, not only a DigitalTwin
        x_names = ["a", "b"]
        y_name = "z"
        x_range = np.array([[0.0, 1.0], [0.0, 2.0]])
        version = "plane"

        def predict(self, X):
            X = np.asarray(X, dtype=float)
            return X[:, 0] + 2 * X[:, 1], np.full(len(X), 0.1)

    tab = TabulatedTwin(Plane(), (20, 20))
    assert isinstance(Plane(), Twin) and tab.version == "plane-tab20x20"
    np.testing.assert_allclose(tab.predict([[0.5, 1.0]])[0], [2.5], atol=1e-9)


def test_model_module_keeps_the_old_names() -> None:
    import bluesky_twin.twin as package
    from bluesky_twin.twin import model

    for name in (
        "DigitalTwin",
        "Scaler",
        "FORMAT",
        "FORMAT_VERSION",
        "METADATA_FILE",
        "WEIGHTS_FILE",
        "JOURNAL_FILE",
        "LINE_RESIDUAL_FILE",
        "DEFAULT_ENSEMBLE_SIZE",
        "DEFAULT_TOP_K",
        "LARGE_DATA_ROWS",
        "MIN_FINAL_EPOCHS",
        "TOP_K_SCORE_RATIO",
        "MIN_SEARCH_SHARE",
        "DEFAULT_WARM_TRIALS",
        "MAX_AXES",
        "MAX_ENSEMBLE_MEMBERS",
        "MAX_LAYERS",
        "MAX_UNITS",
        "MAX_PARAMETERS",
        "as_points",
    ):
        assert hasattr(model, name), name
    assert model.DigitalTwin is package.DigitalTwin
    assert set(package.__all__) <= set(dir(package))
