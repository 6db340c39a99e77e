"""The optional Sim2Exp resolution layer: broadening, NaN masks, training hooks, persistence."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from bluesky_twin.errors import InputError
from bluesky_twin.gan.config import GanConfig, ResolutionConfig
from bluesky_twin.gan.networks import ResnetGenerator, ResolutionResnetGenerator, make_generators
from bluesky_twin.gan.preprocess import Scaling, to_model_space
from bluesky_twin.ins.resolution_layer import EnergyResolutionLayer
from bluesky_twin.modeldir import current_path

pytestmark = pytest.mark.usefixtures("one_torch_thread")


TINY = GanConfig(
    ngf=4, n_blocks=1, ndf=8, n_layers_d=2, nce_layers=("down1", "down2", "res1"), nce_dim=16, num_patches=32
)
#: the resolution layer with a ResNet correction and without instrument terms
TINY_RES = replace(TINY, resolution=ResolutionConfig(init_sigma=2.0, instrument=False, residual=True))


def with_resolution(config: GanConfig, **options) -> GanConfig:
    """*config* with its resolution layer's options replaced (the layer added if it has none)."""
    base = config.resolution or ResolutionConfig()
    return replace(config, resolution=replace(base, **options))


def _moments(y: torch.Tensor) -> tuple[float, float, float]:
    y = y.detach()
    rows = torch.arange(len(y), dtype=y.dtype)
    total = float(y.sum())
    mean = float((y * rows).sum()) / total
    var = float((y * (rows - mean) ** 2).sum()) / total
    return total, mean, var


def test_delta_becomes_unit_gaussian_of_the_set_width():
    layer = EnergyResolutionLayer(degree=2, init_sigma=3.0, scaling_kind=None)
    assert torch.allclose(layer.sigma(64), torch.full((64,), 3.0), atol=1e-5)
    with torch.no_grad():  # width rising with energy: sigma(t) = 0.05 + softplus(1 + 1.5 t)
        layer.coeffs.copy_(torch.tensor([1.0, 1.5, 0.0]))
    sig = layer.sigma(64).detach()
    assert sig[0] < sig[32] < sig[-1]
    for j in (16, 32, 44):
        x = torch.zeros(1, 1, 64, 5)
        x[0, 0, j, 2] = 1.0
        y = layer(x)[0, 0]
        assert torch.count_nonzero(y[:, [0, 1, 3, 4]]) == 0  # only along energy
        total, mean, var = _moments(y[:, 2])
        assert total == pytest.approx(1.0, abs=1e-4)
        assert mean == pytest.approx(j, abs=1e-3)
        # bin-integrated Gaussian of the *source* row's width: sigma^2 + 1/12
        assert var == pytest.approx(float(sig[j]) ** 2 + 1.0 / 12.0, rel=2e-3)
    # a profile: compare with a numpy Gaussian of that width
    x = torch.zeros(1, 1, 64, 1)
    x[0, 0, 30, 0] = 1.0
    y = layer(x)[0, 0, :, 0].detach().numpy()
    s = float(sig[30])
    ref = np.exp(-0.5 * ((np.arange(64) - 30) / s) ** 2)
    np.testing.assert_allclose(y / y.max(), ref / ref.max(), atol=0.02)


def test_mask_aware_broadening_ignores_masked_values():
    layer = EnergyResolutionLayer(init_sigma=2.5, scaling_kind=None).requires_grad_(False)
    x = torch.full((1, 1, 32, 4), 2.0)
    valid = torch.ones_like(x)
    valid[0, 0, 10:14, 1] = 0  # a hole in column 1
    valid[0, 0, :, 3] = 0  # an entirely masked column
    x_junk = x.clone()
    x_junk[valid == 0] = 50.0
    a, b = layer(x, valid), layer(x_junk, valid)
    assert torch.allclose(a[..., :3], b[..., :3])  # masked values do not leak into measured columns
    # normalised convolution: a constant field stays constant through the hole (away from the frame edges)
    assert torch.allclose(a[0, 0, 9:23, 1], torch.full((14,), 2.0), atol=5e-4)
    # NaN in the input counts as masked
    x_nan = x.clone()
    x_nan[0, 0, 10:14, 1] = float("nan")
    c = layer(x_nan)
    assert torch.isfinite(c).all()
    assert torch.allclose(c[..., :3], a[..., :3])
    # a column without measured pixels falls back to the plain broadening
    assert torch.allclose(b[..., 3], layer(x_junk)[..., 3])


