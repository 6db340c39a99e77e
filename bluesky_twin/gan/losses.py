"""Loss functions of Exp2SimGAN (DCLGAN-style dual contrastive learning).

All functions are pure: tensors in, scalar tensor out.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.nn import functional as F

__all__ = [
    "LOSS_WEIGHTS",
    "patch_nce_loss",
    "multilayer_nce_loss",
    "hinge_d_loss",
    "hinge_g_loss",
    "aux_d_loss",
    "masked_l1",
]

#: Weights of the released code: G = 0.5 (GAN_A + GAN_B) + 0.5*2*(NCE1 + NCE2) + 0.5*1*(IDT_A + IDT_B);
#: each D = 0.25 [GAN(real) + GAN(fake) + aux(real) + aux(fake)].
LOSS_WEIGHTS = {"gan": 0.5, "nce": 0.5 * 2.0, "idt": 0.5 * 1.0, "d": 0.25}


def patch_nce_loss(query: torch.Tensor, key: torch.Tensor, tau: float = 0.07) -> torch.Tensor:
    """PatchNCE: InfoNCE over sampled positions, negatives from the same image.

    Parameters
    ----------
    query
        (B, P, D) unit vectors from the translated image's encoding.
    key
        (B, P, D) unit vectors from the input's encoding at the same positions;
        detached here (keys carry no gradient).
    tau
        Temperature.

    Returns
    -------
    torch.Tensor
        Mean cross-entropy over the B*P queries; the positive of query p is key p,
        the negatives are the other P-1 keys of the same image.
    """
    if query.shape != key.shape or query.dim() != 3:
        raise ValueError(f"query and key must both be (B, P, D), got {tuple(query.shape)} and {tuple(key.shape)}")
    key = key.detach()
    logits = torch.bmm(query, key.transpose(1, 2)) / tau  # (B, P, P)
    batch, n_pos, _ = logits.shape
    target = torch.arange(n_pos, device=logits.device).expand(batch, n_pos)
    return F.cross_entropy(logits.reshape(batch * n_pos, n_pos), target.reshape(-1))


def multilayer_nce_loss(
    queries: Sequence[torch.Tensor], keys: Sequence[torch.Tensor], tau: float = 0.07
) -> torch.Tensor:
    """Mean of :func:`patch_nce_loss` over encoder layers."""
    losses = [patch_nce_loss(q, k, tau) for q, k in zip(queries, keys)]
    return torch.stack(losses).mean()


def hinge_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Hinge loss of the discriminator: (mean relu(1 - D(real)), mean relu(1 + D(fake)))."""
    return F.relu(1.0 - real_logits).mean(), F.relu(1.0 + fake_logits).mean()


def hinge_g_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Hinge loss of the generator: -mean D(fake)."""
    return -fake_logits.mean()


def aux_d_loss(real_aux: torch.Tensor, fake_aux: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Auxiliary head: MSE to 0 on real and to 1 on fake (discriminator only)."""
    return F.mse_loss(real_aux, torch.zeros_like(real_aux)), F.mse_loss(fake_aux, torch.ones_like(fake_aux))


def masked_l1(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """L1 over valid pixels only (``valid`` is 1 where measured, 0 where masked)."""
    if valid is None:
        return F.l1_loss(pred, target)
    diff = (pred - target).abs() * valid
    return diff.sum() / valid.sum().clamp_min(1.0)
