"""Model directory: roundtrip, safe loading, corrupt and mismatched files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bluesky_twin.errors import InputError, ModelFileError
from bluesky_twin.gan.model import Exp2SimModel, default_model_dir
from bluesky_twin.gan.networks import GanConfig, ResnetGenerator
from bluesky_twin.gan.preprocess import Scaling, to_model_space
from bluesky_twin.modeldir import current_path

TINY = GanConfig(ngf=4, n_blocks=1, ndf=8, nce_layers=("down1", "down2", "res1"), nce_dim=16, num_patches=32)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _frames(n, seed=0, size=16):
    rng = np.random.default_rng(seed)
    x = rng.gamma(0.5, 0.2, size=(n, size, size)).astype(np.float32)
    x[:, :, 3] = np.nan
    return x


def tiny_model(seed=0):
    torch.manual_seed(seed)
    ref, _ = to_model_space(_frames(30, seed), Scaling())
    m = Exp2SimModel(
        ResnetGenerator(TINY),
        ResnetGenerator(TINY),
        TINY,
        Scaling(),
        reference=ref,
        metadata={"training": {"note": "test"}},
    )
    m.scorer.frame_repeats = 50
    m.scorer._frame_idx = m.scorer._frame_idx[:50]
    m.scorer.n_repeats = 50
    checker = np.indices((16, 16)).sum(0) % 2 * 4.0
    m.scorer.calibrate(m.features(_frames(25, seed + 1)), m.features(np.repeat(checker[None], 25, 0)))
    return m


def test_roundtrip_same_outputs(tmp_path):
    m = tiny_model()
    m.save(tmp_path / "model")
    files = sorted(p.name for p in current_path(tmp_path / "model").iterdir())
    assert files == ["domain_reference.npy", "generators.pt", "metadata.json"]
    m2 = Exp2SimModel.load(tmp_path / "model")
    x = _frames(3, seed=5)
    a, b = m.translate_and_score(x), m2.translate_and_score(x)
    np.testing.assert_allclose(a["translated"], b["translated"], atol=1e-5)
    np.testing.assert_allclose(a["scores"], b["scores"], rtol=1e-3)
    assert a["zones"] == b["zones"]
    np.testing.assert_allclose(m.sim2exp(x), m2.sim2exp(x), atol=1e-5)
    meta = json.loads((current_path(tmp_path / "model") / "metadata.json").read_text())
    assert meta["config"] == TINY.to_dict() and meta["domain"]["thresholds"]["frame"]
    assert meta["training"] == {"note": "test"}


def test_translation_keeps_shape_and_mask(tmp_path):
    m = tiny_model()
    x = _frames(2, seed=3, size=24)  # larger than the reference frames: fully convolutional
    y = m.exp2sim(x, keep_mask=True)
    assert y.shape == x.shape
    assert np.array_equal(np.isnan(y), np.isnan(x))
    assert np.isfinite(m.exp2sim(x)).all()
    z = m.sim2exp(x, keep_mask=True)
    assert z.shape == x.shape and np.array_equal(np.isnan(z), np.isnan(x))
    np.testing.assert_array_equal(z[np.isfinite(x)], m.sim2exp(x)[np.isfinite(x)])
    with pytest.raises(InputError, match="divisible by 4"):
        m.exp2sim(_frames(1, size=18))
    with pytest.raises(InputError, match="entirely NaN"):
        m.exp2sim(np.full((1, 16, 16), np.nan))


def test_corrupt_or_mismatched_directories(tmp_path, reseal_model):
    m = tiny_model()
    root = m.save(tmp_path / "model")
    d = current_path(root)
    with pytest.raises(ModelFileError, match="not found"):
        Exp2SimModel.load(tmp_path / "nope")
    # corrupt weights -> checksum mismatch
    w = d / "generators.pt"
    good = w.read_bytes()
    w.write_bytes(good[:-100] + b"x" * 100)
    with pytest.raises(ModelFileError, match="checksum"):
        Exp2SimModel.load(root)
    w.write_bytes(good)
    # corrupt metadata
    meta_path = d / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text("{not json")
    with pytest.raises(ModelFileError, match="corrupt"):
        Exp2SimModel.load(root)
    # config that does not match the weights (checksums resealed: a crafted directory)
    bad = dict(meta, config={**meta["config"], "ngf": 8})
    meta_path.write_text(json.dumps(bad))
    reseal_model(root)
    with pytest.raises(ModelFileError, match="do not match"):
        Exp2SimModel.load(root)
    # future format
    meta_path.write_text(json.dumps(dict(meta, format_version=99)))
    reseal_model(root)
    with pytest.raises(ModelFileError, match="format_version"):
        Exp2SimModel.load(root)
    (d / "metadata.json").unlink()
    with pytest.raises(ModelFileError, match="lacks metadata.json"):
        Exp2SimModel.load(root)


def test_pickled_payload_is_refused(tmp_path, reseal_model):
    """A generators.pt carrying arbitrary Python objects is refused (weights_only=True)."""
    m = tiny_model()
    root = m.save(tmp_path / "model")
    d = current_path(root)
    torch.save({"G_A": m.G_A.state_dict(), "G_B": m.G_B.state_dict(), "evil": object()}, d / "generators.pt")
    reseal_model(root)  # consistent checksums, to reach torch.load
    with pytest.raises(ModelFileError, match="safely"):
        Exp2SimModel.load(root)


def test_failed_save_keeps_previous_model(tmp_path):
    m = tiny_model()
    d = m.save(tmp_path / "model")
    before = (current_path(d) / "generators.pt").read_bytes()

    def boom(path):
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        m.save(d, extra_writers={"x": boom})
    assert (current_path(d) / "generators.pt").read_bytes() == before
    assert [p.name for p in (d / "versions").iterdir()] == ["v000001"]  # no half-written version
    Exp2SimModel.load(d)


def test_shipped_model_loads_and_scores():
    if not (default_model_dir() / "CURRENT").exists():
        pytest.skip("shipped model not built yet")
    m = Exp2SimModel.load()
    assert set(m.classifiers) == {"unconvolved", "convolved"}
    from bluesky_twin.ins.dataset import digits_control, generate_dataset

    ds = generate_dataset(4, seed=77)
    out = m.translate_and_score(ds.convolved)
    assert out["translated"].shape == ds.convolved.shape
    d = m.score(digits_control(4, seed=1))
    assert min(d[0]) > max(out["scores"])
    assert "trustworthy" not in d[1]  # (95 % of digits frames are 'untrustworthy', the rest 'expert opinion')
    assert out["zones"].count("untrustworthy") == 0


def test_shipped_powder_model_loads_translates_and_scores():
    """The second shipped model (coarse-resolution powder): its recipe is recorded, Exp2Sim sharpens
    powder frames towards their ground truth, and digits score worse than its own frames."""
    from bluesky_twin.gan.build import data_geometry, data_recipe
    from bluesky_twin.gan.evaluate import model_test_set
    from bluesky_twin.gan.preprocess import to_model_space
    from bluesky_twin.ins.dataset import digits_control

    path = default_model_dir().parent / "ins_exp2simgan_powder"
    m = Exp2SimModel.load(path)
    assert set(m.classifiers) == {"unconvolved", "convolved"}
    assert data_geometry(m.metadata) == "powder"
    assert data_recipe(m.metadata)["e_init"] == (50, 60, 70)
    ds = model_test_set(m, 6, seed=77)
    out = m.translate_and_score(ds.convolved, keep_mask=True)
    assert np.array_equal(np.isnan(out["translated"]), np.isnan(ds.convolved))
    truth, valid = to_model_space(ds.unconvolved, m.scaling)
    raw, _ = to_model_space(ds.convolved, m.scaling)
    translated, _ = to_model_space(out["translated"], m.scaling)
    assert np.abs(translated - truth)[valid].mean() < 0.5 * np.abs(raw - truth)[valid].mean()
    digits = m.score(digits_control(4, seed=1))
    assert min(digits[0]) > max(out["scores"])
    assert out["zones"].count("untrustworthy") == 0
