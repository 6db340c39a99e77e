"""Frame preprocessing for the GAN: NaN-mask filling and scaling to [-1, 1].

NaN masks (detector gaps, out-of-coverage pixels) are handled in two steps:

1. each masked pixel is **filled with the value of its nearest measured pixel**
   (Euclidean distance transform), so the convolutions never see NaN and a masked
   stripe looks like its neighbours instead of a sharp artificial edge;
2. the boolean **validity mask is returned alongside** and used to weight the
   pixel losses (identity L1 only counts measured pixels) and, after translation,
   to put the NaN back if the caller asks for it.

The mask is deliberately *not* an extra input channel: the simulation domain has
no masks, so a mask channel would let the discriminators tell the domains apart
by the mask alone.

Scaling (:class:`Scaling`): the frames are already divided by their 99.5th
percentile; they are put on the package's shared clipped log scale in [0, 1]
(the DUQ classifier's input scale, gain 4, vmax 4) and then mapped to [-1, 1] as
in the paper (min-max to [0, 1], then [-1, 1]).  Generator output is mapped back
to frame units by the exact inverse.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from bluesky_twin.errors import InputError

__all__ = ["Scaling", "fill_nan", "nearest_fill_indices", "to_model_space", "from_model_space", "validate_frames"]


@dataclass(frozen=True)
class Scaling:
    """Map from frame units to model space [-1, 1].

    ``kind="log1p"`` (default) is the package's shared INS scale
    (:func:`bluesky_twin.ins.preprocess.preprocess_frames`):
    ``v = log1p(gain * clip(x, 0, vmax)) / log1p(gain * vmax)``, then ``2 v - 1``;
    it keeps the weak dispersion branches visible next to the divergent zone centre.
    ``kind="linear"`` clips to ``[0, vmax]`` and maps linearly.
    """

    kind: str = "log1p"
    gain: float = 4.0
    vmax: float = 4.0

    def __post_init__(self) -> None:
        if self.kind not in ("log1p", "linear"):
            raise ValueError(f"unknown scaling kind {self.kind!r}")
        if not (self.gain > 0 and self.vmax > 0):
            raise ValueError("gain and vmax must be positive")

    def to_dict(self) -> dict[str, Any]:  # noqa: D102
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Scaling:  # noqa: D102
        return cls(kind=str(d["kind"]), gain=float(d["gain"]), vmax=float(d["vmax"]))

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Frame units -> [0, 1] (clipped)."""
        x = np.clip(x, 0.0, self.vmax)
        if self.kind == "linear":
            return x / self.vmax
        return np.log1p(self.gain * x) / np.log1p(self.gain * self.vmax)

    def inverse(self, v: np.ndarray) -> np.ndarray:
        """[0, 1] -> frame units."""
        v = np.clip(v, 0.0, 1.0)
        if self.kind == "linear":
            return v * self.vmax
        return np.expm1(v * np.log1p(self.gain * self.vmax)) / self.gain


def validate_frames(frames: Any, dims: int = 2) -> np.ndarray:
    """Return *frames* as float32 (N, *spatial) or raise :class:`InputError`.

    A single frame (*spatial* only) is promoted to a batch of one.  NaN is allowed,
    infinities are not, and each frame needs at least one finite pixel.
    """
    arr = np.asarray(frames)
    if arr.dtype.kind not in "fiub":
        raise InputError(f"frames must be numeric, got dtype {arr.dtype}")
    arr = arr.astype(np.float32, copy=False)
    if arr.ndim == dims:
        arr = arr[None]
    if arr.ndim != dims + 1:
        shape = "(N, H, W)" if dims == 2 else "(N, D, H, W)"
        raise InputError(f"frames must have shape {shape}, got {arr.shape}")
    if arr.shape[0] == 0:
        raise InputError("no frames given (N = 0)")
    if any(s < 4 for s in arr.shape[1:]):
        raise InputError(f"frames are too small: {arr.shape[1:]} (need >= 4 pixels per axis)")
    if np.isinf(arr).any():
        raise InputError("frames contain +-inf; use NaN for masked pixels")
    finite_per_frame = np.isfinite(arr.reshape(arr.shape[0], -1)).any(axis=1)
    if not finite_per_frame.all():
        bad = np.flatnonzero(~finite_per_frame)[:5].tolist()
        raise InputError(f"frames {bad} are entirely NaN")
    return arr


def fill_nan(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fill NaN pixels with their nearest finite neighbour, per frame.

    Parameters
    ----------
    frames
        (N, *spatial) float array, NaN where masked.

    Returns
    -------
    filled, valid
        The filled copy and a boolean array, True where the pixel was measured.
    """
    from scipy import ndimage

    valid = np.isfinite(frames)
    filled = np.array(frames, dtype=np.float32, copy=True)
    for i in np.flatnonzero(~valid.reshape(len(frames), -1).all(axis=1)):
        if not valid[i].any():
            filled[i] = 0.0
            continue
        _, idx = ndimage.distance_transform_edt(~valid[i], return_indices=True)
        filled[i] = frames[i][tuple(idx)]
    return filled, valid


def nearest_fill_indices(valid: np.ndarray) -> np.ndarray:
    """Flat index of the pixel whose value :func:`fill_nan` puts at each pixel, per frame.

    Parameters
    ----------
    valid
        (N, *spatial) bool, True where measured.

    Returns
    -------
    numpy.ndarray
        (N, prod(spatial)) int64: a measured pixel maps to itself, a masked one to its
        nearest measured pixel (Euclidean distance transform, as :func:`fill_nan`); a
        frame without measured pixels maps every pixel to itself.  ``x.reshape(N, -1)``
        gathered with these indices is ``x`` filled as the frames are.
    """
    from scipy import ndimage

    valid = np.asarray(valid, dtype=bool)
    n = valid.shape[0]
    spatial = valid.shape[1:]
    out = np.tile(np.arange(int(np.prod(spatial)), dtype=np.int64), (n, 1))
    for i in np.flatnonzero(~valid.reshape(n, -1).all(axis=1)):
        if not valid[i].any():
            continue
        _, idx = ndimage.distance_transform_edt(~valid[i], return_indices=True)
        out[i] = np.ravel_multi_index(tuple(idx), spatial).ravel()
    return out


def to_model_space(frames: np.ndarray, scaling: Scaling) -> tuple[np.ndarray, np.ndarray]:
    """Fill NaN, scale to [-1, 1]; returns (scaled float32, valid mask)."""
    filled, valid = fill_nan(frames)
    return (2.0 * scaling.forward(filled) - 1.0).astype(np.float32), valid


def from_model_space(x: np.ndarray, scaling: Scaling) -> np.ndarray:
    """Map generator output in [-1, 1] back to frame units."""
    return scaling.inverse((np.asarray(x, dtype=np.float64) + 1.0) / 2.0).astype(np.float32)
