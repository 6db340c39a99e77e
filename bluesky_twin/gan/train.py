"""Training loop of Exp2SimGAN.

Domain A is experiment-like (resolution-convolved, NaN-masked) frames, domain B
unconvolved simulations.  ``G_A`` (Exp2Sim) maps A -> B and removes resolution;
``G_B`` (Sim2Exp) maps B -> A and adds it.  ``D_A`` judges domain-B images (real
B vs G_A's output), ``D_B`` judges domain-A images (real A vs G_B's output) --
the DCLGAN naming.  The two sets are used unpaired: every iteration draws the A
and B batches independently.

Generator objective (the released code's weights)::

    L_G = 0.5 (GAN_A + GAN_B) + 0.5*2 (NCE_1 + NCE_2) + 0.5*1 (IDT_A + IDT_B)

* GAN: hinge loss through the discriminators' GAN head;
* NCE_1: queries from G_B's encoder on G_A(a), keys from G_A's encoder on a
  (projected by F_B and F_A), NCE_2 the mirror image -- the 'dual' PatchNCE;
* IDT: L1(G_A(b), b) + L1(G_B(a), a), the latter on measured pixels only.

Each discriminator minimises 0.25 [hinge(real) + hinge(fake) + aux(real) + aux(fake)],
with the auxiliary head regressed by MSE to 0 on real and 1 on fake; the auxiliary
head never enters the generator loss.

With ``GanConfig(resolution=ResolutionConfig(...))`` G_B is a
:class:`~bluesky_twin.gan.networks.ResolutionResnetGenerator` (``b + g R(b)``, ``b`` the
input broadened along energy).  Then:

* the broadening widths get their gradient from the adversarial term ``GAN_B`` only
  (PatchNCE rewards distinguishable patches and the identity term rewards no
  broadening, so both would pull the widths towards zero); they have their own Adam
  group with ``lr * TrainConfig.resolution_lr_scale`` (a handful of parameters that must move by
  several units);
* IDT_A is ``L1(a + g R(a), a)``: the identity of an experiment-like frame skips the
  broadening (it already carries the resolution) and only constrains the correction
  (exactly 0 without the correction, ``ResolutionConfig.residual=False``);
* G_B broadens with the validity mask of its input (normalised convolution);
* with ``ResolutionConfig(stochastic=True)`` G_B is in training mode during the
  step, so each simulated frame gets its own width and instrument amplitudes (the
  spreads are trained with the widths, by ``GAN_B`` only); the NCE features of the
  broadened input use the central values.

With ``TrainConfig(refill_masked=True)`` each translation is filled at its input's masked
pixels with its own nearest measured pixel (as the real frames are filled) before the
discriminators and PatchNCE see it.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bluesky_twin.errors import InputError
from bluesky_twin.gan import losses
from bluesky_twin.gan.config import GanConfig, PseudoPairConfig, TrainConfig, check_training
from bluesky_twin.gan.networks import (
    PatchDiscriminator,
    PatchSampleMLP,
    ResnetGenerator,
    ResolutionResnetGenerator,
    init_weights,
    make_generators,
)
from bluesky_twin.gan.preprocess import Scaling, nearest_fill_indices, to_model_space, validate_frames

__all__ = [
    "TrainConfig",
    "PseudoPairConfig",
    "TrainResult",
    "Exp2SimTrainer",
    "train_gan",
    "plot_losses",
    "pseudo_pair_frames",
]

log = logging.getLogger(__name__)

LOSS_KEYS = ("G", "GAN_A", "GAN_B", "NCE1", "NCE2", "IDT_A", "IDT_B", "D_A", "D_B")
#: Extra history keys with the Sim2Exp resolution layer (widths in pixels, residual gate).
RESOLUTION_KEYS = ("sigma_low_E", "sigma_mid_E", "sigma_high_E", "gate")
#: Extra history key with the pseudo-pair term (``PseudoPairConfig.weight > 0``).
PSEUDO_PAIR_KEY = "PAIR"
#: History key of the Exp2Sim-only pseudo-pair fine-tune (``PseudoPairConfig.finetune``).
PSEUDO_PAIR_FINETUNE_KEY = "PAIR_FT"


@dataclass
class TrainResult:
    """What :func:`train_gan` returns."""

    G_A: ResnetGenerator
    G_B: ResnetGenerator
    history: dict[str, list[float]]
    seconds: float
    s_per_iteration: float
    config: GanConfig
    train_config: TrainConfig
    scaling: Scaling
    extra: dict[str, Any] = field(default_factory=dict)


class Exp2SimTrainer:
    """Holds the networks and optimisers; :meth:`step` does one D and one G update.

    Parameters
    ----------
    config
        Architecture.
    train_config
        Optimisation settings.
    scaling
        Model-space scaling (used by a resolution-layer G_B; default ``Scaling()``).
    """

    def __init__(self, config: GanConfig, train_config: TrainConfig, scaling: Scaling | None = None):
        check_training(config, train_config)
        torch.manual_seed(train_config.seed)
        self.config = config
        self.tc = train_config
        self.G_A, self.G_B = make_generators(config, scaling or Scaling())
        self.resolution = isinstance(self.G_B, ResolutionResnetGenerator)
        self.D_A = PatchDiscriminator(config)
        self.D_B = PatchDiscriminator(config)
        chans = self.G_A.layer_channels(config.nce_layers)
        self.F_A = PatchSampleMLP(chans, config.nce_dim)  # projects G_A-encoder features
        self.F_B = PatchSampleMLP(chans, config.nce_dim)  # projects G_B-encoder features
        for net in (self.G_A, self.G_B, self.D_A, self.D_B, self.F_A, self.F_B):
            init_weights(net)
        betas = (0.5, 0.999)
        if self.resolution:
            self.widths = self.G_B.width_parameters()
            self.opt_G = torch.optim.Adam(
                [
                    {"params": [*self.G_A.parameters(), *self.G_B.residual_parameters()]},
                    {"params": self.widths, "lr": train_config.lr * train_config.resolution_lr_scale},
                ],
                lr=train_config.lr,
                betas=betas,
            )
        else:
            self.widths = []
            self.opt_G = torch.optim.Adam(
                [*self.G_A.parameters(), *self.G_B.parameters()], lr=train_config.lr, betas=betas
            )
        self.opt_F = torch.optim.Adam([*self.F_A.parameters(), *self.F_B.parameters()], lr=train_config.lr, betas=betas)
        self.opt_D = torch.optim.Adam([*self.D_A.parameters(), *self.D_B.parameters()], lr=train_config.lr, betas=betas)
        n_decay = int(round(train_config.iterations * train_config.decay_fraction))
        n_const = train_config.iterations - n_decay

        def factor(it: int) -> float:
            if it < n_const or n_decay == 0:
                return 1.0
            return max(0.0, 1.0 - (it - n_const + 1) / (n_decay + 1))

        self.schedulers = [torch.optim.lr_scheduler.LambdaLR(o, factor) for o in (self.opt_G, self.opt_F, self.opt_D)]
        self.patch_rng = torch.Generator().manual_seed(train_config.seed + 1)
        self.opt_finetune: torch.optim.Optimizer | None = None

    def _set_d_grad(self, flag: bool) -> None:
        for p in (*self.D_A.parameters(), *self.D_B.parameters()):
            p.requires_grad_(flag)

    def _nce(
        self,
        enc_src: list[torch.Tensor],
        enc_tgt: list[torch.Tensor],
        proj_src: PatchSampleMLP,
        proj_tgt: PatchSampleMLP,
    ) -> torch.Tensor:
        keys, ids = proj_src(enc_src, self.config.num_patches, generator=self.patch_rng)
        queries, _ = proj_tgt(enc_tgt, self.config.num_patches, patch_ids=ids)
        return losses.multilayer_nce_loss(queries, keys, self.tc.tau)

    def step(
        self,
        real_A: torch.Tensor,
        valid_A: torch.Tensor,
        real_B: torch.Tensor,
        valid_B: torch.Tensor | None = None,
        fill_A: torch.Tensor | None = None,
        fill_B: torch.Tensor | None = None,
    ) -> dict[str, float]:
        """One optimisation step on a batch of each domain (model space, (B, 1, *spatial)).

        ``valid_A`` / ``valid_B`` are 1 where a pixel was measured (the identity L1
        ignores filled pixels); ``valid_B=None`` means every simulation pixel counts.
        ``fill_A`` / ``fill_B``: optional (B, H*W...) nearest-fill indices of the inputs'
        masks (:func:`~bluesky_twin.gan.preprocess.nearest_fill_indices`); given, the
        translation of that domain is filled at the input's masked pixels the way real
        frames are before anything else sees it (``TrainConfig.refill_masked``).
        """
        w = losses.LOSS_WEIGHTS
        layers = self.config.nce_layers
        for net in (self.G_A, self.G_B, self.D_A, self.D_B, self.F_A, self.F_B):
            net.train()
        fake_B, feat_real_A = self.G_A.forward_with_features(real_A, layers)  # Exp2Sim(a), E_A(a)
        if self.resolution:  # Sim2Exp(b), E_B(broadened b); the broadening sees b's mask
            fake_A, feat_real_B = self.G_B.forward_with_features(real_B, layers, valid=valid_B)
        else:
            fake_A, feat_real_B = self.G_B.forward_with_features(real_B, layers)  # Sim2Exp(b), E_B(b)
        if fill_A is not None:  # masked pixels of the translation filled like the real frames'
            fake_B = _refill(fake_B, fill_A)
        if fill_B is not None:
            fake_A = _refill(fake_A, fill_B)

        # --- discriminators
        self._set_d_grad(True)
        self.opt_D.zero_grad(set_to_none=True)
        d_terms = {}
        for name, D, real, fake in (("D_A", self.D_A, real_B, fake_B), ("D_B", self.D_B, real_A, fake_A)):
            real_gan, real_aux = D(real)
            fake_gan, fake_aux = D(fake.detach())
            h_real, h_fake = losses.hinge_d_loss(real_gan, fake_gan)
            a_real, a_fake = losses.aux_d_loss(real_aux, fake_aux)
            d_terms[name] = w["d"] * (h_real + h_fake + a_real + a_fake)
        (d_terms["D_A"] + d_terms["D_B"]).backward()
        self.opt_D.step()

        # --- generators + projection MLPs
        self._set_d_grad(False)
        self.opt_G.zero_grad(set_to_none=True)
        self.opt_F.zero_grad(set_to_none=True)
        gan_A = losses.hinge_g_loss(self.D_A(fake_B)[0])
        gan_B = losses.hinge_g_loss(self.D_B(fake_A)[0])
        # dual PatchNCE: translated image encoded by the *other* generator's encoder
        nce1 = self._nce(feat_real_A, self.G_B.encode(fake_B, layers), self.F_A, self.F_B)
        nce2 = self._nce(feat_real_B, self.G_A.encode(fake_A, layers), self.F_B, self.F_A)
        idt_B = losses.masked_l1(self.G_A(real_B), real_B, valid_B)
        if self.resolution and not self.G_B.residual:  # G_B's identity path is exactly the identity
            idt_A = torch.zeros((), dtype=real_A.dtype)
        elif self.resolution:
            idt_A = losses.masked_l1(self.G_B(real_A, broaden=False), real_A, valid_A)
        else:
            idt_A = losses.masked_l1(self.G_B(real_A), real_A, valid_A)
        loss_G = w["gan"] * (gan_A + gan_B) + w["nce"] * (nce1 + nce2) + w["idt"] * (idt_A + idt_B)
        pair = None
        if self.tc.pseudo_pair.weight > 0:
            pair = losses.masked_l1(self.G_A(self._pseudo_input(real_B, valid_B, fake_A)), real_B, valid_B)
            loss_G = loss_G + self.tc.pseudo_pair.weight * pair
        width_grads = torch.autograd.grad(w["gan"] * gan_B, self.widths, retain_graph=True) if self.widths else ()
        loss_G.backward()
        for p, g in zip(self.widths, width_grads):  # the widths learn from the adversarial term only
            p.grad = g
        self.opt_G.step()
        self.opt_F.step()
        for s in self.schedulers:
            s.step()
        values = {
            "G": loss_G,
            "GAN_A": gan_A,
            "GAN_B": gan_B,
            "NCE1": nce1,
            "NCE2": nce2,
            "IDT_A": idt_A,
            "IDT_B": idt_B,
            **d_terms,
        }
        if pair is not None:
            values[PSEUDO_PAIR_KEY] = pair
        out = {k: float(v.detach()) for k, v in values.items()}
        if self.resolution:
            out.update(self.resolution_state(real_B.shape[2]))
        return out

    def _pseudo_input(self, real_B: torch.Tensor, valid_B: torch.Tensor | None, fake_A: torch.Tensor) -> torch.Tensor:
        """The Sim2Exp frame of a pseudo pair (no gradient), masked pixels filled as real frames are."""
        if self.tc.pseudo_pair.widths == "uniform":
            return pseudo_pair_frames(self.G_B, real_B, valid_B, uniform_widths=True, generator=self.patch_rng)
        return _fill_masked(fake_A.detach(), valid_B)

    def finetune_step(self, real_B: torch.Tensor, valid_B: torch.Tensor | None) -> float:
        """One Exp2Sim-only step on pseudo pairs of the current Sim2Exp (``PseudoPairConfig.finetune``)."""
        if self.opt_finetune is None:
            self.opt_finetune = torch.optim.Adam(self.G_A.parameters(), lr=self.tc.lr, betas=(0.5, 0.999))
        self.G_A.train()
        self.G_B.train()  # per-frame draws and counting noise, as in the GAN steps
        # the step's G_B output, as in a GAN step; with uniform widths _pseudo_input makes its own
        # and this pass is not used, but it keeps the random stream the shipped powder model was
        # trained with, so its recorded command still reproduces it byte for byte
        with torch.no_grad():
            fake_A = self.G_B(real_B, valid=valid_B) if self.resolution else self.G_B(real_B)
        pair = losses.masked_l1(self.G_A(self._pseudo_input(real_B, valid_B, fake_A)), real_B, valid_B)
        self.opt_finetune.zero_grad(set_to_none=True)
        pair.backward()
        self.opt_finetune.step()
        return float(pair.detach())

    def resolution_state(self, n_rows: int) -> dict[str, float]:
        """Broadening width (pixels) at the lowest, middle and highest row, and the gate."""
        with torch.no_grad():
            sig = self.G_B.resolution.sigma(n_rows)
        return {
            "sigma_low_E": float(sig[0]),
            "sigma_mid_E": float(sig[n_rows // 2]),
            "sigma_high_E": float(sig[-1]),
            "gate": float(self.G_B.gate.detach()),
            **self.G_B.resolution.learned_values(),
        }


def pseudo_pair_frames(
    G_B: ResnetGenerator,
    real_B: torch.Tensor,
    valid_B: torch.Tensor | None,
    uniform_widths: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Sim2Exp frames of pseudo pairs: ``G_B(real_B)`` without gradient, masked pixels filled.

    Parameters
    ----------
    G_B
        The Sim2Exp generator, in the mode wanted (training mode: per-frame draws and noise).
    real_B, valid_B
        Simulations (B, 1, *spatial) in model space and their validity (1: measured) or ``None``.
    uniform_widths
        Each frame's width drawn uniformly across G_B's width bounds
        (:meth:`EnergyResolutionLayer.sigma` ``fraction``; needs a bounded resolution layer);
        otherwise G_B's own widths.
    generator
        Torch generator of the uniform draws.
    """
    with torch.no_grad():
        if uniform_widths:
            fraction = torch.rand(real_B.shape[0], generator=generator).to(real_B.dtype)
            src = G_B(real_B, valid=valid_B, fraction=fraction)
        elif isinstance(G_B, ResolutionResnetGenerator):
            src = G_B(real_B, valid=valid_B)
        else:
            src = G_B(real_B)
    return _fill_masked(src, valid_B)