def test_model_space_broadening_is_linear_and_renormalised():
    scaling = Scaling()
    rng = np.random.default_rng(0)
    frames = rng.gamma(0.6, 0.4, size=(3, 32, 16)).astype(np.float32)
    frames[:, :4, :3] = np.nan
    x, valid = to_model_space(frames, scaling)
    layer = EnergyResolutionLayer(init_sigma=2.0)
    out = layer(torch.from_numpy(x)[:, None], torch.from_numpy(valid.astype(np.float32))[:, None])[:, 0].detach()
    lin = scaling.inverse((out.numpy() + 1) / 2)
    for i in range(3):  # the measured pixels' 99.5th percentile is 1, as in the simulator's frames
        assert np.percentile(lin[i][valid[i]], 99.5) == pytest.approx(1.0, rel=2e-3)
    # in linear units it is the plain broadening (up to that scale)
    raw = np.nan_to_num(frames)
    ref = (
        layer.broaden(
            torch.from_numpy(scaling.inverse(scaling.forward(raw)))[:, None],
            torch.from_numpy(valid.astype(np.float32))[:, None],
        )[:, 0]
        .detach()
        .numpy()
    )
    for i in range(3):
        r = ref[i] / np.percentile(ref[i][valid[i]], 99.5)
        np.testing.assert_allclose(lin[i][valid[i]], np.clip(r, 0, 4)[valid[i]], rtol=1e-3, atol=1e-4)


def test_untrained_generator_is_the_broadening_and_identity_path_skips_it():
    torch.manual_seed(0)
    G_A, G_B = make_generators(TINY_RES)
    assert type(G_A) is ResnetGenerator and isinstance(G_B, ResolutionResnetGenerator)
    assert all(type(g) is ResnetGenerator for g in make_generators(TINY))
    x = torch.rand(2, 1, 16, 16) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(G_B(x), G_B.resolution(x).clamp(-1, 1))
        assert torch.allclose(G_B(x, broaden=False), x)
        G_B.gate.fill_(0.5)
        y, feats = G_B.forward_with_features(x, TINY.nce_layers)
        assert torch.allclose(y, G_B(x), atol=1e-6)
        ref = ResnetGenerator.encode(G_B, G_B.resolution(x), TINY.nce_layers)
        assert all(torch.allclose(a, b) for a, b in zip(feats, G_B.encode(x, TINY.nce_layers)))
        assert all(torch.allclose(a, b) for a, b in zip(feats, ref))


def test_config_defaults_and_old_metadata():
    from bluesky_twin.gan.checkpoint import migrate_v1

    assert GanConfig().resolution is None
    old = {k: v for k, v in GanConfig().to_dict().items() if k != "resolution"}  # format 1, no layer
    assert GanConfig.from_dict(migrate_v1({"config": old})["config"]) == GanConfig()
    assert GanConfig.from_dict(TINY_RES.to_dict()) == TINY_RES
    v1_res = {**TINY.to_dict(), "sim2exp_resolution": True, "resolution_init_sigma": 2.0}
    del v1_res["resolution"]
    assert GanConfig.from_dict(migrate_v1({"config": v1_res})["config"]) == TINY_RES  # format 1's defaults
    with pytest.raises(ValueError):
        ResolutionConfig(init_sigma=0.0)
    with pytest.raises(ValueError):
        GanConfig.from_dict({**old, "resolution_width": 3})


def _toy_domains(n=12, size=16, seed=0):
    """A: noisy bars broadened along rows; B: sharp bars."""
    from scipy.ndimage import gaussian_filter1d

    rng = np.random.default_rng(seed)
    b = np.zeros((n, size, size), np.float32)
    for i in range(n):
        b[i, rng.integers(3, size - 3), :] = 1.0
    a = np.stack([gaussian_filter1d(x, 2.0, axis=0) * 2.5 + rng.normal(0, 0.03, x.shape) for x in b])
    a = a.astype(np.float32)
    a[:, :, 0] = np.nan
    return a, b


def test_widths_learn_from_the_adversarial_term_only(monkeypatch):
    from bluesky_twin.gan import losses
    from bluesky_twin.gan.train import Exp2SimTrainer, TrainConfig

    a, b = _toy_domains(n=2)
    ta, tb = torch.from_numpy(np.nan_to_num(a))[:, None], torch.from_numpy(b)[:, None]
    ones = torch.ones_like(tb)

    def width_change(weights):
        monkeypatch.setattr(losses, "LOSS_WEIGHTS", {**losses.LOSS_WEIGHTS, **weights})
        trainer = Exp2SimTrainer(TINY_RES, TrainConfig(iterations=4, batch_size=2, seed=0))
        before = trainer.G_B.resolution.coeffs.detach().clone()
        gate_before = float(trainer.G_B.gate.detach())
        trainer.step(ta, ones, tb, ones)
        return (
            float((trainer.G_B.resolution.coeffs.detach() - before).abs().max()),
            abs(float(trainer.G_B.gate.detach()) - gate_before),
        )

    w_all, g_all = width_change({})
    w_no_gan, g_no_gan = width_change({"gan": 0.0})
    assert w_all > 1e-4  # lr 2e-4 x 50: the first Adam step moves each coefficient by ~1e-2
    assert w_no_gan == 0.0  # NCE and identity do not reach the widths...
    assert g_no_gan > 0.0  # ...but they do train the residual correction


