"""Pooled restarts: independent seeded searches whose ensembles form one twin."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_twin import TINY, scan_frame

from bluesky_twin.errors import InputError
from bluesky_twin.twin import DigitalTwin, FitConfig


def _fit(seed: int, restarts: int = 1) -> DigitalTwin:
    return DigitalTwin.fit(
        scan_frame(),
        ["T", "H"],
        "M",
        trials=3,
        seed=seed,
        jobs=2,
        search_space=TINY,
        ensemble_size=2,
        top_k=1,
        restarts=restarts,
    )


def _weights(twin: DigitalTwin) -> list[torch.Tensor]:
    return [v for m in twin._models for v in m.state_dict().values()]


def test_restart_seeds_start_with_the_seed_and_are_independent_between_seeds() -> None:
    a, b = FitConfig(seed=0, restarts=5).restart_seeds(), FitConfig(seed=1, restarts=5).restart_seeds()
    assert a[0] == 0 and b[0] == 1
    assert len(set(a)) == 5 and not set(a) & set(b)
    assert all(0 <= s < 2**32 for s in a + b)
    assert FitConfig(seed=0, restarts=5).restart_seeds() == a  # a function of the seed alone
    assert FitConfig(seed=3).restart_seeds() == [3]


@pytest.mark.parametrize(
    "options, message",
    [
        ({"restarts": 0}, "restarts must be >= 1"),
        ({"restarts": 2, "budget": 10.0}, "budget"),
        ({"restarts": 2, "timeout": 10.0}, "timeout"),
        ({"restarts": 2, "storage": "journal:/tmp/x.log"}, "storage"),
    ],
)
def test_restarts_refuse_a_clock_or_a_named_study(options, message) -> None:
    with pytest.raises(InputError, match=message):
        FitConfig(**options)


def test_pooled_twin_is_the_restarts_ensembles_together(tmp_path) -> None:
    pooled = _fit(seed=4, restarts=3)
    seeds = FitConfig(seed=4, restarts=3).restart_seeds()
    alone = [_fit(seed=s) for s in seeds]
    m = pooled.metadata
    assert m["restarts"] == 3 and m["restart_seeds"] == seeds and m["seed"] == 4
    assert pooled.ensemble_size == 6 == m["ensemble_size"]
    assert [e["restart"] for e in m["ensemble"]] == [i for i, t in enumerate(alone) for _ in t.metadata["ensemble"]]
    assert m["n_trials_complete"] == sum(t.metadata["n_trials_complete"] for t in alone)
    best = int(np.argmin([t.metadata["selection_score"] for t in alone]))
    assert m["best_restart"] == best and m["best_params"] == alone[best].metadata["best_params"]
    # the pool holds exactly the networks each restart trains alone, and predicts their mean
    for got, want in zip(_weights(pooled), [w for t in alone for w in _weights(t)]):
        assert torch.equal(got, want)
    X = scan_frame(seed=9)[["T", "H"]].to_numpy()
    members = np.vstack([t.predict(X, return_members=True) for t in alone])
    np.testing.assert_allclose(pooled.predict(X)[0], members.mean(axis=0), rtol=1e-6, atol=1e-9)
    # the first restart is the plain fit of the seed
    assert alone[0].version.split("-")[1] == _fit(seed=4).version.split("-")[1]
    # a pooled twin is saved and loaded like any other, and refits from a warm start
    loaded = DigitalTwin.load(pooled.save(tmp_path / "pooled"))
    assert loaded.metadata["restart_seeds"] == seeds and loaded.version == pooled.version
    np.testing.assert_allclose(loaded.predict(X)[0], pooled.predict(X)[0], rtol=1e-6)
    refit = DigitalTwin.fit(scan_frame(seed=2), warm_start=loaded, trials=2, jobs=2, ensemble_size=2, restarts=2)
    assert refit.metadata["refit_count"] == 1 and refit.ensemble_size == 4


def test_pooled_fit_is_reproducible_and_names_each_restarts_study() -> None:
    a, b = _fit(seed=6, restarts=2), _fit(seed=6, restarts=2)
    assert a.version == b.version
    named = DigitalTwin.fit(
        scan_frame(), ["T", "H"], "M", trials=2, seed=6, search_space=TINY, ensemble_size=1, restarts=2, study_name="s"
    )
    assert named.metadata["study_name"] in ("s", "s-r1")
    assert all(torch.equal(x, y) for x, y in zip(_weights(a), _weights(b)))