def _fill_masked(x: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """*x* (B, 1, H, W) with the pixels masked in *valid* filled by the nearest measured one, as
    real frames are filled."""
    if valid is None or bool((valid > 0.5).all()):
        return x
    return _refill(x, torch.from_numpy(nearest_fill_indices(valid[:, 0].numpy() > 0.5)))


def _refill(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``x`` (B, 1, *spatial) with each pixel replaced by the pixel *index* (B, prod(spatial)) names."""
    flat = x.reshape(x.shape[0], x.shape[1], -1)
    return flat.gather(2, index[:, None, :].expand(-1, x.shape[1], -1)).reshape(x.shape)


def _as_batch_tensor(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x))[:, None]


def _random_crop(rng: np.random.Generator, arrays: list[np.ndarray], crop: int | None) -> list[np.ndarray]:
    if crop is None:
        return arrays
    spatial = arrays[0].shape[1:]
    if any(s < crop for s in spatial):
        raise InputError(f"crop {crop} is larger than the frames {spatial}")
    out = []
    for i in range(arrays[0].shape[0]):
        starts = [int(rng.integers(0, s - crop + 1)) for s in spatial]
        sl = (i,) + tuple(slice(s0, s0 + crop) for s0 in starts)
        out.append([a[sl] for a in arrays])
    return [np.stack([o[j] for o in out]) for j in range(len(arrays))]


def train_gan(
    frames_A: np.ndarray,
    frames_B: np.ndarray,
    config: GanConfig | None = None,
    train_config: TrainConfig | None = None,
    scaling: Scaling | None = None,
    progress: bool = False,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train an Exp2SimGAN pair on unpaired frame sets.

    Parameters
    ----------
    frames_A
        Experiment-like frames (N_A, *spatial), NaN where masked.
    frames_B
        Unconvolved simulation frames (N_B, *spatial).
    config, train_config, scaling
        Architecture, optimisation and preprocessing (defaults: ``small`` preset).
    progress
        Show a tqdm progress bar with the current losses.
    on_step
        Called as ``on_step(iteration, losses)`` after every step.

    Returns
    -------
    TrainResult
        Trained generators (in eval mode), per-step loss history and timing.
    """
    config = config or GanConfig()
    train_config = train_config or TrainConfig()
    scaling = scaling or Scaling()
    fa = validate_frames(frames_A, config.dims)
    fb = validate_frames(frames_B, config.dims)
    xa, va = to_model_space(fa, scaling)
    xb, vb = to_model_space(fb, scaling)
    va, vb = va.astype(np.float32), vb.astype(np.float32)
    check_training(config, train_config, xa.shape[1:])
    rng = np.random.default_rng(train_config.seed)
    trainer = Exp2SimTrainer(config, train_config, scaling)
    keys = LOSS_KEYS
    if trainer.resolution:
        keys = keys + RESOLUTION_KEYS + tuple(trainer.G_B.resolution.learned_values())
    if train_config.pseudo_pair.weight > 0:
        keys = keys + (PSEUDO_PAIR_KEY,)
    history: dict[str, list[float]] = {k: [] for k in keys}
    iterator = range(train_config.iterations)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(iterator, desc="Exp2SimGAN", unit="it", dynamic_ncols=True)
        iterator = bar
    t0 = time.perf_counter()
    bs = train_config.batch_size
    for it in iterator:
        ia = rng.integers(0, len(xa), bs)
        ib = rng.integers(0, len(xb), bs)
        a, v = _random_crop(rng, [xa[ia], va[ia]], train_config.crop)
        b, vb_batch = _random_crop(rng, [xb[ib], vb[ib]], train_config.crop)
        fills = (
            (torch.from_numpy(nearest_fill_indices(v > 0.5)), torch.from_numpy(nearest_fill_indices(vb_batch > 0.5)))
            if train_config.refill_masked
            else (None, None)
        )
        values = trainer.step(
            _as_batch_tensor(a), _as_batch_tensor(v), _as_batch_tensor(b), _as_batch_tensor(vb_batch), *fills
        )
        if not all(math.isfinite(x) for x in values.values()):
            raise RuntimeError(f"non-finite loss at iteration {it}: {values}")
        for k in keys:
            history[k].append(values[k])
        if bar is not None and (it % 10 == 0 or it == train_config.iterations - 1):
            bar.set_postfix(
                G=f"{values['G']:.3f}",
                NCE=f"{values['NCE1'] + values['NCE2']:.3f}",
                D=f"{values['D_A'] + values['D_B']:.3f}",
            )
        if on_step is not None:
            on_step(it, values)
    seconds = time.perf_counter() - t0
    if bar is not None:
        bar.close()
    extra: dict[str, Any] = {}
    if train_config.pseudo_pair.finetune > 0:
        t_ft = time.perf_counter()
        history[PSEUDO_PAIR_FINETUNE_KEY] = []
        steps = range(train_config.pseudo_pair.finetune)
        if progress:
            from tqdm.auto import tqdm

            steps = tqdm(steps, desc="Exp2Sim pseudo-pair fine-tune", unit="it", dynamic_ncols=True)
        for _ in steps:
            ib = rng.integers(0, len(xb), bs)
            value = trainer.finetune_step(_as_batch_tensor(xb[ib]), _as_batch_tensor(vb[ib]))
            if not math.isfinite(value):
                raise RuntimeError(f"non-finite pseudo-pair loss in the fine-tune: {value}")
            history[PSEUDO_PAIR_FINETUNE_KEY].append(value)
        extra["pseudo_pair_finetune_seconds"] = time.perf_counter() - t_ft
    trainer.G_A.eval()
    trainer.G_B.eval()
    if trainer.resolution:
        with torch.no_grad():
            sig = trainer.G_B.resolution.sigma(int(xb.shape[1]))
        extra["resolution"] = {
            "sigma_rows": [round(float(v), 4) for v in sig],
            "coefficients": [float(v) for v in trainer.G_B.resolution.coeffs.detach()],
            "gate": float(trainer.G_B.gate.detach()),
            **trainer.G_B.resolution.learned_values(),
        }
    return TrainResult(
        G_A=trainer.G_A,
        G_B=trainer.G_B,
        history=history,
        seconds=seconds,
        s_per_iteration=seconds / train_config.iterations,
        config=config,
        train_config=train_config,
        scaling=scaling,
        extra=extra,
    )


def plot_losses(history: dict[str, list[float]], out_dir: str | Path, smooth: int = 25) -> list[Path]:
    """Write ``loss_generator.png`` and ``loss_discriminator.png`` (moving averages).

    With the Sim2Exp resolution layer's keys in *history* (:data:`RESOLUTION_KEYS`),
    also ``resolution_width.png`` (broadening widths in pixels and the residual gate).
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from bluesky_twin.io_utils import atomic_path

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    def ma(values: list[float]) -> tuple[np.ndarray, np.ndarray]:
        y = np.asarray(values, dtype=float)
        k = max(1, min(smooth, len(y)))
        kernel = np.ones(k) / k
        ys = np.convolve(y, kernel, mode="valid")
        return np.arange(k - 1, k - 1 + len(ys)), ys

    written = []
    groups = {
        "loss_generator.png": ("generator losses", ["G", "GAN_A", "GAN_B", "NCE1", "NCE2", "IDT_A", "IDT_B"]),
        "loss_discriminator.png": ("discriminator losses", ["D_A", "D_B"]),
    }
    if history.get(PSEUDO_PAIR_KEY) or history.get(PSEUDO_PAIR_FINETUNE_KEY):
        groups["loss_pseudo_pair.png"] = (
            "Exp2Sim pseudo-pair L1 (GAN steps; then the fine-tune steps)",
            [PSEUDO_PAIR_KEY, PSEUDO_PAIR_FINETUNE_KEY],
        )
    if any(history.get(k) for k in RESOLUTION_KEYS):
        groups["resolution_width.png"] = ("Sim2Exp broadening width (pixels) and gate", list(RESOLUTION_KEYS))
    for fname, (title, keys) in groups.items():
        fig = Figure(figsize=(7, 4), dpi=100)
        ax = fig.add_subplot()
        for k in keys:
            if history.get(k):
                x, y = ma(history[k])
                ax.plot(x, y, label=k)
        ax.set_xlabel("iteration")
        ax.set_ylabel(f"{'value' if fname.startswith('resolution') else 'loss'} (moving average, {smooth} it)")
        ax.set_title(title)
        ax.legend(fontsize=8, ncol=2)
        fig.tight_layout()
        dest = out_dir / fname
        with atomic_path(dest) as tmp:
            fig.savefig(tmp, format="png")
        written.append(dest)
    return written
