"""On-the-fly augmentation that forces the network onto anatomy, not onto how phantoms look.

A network trained on phantoms learns whatever separates L3 slices most cheaply, and in a
phantom that can be the exact scale of the body in the frame, flat organ intensities or the
sharpness of an edge.  Real scans differ in all of these (field of view from tight to wide,
soft to sharp kernels, 0.6–3 mm pixels, noise, contrast), so every training image gets a
random draw of each family, in the spirit of SynthSeg's domain randomisation:

* **geometry** (one affine + one smooth elastic field, a single resampling): zoom 0.75–2.2×
  (tight fields of view: the body filling or cut by the frame), aspect 0.85–1.2, rotation,
  translation, shear, and a left-right flip;
* **resolution and kernel**: down- and up-sampling (3 mm pixels as in resampled research
  volumes), Gaussian blur (soft kernels) or unsharp masking (sharp kernels);
* **intensity**: gamma and a re-stretch of the stretched image (new low and high limits);
* **noise**: white or correlated, of random level;
* **cut-out**: a few rectangles of random value (arms, metal, missing tissue).

The same draw is applied to the three channels of an image (in context mode they are three
slices of one patient on one scanner).  Works on a batch N × C × S × S in [0, 1] and returns a
new tensor in [0, 1].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentParams:
    """Ranges of each family; ``p`` is the chance a family is applied to one image."""

    p: float = 0.9  # chance that an image is augmented at all
    zoom: tuple[float, float] = (0.75, 2.2)  # log-uniform; > 1 magnifies (tighter field)
    aspect: tuple[float, float] = (0.85, 1.2)
    rotate_deg: float = 12.0
    translate: float = 0.12  # of the image size
    shear_deg: float = 6.0
    flip_p: float = 0.3
    elastic_p: float = 0.5
    elastic_px: float = 6.0  # largest displacement of the smooth field, pixels at 224
    lowres_p: float = 0.35
    lowres: tuple[float, float] = (0.3, 0.8)  # resampling factor before upsampling back
    blur_p: float = 0.35
    blur_sigma: tuple[float, float] = (0.5, 2.0)
    sharpen_p: float = 0.25
    sharpen_amount: tuple[float, float] = (0.3, 1.5)
    gamma: tuple[float, float] = (0.6, 1.6)
    contrast: tuple[float, float] = (0.75, 1.3)  # 1 / width of the new stretch range
    brightness: float = 0.1  # shift of the new stretch's low limit (× 0.5)
    noise_p: float = 0.5
    noise_sd: tuple[float, float] = (0.01, 0.08)
    cutout_p: float = 0.3
    cutout_max: int = 3


def _gaussian_kernel(sigma: float) -> torch.Tensor:
    r = max(1, math.ceil(3 * sigma))
    t = torch.arange(-r, r + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def gaussian_blur(img: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of one C × H × W image, reflecting at the border."""
    k = _gaussian_kernel(sigma)
    c = img.shape[0]
    pad = len(k) // 2
    x = img[None]
    x = F.conv2d(F.pad(x, (pad, pad, 0, 0), mode="reflect"), k.view(1, 1, 1, -1).repeat(c, 1, 1,
                 1), groups=c)
    x = F.conv2d(F.pad(x, (0, 0, pad, pad), mode="reflect"), k.view(1, 1, -1, 1).repeat(c, 1, 1,
                 1), groups=c)
    return x[0]


