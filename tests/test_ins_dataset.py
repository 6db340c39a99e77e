"""Paired INS datasets, persistence, OOD controls and the shared preprocessing."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from bluesky_twin.errors import InputError
from bluesky_twin.ins import (
    InsDataset,
    digits_control,
    generate_dataset,
    near_domain_control,
    preprocess_frames,
)


@pytest.fixture(scope="module")
def small_cut() -> InsDataset:
    return generate_dataset(40, seed=1, size=32)


def test_classes_balanced_and_parameters_in_range(small_cut: InsDataset) -> None:
    ds = small_cut
    assert len(ds) == 40 and ds.labels.sum() == 20
    assert ds.unconvolved.shape == ds.convolved.shape == (40, 32, 32)
    assert ds.unconvolved.dtype == ds.convolved.dtype == np.float32
    j1, j2 = ds.params["J1"], ds.params["J2"]
    np.testing.assert_array_equal(ds.labels, (j2 > 0).astype(np.int64))
    assert np.all((j1 >= 0.3) & (j1 <= 1.0))
    assert np.all((np.abs(j2) >= 0.02) & (np.abs(j2) <= 0.2))
    assert np.all(j2 < 0.4 * j1)
    assert not np.isnan(ds.unconvolved).any() and np.isnan(ds.convolved).any()
    assert set(ds.params) >= {"J1", "J2", "e_init", "temperature", "counts_scale"}
    assert np.all((ds.params["counts_scale"] >= 30) & (ds.params["counts_scale"] <= 300))
    assert ds.axes["names"] == ("E", "h") and ds.axes["x"].shape == (32,)
    odd = generate_dataset(7, seed=2, size=16)
    assert odd.labels.sum() in (3, 4)


def test_reproducible_by_seed_and_independent_of_workers(small_cut: InsDataset) -> None:
    again = generate_dataset(40, seed=1, size=32, n_workers=2)
    np.testing.assert_array_equal(again.unconvolved, small_cut.unconvolved)
    np.testing.assert_array_equal(again.convolved, small_cut.convolved)
    other = generate_dataset(40, seed=2, size=32)
    assert not np.array_equal(other.params["J1"], small_cut.params["J1"])


def test_powder_dataset_masks_follow_coverage() -> None:
    ds = generate_dataset(4, seed=0, geometry="powder", size=32)
    assert ds.axes["names"] == ("E", "|Q|")
    nan = np.isnan(ds.convolved)
    assert nan[:, -1, 0].all() and not nan[:, 0, -1].any()  # high E low Q masked, low E high Q measured


def test_save_load_roundtrip(small_cut: InsDataset, tmp_path: Path) -> None:
    path = small_cut.save(tmp_path / "ds.npz")
    back = InsDataset.load(path)
    np.testing.assert_array_equal(back.convolved, small_cut.convolved)
    np.testing.assert_array_equal(back.unconvolved, small_cut.unconvolved)
    np.testing.assert_array_equal(back.labels, small_cut.labels)
    for key, value in small_cut.params.items():
        np.testing.assert_array_equal(back.params[key], value)
    assert back.axes["names"] == small_cut.axes["names"]
    np.testing.assert_array_equal(back.axes["y_edges"], small_cut.axes["y_edges"])
    assert back.geometry == "cut" and back.seed == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ds.npz"]  # no temp files left


def test_corrupt_or_mismatched_files_raise(small_cut: InsDataset, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip file at all")
    with pytest.raises(InputError, match="not a readable INS dataset"):
        InsDataset.load(garbage)
    good = small_cut.save(tmp_path / "good.npz")
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(InputError):
        InsDataset.load(truncated)
    other = tmp_path / "other.npz"
    np.savez(other, labels=np.zeros(3))
    with pytest.raises(InputError, match="missing arrays"):
        InsDataset.load(other)
    with np.load(good) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["labels"] = arrays["labels"][:-1]
    mismatched = tmp_path / "mismatched.npz"
    np.savez(mismatched, **arrays)
    with pytest.raises(InputError, match="inconsistent"):
        InsDataset.load(mismatched)
    arrays["labels"] = np.array([object()] * 3, dtype=object)
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, **arrays)
    with pytest.raises(InputError):
        InsDataset.load(pickled)  # object arrays need pickle: refused
    with pytest.raises(InputError, match="does not exist"):
        InsDataset.load(tmp_path / "nope.npz")
    assert zipfile.is_zipfile(good)


def test_generate_rejects_bad_arguments() -> None:
    with pytest.raises(InputError, match="n must be"):
        generate_dataset(0)
    with pytest.raises(InputError, match="geometry"):
        generate_dataset(4, geometry="slice")
    with pytest.raises(InputError, match="n_workers"):
        generate_dataset(4, n_workers=0)
    with pytest.raises(InputError, match="unknown recipe"):
        generate_dataset(4, bogus=1)


def test_out_of_distribution_controls() -> None:
    stripe = near_domain_control(6, seed=0, size=32)
    assert stripe.shape == (6, 32, 32) and np.isnan(stripe).any()
    clean = near_domain_control(6, seed=0, size=32, experiment_like=False)
    assert np.isfinite(clean).all()
    neel = generate_dataset(6, seed=0, size=32).unconvolved
    # stripe-phase spectra sit much lower in energy than the Neel ones along (h, 1/2)
    rows = np.arange(32)[None, :, None]
    mean_row = lambda f: (f * rows).sum((1, 2)) / f.sum((1, 2))  # noqa: E731
    assert mean_row(clean).mean() < mean_row(neel).mean() - 3
    digits = digits_control(2000, size=48, seed=0)
    assert digits.shape == (2000, 48, 48) and digits.dtype == np.float32
    assert digits.min() >= 0 and digits.max() <= 1 and digits.max() > 0.9
    np.testing.assert_array_equal(digits_control(3, 48, 5), digits_control(3, 48, 5))


def test_preprocess_frames(small_cut: InsDataset) -> None:
    x, mask = preprocess_frames(small_cut.convolved, return_mask=True)
    assert x.dtype == np.float32 and x.shape == small_cut.convolved.shape
    assert np.isfinite(x).all() and x.min() >= 0 and x.max() <= 1
    np.testing.assert_array_equal(mask, np.isfinite(small_cut.convolved))
    assert np.all(x[~mask] == 0)
    plain = preprocess_frames(small_cut.unconvolved)
    assert isinstance(plain, np.ndarray) and plain.shape == (40, 32, 32)
    # monotonic, and renormalise makes it insensitive to the overall scale
    ramp = np.linspace(0, 5, 64).reshape(8, 8)
    assert np.all(np.diff(preprocess_frames(ramp).ravel()) >= 0)
    np.testing.assert_allclose(
        preprocess_frames(3.7 * small_cut.convolved, renormalise=True),
        preprocess_frames(small_cut.convolved, renormalise=True),
        atol=1e-5,
    )
    with pytest.raises(InputError, match="infinite"):
        preprocess_frames(np.full((2, 8, 8), np.inf))
    with pytest.raises(InputError, match="shape"):
        preprocess_frames(np.zeros(5))
