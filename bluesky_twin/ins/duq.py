"""Deterministic Uncertainty Quantification (DUQ) classifier for INS frames.

After van Amersfoort, Smith, Teh and Gal, "Uncertainty Estimation Using a Single Deep
Deterministic Neural Network", ICML 2020, as used by Anker et al. (Exp2SimGAN, Digital
Discovery 2023) to evaluate INS translations:

- a small CNN maps a frame to an embedding ``f(x)``;
- each class ``c`` has a weight matrix ``W_c`` and a centroid ``e_c``; the class score is
  the RBF kernel ``K_c = exp(-mean((W_c f(x) - e_c)^2) / (2 sigma^2))`` in [0, 1];
- the loss is the binary cross-entropy of every ``K_c`` against the one-hot label plus a
  two-sided gradient penalty ``lambda (||d sum_c K_c / dx||_2 - 1)^2`` that keeps the
  feature map sensitive to its input (so far-away inputs get low kernel values);
- centroids are exponential moving averages of the class members' embeddings,
  ``N_c <- gamma N_c + (1 - gamma) n_c``, ``m_c <- gamma m_c + (1 - gamma) sum W_c f(x)``,
  ``e_c = m_c / N_c``, updated after every optimiser step (here from the embeddings of
  that step's forward pass, which saves a second forward pass).

A frame whose largest kernel value is low is far from every class: the classifier is
uncertain about it.

Input scaling (``input_scale``, recorded in the saved metadata and applied by
:meth:`DUQClassifier.predict_proba`): frames come in the simulator's units (divided by
their 99.5th percentile) and are mapped to [0, 1] by :func:`scale_frames`, either

- ``"log"``: the package's clipped log scale shared with the GAN,
  :func:`bluesky_twin.ins.preprocess.preprocess_frames`,
  ``log1p(gain clip(x, 0, vmax)) / log1p(gain vmax)``; or
- ``"linear"``: linear intensity, clipped to ``[0, vmax]`` and min-max scaled per frame
  (over the measured pixels), as the images of Anker et al.'s classifier were.  The clip
  at ``vmax`` (4 x the 99.5th percentile, the GAN's range) keeps the zone-centre
  divergence from setting the scale and treats raw and generator-made frames (which the
  GAN caps at its ``vmax``) alike.

In both, NaN (masked) pixels are filled with ``fill_value`` (0, i.e. "no counts") after
scaling, so masked experiment-like frames can be classified directly.  A saved
classifier without the ``input_scale`` key (written before the option existed) loads
as ``"log"``.

Inference (:meth:`DUQClassifier.predict_proba`) is read-only and may run in a worker
thread; do not call :meth:`DUQClassifier.fit` concurrently with it.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray
from torch import nn

from bluesky_twin.errors import InputError, ModelFileError
from bluesky_twin.ins.preprocess import DEFAULT_GAIN, DEFAULT_VMAX, frame_array, preprocess_frames

#: Input scalings :func:`scale_frames` knows.
INPUT_SCALES = ("log", "linear")
#: Input scaling of newly constructed classifiers.
DEFAULT_INPUT_SCALE = "log"

MODEL_FORMAT = "bluesky-twin-duq"
MODEL_FORMAT_VERSION = 1
WEIGHTS_FILE = "model.pt"
METADATA_FILE = "metadata.json"


def scale_frames(
    frames: ArrayLike,
    input_scale: str = DEFAULT_INPUT_SCALE,
    *,
    gain: float = DEFAULT_GAIN,
    vmax: float = DEFAULT_VMAX,
    fill_value: float = 0.0,
) -> NDArray[np.float32]:
    """Map percentile-normalised frames to the classifier's [0, 1] input.

    Parameters
    ----------
    frames
        ``(n, H, W)`` or ``(H, W)`` frames in the simulator's units; NaN marks masked
        pixels, infinities are rejected.
    input_scale
        ``"log"``: :func:`~bluesky_twin.ins.preprocess.preprocess_frames` (clipped log
        scale); ``"linear"``: ``clip(x, 0, vmax)`` min-max scaled per frame over its
        measured pixels (a constant frame maps to 0).
    gain
        Gain of the log scale (unused by ``"linear"``).
    vmax
        Clip level in frame units.
    fill_value
        Value written into masked pixels after scaling.

    Returns
    -------
    numpy.ndarray
        float32 array with the input's shape, values in [0, 1], no NaN.

    Raises
    ------
    InputError
        For an unknown ``input_scale``, bad parameters or a bad array.
    """
    if input_scale == "log":
        return preprocess_frames(frames, gain=gain, vmax=vmax, fill_value=fill_value)
    if input_scale != "linear":
        raise InputError(f"input_scale must be one of {INPUT_SCALES}, got {input_scale!r}")
    x = frame_array(frames)
    if not (vmax > 0 and 0.0 <= fill_value <= 1.0):
        raise InputError(f"need vmax > 0 and 0 <= fill_value <= 1 (got {vmax}, {fill_value})")
    flat = x.reshape(-1, x.shape[-2] * x.shape[-1])
    valid = np.isfinite(flat)
    clipped = np.clip(np.where(valid, flat, 0.0), 0.0, vmax)
    lo = np.where(valid, clipped, np.inf).min(1, keepdims=True)
    hi = np.where(valid, clipped, -np.inf).max(1, keepdims=True)
    span = hi - lo
    ok = np.isfinite(span) & (span > 0)
    out = np.where(ok, (clipped - np.where(ok, lo, 0.0)) / np.where(ok, span, 1.0), 0.0)
    out[~valid] = fill_value
    return out.reshape(x.shape).astype(np.float32)


@dataclass(frozen=True)
class DUQConfig:
    """Architecture and DUQ hyper-parameters (stored with a saved model).

    Attributes
    ----------
    n_classes
        Number of classes (one centroid each).
    channels
        Output channels of the convolution blocks (each halves the resolution except the
        last; a 4x4 adaptive average pool follows).
    embedding_dim
        Size of the CNN embedding ``f(x)``.
    centroid_dim
        Size of each class's centroid space (rows of ``W_c``).
    length_scale
        RBF length scale ``sigma``.
    gamma
        EMA factor of the centroid update (0.999 in the paper for long CIFAR runs; 0.99
        suits the few hundred steps of a CPU-sized run).
    gradient_penalty
        Weight ``lambda`` of the two-sided gradient penalty.
    """

    n_classes: int = 2
    channels: tuple[int, ...] = (16, 32, 32, 64)
    embedding_dim: int = 64
    centroid_dim: int = 32
    length_scale: float = 0.1
    gamma: float = 0.99
    gradient_penalty: float = 0.1


class _Features(nn.Module):
    """Small CNN: a 5x5 and further 3x3 stride-2 convolutions (BN, ReLU), the last one
    stride 1, then a 4x4 adaptive average pool and a linear layer to the embedding.

    Strided convolutions instead of max-pooling keep the gradient penalty's double
    backward pass cheap on a CPU.
    """

    def __init__(self, channels: tuple[int, ...], embedding_dim: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 1
        for i, c_out in enumerate(channels):
            last = i == len(channels) - 1
            kernel = 5 if i == 0 else 3
            layers += [
                nn.Conv2d(c_in, c_out, kernel, stride=1 if last else 2, padding=kernel // 2, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(),
            ]
            c_in = c_out
        layers += [nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(c_in * 16, embedding_dim), nn.ReLU()]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class _DUQNet(nn.Module):
    """CNN embedding + per-class linear maps + EMA centroids (as buffers)."""

    def __init__(self, config: DUQConfig) -> None:
        super().__init__()
        self.config = config
        self.features = _Features(tuple(config.channels), config.embedding_dim)
        self.W = nn.Parameter(torch.normal(0.0, 0.05, (config.centroid_dim, config.n_classes, config.embedding_dim)))
        n0 = torch.full((config.n_classes,), 13.0)
        self.register_buffer("N", n0)
        # as in the reference implementation: small random centroids, so that the initial
        # kernel values are not vanishingly small (that stalls training for ~100 steps)
        self.register_buffer("m", torch.normal(0.0, 0.05, (config.centroid_dim, config.n_classes)) * n0)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``W_c f(x)`` for every class: ``(batch, centroid_dim, n_classes)``."""
        return torch.einsum("ij,mnj->imn", self.features(x), self.W)

    def kernel(self, z: torch.Tensor) -> torch.Tensor:
        """RBF kernel values ``(batch, n_classes)`` of class embeddings ``z``."""
        centroids = self.m / self.N.unsqueeze(0)
        dist = ((z - centroids.unsqueeze(0)) ** 2).mean(1)
        return torch.exp(-dist / (2 * self.config.length_scale**2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.kernel(self.embed(x))

    @torch.no_grad()
    def update_centroids(self, z: torch.Tensor, y_onehot: torch.Tensor) -> None:
        """EMA update of the class counts and summed embeddings."""
        g = self.config.gamma
        self.N.mul_(g).add_((1 - g) * y_onehot.sum(0))
        self.m.mul_(g).add_((1 - g) * torch.einsum("ijk,ik->jk", z, y_onehot))


@dataclass
class TrainingHistory:
    """Per-epoch training record."""

    loss: list[float] = field(default_factory=list)
    bce: list[float] = field(default_factory=list)
    gradient_penalty: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    seconds: float = 0.0


class DUQClassifier:
    """DUQ classifier of INS frames (e.g. the sign of J2).

    Parameters
    ----------
    n_classes
        Number of classes.
    input_scale
        ``"log"`` or ``"linear"`` input scaling (see :func:`scale_frames`); stored with
        the model and applied at prediction time.
    **config
        Other :class:`DUQConfig` fields (``channels``, ``embedding_dim``,
        ``centroid_dim``, ``length_scale``, ``gamma``, ``gradient_penalty``).

    Examples
    --------
    >>> from bluesky_twin.ins import generate_dataset, DUQClassifier  # doctest: +SKIP
    >>> ds = generate_dataset(1000, seed=0)                              # doctest: +SKIP
    >>> clf = DUQClassifier().fit(ds.unconvolved, ds.labels, epochs=10)  # doctest: +SKIP
    >>> clf.predict_proba(ds.convolved[:5])                              # doctest: +SKIP
    """

    def __init__(self, n_classes: int = 2, *, input_scale: str | None = None, **config: Any) -> None:
        input_scale = DEFAULT_INPUT_SCALE if input_scale is None else input_scale
        if input_scale not in INPUT_SCALES:
            raise InputError(f"input_scale must be one of {INPUT_SCALES}, got {input_scale!r}")
        if isinstance(n_classes, bool) or not isinstance(n_classes, (int, np.integer)) or n_classes < 2:
            raise InputError(f"n_classes must be an integer >= 2, got {n_classes!r}")
        try:
            cfg = DUQConfig(n_classes=int(n_classes), **config)
        except TypeError as exc:
            raise InputError(f"bad DUQ configuration: {exc}") from None
        if cfg.length_scale <= 0 or not 0 < cfg.gamma < 1 or cfg.gradient_penalty < 0:
            raise InputError(
                "need length_scale > 0, 0 < gamma < 1 and gradient_penalty >= 0, got "
                f"{cfg.length_scale}, {cfg.gamma}, {cfg.gradient_penalty}"
            )
        if not cfg.channels or any(int(c) < 1 for c in cfg.channels):
            raise InputError(f"channels must be positive integers, got {cfg.channels!r}")
        self.config = DUQConfig(**{**asdict(cfg), "channels": tuple(int(c) for c in cfg.channels)})
        self.preprocessing: dict[str, Any] = {
            "input_scale": input_scale,
            "gain": DEFAULT_GAIN,
            "vmax": DEFAULT_VMAX,
            "fill_value": 0.0,
        }
        self.input_shape: tuple[int, int] | None = None
        self.history = TrainingHistory()
        self.metadata: dict[str, Any] = {}
        self._net: _DUQNet | None = None

    # ------------------------------------------------------------------ helpers
    @property
    def input_scale(self) -> str:
        """The input scaling, ``"log"`` or ``"linear"`` (see :func:`scale_frames`)."""
        return str(self.preprocessing.get("input_scale", "log"))

    @property
    def is_fitted(self) -> bool:
        """Whether the classifier has weights (fitted or loaded)."""
        return self._net is not None

    def _to_tensor(self, frames: ArrayLike, *, check_shape: bool) -> torch.Tensor:
        arr = np.asarray(frames)
        if arr.ndim == 2:
            arr = arr[None]
        if arr.ndim != 3 or arr.shape[0] == 0:
            raise InputError(f"frames must be a non-empty (n, H, W) array, got shape {arr.shape}")
        if min(arr.shape[1:]) < 8:
            raise InputError(f"frames must be at least 8 x 8 pixels, got {arr.shape[1:]}")
        if check_shape and self.input_shape is not None and tuple(arr.shape[1:]) != self.input_shape:
            raise InputError(f"this classifier was trained on {self.input_shape} frames, got {tuple(arr.shape[1:])}")
        pre = self.preprocessing
        x = scale_frames(
            arr, self.input_scale, gain=float(pre["gain"]), vmax=float(pre["vmax"]), fill_value=float(pre["fill_value"])
        )
        return torch.from_numpy(x).unsqueeze(1)

    # ----------------------------------------------------------------- training
    def fit(
        self,
        frames: ArrayLike,
        labels: ArrayLike,
        *,
        epochs: int = 12,
        batch_size: int = 32,
        lr: float = 3e-3,
        weight_decay: float = 1e-4,
        seed: int = 0,
        progress: bool = False,
        num_threads: int | None = None,
    ) -> DUQClassifier:
        """Train from scratch on ``frames`` (``(n, H, W)``, NaN allowed) and ``labels``.

        Parameters
        ----------
        frames
            Percentile-normalised frames as produced by :mod:`bluesky_twin.ins.frames`.
        labels
            ``(n,)`` integers in ``[0, n_classes)``.
        epochs, batch_size, lr, weight_decay
            Adam optimisation settings.
        seed
            Seeds weight initialisation and batch order (results are reproducible for a
            fixed ``num_threads``).
        progress
            Show a tqdm bar over epochs.
        num_threads
            If given, ``torch.set_num_threads`` for the duration of the fit.

        Returns
        -------
        DUQClassifier
            ``self``.
        """
        x = self._to_tensor(frames, check_shape=False)
        y = np.asarray(labels)
        if y.ndim != 1 or len(y) != x.shape[0]:
            raise InputError(f"labels must have shape ({x.shape[0]},), got {y.shape}")
        if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= self.config.n_classes:
            raise InputError(f"labels must be integers in [0, {self.config.n_classes})")
        present = np.unique(y)
        if len(present) < 2:
            raise InputError(f"training needs at least two classes, got only {present.tolist()}")
        for name, value, lo in (("epochs", epochs, 1), ("batch_size", batch_size, 2)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
                raise InputError(f"{name} must be an integer >= {lo}, got {value!r}")
        if not (lr > 0 and weight_decay >= 0):
            raise InputError(f"need lr > 0 and weight_decay >= 0, got {lr}, {weight_decay}")

        old_threads = torch.get_num_threads()
        if num_threads is not None:
            torch.set_num_threads(int(num_threads))
        try:
            self._fit(
                x,
                torch.from_numpy(y.astype(np.int64)),
                int(epochs),
                int(batch_size),
                float(lr),
                float(weight_decay),
                int(seed),
                progress,
            )
        finally:
            torch.set_num_threads(old_threads)
        self.input_shape = (int(x.shape[2]), int(x.shape[3]))
        return self

    def _fit(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        epochs: int,
        batch_size: int,
        lr: float,
        weight_decay: float,
        seed: int,
        progress: bool,
    ) -> None:
        torch.manual_seed(seed)
        net = _DUQNet(self.config)
        opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
        gen = torch.Generator().manual_seed(seed)
        n = x.shape[0]
        history = TrainingHistory()
        t0 = time.perf_counter()
        lam = self.config.gradient_penalty
        epoch_iter: Any = range(epochs)
        if progress:
            from tqdm.auto import tqdm

            epoch_iter = tqdm(epoch_iter, desc="DUQ epochs", unit="epoch")
        for _ in epoch_iter:
            net.train()
            order = torch.randperm(n, generator=gen)
            sums = np.zeros(4)
            for start in range(0, n, batch_size):
                idx = order[start : start + batch_size]
                if len(idx) < 2:  # BatchNorm needs two samples
                    continue
                xb = x[idx].clone().requires_grad_(lam > 0)
                yb = nn.functional.one_hot(y[idx], self.config.n_classes).float()
                z = net.embed(xb)
                k = net.kernel(z)
                bce = nn.functional.binary_cross_entropy(k.clamp(1e-6, 1 - 1e-6), yb)
                loss = bce
                gp = torch.zeros(())
                if lam > 0:
                    grad = torch.autograd.grad(k.sum(), xb, create_graph=True)[0]
                    gp = ((grad.flatten(1).norm(2, dim=1) - 1.0) ** 2).mean()
                    loss = bce + lam * gp
                    gp = gp.detach()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                net.update_centroids(z.detach(), yb)
                b = len(idx)
                correct = (k.argmax(1) == y[idx]).sum().item()
                sums += np.array([loss.item() * b, bce.item() * b, gp.item() * b, correct])
            sched.step()
            history.loss.append(float(sums[0] / n))
            history.bce.append(float(sums[1] / n))
            history.gradient_penalty.append(float(sums[2] / n))
            history.accuracy.append(float(sums[3] / n))
            if not math.isfinite(history.loss[-1]):
                raise InputError("DUQ training diverged (non-finite loss); lower lr")
        history.seconds = time.perf_counter() - t0
        net.eval()
        self._net = net
        self.history = history

    # ---------------------------------------------------------------- inference
    def predict_proba(self, frames: ArrayLike, *, batch_size: int = 256) -> NDArray[np.float32]:
        """RBF kernel value of every class, ``(n, n_classes)`` in [0, 1].

        The values are not normalised across classes: all of them low means the frame is
        far from every class centroid (uncertain / out of distribution).
        """
        if self._net is None:
            raise InputError("the DUQ classifier is not fitted; call fit() or load() first")
        x = self._to_tensor(frames, check_shape=True)
        out = []
        with torch.no_grad():
            for start in range(0, x.shape[0], batch_size):
                out.append(self._net(x[start : start + batch_size]))
        return torch.cat(out).numpy().astype(np.float32)

    def predict(self, frames: ArrayLike) -> NDArray[np.int64]:
        """Class with the largest kernel value, ``(n,)`` int64."""
        return self.predict_proba(frames).argmax(1).astype(np.int64)

    def certainty(self, frames: ArrayLike) -> NDArray[np.float32]:
        """Largest kernel value per frame (DUQ's certainty; low means uncertain)."""
        return self.predict_proba(frames).max(1)

    def score(self, frames: ArrayLike, labels: ArrayLike) -> float:
        """Accuracy on ``frames`` with true ``labels``."""
        y = np.asarray(labels)
        pred = self.predict(frames)
        if y.shape != pred.shape:
            raise InputError(f"labels must have shape {pred.shape}, got {y.shape}")
        return float((pred == y).mean())

    # ------------------------------------------------------------- persistence
    def save(self, path: str | os.PathLike) -> Path:
        """Publish the classifier as a new version of model directory *path*.

        The layout is that of :mod:`bluesky_twin.modeldir` (checksummed, versioned,
        previous versions kept until the new one is complete); the metadata records the
        configuration, preprocessing, input shape and training history.
        """
        from bluesky_twin.modeldir import write_version

        if self._net is None:
            raise InputError("nothing to save: the DUQ classifier is not fitted")
        dest = Path(path)
        state = self._net.state_dict()
        write_version(dest, self._metadata(weights_sha256=None), lambda tmp: torch.save(state, tmp / WEIGHTS_FILE))
        return dest

    def write_files(self, directory: str | os.PathLike) -> None:
        """Write the classifier's files (``model.pt``, ``metadata.json``) into *directory*.

        For a classifier stored inside another model's version (the Exp2SimGAN model
        directory), whose checksums cover these files too.
        """
        from bluesky_twin.io_utils import sha256_file
        from bluesky_twin.modeldir import dumps_strict

        if self._net is None:
            raise InputError("nothing to save: the DUQ classifier is not fitted")
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        torch.save(self._net.state_dict(), d / WEIGHTS_FILE)
        digest = sha256_file(d / WEIGHTS_FILE)
        meta = self._metadata(weights_sha256=digest)
        meta["files"] = {WEIGHTS_FILE: digest}
        (d / METADATA_FILE).write_text(dumps_strict(meta))

    def _metadata(self, weights_sha256: str | None) -> dict[str, Any]:
        meta = {
            "format": MODEL_FORMAT,
            "format_version": MODEL_FORMAT_VERSION,
            "config": asdict(self.config),
            "preprocessing": self.preprocessing,
            "input_shape": list(self.input_shape or ()),
            "history": asdict(self.history),
            "torch_version": torch.__version__,
            "extra": self.metadata,
        }
        if weights_sha256 is not None:
            meta["weights_sha256"] = weights_sha256
        return meta

    @classmethod
    def load(cls, path: str | os.PathLike) -> DUQClassifier:
        """Load the current version of a classifier directory written by :meth:`save`.

        Raises
        ------
        ModelFileError
            If the directory or a file is missing, the metadata is not valid JSON of this
            format, a checksum does not match, a size is out of bounds, or the weights do
            not load (``torch.load(weights_only=True)``) into the described architecture.
        """
        from bluesky_twin.modeldir import load_model

        return load_model(path, MODEL_FORMAT, cls.from_version)

    @classmethod
    def from_version(cls, version: Any) -> DUQClassifier:
        """Build a classifier from a verified :class:`~bluesky_twin.modeldir.ModelVersion` (or a view of one)."""
        from bluesky_twin.io_utils import sha256_bytes
        from bluesky_twin.modeldir import check_size

        src = version.path
        meta_path = src / METADATA_FILE
        meta = version.metadata
        if not isinstance(meta, dict) or meta.get("format") != MODEL_FORMAT:
            raise ModelFileError(f"{src} is not a bluesky-twin DUQ model")
        if meta.get("format_version") != MODEL_FORMAT_VERSION:
            raise ModelFileError(
                f"{src} has DUQ format version {meta.get('format_version')}, this version reads {MODEL_FORMAT_VERSION}"
            )
        raw = version.read(WEIGHTS_FILE)
        if "weights_sha256" in meta and sha256_bytes(raw) != meta["weights_sha256"]:
            raise ModelFileError(f"{src / WEIGHTS_FILE} does not match the checksum in {METADATA_FILE}")
        try:
            config = dict(meta["config"])
            n_classes = check_size("n_classes", config.pop("n_classes"), 1, 1000, source=str(meta_path))
            channels = config["channels"]
            check_size("number of channel blocks", len(channels), 1, 16, source=str(meta_path))
            config["channels"] = tuple(check_size("channels", c, 1, 2048, source=str(meta_path)) for c in channels)
            for key in ("embedding_dim", "centroid_dim"):
                if key in config:
                    config[key] = check_size(key, config[key], 1, 8192, source=str(meta_path))
            for s in meta.get("input_shape") or ():
                check_size("input_shape", s, 1, 16384, source=str(meta_path))
            clf = cls(n_classes, **config)
            state = version.torch_load(WEIGHTS_FILE)
            net = _DUQNet(clf.config)
            net.load_state_dict(state, strict=True)
        except ModelFileError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure here means a bad model file
            raise ModelFileError(f"cannot load DUQ weights from {src}: {exc}") from None
        net.eval()
        clf._net = net
        pre = meta.get("preprocessing", clf.preprocessing)
        # written before the input_scale option existed: the log scale
        pre = {"input_scale": "log", **(pre if isinstance(pre, dict) else {})}
        try:
            pre = {
                "input_scale": str(pre["input_scale"]),
                "gain": float(pre["gain"]),
                "vmax": float(pre["vmax"]),
                "fill_value": float(pre["fill_value"]),
            }
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFileError(f"{meta_path} has invalid preprocessing settings: {exc!r}") from None
        if pre["input_scale"] not in INPUT_SCALES:
            raise ModelFileError(f"{meta_path}: unknown input_scale {pre['input_scale']!r}")
        clf.preprocessing = pre
        shape = meta.get("input_shape") or None
        clf.input_shape = tuple(int(s) for s in shape) if shape else None
        hist = meta.get("history") or {}
        clf.history = TrainingHistory(**{k: v for k, v in hist.items() if k in TrainingHistory.__dataclass_fields__})
        clf.metadata = dict(meta.get("extra") or {})
        return clf