def test_training_records_widths_and_rejects_crops(tmp_path):
    from bluesky_twin.gan.train import RESOLUTION_KEYS, TrainConfig, plot_losses, train_gan

    a, b = _toy_domains()
    res = train_gan(a, b, TINY_RES, TrainConfig(iterations=3, batch_size=2, seed=0))
    assert all(np.isfinite(v).all() for v in res.history.values())
    assert all(len(res.history[k]) == 3 for k in RESOLUTION_KEYS)
    sig = res.extra["resolution"]["sigma_rows"]
    assert len(sig) == 16 and all(s > 0 for s in sig)
    paths = plot_losses(res.history, tmp_path)
    assert [p.name for p in paths][-1] == "resolution_width.png"
    with pytest.raises(InputError, match="whole frames"):
        train_gan(a, b, TINY_RES, TrainConfig(iterations=1, batch_size=2, crop=8))


def test_resolution_model_roundtrip_with_weights_only(tmp_path):
    from bluesky_twin.gan.model import Exp2SimModel

    torch.manual_seed(3)
    G_A, G_B = make_generators(TINY_RES)
    with torch.no_grad():
        G_B.gate.fill_(0.3)
        G_B.resolution.coeffs.copy_(torch.tensor([1.0, -0.5, 0.2]))
    a, b = _toy_domains(n=30)
    ref, _ = to_model_space(a, Scaling())
    m = Exp2SimModel(G_A, G_B, TINY_RES, Scaling(), reference=ref, metadata={"training": {"note": "t"}})
    m.save(tmp_path / "model")
    sds = torch.load(current_path(tmp_path / "model") / "generators.pt", weights_only=True)
    assert "resolution.coeffs" in sds["G_B"] and "gate" in sds["G_B"]
    meta = json.loads((current_path(tmp_path / "model") / "metadata.json").read_text())
    assert meta["config"]["resolution"]["residual"] is True
    m2 = Exp2SimModel.load(tmp_path / "model")
    assert isinstance(m2.G_B, ResolutionResnetGenerator)
    b_nan = b.copy()
    b_nan[:, :3, :4] = np.nan
    y1, y2 = m.sim2exp(b_nan, keep_mask=True), m2.sim2exp(b_nan, keep_mask=True)
    np.testing.assert_allclose(y1, y2, atol=1e-5)
    assert np.isnan(y2[:, :3, :4]).all() and np.isfinite(y2[:, 3:]).all()
    # the mask reaches the broadening: garbage under the mask does not change measured pixels
    junk = b_nan.copy()
    junk[:, :3, :4] = 3.0
    x, valid = to_model_space(b_nan, Scaling())
    xj = x.copy()
    xj[~valid] = 0.9
    with torch.no_grad():
        v = torch.from_numpy(valid.astype(np.float32))[:, None]
        o1 = m2.G_B.resolution(torch.from_numpy(x)[:, None], v)
        o2 = m2.G_B.resolution(torch.from_numpy(xj)[:, None], v)
    assert torch.allclose(o1[v > 0], o2[v > 0])


def test_instrument_terms_elastic_background_and_noise():
    scaling = Scaling()
    layer = EnergyResolutionLayer(
        degree=0, init_sigma=2.0, instrument=True, init_elastic=1.5, init_background=0.1, init_counts=50.0
    ).requires_grad_(False)
    x = torch.full((2, 1, 32, 8), -1.0)  # an empty simulation: zero intensity everywhere
    x[:, :, 20, :] = 0.0  # one line, so the percentile scale is defined
    layer.eval()
    y_eval = scaling.inverse((layer(x)[:, 0].numpy() + 1) / 2)
    assert np.array_equal(y_eval, scaling.inverse((layer(x)[:, 0].numpy() + 1) / 2))  # eval: no noise
    from scipy.special import ndtr

    edges = np.arange(33)
    elastic = 1.5 * 2.0 * np.sqrt(2 * np.pi) * np.diff(ndtr(edges / 2.0))
    # far from the line, the frame is elastic line + background
    np.testing.assert_allclose(y_eval[0, :8, 0], elastic[:8] + 0.1, rtol=1e-3)
    np.testing.assert_allclose(y_eval[0, 30:, 0], elastic[30:] + 0.1, rtol=1e-3)
    assert layer.instrument_values() == pytest.approx(
        {"elastic_amplitude": 1.5, "background": 0.1, "counts_scale": 50.0}, rel=1e-5
    )
    # training mode: Gaussian counting noise of variance lambda / N around the expected frame
    layer.train()
    torch.manual_seed(0)
    big = x[:1].expand(64, 1, 32, 8).clone()
    y = scaling.inverse((layer(big)[:, 0].numpy() + 1) / 2)
    rows = slice(24, 32)  # lambda ~ 0.1: no clipping at 0 within a few sigma
    resid = (y[:, rows] - y_eval[0, rows]) / np.sqrt(y_eval[0, rows] / 50.0)
    assert abs(resid.mean()) < 0.05 and resid.std() == pytest.approx(1.0, abs=0.05)
    with pytest.raises(ValueError):
        EnergyResolutionLayer(scaling_kind=None, instrument=True)


