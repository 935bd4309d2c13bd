"""Render one axial CT slice of a phantom scene: geometry, partial volume, blur, noise, metal.

A slice of thickness T is the mean of sub-planes spread over T (partial volume along z, as a
real detector row integrates), then blurred a little (the reconstruction kernel), then given
spatially correlated noise whose level rises in wide parts of the body (fewer photons), and,
where metal is in the plane, streaks radiating from it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .raster import Canvas, Region
from .scene import Scene

HU_MIN, HU_MAX = -1024.0, 3071.0


@dataclass(frozen=True)
class Grid:
    """Reconstruction grid in the canonical (head-first) orientation."""

    rows: int
    cols: int
    spacing: float  # mm, square pixels
    x0: float  # x of column 0 centre
    y0: float  # y of row 0 centre


@dataclass(frozen=True)
class Acquisition:
    thickness: float
    noise_sd: float
    noise_corr_px: float
    blur_px: float
    fov_circle: bool  # pixels outside the reconstruction circle get the padding value
    padding_hu: float
    reference_width: float  # body width at which noise_sd applies


def _noise_field(rows: int, cols: int, corr: float, rng: np.random.Generator) -> np.ndarray:
    white = rng.standard_normal((rows, cols)).astype(np.float32)
    f = ndimage.gaussian_filter(white, corr)
    return f / max(float(f.std()), 1e-6)


def texture_field(rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-variance blobs (faeces, trabecular bone, organ parenchyma)."""
    return _noise_field(rows, cols, 1.6, rng)


def render_slice(
    scene: Scene,
    z: float,
    grid: Grid,
    acq: Acquisition,
    body_width: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """HU image (float32, rows × cols) of the slab centred at ``z``."""
    n_sub = int(np.clip(round(acq.thickness / 1.0), 1, 5))
    offsets = (np.arange(n_sub) + 0.5) / n_sub - 0.5
    tex = texture_field(grid.rows, grid.cols, rng)
    acc = np.zeros((grid.rows, grid.cols), dtype=np.float32)
    metal_mask = np.zeros((grid.rows, grid.cols), dtype=bool)
    body = np.zeros((grid.rows, grid.cols), dtype=bool)
    for off in offsets:
        zz = z + float(off) * acq.thickness
        cv = Canvas(
            z=zz,
            x0=grid.x0,
            y0=grid.y0,
            dx=grid.spacing,
            dy=grid.spacing,
            rows=grid.rows,
            cols=grid.cols,
            texture=tex,
        )
        for prim in scene.active(zz):
            cv.paint(prim)
        acc += cv.hu
        metal_mask |= cv.label == Region.METAL
        body |= (cv.label != Region.AIR) & (cv.label != Region.TABLE)
    img = acc / n_sub
    if acq.blur_px > 0:
        img = ndimage.gaussian_filter(img, acq.blur_px)
    if metal_mask.any():
        img += _streaks(metal_mask, body, grid, rng)
    # Noise grows with the width of the body crossed by the beam (photon starvation).
    sd = acq.noise_sd * float(np.clip(body_width / acq.reference_width, 0.6, 2.5)) ** 1.5
    img += sd * _noise_field(grid.rows, grid.cols, acq.noise_corr_px, rng)
    np.clip(img, HU_MIN, HU_MAX, out=img)
    if acq.fov_circle:
        rr, cc = np.ogrid[: grid.rows, : grid.cols]
        c = (grid.rows - 1) / 2.0
        outside = (rr - c) ** 2 + (cc - c) ** 2 > (grid.rows / 2.0) ** 2
        img[outside] = acq.padding_hu
    return img


def _streaks(
    metal: np.ndarray, body: np.ndarray, grid: Grid, rng: np.random.Generator
) -> np.ndarray:
    """Dark and bright streaks through the metal centroid, fading with distance."""
    rows, cols = np.nonzero(metal)
    r0, c0 = rows.mean(), cols.mean()
    rr, cc = np.mgrid[: grid.rows, : grid.cols].astype(np.float32)
    dr, dc = rr - r0, cc - c0
    dist = np.hypot(dr, dc) * grid.spacing
    out = np.zeros((grid.rows, grid.cols), dtype=np.float32)
    for theta in rng.uniform(0, np.pi, 14):
        d_line = np.abs(dr * np.cos(theta) - dc * np.sin(theta)) * grid.spacing
        amp = rng.choice([-1.0, 1.0], p=[0.6, 0.4]) * rng.uniform(150, 700)
        out += amp * np.exp(-((d_line / rng.uniform(1.0, 3.0)) ** 2))
    out *= np.exp(-dist / 160.0)
    out[~body] *= 0.3
    return out
