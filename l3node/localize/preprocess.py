"""The paper's preprocessing and the context neighbours, shared by training and serving.

HU window → [0, 1] → histogram stretch → (pad to square) → anti-aliased resize → [0, 1].
The stretch is MATLAB's ``imadjust(I, stretchlim(I))`` with its defaults, as the paper used:
a 256-bin histogram of the windowed image, saturating 1 % at the dark end and 1 % at the
bright end.  Every parameter comes from the model artifact (:class:`Preprocessing`), none
from constants here.

A ``context`` model sees each slice between its neighbours at ±Δ mm
(:func:`context_neighbours`); the trainer and the localizer pick them with this one rule, so
a network is served the channels it was trained on.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum

import numpy as np
from skimage.transform import resize

from .params import from_json_strict

# Δ of a context model (mm), the default of both ModelSpec and the trainer's TrainConfig.
CONTEXT_OFFSET_MM = 20.0


class InputMode(StrEnum):
    """What the network sees of a slice: the paper's (the slice, three times) or the slice
    with its neighbours ±``context_offset_mm`` in the other two channels."""

    PAPER = "paper"
    CONTEXT = "context"


@dataclass(frozen=True)
class Preprocessing:
    hu_min: float = -200.0
    hu_max: float = 1500.0
    stretch_low: float = 0.01  # fraction saturated at the dark end (stretchlim tol)
    stretch_high: float = 0.99
    stretch_bins: int = 256
    size: int = 224
    anti_aliasing: bool = True
    order: int = 1  # bilinear
    # Pad a non-square image (a resampled research volume, a cropped reconstruction) to a
    # square with air before resizing, so anatomy keeps its proportions; no-op on 512².
    pad_square: bool = True

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> Preprocessing:
        return from_json_strict(cls, d, "preprocessing")


def window(hu: np.ndarray, p: Preprocessing) -> np.ndarray:
    """Clip to the HU window and scale it to [0, 1] (float32)."""
    out = np.clip(hu, p.hu_min, p.hu_max).astype(np.float32, copy=False)
    out -= p.hu_min
    out *= 1.0 / (p.hu_max - p.hu_min)
    return out


def stretch_limits(img01: np.ndarray, p: Preprocessing) -> tuple[np.ndarray, np.ndarray]:
    """MATLAB ``stretchlim`` for a batch (N × H × W in [0, 1]): per-image low and high.

    Bins are centred on k / (bins - 1); ``low`` is the first bin whose cumulative fraction
    exceeds ``stretch_low``, ``high`` the first reaching ``stretch_high``; a flat image gets
    (0, 1), as in MATLAB.
    """
    n = img01.shape[0]
    bins = p.stretch_bins
    q = np.rint(img01.reshape(n, -1) * (bins - 1)).astype(np.int64)
    q += (np.arange(n, dtype=np.int64) * bins)[:, None]
    hist = np.bincount(q.ravel(), minlength=n * bins).reshape(n, bins)
    cdf = np.cumsum(hist, axis=1) / hist.sum(axis=1, keepdims=True)
    ilow = np.argmax(cdf > p.stretch_low, axis=1)
    ihigh = np.argmax(cdf >= p.stretch_high, axis=1)
    low = ilow / (bins - 1)
    high = ihigh / (bins - 1)
    flat = ilow == ihigh
    low[flat], high[flat] = 0.0, 1.0
    return low.astype(np.float32), high.astype(np.float32)


def pad_to_square(img: np.ndarray) -> np.ndarray:
    """Pad N × H × W to N × S × S, S = max(H, W), centred, with 0 (air after the window)."""
    h, w = img.shape[-2:]
    if h == w:
        return img
    s = max(h, w)
    top, left = (s - h) // 2, (s - w) // 2
    return np.pad(img, ((0, 0), (top, s - h - top), (left, s - w - left)))


def preprocess(hu: np.ndarray, p: Preprocessing) -> np.ndarray:
    """HU slices (N × H × W) → network-ready single channels (N × size × size, [0, 1])."""
    if hu.ndim == 2:
        hu = hu[None]
    img = window(hu, p)
    low, high = stretch_limits(img, p)
    img -= low[:, None, None]
    img /= (high - low)[:, None, None]
    np.clip(img, 0.0, 1.0, out=img)
    img = pad_to_square(img) if p.pad_square else img
    out = resize(img, (img.shape[0], p.size, p.size), order=p.order,
                 anti_aliasing=p.anti_aliasing, preserve_range=True)
    return np.clip(out, 0.0, 1.0).astype(np.float32, copy=False)


def context_neighbours(z_mm: np.ndarray, indices: np.ndarray | list[int],
                       offset_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """Indices into ``z_mm`` of the slices nearest z + Δ and z − Δ for each of ``indices``.

    Nearest by |z − target|; on a tie the lower index wins (``argmin``).  Near the ends of a
    series the nearest slice may be the slice itself or the last one: the network was
    trained with that, so serving must do the same.
    """
    z = np.asarray(z_mm, dtype=np.float64)
    centre = z[np.asarray(indices, dtype=np.int64)]
    up = np.argmin(np.abs(z[None, :] - (centre + offset_mm)[:, None]), axis=1)
    down = np.argmin(np.abs(z[None, :] - (centre - offset_mm)[:, None]), axis=1)
    return up, down
