"""Render one axial CT slice of a phantom scene: geometry, partial volume, blur, noise, metal.

A slice of thickness T is the mean of sub-planes spread over T (partial volume along z, as a
real detector row integrates), then blurred a little (the reconstruction kernel), then given
spatially correlated noise whose level rises in wide parts of the body (fewer photons), and,
where metal is in the plane, streaks radiating from it.

A per-study :class:`Style` randomises what the solids alone would draw too cleanly (domain
randomisation, as SynthSeg does for MRI): smooth-but-irregular intensity fields and finer
texture per tissue (fat strands, muscle marbling, parenchyma, trabecular bone), a smooth
in-plane deformation of the whole scene that drifts along z (so organs and vertebrae are no
longer exact primitives), sharp kernels (edge overshoot), beam-hardening dark bands between
dense bones and photon-starvation streaks across wide bodies.  A model trained on these
phantoms must then rely on anatomy, not on how the phantom draws it.
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


@dataclass(frozen=True)
class Style:
    """Per-study appearance draws; ``Style.plain()`` renders the bare solids (tests)."""

    field_hu: tuple[float, ...] = (0.0,) * 11  # low-frequency field amplitude per Region
    texture_hu: tuple[float, ...] = (0.0,) * 11  # fine texture amplitude per Region
    field_px: float = 24.0  # correlation length of the low-frequency field (pixels)
    texture_px: float = 2.0
    warp_mm: float = 0.0  # amplitude of the in-plane deformation
    warp: tuple[tuple[float, ...], ...] = ()  # (kx, ky, kz, phase, weight x, weight y) rows
    sharpen: float = 0.0  # unsharp-mask amount after the kernel blur (sharp kernels)
    hardening_hu: float = 0.0  # depth of the dark band between dense bones
    streak_hu: float = 0.0  # photon-starvation streaks, along the widest axis

    @classmethod
    def plain(cls) -> Style:
        return cls()

    @classmethod
    def draw(cls, rng: np.random.Generator) -> Style:
        u = rng.uniform
        # Region order: AIR TABLE FAT MUSCLE CAVITY LUNG ORGAN BONE BOWEL VESSEL METAL.
        field = (0.0, 0.0, u(3, 25), u(3, 25), u(5, 35), u(10, 60), u(3, 25), u(10, 70),
                 u(5, 30), u(0, 20), 0.0)
        tex = (0.0, 0.0, u(2, 20), u(3, 25), u(5, 40), u(10, 60), u(2, 15), u(15, 90),
               u(5, 40), u(0, 10), 0.0)
        rows = []
        for _ in range(6):
            wl = u(120.0, 420.0)  # mm
            ang = u(0, np.pi)
            kz = 2 * np.pi / u(250.0, 900.0) * rng.choice([-1.0, 1.0])
            rows.append((2 * np.pi / wl * np.cos(ang), 2 * np.pi / wl * np.sin(ang), kz,
                         u(0, 2 * np.pi), u(-1, 1), u(-1, 1)))
        return cls(
            field_hu=tuple(round(float(v), 2) for v in field),
            texture_hu=tuple(round(float(v), 2) for v in tex),
            field_px=float(u(12, 40)), texture_px=float(u(0.8, 3.0)),
            warp_mm=float(u(0, 9)) if rng.random() < 0.85 else 0.0,
            warp=tuple(tuple(round(float(v), 6) for v in r) for r in rows),
            sharpen=float(u(0.2, 1.4)) if rng.random() < 0.35 else 0.0,
            hardening_hu=float(u(10, 60)) if rng.random() < 0.5 else 0.0,
            streak_hu=float(u(10, 60)) if rng.random() < 0.4 else 0.0,
        )


def _smooth_field(rows: int, cols: int, corr: float, rng: np.random.Generator) -> np.ndarray:
    """Unit-variance field with correlation length ``corr`` pixels, made on a coarse grid and
    upsampled (a wide Gaussian on the full grid would cost ~10× more)."""
    f = max(1, int(corr // 4))
    small = rng.standard_normal((rows // f + 2, cols // f + 2)).astype(np.float32)
    small = ndimage.gaussian_filter(small, corr / f)
    big = ndimage.zoom(small, f, order=1)[:rows, :cols]
    return big / max(float(big.std()), 1e-6)


def _warp(img: np.ndarray, z: float, grid: Grid, style: Style) -> np.ndarray:
    """Deform the slice by the study's smooth displacement field at height ``z``."""
    ys = grid.y0 + np.arange(grid.rows, dtype=np.float32) * grid.spacing
    xs = grid.x0 + np.arange(grid.cols, dtype=np.float32) * grid.spacing
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    dx = np.zeros_like(xx)
    dy = np.zeros_like(yy)
    for kx, ky, kz, ph, wx, wy in style.warp:
        c = np.cos(kx * xx + ky * yy + kz * z + ph)
        dx += wx * c
        dy += wy * c
    scale = style.warp_mm / max(len(style.warp), 1) ** 0.5 / grid.spacing
    rr = np.arange(grid.rows, dtype=np.float32)[:, None] + dy * scale
    cc = np.arange(grid.cols, dtype=np.float32)[None, :] + dx * scale
    return ndimage.map_coordinates(img, [rr, cc], order=1, mode="nearest")


