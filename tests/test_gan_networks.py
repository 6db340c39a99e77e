"""Exp2SimGAN networks: shapes (2D and 3D), fully-convolutional inference, presets."""

from __future__ import annotations

import pytest
import torch

from bluesky_twin.gan.networks import (
    GanConfig,
    PatchDiscriminator,
    PatchSampleMLP,
    ResnetGenerator,
    count_parameters,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = dict(
    ngf=4, n_blocks=2, ndf=8, n_layers_d=2, nce_layers=("stem", "down1", "down2", "res2"), nce_dim=16, num_patches=32
)


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("antialias", [False, True])
def test_generator_shapes_and_range(dims, antialias):
    torch.manual_seed(0)
    cfg = GanConfig(dims=dims, antialias=antialias, **TINY)
    g = ResnetGenerator(cfg)
    x = torch.randn(2, 1, *([16] * dims))
    y = g(x)
    assert y.shape == x.shape
    assert y.abs().max() <= 1.0  # tanh
    feats = g.encode(x, ["down1", "down2", "res2"])
    assert [tuple(f.shape) for f in feats] == [(2, 8, *([8] * dims)), (2, 16, *([4] * dims)), (2, 16, *([4] * dims))]
    d_gan, d_aux = PatchDiscriminator(cfg)(x)
    assert d_gan.shape == d_aux.shape and d_gan.shape[:2] == (2, 1)


@pytest.mark.parametrize("dims", [2, 3])
def test_fully_convolutional_inference_on_larger_input(dims):
    """Weights trained on 16-pixel patches apply unchanged to larger frames (no size-bound layer)."""
    torch.manual_seed(1)
    cfg = GanConfig(dims=dims, **TINY)
    g = ResnetGenerator(cfg).eval()
    big = torch.randn(1, 1, *([24 if dims == 3 else 64] * dims))
    with torch.no_grad():
        out_big = g(big)
    assert out_big.shape == big.shape
    assert torch.isfinite(out_big).all()


def test_forward_with_features_matches_forward_and_encode():
    torch.manual_seed(2)
    cfg = GanConfig(**TINY)
    g = ResnetGenerator(cfg).eval()
    x = torch.randn(3, 1, 32, 32)
    with torch.no_grad():
        y, feats = g.forward_with_features(x, ["down2", "res1"])
        assert torch.allclose(y, g(x))
        for a, b in zip(feats, g.encode(x, ["down2", "res1"])):
            assert torch.allclose(a, b)


def test_presets_parameter_counts():
    small = GanConfig.preset("small")
    assert 0.25e6 < count_parameters(ResnetGenerator(small)) < 0.29e6
    assert 0.15e6 < count_parameters(PatchDiscriminator(small)) < 0.19e6
    paper = GanConfig.preset("paper", antialias=False)
    assert 11.2e6 < count_parameters(ResnetGenerator(paper)) < 11.6e6
    assert GanConfig.preset("paper").antialias


def test_config_validation_and_roundtrip():
    cfg = GanConfig(**TINY)
    assert GanConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="dims"):
        GanConfig(dims=4)
    with pytest.raises(ValueError, match="nce_layers"):
        GanConfig(nce_layers=("res9",))
    with pytest.raises(ValueError, match="unknown GanConfig keys"):
        GanConfig.from_dict({**cfg.to_dict(), "bogus": 1})
    with pytest.raises(ValueError, match="divisible by 4"):
        ResnetGenerator(cfg)(torch.zeros(1, 1, 30, 30))


def test_patch_sample_mlp_reuses_positions_and_normalises():
    cfg = GanConfig(**TINY)
    g = ResnetGenerator(cfg)
    mlp = PatchSampleMLP(g.layer_channels(cfg.nce_layers), cfg.nce_dim)
    x = torch.randn(2, 1, 16, 16)
    feats = g.encode(x, cfg.nce_layers)
    proj, ids = mlp(feats, 32, generator=torch.Generator().manual_seed(0))
    proj2, ids2 = mlp(feats, 32, patch_ids=ids)
    for p, q, i, j in zip(proj, proj2, ids, ids2):
        assert torch.equal(i, j) and torch.allclose(p, q)
        assert p.shape[0] == 2 and p.shape[2] == cfg.nce_dim
        assert torch.allclose(p.norm(dim=-1), torch.ones(p.shape[:2]), atol=1e-5)
    # the 4x4 'down2' layer has only 16 positions: all are used, none repeated
    assert len(ids[2]) == 16 and len(set(ids[2].tolist())) == 16