def test_cli_rejects_inconsistent_resolution_options(tmp_path, capsys):
    from bluesky_twin.cli import main

    out = str(tmp_path / "m")
    for flag in ("--resolution-init-sigma", "--resolution-poisson"):
        args = [flag, "2"] if flag == "--resolution-init-sigma" else [flag]
        assert main(["ins", "train", "--out", out, *args]) == 2
        assert "need --sim2exp-resolution-layer" in capsys.readouterr().err
    # the options that left the command line are reachable through --config, validated there
    for resolution, problem in (
        ({"instrument": False, "poisson": True}, "needs the instrument terms"),
        ({"instrument": False, "energy_range": "recipe"}, "needs the instrument terms"),
        ({"instrument": False, "column_terms": True}, "needs the instrument terms"),
        ({"residual": "yes"}, "must be true or false"),
    ):
        cfg = tmp_path / "c.json"
        cfg.write_text(json.dumps({"gan": {"resolution": resolution}}))
        assert main(["ins", "train", "--out", out, "--config", str(cfg)]) == 2
        assert problem in capsys.readouterr().err
    for flag in (
        "--resolution-instrument",
        "--no-resolution-instrument",
        "--resolution-residual",
        "--no-resolution-residual",
        "--resolution-bose",
    ):
        with pytest.raises(SystemExit):
            main(["ins", "train", "--out", out, flag])  # no longer options of the command line
    assert main(["ins", "train", "--out", out, "--sim2exp-resolution-layer", "--crop", "32"]) == 2
    assert "whole frames" in capsys.readouterr().err


def test_without_residual_sim2exp_is_the_layer_alone():
    from bluesky_twin.gan.train import Exp2SimTrainer, TrainConfig

    cfg = with_resolution(TINY_RES, residual=False, instrument=True)
    torch.manual_seed(0)
    _, G_B = make_generators(cfg)
    G_B.eval()
    x = torch.rand(2, 1, 16, 16) * 2 - 1
    with torch.no_grad():
        y, feats = G_B.forward_with_features(x, cfg.nce_layers)
        assert torch.equal(y, G_B.resolution(x).clamp(-1, 1)) and torch.equal(G_B(x), y)
        assert torch.equal(G_B(x, broaden=False), x)
        assert all(torch.allclose(a, b) for a, b in zip(feats, G_B.encode(x, cfg.nce_layers)))
    assert "gate" not in dict(G_B.named_parameters()) and "gate" in G_B.state_dict()
    a, b = _toy_domains(n=2)
    trainer = Exp2SimTrainer(cfg, TrainConfig(iterations=2, batch_size=2, seed=0))
    ones = torch.ones(2, 1, 16, 16)
    out = trainer.step(torch.from_numpy(np.nan_to_num(a))[:, None], ones, torch.from_numpy(b)[:, None], ones)
    assert out["IDT_A"] == 0.0 and np.isfinite(out["G"])
    assert {"elastic_amplitude", "background", "counts_scale"} <= set(out)


