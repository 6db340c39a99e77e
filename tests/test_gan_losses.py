"""Exp2SimGAN losses: PatchNCE sanity, hinge/aux conventions, masked L1."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from bluesky_twin.gan import losses


def _unit(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g), dim=-1)


def test_patch_nce_lower_when_features_match():
    k = _unit(2, 64, 16)
    matched = losses.patch_nce_loss(k.clone(), k)
    unrelated = losses.patch_nce_loss(_unit(2, 64, 16, seed=1), k)
    assert matched < 0.5 < unrelated
    # random queries do no better than chance, log(P)
    assert unrelated.item() > math.log(64) - 0.5


def test_patch_nce_keys_are_detached_and_query_gets_gradient():
    q = _unit(1, 8, 4).requires_grad_(True)
    k = _unit(1, 8, 4, seed=3).requires_grad_(True)
    losses.patch_nce_loss(q, k).backward()
    assert q.grad is not None and q.grad.abs().sum() > 0
    assert k.grad is None


def test_patch_nce_negatives_are_per_image():
    """Swapping images within the batch changes nothing: negatives never cross images."""
    k = _unit(2, 16, 8)
    q = _unit(2, 16, 8, seed=5)
    a = losses.patch_nce_loss(q, k)
    b = losses.patch_nce_loss(q.flip(0), k.flip(0))
    assert torch.allclose(a, b)
    with pytest.raises(ValueError):
        losses.patch_nce_loss(q, k[:, :8])


def test_hinge_and_aux_conventions():
    real, fake = torch.full((4,), 2.0), torch.full((4,), -2.0)
    lr, lf = losses.hinge_d_loss(real, fake)
    assert lr == 0 and lf == 0  # confident and correct: no loss
    assert losses.hinge_g_loss(fake) == 2.0
    ar, af = losses.aux_d_loss(torch.zeros(3), torch.ones(3))
    assert ar == 0 and af == 0
    assert losses.LOSS_WEIGHTS == {"gan": 0.5, "nce": 1.0, "idt": 0.5, "d": 0.25}


def test_masked_l1_ignores_masked_pixels():
    pred = torch.zeros(1, 1, 4, 4)
    target = torch.zeros(1, 1, 4, 4)
    target[..., 0] = 100.0  # only in the masked column
    valid = torch.ones_like(target)
    valid[..., 0] = 0
    assert losses.masked_l1(pred, target, valid) == 0
    assert losses.masked_l1(pred, target) > 0