def _geometry_grid(n: int, size: int, a: AugmentParams, rng: np.random.Generator,
                   active: np.ndarray) -> torch.Tensor:
    """One sampling grid per image: affine (zoom, aspect, rotation, shear, shift, flip) plus a
    smooth elastic field; identity for images not ``active``."""
    theta = np.zeros((n, 2, 3), dtype=np.float32)
    for k in range(n):
        if not active[k]:
            theta[k] = [[1, 0, 0], [0, 1, 0]]
            continue
        zoom = math.exp(rng.uniform(math.log(a.zoom[0]), math.log(a.zoom[1])))
        asp = math.exp(rng.uniform(math.log(a.aspect[0]), math.log(a.aspect[1])))
        sx, sy = 1.0 / (zoom * math.sqrt(asp)), 1.0 / (zoom / math.sqrt(asp))
        ang = math.radians(rng.uniform(-a.rotate_deg, a.rotate_deg))
        sh = math.tan(math.radians(rng.uniform(-a.shear_deg, a.shear_deg)))
        flip = -1.0 if rng.random() < a.flip_p else 1.0
        rot = np.array([[math.cos(ang), -math.sin(ang)], [math.sin(ang), math.cos(ang)]])
        m = rot @ np.array([[1.0, sh], [0.0, 1.0]]) @ np.diag([sx * flip, sy])
        t = rng.uniform(-a.translate, a.translate, 2) * 2.0
        theta[k, :, :2], theta[k, :, 2] = m, t
    grid = F.affine_grid(torch.from_numpy(theta), [n, 1, size, size], align_corners=False)
    for k in np.nonzero(active)[0]:
        if rng.random() >= a.elastic_p:
            continue
        coarse = torch.from_numpy(rng.standard_normal((1, 2, 5, 5)).astype(np.float32))
        field = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
        field = field / field.abs().amax().clamp_min(1e-6)
        amp = rng.uniform(0.3, 1.0) * a.elastic_px * 2.0 / size
        grid[k] += amp * field[0].permute(1, 2, 0)
    return grid


def augment_realism(x: torch.Tensor, rng: np.random.Generator,
                    a: AugmentParams | None = None) -> torch.Tensor:
    """Randomly remap geometry, resolution, kernel, intensity and noise of a batch."""
    a = a or AugmentParams()
    n, _, size, _ = x.shape
    active = rng.random(n) < a.p
    if not active.any():
        return x.clone()
    # Zoomed-out images show the padding value of the window's low end (air → 0).
    grid = _geometry_grid(n, size, a, rng, active)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    for k in np.nonzero(active)[0]:
        img = out[k]
        if rng.random() < a.lowres_p:
            f = rng.uniform(*a.lowres)
            small = max(16, round(size * f))
            img = F.interpolate(img[None], size=(small, small), mode="area")
            img = F.interpolate(img, size=(size, size), mode="bilinear", align_corners=False)[0]
        if rng.random() < a.blur_p:
            img = gaussian_blur(img, rng.uniform(*a.blur_sigma))
        elif rng.random() < a.sharpen_p:
            soft = gaussian_blur(img, rng.uniform(0.8, 2.0))
            img = img + rng.uniform(*a.sharpen_amount) * (img - soft)
        img = img.clamp(0.0, 1.0)
        g = math.exp(rng.uniform(math.log(a.gamma[0]), math.log(a.gamma[1])))
        img = img.pow(g)
        # A different stretch: air stays dark, soft tissue and bone move (as a different
        # body habitus or window fill would move MATLAB's stretch limits).
        lo = rng.uniform(-a.brightness, a.brightness) * 0.5
        hi = lo + rng.uniform(*a.contrast) ** -1
        img = (img - lo) / (hi - lo)
        if rng.random() < a.noise_p:
            sd = math.exp(rng.uniform(math.log(a.noise_sd[0]), math.log(a.noise_sd[1])))
            noise = torch.from_numpy(rng.standard_normal((1, size, size)).astype(np.float32))
            if rng.random() < 0.5:  # correlated, as reconstruction makes it
                noise = gaussian_blur(noise, rng.uniform(0.7, 1.8))
                noise = noise / noise.std().clamp_min(1e-6)
            img = img + sd * noise
        if rng.random() < a.cutout_p:
            for _ in range(int(rng.integers(1, a.cutout_max + 1))):
                h, w = (int(v) for v in rng.integers(size // 16, size // 4, 2))
                r0, c0 = (int(v) for v in rng.integers(0, size - max(h, w), 2))
                img[:, r0 : r0 + h, c0 : c0 + w] = float(rng.uniform(0, 1))
        out[k] = img.clamp(0.0, 1.0)
    return out