def test_cli_train_records_the_resolution_layer(tmp_path, capsys):
    from bluesky_twin.cli import main
    from bluesky_twin.gan.model import Exp2SimModel

    out = tmp_path / "model"
    assert (
        main(
            [
                "ins",
                "train",
                "--out",
                str(out),
                "--n",
                "100",
                "--iterations",
                "2",
                "--batch-size",
                "2",
                "--clf-epochs",
                "1",
                "--n-reference",
                "24",
                "--n-calibration",
                "20",
                "--quiet",
                "--threads",
                "1",
                "--sim2exp-resolution-layer",
                "--resolution-init-sigma",
                "2.5",
            ]
        )
        == 0
    )
    meta = json.loads((current_path(out) / "metadata.json").read_text())
    cfg = meta["config"]["resolution"]
    assert cfg and cfg["instrument"] and not cfg["residual"]
    assert cfg["init_sigma"] == 2.5 and meta["training"]["train_config"]["resolution_lr_scale"] == 50.0
    rec = meta["training"]["sim2exp_resolution"]
    assert len(rec["sigma_rows"]) == 64 and rec["energy_range_meV"] == [0.0, 16.0]
    assert rec["sigma_meV"][0] == pytest.approx(rec["sigma_rows"][0] * 0.25, rel=1e-3)
    assert {"elastic_amplitude", "background", "counts_scale"} <= set(rec) and "temperature" not in rec
    assert cfg["energy_range"] is None  # no Bose factor unless the config asks for one
    assert (current_path(out) / "plots" / "resolution_width.png").exists()
    m = Exp2SimModel.load(out)
    assert isinstance(m.G_B, ResolutionResnetGenerator) and not m.G_B.residual
    assert m.G_B.resolution.instrument


def test_bose_factor_term():
    layer = (
        EnergyResolutionLayer(
            degree=0,
            init_sigma=1.0,
            instrument=True,
            init_elastic=1e-6,
            init_background=1e-6,
            energy_range=(0.0, 16.0),
            init_temperature=12.0,
        )
        .requires_grad_(False)
        .eval()
    )
    assert layer.instrument_values()["temperature"] == pytest.approx(12.1, rel=1e-5)  # 0.1 K floor + softplus
    e = (np.arange(64) + 0.5) * 0.25
    ref = 1.0 / (1.0 - np.exp(-e / (0.08617333262 * 12.1)))
    np.testing.assert_allclose(layer.bose_factor(64).numpy(), ref, rtol=1e-5)
    # a flat spectrum comes out shaped by the Bose factor (before the percentile renormalisation)
    x = torch.zeros(1, 1, 64, 4)  # model space 0: a flat intensity
    out = Scaling().inverse((layer(x)[0, 0, :, 0].numpy() + 1) / 2)
    inner = slice(8, 56)  # away from the frame edges, where the broadening loses intensity
    ratio = out[inner] / ref[inner]
    np.testing.assert_allclose(ratio / ratio.mean(), 1.0, rtol=2e-3)
    cfg = GanConfig(resolution=ResolutionConfig(instrument=True, energy_range=[0, 16]))
    assert cfg.resolution.energy_range == (0.0, 16.0) and GanConfig.from_dict(cfg.to_dict()) == cfg
    assert make_generators(cfg)[1].resolution.energy_range == (0.0, 16.0)
    with pytest.raises(ValueError):
        ResolutionConfig(energy_range=(5.0, 1.0))
    recipe_cfg = ResolutionConfig(energy_range="recipe")  # the recipe's energy axis, resolved by ins train
    assert recipe_cfg.resolved({"e_range": (0.0, 20.0)}, 64).energy_range == (0.0, 20.0)
    with pytest.raises(InputError, match="resolved"):
        make_generators(GanConfig(resolution=recipe_cfg))


# --------------------------------------------------------------- bounded and per-frame widths
LOWER16 = tuple(float(v) for v in np.linspace(1.0, 2.0, 16))
UPPER16 = tuple(float(v) for v in np.linspace(2.5, 4.0, 16))


def test_bounded_width_stays_in_the_prior_range():
    layer = EnergyResolutionLayer(degree=2, sigma_bounds=(LOWER16, UPPER16), scaling_kind=None)
    lo, hi = np.array(LOWER16), np.array(UPPER16)
    np.testing.assert_allclose(layer.sigma(16).detach().numpy(), (lo + hi) / 2, rtol=1e-6)  # starts in the middle
    for c in ([40.0, 0.0, 0.0], [-40.0, 0.0, 0.0], [0.0, 30.0, -30.0]):
        with torch.no_grad():
            layer.coeffs.copy_(torch.tensor(c))
        sig = layer.sigma(16).detach().numpy()
        assert np.all(sig >= lo - 1e-6) and np.all(sig <= hi + 1e-6)
    with torch.no_grad():
        layer.coeffs.copy_(torch.tensor([40.0, 0.0, 0.0]))
    np.testing.assert_allclose(layer.sigma(16).detach().numpy(), hi, rtol=1e-5)
    with pytest.raises(ValueError, match="16 energy rows"):
        layer.sigma(32)
    for bad in ((LOWER16, UPPER16[:-1]), (UPPER16, LOWER16), ((0.0,) * 16, UPPER16), (LOWER16,), "x"):
        with pytest.raises(ValueError, match="ResolutionConfig.sigma_bounds"):
            GanConfig(resolution=ResolutionConfig(sigma_bounds=bad))