def _hardening(img: np.ndarray, depth: float) -> np.ndarray:
    """Dark bands between dense bones (beam hardening): where two bone regions face each
    other, a smooth dip proportional to the bone mass nearby."""
    dense = ndimage.gaussian_filter((img > 400).astype(np.float32), 6.0)
    bone = img > 400
    return -depth * np.clip(dense * 4.0, 0, 1) * (~bone)


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
    style: Style | None = None,
) -> np.ndarray:
    """HU image (float32, rows × cols) of the slab centred at ``z``."""
    style = style or Style.plain()
    n_sub = int(np.clip(round(acq.thickness / 1.0), 1, 5))
    offsets = (np.arange(n_sub) + 0.5) / n_sub - 0.5
    tex = texture_field(grid.rows, grid.cols, rng)
    acc = np.zeros((grid.rows, grid.cols), dtype=np.float32)
    metal_mask = np.zeros((grid.rows, grid.cols), dtype=bool)
    body = np.zeros((grid.rows, grid.cols), dtype=bool)
    label = np.zeros((grid.rows, grid.cols), dtype=np.uint8)
    for k_sub, off in enumerate(offsets):
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
        if k_sub == n_sub // 2:
            label = cv.label
    img = acc / n_sub
    if any(style.field_hu) or any(style.texture_hu):
        amp_f = np.asarray(style.field_hu, dtype=np.float32)[label]
        amp_t = np.asarray(style.texture_hu, dtype=np.float32)[label]
        img += amp_f * _smooth_field(grid.rows, grid.cols, style.field_px, rng)
        img += amp_t * _noise_field(grid.rows, grid.cols, style.texture_px, rng)
    if style.hardening_hu:
        img += _hardening(img, style.hardening_hu)
    if style.warp_mm:
        img = _warp(img, z, grid, style)
    if acq.blur_px > 0:
        img = ndimage.gaussian_filter(img, acq.blur_px)
    if style.sharpen:
        img += style.sharpen * (img - ndimage.gaussian_filter(img, 1.5))
    if metal_mask.any():
        img += _streaks(metal_mask, body, grid, rng)
    # Noise grows with the width of the body crossed by the beam (photon starvation).
    sd = acq.noise_sd * float(np.clip(body_width / acq.reference_width, 0.6, 2.5)) ** 1.5
    img += sd * _noise_field(grid.rows, grid.cols, acq.noise_corr_px, rng)
    if style.streak_hu and body.any():
        img += _starvation(body, style.streak_hu, grid, rng)
    np.clip(img, HU_MIN, HU_MAX, out=img)
    if acq.fov_circle:
        rr, cc = np.ogrid[: grid.rows, : grid.cols]
        c = (grid.rows - 1) / 2.0
        outside = (rr - c) ** 2 + (cc - c) ** 2 > (grid.rows / 2.0) ** 2
        img[outside] = acq.padding_hu
    return img


def _starvation(body: np.ndarray, amp: float, grid: Grid,
                rng: np.random.Generator) -> np.ndarray:
    """Streaks along the body's widest axis (few photons through the shoulders or hips)."""
    rows = np.nonzero(body.any(axis=1))[0]
    if rows.size == 0:
        return np.zeros(body.shape, np.float32)
    r0 = float(rows.mean())
    rr = np.arange(grid.rows, dtype=np.float32)[:, None] - r0
    out = np.zeros(body.shape, np.float32)
    for _ in range(int(rng.integers(3, 9))):
        off = rng.normal(0, 25.0) / grid.spacing
        width = rng.uniform(0.7, 2.5) / grid.spacing
        out += rng.choice([-1.0, 1.0]) * rng.uniform(0.3, 1.0) * np.exp(
            -(((rr - off) / width) ** 2))
    return amp * out * body


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
