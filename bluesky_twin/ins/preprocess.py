"""Shared preprocessing of INS frames for neural networks (DUQ classifier, Exp2SimGAN).

Frames from :mod:`bluesky_twin.ins.frames` are already divided by their 99.5th
percentile, so the signal is mostly in [0, 1] with a divergent tail near the
antiferromagnetic zone centre.  :func:`preprocess_frames` maps them to [0, 1] with a
clipped log scale::

    v = log1p(gain * clip(x, 0, vmax)) / log1p(gain * vmax)      (gain 4, vmax 4)

and fills masked (NaN) pixels with ``fill_value`` (0, i.e. "no counts") after scaling.
The validity mask (True where the pixel was measured) can be returned alongside, so a
network can be given the mask or the loss can ignore the filled pixels.

Frames that are not percentile-normalised (real data, arbitrary units) should be passed
with ``renormalise=True``: each frame is then first divided by the 99.5th percentile of
its finite values.
"""

from __future__ import annotations

from typing import Literal, overload

import numpy as np
from numpy.typing import ArrayLike, NDArray

from bluesky_twin.errors import InputError

DEFAULT_GAIN = 4.0
DEFAULT_VMAX = 4.0


def frame_array(frames: ArrayLike) -> NDArray[np.float64]:
    """A float64 copy of ``(n, H, W)`` or ``(H, W)`` frames (NaN allowed).

    Raises
    ------
    InputError
        If the array is not 2-D/3-D, is empty, or contains infinities.
    """
    x = np.array(frames, dtype=np.float64, copy=True)
    if x.ndim not in (2, 3) or x.size == 0:
        raise InputError(f"frames must be a non-empty (n, H, W) or (H, W) array, got shape {x.shape}")
    if np.isinf(x).any():
        raise InputError("frames contain infinite values; mask bad pixels with NaN instead")
    return x


@overload
def preprocess_frames(
    frames: ArrayLike,
    *,
    return_mask: Literal[False] = ...,
    renormalise: bool = ...,
    percentile: float = ...,
    gain: float = ...,
    vmax: float = ...,
    fill_value: float = ...,
) -> NDArray[np.float32]: ...


@overload
def preprocess_frames(
    frames: ArrayLike,
    *,
    return_mask: Literal[True],
    renormalise: bool = ...,
    percentile: float = ...,
    gain: float = ...,
    vmax: float = ...,
    fill_value: float = ...,
) -> tuple[NDArray[np.float32], NDArray[np.bool_]]: ...


def preprocess_frames(
    frames: ArrayLike,
    *,
    return_mask: bool = False,
    renormalise: bool = False,
    percentile: float = 99.5,
    gain: float = DEFAULT_GAIN,
    vmax: float = DEFAULT_VMAX,
    fill_value: float = 0.0,
) -> NDArray[np.float32] | tuple[NDArray[np.float32], NDArray[np.bool_]]:
    """Scale INS frames to [0, 1] on a clipped log scale and fill masked pixels.

    Parameters
    ----------
    frames
        ``(n, H, W)`` or ``(H, W)`` array; NaN marks masked pixels.  ``+-inf`` is
        rejected.
    return_mask
        Also return the validity mask (True where the input was finite).
    renormalise
        Divide each frame by the ``percentile``-th percentile of its finite values first
        (for frames not produced by this package's simulator).
    percentile
        Percentile used by ``renormalise``.
    gain, vmax
        ``v = log1p(gain * clip(x, 0, vmax)) / log1p(gain * vmax)``.
    fill_value
        Value (in the scaled [0, 1] units) written into masked pixels.

    Returns
    -------
    numpy.ndarray or (numpy.ndarray, numpy.ndarray)
        float32 array with the input's shape, values in [0, 1], no NaN; plus the boolean
        mask if ``return_mask``.

    Raises
    ------
    InputError
        If the array is not 2-D/3-D, is empty, or contains infinities.
    """
    x = frame_array(frames)
    if not (gain > 0 and vmax > 0 and 0.0 <= fill_value <= 1.0):
        raise InputError(f"need gain > 0, vmax > 0 and 0 <= fill_value <= 1 (got {gain}, {vmax}, {fill_value})")
    valid = np.isfinite(x)
    if renormalise:
        flat = x.reshape(-1, *x.shape[-2:]) if x.ndim == 3 else x[None]
        vflat = valid.reshape(flat.shape)
        for frame, ok in zip(flat, vflat):
            if ok.any():
                scale = float(np.percentile(frame[ok], percentile))
                if not scale > 0:
                    scale = float(np.max(frame[ok]))
                if scale > 0:
                    frame /= scale
    x = np.clip(np.where(valid, x, 0.0), 0.0, vmax)
    out = (np.log1p(gain * x) / np.log1p(gain * vmax)).astype(np.float32)
    out[~valid] = fill_value
    if return_mask:
        return out, valid
    return out