def test_per_frame_widths_in_training_and_central_values_in_eval():
    torch.manual_seed(0)
    layer = EnergyResolutionLayer(
        degree=1,
        sigma_bounds=(LOWER16, UPPER16),
        instrument=True,
        stochastic=True,
        init_spread=1.0,
        init_amplitude_spread=0.5,
    )
    x = torch.rand(6, 1, 16, 8) * 2 - 1
    layer.eval()
    y0 = layer(x)
    assert torch.equal(y0, layer(x)) and torch.equal(y0, layer(x, sample=False, noise=False))
    # sampling without noise: frames get different widths, each the broadening with its own draw
    layer.train()
    torch.manual_seed(1)
    ys = layer(x, noise=False)
    torch.manual_seed(1)
    z = torch.randn(6, 4)
    sig = layer.sigma(16, z[:, 0]).detach()
    assert sig.shape == (6, 16) and float(sig[:, 8].std()) > 0.05
    lo, hi = torch.tensor(LOWER16), torch.tensor(UPPER16)
    assert bool(((sig >= lo - 1e-6) & (sig <= hi + 1e-6)).all())
    batch = layer.broaden(x, z=z[:, 0])
    for i in range(6):  # frame i = a deterministic layer whose constant coefficient is shifted by spread * z_i
        ref = EnergyResolutionLayer(degree=1, sigma_bounds=(LOWER16, UPPER16), scaling_kind=None)
        with torch.no_grad():
            ref.coeffs.copy_(layer.coeffs + torch.tensor([1.0, 0.0]) * float(z[i, 0]))
            assert torch.allclose(batch[i], ref.broaden(x[i : i + 1])[0], atol=1e-5)
    assert not torch.allclose(ys, y0)
    vals = layer.learned_values()
    assert vals["width_spread"] == pytest.approx(1.0) and vals["counts_spread"] == pytest.approx(0.5)
    # spreads are parameters (trained with the widths, see the adversarial-only test above)
    names = dict(layer.named_parameters())
    assert {"log_spread", "log_amplitude_spreads"} <= set(names)
    with pytest.raises(ValueError, match="stochastic"):
        EnergyResolutionLayer(scaling_kind=None).sigma(16, torch.zeros(2))


def test_per_frame_amplitudes_scale_elastic_and_background():
    layer = EnergyResolutionLayer(
        degree=0,
        init_sigma=2.0,
        instrument=True,
        stochastic=True,
        init_elastic=1.0,
        init_background=0.1,
        init_amplitude_spread=0.7,
    ).requires_grad_(False)
    lin = torch.zeros(3, 1, 16, 4)
    z = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    out = layer._add_instrument(lin, noise=False, z=z)
    central = layer._add_instrument(lin[:1], noise=False)
    assert torch.allclose(out[0], central[0])
    f = float(np.exp(0.7))
    # frame 1: the elastic line times exp(0.7), same background; frame 2: background / exp(0.7)
    assert torch.allclose(out[1] - 0.1, (central[0] - 0.1) * f, rtol=1e-5)
    assert torch.allclose(out[2] - out[0], torch.full_like(out[0], 0.1 / f - 0.1), atol=1e-6)
    # a per-frame elastic width: the profile follows the frame's sigma(0)
    wide = layer._add_instrument(lin[:1], noise=False, z=z[:1], sigma0=torch.tensor([6.0]))
    assert float(wide[0, 0, 8, 0]) > float(central[0, 0, 8, 0]) + 0.1


def test_maps_sigma_bounds_follow_the_instrument_resolution():
    from bluesky_twin.ins.resolution import maps_resolution
    from bluesky_twin.ins.resolution_config import maps_sigma_bounds

    recipe = {"e_init": (50.0, 60.0, 70.0), "chopper_frequency": 100}
    lower, upper = maps_sigma_bounds(recipe, 64)
    e = (np.arange(64) + 0.5) * 0.25
    np.testing.assert_allclose(np.array(lower) * 0.25, maps_resolution(50.0, 100).sigma(e), rtol=1e-4)
    np.testing.assert_allclose(np.array(upper) * 0.25, maps_resolution(70.0, 100).sigma(e), rtol=1e-4)
    lo2, hi2 = maps_sigma_bounds(recipe, 64, margin=1.25)
    np.testing.assert_allclose(lo2, np.array(lower) / 1.25, rtol=1e-4)
    np.testing.assert_allclose(hi2, np.array(upper) * 1.25, rtol=1e-4)
    cfg = GanConfig(resolution=ResolutionConfig(sigma_bounds=(lower, upper)))
    assert GanConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert ResolutionConfig(sigma_bounds="maps").resolved(recipe, 64).sigma_bounds == (lower, upper)
    for bad in (dict(n_rows=0), dict(margin=0.9)):
        with pytest.raises(InputError):
            maps_sigma_bounds(recipe, **{"n_rows": 64, **bad})
    with pytest.raises(InputError, match="margin"):
        maps_sigma_bounds({"e_init": [60], "chopper_frequency": 100}, 64)


