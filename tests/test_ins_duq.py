"""DUQ classifier of INS frames: learning sign(J2), uncertainty, persistence."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from bluesky_twin.errors import InputError, ModelFileError  # noqa: E402
from bluesky_twin.ins import DUQClassifier, InsDataset, digits_control, generate_dataset  # noqa: E402
from bluesky_twin.modeldir import current_path

SIZE = 32


@pytest.fixture(scope="module")
def data() -> InsDataset:
    return generate_dataset(560, seed=11, size=SIZE)


@pytest.fixture(scope="module")
def fitted(data: InsDataset) -> DUQClassifier:
    train = data.subset(slice(0, 400))
    return DUQClassifier().fit(train.unconvolved, train.labels, epochs=6, batch_size=32, seed=0, num_threads=1)


def test_learns_sign_of_j2_on_unconvolved_cuts(fitted: DUQClassifier, data: InsDataset) -> None:
    test = data.subset(slice(400, None))
    accuracy = fitted.score(test.unconvolved, test.labels)
    assert accuracy > 0.8, accuracy  # chance is 0.5
    proba = fitted.predict_proba(test.unconvolved)
    assert proba.shape == (len(test), 2) and proba.dtype == np.float32
    assert proba.min() >= 0 and proba.max() <= 1
    np.testing.assert_array_equal(fitted.predict(test.unconvolved), proba.argmax(1))
    assert len(fitted.history.loss) == 6 and fitted.history.loss[-1] < fitted.history.loss[0]
    # NaN-masked experiment-like frames are accepted (filled, not propagated)
    assert np.isfinite(fitted.predict_proba(test.convolved)).all()


def test_far_out_of_distribution_inputs_get_low_certainty(fitted: DUQClassifier, data: InsDataset) -> None:
    in_dist = fitted.certainty(data.subset(slice(400, None)).unconvolved)
    digits = fitted.certainty(digits_control(100, SIZE, seed=0))
    assert np.median(digits) < np.median(in_dist)


def test_save_load_roundtrip_and_corruption(
    fitted: DUQClassifier, data: InsDataset, tmp_path: Path, reseal_model
) -> None:
    frames = data.unconvolved[400:440]
    root = fitted.save(tmp_path / "duq")
    model_dir = current_path(root)
    loaded = DUQClassifier.load(root)
    np.testing.assert_allclose(loaded.predict_proba(frames), fitted.predict_proba(frames), atol=1e-6)
    assert loaded.input_shape == (SIZE, SIZE) and loaded.config == fitted.config
    meta = json.loads((model_dir / "metadata.json").read_text())
    assert meta["format"] == "bluesky-twin-duq" and len(meta["files"]["model.pt"]) == 64

    weights = model_dir / "model.pt"
    good = weights.read_bytes()
    weights.write_bytes(good[: len(good) // 2])
    with pytest.raises(ModelFileError, match="checksum"):
        DUQClassifier.load(root)
    weights.write_bytes(good)
    (model_dir / "metadata.json").write_text("{not json")
    with pytest.raises(ModelFileError, match="JSON"):
        DUQClassifier.load(root)
    meta_bad = dict(meta, config=dict(meta["config"], channels=[4, 4, 4, 4]))
    (model_dir / "metadata.json").write_text(json.dumps(meta_bad))
    reseal_model(root)  # a crafted directory with consistent checksums
    with pytest.raises(ModelFileError, match="cannot load"):
        DUQClassifier.load(root)
    with pytest.raises(ModelFileError, match="not found"):
        DUQClassifier.load(tmp_path / "missing")


def test_bad_inputs(fitted: DUQClassifier, data: InsDataset) -> None:
    with pytest.raises(InputError, match="trained on"):
        fitted.predict(np.zeros((2, 16, 16), np.float32))
    with pytest.raises(InputError, match="not fitted"):
        DUQClassifier().predict(data.unconvolved[:2])
    with pytest.raises(InputError, match="two classes"):
        DUQClassifier().fit(data.unconvolved[:4], np.zeros(4, np.int64), epochs=1)
    with pytest.raises(InputError, match="labels"):
        DUQClassifier().fit(data.unconvolved[:4], np.array([0, 1, 2, 0]), epochs=1)
    with pytest.raises(InputError, match="n_classes"):
        DUQClassifier(n_classes=1)
    with pytest.raises(InputError, match="configuration"):
        DUQClassifier(colour="blue")
    with pytest.raises(InputError, match="not fitted"):
        DUQClassifier().save("/tmp/never-written")


def test_linear_scale_is_per_frame_min_max_of_clipped_intensity() -> None:
    from bluesky_twin.ins.duq import scale_frames

    frames = np.array([[[1.0, 2.0], [3.0, np.nan]], [[0.5, 10.0], [0.5, 0.5]], [[2.0, 2.0], [2.0, 2.0]]])
    out = scale_frames(frames, "linear", vmax=4.0)
    np.testing.assert_allclose(out[0], [[0.0, 0.5], [1.0, 0.0]])  # NaN -> fill 0 after scaling
    np.testing.assert_allclose(out[1], [[0.0, 1.0], [0.0, 0.0]])  # 10 clipped to vmax 4
    np.testing.assert_array_equal(out[2], 0.0)  # constant frame
    assert out.dtype == np.float32
    # a frame that already ends at vmax is scaled like one that overshoots it
    np.testing.assert_allclose(
        scale_frames(np.array([[0.5, 4.0]]), "linear")[0], scale_frames(np.array([[0.5, 40.0]]), "linear")[0]
    )
    with pytest.raises(InputError, match="input_scale"):
        scale_frames(frames, "sqrt")
    with pytest.raises(InputError, match="infinite"):
        scale_frames(np.full((2, 2), np.inf), "linear")


def test_linear_input_scale_trains_saves_and_loads(data: InsDataset, tmp_path: Path) -> None:
    from bluesky_twin.ins.duq import scale_frames

    train, test = data.subset(slice(0, 400)), data.subset(slice(400, None))
    clf = DUQClassifier(input_scale="linear").fit(train.unconvolved, train.labels, epochs=15, seed=0, num_threads=1)
    assert clf.input_scale == "linear"
    assert clf.score(test.unconvolved, test.labels) > 0.8  # chance is 0.5 (0.94 measured)
    loaded = DUQClassifier.load(clf.save(tmp_path / "lin"))
    assert loaded.input_scale == "linear"
    assert (
        json.loads((current_path(tmp_path / "lin") / "metadata.json").read_text())["preprocessing"]["input_scale"]
        == "linear"
    )
    frames = test.convolved[:30]
    np.testing.assert_allclose(loaded.predict_proba(frames), clf.predict_proba(frames), atol=1e-6)
    # predict applies the stored scaling: the network sees scale_frames(..., "linear")
    x = torch.from_numpy(scale_frames(frames, "linear")).unsqueeze(1)
    with torch.no_grad():
        direct = loaded._net(x).numpy()
    np.testing.assert_allclose(loaded.predict_proba(frames), direct, atol=1e-6)
    with pytest.raises(InputError, match="input_scale"):
        DUQClassifier(input_scale="sqrt")


def test_classifier_dir_without_input_scale_loads_as_log(
    fitted: DUQClassifier, data: InsDataset, tmp_path: Path, reseal_model
) -> None:
    from bluesky_twin.ins.duq import scale_frames

    root = fitted.save(tmp_path / "old")
    model_dir = current_path(root)
    meta = json.loads((model_dir / "metadata.json").read_text())
    assert meta["preprocessing"]["input_scale"] == "log"
    del meta["preprocessing"]["input_scale"]  # as written before the option existed
    (model_dir / "metadata.json").write_text(json.dumps(meta))
    old = DUQClassifier.load(reseal_model(root).parent.parent)
    assert old.input_scale == "log"
    frames = data.convolved[400:420]
    np.testing.assert_allclose(old.predict_proba(frames), fitted.predict_proba(frames), atol=1e-6)
    x = torch.from_numpy(scale_frames(frames, "log")).unsqueeze(1)
    with torch.no_grad():
        np.testing.assert_allclose(old.predict_proba(frames), old._net(x).numpy(), atol=1e-6)
    meta["preprocessing"]["input_scale"] = "sqrt"
    (model_dir / "metadata.json").write_text(json.dumps(meta))
    reseal_model(root)
    with pytest.raises(ModelFileError, match="input_scale"):
        DUQClassifier.load(root)
