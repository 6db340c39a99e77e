"""Domain-of-applicability score: Sinkhorn via POT, ordering, calibration, zones."""

from __future__ import annotations

import numpy as np
import pytest

from bluesky_twin.gan.domain import DomainScorer, Thresholds, zone_of


def _features(n, shift, dim=64, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, dim)) + shift).astype(np.float32)


@pytest.fixture(scope="module")
def scorer():
    return DomainScorer(_features(120, 0.0, seed=1), n_repeats=200, frame_repeats=200, seed=0)


def test_single_frame_sinkhorn_equals_mean_cost(scorer):
    """With one target point the transport plan is forced: POT's value is the mean cost."""
    f = _features(3, 0.5, seed=2)
    rep = scorer.frame_score_repeats(f)
    d = scorer.sqdist(f)
    expected = d[:, scorer._frame_idx].mean(axis=2)
    np.testing.assert_allclose(rep, expected, rtol=1e-4)
    # and it estimates the mean squared distance to the whole bank
    np.testing.assert_allclose(scorer.frame_scores(f), d.mean(axis=1), rtol=0.05)


def test_scores_order_train_near_far(scorer):
    train = _features(60, 0.0, seed=3)
    near = _features(60, 0.5, seed=4)
    far = _features(60, 3.0, seed=5)
    f = [scorer.frame_scores(x).mean() for x in (train, near, far)]
    s = [scorer.set_distribution(x, seed=7).mean() for x in (train, near, far)]
    assert f[0] < f[1] < f[2]
    assert s[0] < s[1] < s[2]
    # a set score is an OT cost: never above the mean pairwise cost of the same subsets
    assert s[0] < f[0]


def test_set_distribution_is_seeded(scorer):
    x = _features(40, 0.2, seed=6)
    a = scorer.set_distribution(x, seed=1, n_repeats=50)
    assert a.shape == (50,)
    np.testing.assert_array_equal(a, scorer.set_distribution(x, seed=1, n_repeats=50))
    assert not np.array_equal(a, scorer.set_distribution(x, seed=2, n_repeats=50))


def test_calibration_thresholds_and_zones(scorer):
    info = scorer.calibrate(_features(60, 0.0, seed=8), _features(60, 3.0, seed=9))
    for level in ("frame", "set"):
        t = scorer.thresholds[level]
        assert t.trustworthy < t.untrustworthy
        assert not info[level]["overlap"]
    zones = scorer.frame_zones(
        scorer.frame_scores(np.concatenate([_features(5, 0.0, seed=10), _features(5, 3.0, seed=11)]))
    )
    assert zones[:5].count("trustworthy") >= 4
    assert zones[5:] == ["untrustworthy"] * 5
    assert scorer.set_summary(_features(40, 3.0, seed=12), n_repeats=50)["zone"] == "untrustworthy"
    assert scorer.set_summary(_features(40, 0.0, seed=13), n_repeats=50)["zone"] == "trustworthy"


def test_settings_roundtrip(scorer):
    scorer.calibrate(_features(40, 0.0, seed=14), _features(40, 3.0, seed=15))
    again = DomainScorer.from_settings(scorer.bank, scorer.settings())
    f = _features(4, 1.0, seed=16)
    np.testing.assert_allclose(again.frame_scores(f), scorer.frame_scores(f))
    assert again.thresholds == scorer.thresholds


def test_zone_of_edges():
    t = Thresholds(1.0, 2.0)
    assert [t.zone(v) for v in (0.5, 1.0, 1.5, 2.0, np.nan)] == [
        "trustworthy",
        "trustworthy",
        "expert opinion",
        "untrustworthy",
        "untrustworthy",
    ]
    assert zone_of(5.0, 1.0, 1.0) == "untrustworthy"


def test_overlapping_controls_leave_no_expert_zone():
    s = DomainScorer(_features(40, 0.0, seed=17), n_repeats=50, frame_repeats=50)
    info = s.calibrate(_features(40, 0.0, seed=18), _features(40, 0.0, seed=19))
    assert info["frame"]["overlap"]
    assert s.thresholds["frame"].trustworthy == s.thresholds["frame"].untrustworthy


def test_bank_too_small():
    with pytest.raises(ValueError, match="bank"):
        DomainScorer(_features(5, 0.0))