def test_bounded_stochastic_model_roundtrip_and_cli_checks(tmp_path, capsys):
    from bluesky_twin.cli import main
    from bluesky_twin.gan.model import Exp2SimModel

    cfg = with_resolution(TINY_RES, residual=False, instrument=True, sigma_bounds=(LOWER16, UPPER16), stochastic=True)
    torch.manual_seed(2)
    G_A, G_B = make_generators(cfg)
    with torch.no_grad():
        G_B.resolution.coeffs.copy_(torch.tensor([0.5, -0.3, 0.1]))
        G_B.resolution.log_spread.fill_(-1.0)
    a, b = _toy_domains(n=30)
    ref, _ = to_model_space(a, Scaling())
    m = Exp2SimModel(G_A, G_B, cfg, Scaling(), reference=ref, metadata={"training": {"note": "t"}})
    m.save(tmp_path / "model")
    sds = torch.load(current_path(tmp_path / "model") / "generators.pt", weights_only=True)
    assert {"resolution.log_spread", "resolution.log_amplitude_spreads"} <= set(sds["G_B"])
    assert "resolution.sigma_lower" not in sds["G_B"]  # the bounds live in the config
    m2 = Exp2SimModel.load(tmp_path / "model")
    assert m2.config == cfg and m2.G_B.resolution.bounded and m2.G_B.resolution.stochastic
    y1, y2 = m.sim2exp(b), m2.sim2exp(b)
    np.testing.assert_allclose(y1, y2, atol=1e-5)
    np.testing.assert_array_equal(y2, m2.sim2exp(b))  # deterministic translation
    out = str(tmp_path / "m")
    for flags in (["--resolution-maps-bounds"], ["--resolution-stochastic"]):
        assert main(["ins", "train", "--out", out, *flags]) == 2
        assert "need --sim2exp-resolution-layer" in capsys.readouterr().err
    from bluesky_twin.ins.resolution_config import maps_sigma_bounds

    with pytest.raises(InputError, match=">= 1"):  # the margin left the options: the function still checks it
        maps_sigma_bounds({"e_init": [50, 60, 70], "chopper_frequency": 100}, 64, margin=0.5)
    cfg_file = tmp_path / "c.json"
    cfg_file.write_text(json.dumps({"gan": {"resolution": {"spread_max": 2}}}))
    assert main(["ins", "train", "--out", out, "--config", str(cfg_file)]) == 2
    assert "needs stochastic" in capsys.readouterr().err
    cfg_file.write_text(json.dumps({"gan": {"resolution": {"stochastic": True, "spread_max": 0.5}}}))
    assert main(["ins", "train", "--out", out, "--config", str(cfg_file)]) == 2
    assert "> 1" in capsys.readouterr().err


def test_poisson_counting_noise_has_count_values_and_a_gradient():
    layer = EnergyResolutionLayer(
        degree=0, init_sigma=2.0, instrument=True, init_counts=40.0, init_elastic=0.5, init_background=0.2, poisson=True
    )
    lam_in = torch.full((16, 1, 16, 8), 0.3, requires_grad=True)
    torch.manual_seed(0)
    y = layer._add_instrument(lam_in, noise=True)
    counts = (y.detach() * 40.0).numpy()
    np.testing.assert_allclose(counts, np.round(counts), atol=1e-3)  # Poisson(N lambda) / N
    expected = layer._add_instrument(lam_in, noise=False).detach()
    assert float((y.detach() - expected).mean()) == pytest.approx(0.0, abs=0.01)
    assert float(((y.detach() - expected) ** 2).mean() / (expected / 40.0).mean()) == pytest.approx(1.0, abs=0.1)
    y.sum().backward()  # straight-through: the expected frame's gradient reaches the input and the counts
    assert lam_in.grad is not None and float(lam_in.grad.abs().sum()) > 0
    assert layer.log_counts.grad is not None and float(layer.log_counts.grad.abs()) > 0
    cfg = GanConfig(resolution=ResolutionConfig(instrument=True, poisson=True))
    assert make_generators(cfg)[1].resolution.poisson and GanConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="instrument"):
        GanConfig(resolution=ResolutionConfig(instrument=False, poisson=True))
    with pytest.raises(ValueError, match="instrument"):
        EnergyResolutionLayer(poisson=True)


