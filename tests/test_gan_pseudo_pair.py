"""The pseudo-pair term for Exp2Sim: L1(G_A(G_B(b).detach()), b), with learned or uniform widths."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_gan_resolution import LOWER16, TINY_RES, UPPER16, _toy_domains, with_resolution

from bluesky_twin.errors import InputError
from bluesky_twin.gan.config import GanConfig, PseudoPairConfig, ResolutionConfig
from bluesky_twin.ins.resolution_layer import EnergyResolutionLayer

pytestmark = pytest.mark.usefixtures("one_torch_thread")

BOUNDED = with_resolution(TINY_RES, instrument=True, sigma_bounds=(LOWER16, UPPER16), stochastic=True, poisson=True)


def test_fraction_sets_each_frames_width_across_the_bounds():
    layer = EnergyResolutionLayer(degree=2, sigma_bounds=(LOWER16, UPPER16), scaling_kind=None)
    with torch.no_grad():
        layer.coeffs.copy_(torch.tensor([5.0, -3.0, 2.0]))  # whatever was learned is ignored
    sig = layer.sigma(16, fraction=torch.tensor([0.0, 0.5, 1.0])).numpy()
    lo, hi = np.array(LOWER16), np.array(UPPER16)
    np.testing.assert_allclose(sig, np.stack([lo, (lo + hi) / 2, hi]), rtol=1e-6)
    # a delta at the middle row is broadened to the width the fraction names
    x = torch.zeros(2, 1, 16, 1)
    x[:, 0, 8, 0] = 1.0
    y = layer.broaden(x, fraction=torch.tensor([0.0, 1.0]))[:, 0, :, 0]
    rows = torch.arange(16.0)
    var = ((y * (rows - 8.0) ** 2).sum(1) / y.sum(1)).numpy()
    assert var[1] > 3 * var[0]
    assert abs(np.sqrt(var[0]) - lo[8]) < 0.1
    with pytest.raises(ValueError, match="bounded layer"):
        EnergyResolutionLayer(scaling_kind=None).sigma(16, fraction=torch.tensor([0.5]))


@pytest.mark.parametrize("widths", ["learned", "uniform"])
def test_pseudo_pair_term_trains_exp2sim_only(monkeypatch, widths):
    from bluesky_twin.gan import losses
    from bluesky_twin.gan.train import PSEUDO_PAIR_KEY, Exp2SimTrainer, TrainConfig

    a, b = _toy_domains(n=2)
    ta, tb = torch.from_numpy(np.nan_to_num(a))[:, None], torch.from_numpy(b)[:, None]
    valid_a = torch.from_numpy(np.isfinite(a).astype(np.float32))[:, None]
    valid_b = torch.ones_like(tb)
    valid_b[:, :, :, -1] = 0.0  # a masked simulation column: filled before G_A sees the pseudo frame
    # only the pseudo-pair term: every other generator weight 0
    monkeypatch.setattr(losses, "LOSS_WEIGHTS", {**losses.LOSS_WEIGHTS, "gan": 0.0, "nce": 0.0, "idt": 0.0})

    def changes(weight):
        trainer = Exp2SimTrainer(
            BOUNDED,
            TrainConfig(iterations=4, batch_size=2, seed=0, pseudo_pair=PseudoPairConfig(weight=weight, widths=widths)),
        )
        ga = [p.detach().clone() for p in trainer.G_A.parameters()]
        gb = [p.detach().clone() for p in trainer.G_B.parameters()]
        out = trainer.step(ta, valid_a, tb, valid_b)
        d_a = max(float((p.detach() - q).abs().max()) for p, q in zip(trainer.G_A.parameters(), ga))
        d_b = max(float((p.detach() - q).abs().max()) for p, q in zip(trainer.G_B.parameters(), gb))
        return out, d_a, d_b

    out, d_a, d_b = changes(10.0)
    assert np.isfinite(out[PSEUDO_PAIR_KEY]) and out[PSEUDO_PAIR_KEY] > 0
    assert d_a > 0.0  # Exp2Sim learns from the pseudo pairs...
    assert d_b == 0.0  # ...and Sim2Exp does not: its output is detached
    out0, d_a0, _ = changes(0.0)
    assert PSEUDO_PAIR_KEY not in out0 and d_a0 == 0.0


def test_train_gan_records_the_term_and_checks_its_options():
    from bluesky_twin.gan.train import PSEUDO_PAIR_KEY, TrainConfig, train_gan

    a, b = _toy_domains(n=6)
    res = train_gan(
        a,
        b,
        BOUNDED,
        TrainConfig(iterations=3, batch_size=2, seed=0, pseudo_pair=PseudoPairConfig(weight=5.0, widths="uniform")),
    )
    assert len(res.history[PSEUDO_PAIR_KEY]) == 3 and np.isfinite(res.history[PSEUDO_PAIR_KEY]).all()
    res = train_gan(
        a, b, TINY_RES, TrainConfig(iterations=2, batch_size=2, seed=0, pseudo_pair=PseudoPairConfig(weight=1.0))
    )
    assert np.isfinite(res.history[PSEUDO_PAIR_KEY]).all()
    with pytest.raises(InputError, match="bounds"):
        train_gan(
            a,
            b,
            TINY_RES,
            TrainConfig(iterations=1, batch_size=2, pseudo_pair=PseudoPairConfig(weight=1.0, widths="uniform")),
        )
    with pytest.raises(InputError, match="PseudoPairConfig.widths"):
        TrainConfig(pseudo_pair=PseudoPairConfig(widths="wide"))
    with pytest.raises(InputError, match="PseudoPairConfig.weight"):
        TrainConfig(pseudo_pair=PseudoPairConfig(weight=-1.0))


def test_cli_checks_pseudo_pair_options(tmp_path, capsys):
    from bluesky_twin.cli import main

    rc = main(
        ["ins", "train", "--out", str(tmp_path / "m"), "--pseudo-pair-weight", "1", "--pseudo-pair-widths", "uniform"]
    )
    assert rc != 0
    assert "--resolution-maps-bounds" in capsys.readouterr().err
    rc = main(["ins", "train", "--out", str(tmp_path / "m"), "--pseudo-pair-weight", "-2"])
    assert rc != 0
    assert "--pseudo-pair-weight must be >= 0" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_column_terms_elastic_line_decays_and_background_rises_along_the_columns():
    layer = EnergyResolutionLayer(degree=0, init_sigma=1.0, instrument=True, column_terms=True)
    flat = EnergyResolutionLayer(degree=0, init_sigma=1.0, instrument=True)
    with torch.no_grad():
        for lay in (layer, flat):
            lay.elastic_raw.fill_(5.0)
            lay.background_raw.fill_(-3.0)
        layer.elastic_decay_raw.fill_(2.0)
        layer.background_slope_raw.fill_(0.0)
    lin = torch.zeros(1, 1, 16, 32)
    out = layer._add_instrument(lin, noise=False)[0, 0].detach()
    ref = flat._add_instrument(lin, noise=False)[0, 0].detach()
    assert torch.allclose(ref[:, 0], ref[:, -1])  # without the terms: flat in the columns
    assert float(out[0, -1]) < 0.3 * float(out[0, 0])  # the elastic line (row 0) decays with |Q|
    assert float(out[-1, -1]) > 5 * float(out[-1, 0])  # the background (top row) rises with |Q|^2
    assert {"elastic_decay", "background_u2"} <= set(layer.learned_values())
    with pytest.raises(ValueError, match="instrument"):
        EnergyResolutionLayer(column_terms=True)
    with pytest.raises(ValueError, match="column_terms"):
        GanConfig(resolution=ResolutionConfig(instrument=False, column_terms=True))
    cfg = with_resolution(BOUNDED, column_terms=True)
    assert GanConfig.from_dict(cfg.to_dict()) == cfg


def test_pseudo_pair_finetune_trains_exp2sim_alone_after_the_gan(tmp_path):
    from bluesky_twin.gan.train import PSEUDO_PAIR_FINETUNE_KEY, Exp2SimTrainer, TrainConfig, plot_losses, train_gan

    a, b = _toy_domains(n=6)
    trainer = Exp2SimTrainer(
        BOUNDED,
        TrainConfig(iterations=2, batch_size=2, seed=0, pseudo_pair=PseudoPairConfig(finetune=5, widths="uniform")),
    )
    tb = torch.from_numpy(b[:2])[:, None]
    nets = {name: getattr(trainer, name) for name in ("G_A", "G_B", "D_A", "D_B", "F_A", "F_B")}
    before = {name: [p.detach().clone() for p in net.parameters()] for name, net in nets.items()}
    value = trainer.finetune_step(tb, torch.ones_like(tb))
    assert np.isfinite(value) and value > 0
    moved = {
        name: any(not torch.equal(p.detach(), q) for p, q in zip(net.parameters(), before[name]))
        for name, net in nets.items()
    }
    assert moved == {"G_A": True, "G_B": False, "D_A": False, "D_B": False, "F_A": False, "F_B": False}

    res = train_gan(
        a,
        b,
        BOUNDED,
        TrainConfig(iterations=2, batch_size=2, seed=0, pseudo_pair=PseudoPairConfig(finetune=4, widths="uniform")),
    )
    assert len(res.history[PSEUDO_PAIR_FINETUNE_KEY]) == 4 and len(res.history["G"]) == 2
    assert res.extra["pseudo_pair_finetune_seconds"] > 0
    assert "loss_pseudo_pair.png" in [p.name for p in plot_losses(res.history, tmp_path)]
    with pytest.raises(InputError, match="PseudoPairConfig.finetune"):
        TrainConfig(pseudo_pair=PseudoPairConfig(finetune=-1))
    with pytest.raises(InputError, match="bounds"):  # uniform widths need the bounded layer here too
        train_gan(
            a,
            b,
            TINY_RES,
            TrainConfig(iterations=1, batch_size=2, pseudo_pair=PseudoPairConfig(finetune=2, widths="uniform")),
        )