def test_refill_masked_fills_translations_like_the_real_frames():
    from bluesky_twin.gan.preprocess import fill_nan, nearest_fill_indices
    from bluesky_twin.gan.train import TrainConfig, _refill, train_gan

    rng = np.random.default_rng(4)
    frames = rng.random((3, 12, 10)).astype(np.float32)
    frames[0, :5, :3] = np.nan
    frames[1, :, 7:] = np.nan
    valid = np.isfinite(frames)
    filled, _ = fill_nan(frames)
    idx = nearest_fill_indices(valid)
    assert idx.shape == (3, 120) and np.array_equal(idx[2], np.arange(120))  # unmasked: identity
    other = rng.random((3, 1, 12, 10)).astype(np.float32)  # e.g. a translation: its own values, the input's mask
    out = _refill(torch.from_numpy(other), torch.from_numpy(idx)).numpy()[:, 0]
    ref = other[:, 0].copy()
    ref[~valid] = np.nan
    np.testing.assert_array_equal(out, fill_nan(ref)[0])
    np.testing.assert_array_equal(out[valid], other[:, 0][valid])
    np.testing.assert_array_equal(
        _refill(torch.from_numpy(np.nan_to_num(frames))[:, None], torch.from_numpy(idx)).numpy()[:, 0], filled
    )
    a, b = _toy_domains()
    b[:, :, 0] = np.nan
    res = train_gan(a, b, TINY_RES, TrainConfig(iterations=2, batch_size=2, seed=0, refill_masked=True))
    assert all(np.isfinite(v).all() for v in res.history.values())


def test_spread_cap():
    capped = EnergyResolutionLayer(degree=0, init_sigma=2.0, instrument=True, stochastic=True, spread_max=1.5)
    assert capped.learned_values()["width_spread"] == pytest.approx(1.0, rel=1e-5)
    assert capped.learned_values()["elastic_spread"] == pytest.approx(0.5, rel=1e-5)
    with torch.no_grad():
        capped.log_spread.fill_(50.0)
        capped.log_amplitude_spreads.fill_(50.0)
    assert all(v == pytest.approx(1.5) for k, v in capped.learned_values().items() if k.endswith("_spread"))
    free = EnergyResolutionLayer(degree=0, init_sigma=2.0, instrument=True, stochastic=True)
    with torch.no_grad():
        free.log_spread.fill_(3.0)
    assert free.learned_values()["width_spread"] == pytest.approx(np.exp(3.0), rel=1e-5)  # no cap by default
    with pytest.raises(ValueError):
        EnergyResolutionLayer(stochastic=True, spread_max=0.8)
    with pytest.raises(ValueError):
        ResolutionConfig(stochastic=True, spread_max=0.5)
    with pytest.raises(ValueError, match="spread_max needs stochastic"):
        ResolutionConfig(spread_max=1.5)
    cfg = GanConfig(resolution=ResolutionConfig(stochastic=True, spread_max=1.5))
    assert make_generators(cfg)[1].resolution.spread_max == 1.5 and GanConfig.from_dict(cfg.to_dict()) == cfg


def test_evaluate_unmasked_input_option_needs_a_masked_recipe(tmp_path):
    from bluesky_twin.gan.evaluate import evaluate_model, format_table
    from bluesky_twin.gan.model import Exp2SimModel

    G_A, G_B = make_generators(TINY_RES)
    a, _ = _toy_domains(n=30)
    ref, _ = to_model_space(a, Scaling())
    m = Exp2SimModel(G_A, G_B, TINY_RES, Scaling(), reference=ref, metadata={"training": {"note": "t"}})
    m.classifiers = {"unconvolved": object(), "convolved": object()}

    class _Scorer:
        thresholds = {"set": 1.0}

    m.scorer = _Scorer()
    with pytest.raises(InputError, match="mask_unconvolved"):
        evaluate_model(m, n=20, sim2exp_unmasked_input=True)
    res = {
        "acc_unconvolved": 1.0,
        "acc_convolved_raw": 0.5,
        "acc_convolved_exp2sim": 0.9,
        "gap_closed_exp2sim": 0.8,
        "acc_conv_clf_on_convolved": 0.98,
        "acc_conv_clf_on_unconvolved_raw": 0.9,
        "acc_conv_clf_on_unconvolved_sim2exp": 0.95,
        "gap_closed_sim2exp": 0.625,
        "gap_exp2sim_points": 0.5,
        "gap_sim2exp_points": 0.08,
        "acc_conv_clf_on_unconvolved_sim2exp_unmasked_input": 0.984,
        "gap_closed_sim2exp_unmasked_input": 1.05,
        "n": 500,
        "seed": 1234,
        "domain_score": {},
        "ms_per_frame": 1.0,
    }
    assert "Sim2Exp of the unmasked maps (mask put back):  98.4%, gap closed 105.0%" in format_table(res)
