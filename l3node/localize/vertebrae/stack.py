"""Sampling and per-slice analysis: decode every ``step_mm``, crop to the spine, find bone.

Decoding dominates the counter's time, so only the sampled slices are decoded, in batches;
each is cropped to the box where the spine can be and block-averaged to about ``pixel_mm``
before any morphology, which then runs on the whole batch at once.  The per-slice tests that
read the stack (:func:`_thick_width`, :func:`_rib_sides`) live here too: they only look at
bone around a given column point.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ...series import CTSeries
from .constants import (
    BODY_HALF_MM,
    BODY_REACH_MM,
    BONE_HU,
    CANCELLOUS_MIN_HU,
    CLOSE_MM,
    CORE_MM,
    CROP_BACK_MM,
    CROP_FRONT_MM,
    CROP_HALF_WIDTH_MM,
    HOLE_MAX_MM2,
    PEAK_SEPARATION_MM,
    RIB_BAND_MM,
    RIB_HU,
    RIB_LATERAL_MM,
    RIB_MIN_MM2,
    SMOOTH_MM,
    WIDTH_HU,
)


def _sample_indices(series: CTSeries, z_range_mm: tuple[float, float] | None,
                    step_mm: float) -> np.ndarray:
    """Every ``step_mm`` (or every slice, if the series is coarser) inside the window."""
    z = series.z_mm
    keep = np.arange(len(z))
    if z_range_mm is not None:
        lo, hi = sorted(z_range_mm)
        keep = keep[(z >= lo) & (z <= hi)]
    if len(keep) == 0:
        return keep
    spacing = max(series.spacing_mm, 1e-3)
    stride = max(1, round(step_mm / spacing))
    return keep[::stride]


def _block_mean(hu: np.ndarray, f: int) -> np.ndarray:
    """Average ``f`` × ``f`` pixel blocks (cropping the remainder): cheap, and it keeps the
    cortical ring connected where nearest-neighbour decimation would break it."""
    if f == 1:
        return hu
    n, r, c = hu.shape
    r2, c2 = r // f * f, c // f * f
    return hu[:, :r2, :c2].reshape(n, r2 // f, f, c2 // f, f).mean(axis=(2, 4))


def _disk(radius_px: float) -> np.ndarray:
    r = max(1, round(radius_px))
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    return (yy**2 + xx**2) <= radius_px**2 + 0.25


def _planar(se2d: np.ndarray) -> np.ndarray:
    """A 2-D structuring element as a 3-D one that never reaches across slices."""
    return se2d[None, :, :]


_ST2 = np.zeros((3, 3, 3), dtype=bool)
_ST2[1] = ndimage.generate_binary_structure(2, 1)  # in-plane 4-connectivity, never across z


@dataclass
class _Stack:
    """The sampled slices, cropped to a box around the spine and downsampled.

    Coordinates everywhere else are mm in the full image (column ``x`` to the patient's left,
    row ``y`` posterior, from the image corner); slice ``i``'s crop starts at
    (``x0[i]``, ``y0[i]``) mm, so a point is at crop pixel ((x - x0) / px, (y - y0) / px).
    """

    index: np.ndarray  # sorted series indices
    z: np.ndarray  # mm
    px: float  # mm per downsampled pixel
    hu: np.ndarray  # int16, n × rows × cols (the crops)
    smooth: np.ndarray  # float32, hu smoothed in-plane (σ one pixel): the cortex test
    x0: np.ndarray  # crop origin per slice, mm
    y0: np.ndarray
    x_mid: np.ndarray  # trunk left-right centre per slice, mm
    cands: list[list[tuple[float, float, float, float]]]  # per slice: (x, y, radius, max HU)

    def pixel(self, i: int, x: float, y: float) -> tuple[int, int]:
        """(row, column) of the crop pixel of slice ``i`` holding the point (x, y) mm."""
        return int((y - self.y0[i]) / self.px), int((x - self.x0[i]) / self.px)


def _masks(hu: np.ndarray, px: float) -> tuple[np.ndarray, np.ndarray]:
    """Solid bone (rings closed and filled) of a batch of crops, and its in-plane thickness.

    A real body's cortex is thin and open at the back (the basivertebral foramen), so the ring is
    closed by a small closing before its core is filled.  Holes are filled only when small (a
    core, not the pelvic ring or the table) and dense (marrow, even osteoporotic, is denser than
    the CSF and epidural fat of the spinal canal): filling the canal would merge the arch into
    the body and move its centre back.  The thickness (distance to the nearest non-bone pixel)
    tells a body (radius 8-20 mm) from ribs, laminae, processes and cortex plates.  All of it
    runs on the whole batch at once with planar structuring elements (never across slices).
    """
    bone = hu > BONE_HU
    closed = ndimage.binary_closing(bone, structure=_planar(_disk(CLOSE_MM / px))) | bone
    holes = ndimage.binary_fill_holes(closed, structure=_ST2) & ~closed
    lab, n = ndimage.label(holes, structure=_ST2)
    filled = closed
    if n:
        ids = np.arange(1, n + 1)
        size = ndimage.sum_labels(holes, lab, index=ids) * px * px
        med = ndimage.mean(hu, lab, index=ids)  # the median costs 10x more
        keep = np.concatenate([[False], (size <= HOLE_MAX_MM2) & (med > CANCELLOUS_MIN_HU)])
        filled = closed | keep[lab]
    # In-plane distances, slice by slice: a 3-D transform with a huge z spacing gives the
    # same numbers three times slower.
    pad = np.pad(filled, ((0, 0), (1, 1), (1, 1)))
    thick = np.stack([ndimage.distance_transform_edt(f, sampling=px)[1:-1, 1:-1]
                      for f in pad]) if len(pad) else np.zeros(filled.shape)
    return filled, thick


def _candidates(hu: np.ndarray, thick: np.ndarray, px: float, x0: np.ndarray,
                y0: np.ndarray) -> list[list[tuple[float, float, float, float]]]:
    """Thick bone per slice: local maxima of the thickness (a body's centre is one even when
    its mask touches bowel contrast or a rib), as (x mm, y mm, radius mm, max HU nearby).
    The maxima of the whole batch come from one planar maximum filter; plateaus (equal
    distances) are thinned to one maximum per ``PEAK_SEPARATION_MM``."""
    sep = max(1, round(PEAK_SEPARATION_MM / px))
    peak = (thick >= CORE_MM) & (thick == ndimage.maximum_filter(
        thick, size=(1, 2 * sep + 1, 2 * sep + 1), mode="constant"))
    per: list[list[tuple[float, float, float, float]]] = [[] for _ in range(len(hu))]
    ks, rs, cs = np.nonzero(peak)
    order = np.lexsort((-thick[ks, rs, cs], ks))
    kept: list[tuple[int, int]] = []
    last_k = -1
    for j in order:
        k, r, c = int(ks[j]), int(rs[j]), int(cs[j])
        if k != last_k:
            kept, last_k = [], k
        if any(abs(r - r2) <= sep and abs(c - c2) <= sep for r2, c2 in kept):
            continue
        kept.append((r, c))
        rad = float(thick[k, r, c])
        w = max(1, round(rad / px))
        top = float(hu[k, max(0, r - w):r + w + 1, max(0, c - w):c + w + 1].max())
        per[k].append((x0[k] + (c + 0.5) * px, y0[k] + (r + 0.5) * px, rad, top))
    return per


def _crop_boxes(raw: np.ndarray, ps: float, f: int, shape: tuple[int, int]
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per slice, the top-left raw pixel (row, column) of a ``shape`` box (raw pixels) around
    where the spine can be, and the trunk's left-right centre (mm).

    The column lies near the trunk's left-right centre and behind its antero-posterior
    centre; both come from a coarse (every ~4 mm) air/body threshold, so the morphology and
    the distance transform run on a small box instead of the whole field of view."""
    s = max(1, round(4.0 / ps))
    trunk = raw[:, ::s, ::s] > -300.0
    colw = trunk.sum(axis=1).astype(np.float64)
    roww = trunk.sum(axis=2).astype(np.float64)
    tot = np.maximum(colw.sum(axis=1), 1.0)
    cols = (np.arange(colw.shape[1]) * s + s / 2.0)
    rows = (np.arange(roww.shape[1]) * s + s / 2.0)
    empty = colw.sum(axis=1) == 0
    cx = np.where(empty, raw.shape[2] / 2.0, (colw * cols).sum(axis=1) / tot)  # raw px
    cy = np.where(empty, raw.shape[1] / 2.0, (roww * rows).sum(axis=1) / tot)
    w = shape[1]
    r0 = np.round(cy - CROP_FRONT_MM / ps).astype(int)
    c0 = np.round(cx - w / 2.0).astype(int)
    return r0, c0, cx * ps


def _load(series: CTSeries, indices: np.ndarray, pixel_mm: float, batch: int) -> _Stack:
    """Decode the sampled slices batch by batch, crop each to the box where the spine can be,
    downsample, and find the thick-bone candidates."""
    ps = float(min(series.slices[0].pixel_spacing))
    f = max(1, round(pixel_mm / ps))
    px = ps * f
    h = round((CROP_FRONT_MM + CROP_BACK_MM) / px) * f  # raw pixels, a multiple of f
    w = round(2 * CROP_HALF_WIDTH_MM / px) * f
    hus, smooths, x0s, y0s, mids, cands = [], [], [], [], [], []
    for a in range(0, len(indices), batch):
        chunk = [int(i) for i in indices[a:a + batch]]
        raw = series.hu(chunk)
        r0, c0, mid = _crop_boxes(raw, ps, f, (h, w))
        crop = np.full((len(chunk), h, w), -1024.0, dtype=np.float32)
        R, C = raw.shape[1:]
        for k in range(len(chunk)):
            ra, ca = max(0, r0[k]), max(0, c0[k])
            rb, cb = min(R, r0[k] + h), min(C, c0[k] + w)
            if rb > ra and cb > ca:
                crop[k, ra - r0[k]:rb - r0[k], ca - c0[k]:cb - c0[k]] = raw[k, ra:rb, ca:cb]
        hu = _block_mean(crop, f)
        x0, y0 = c0 * ps, r0 * ps
        # Bodies lie within MIDLINE_MM of the trunk's centre: the morphology needs only the
        # middle columns (the rib and width tests read the HU of the whole crop).
        m0 = max(0, hu.shape[2] // 2 - round(BODY_REACH_MM / px))
        m1 = min(hu.shape[2], hu.shape[2] // 2 + round(BODY_REACH_MM / px))
        _, thick = _masks(hu[:, :, m0:m1], px)
        cands.extend(_candidates(hu[:, :, m0:m1], thick, px, x0 + m0 * px, y0))
        hus.append(np.clip(hu, -1024, 3000).astype(np.int16))
        smooths.append(ndimage.gaussian_filter(hu, sigma=(0.0, *(2 * [max(0.5, SMOOTH_MM / px)]))))
        x0s.append(x0)
        y0s.append(y0)
        mids.append(mid)
    return _Stack(index=indices, z=series.z_mm[indices], px=px, hu=np.concatenate(hus),
                  smooth=np.concatenate(smooths),
                  x0=np.concatenate(x0s).astype(np.float64),
                  y0=np.concatenate(y0s).astype(np.float64), x_mid=np.concatenate(mids),
                  cands=cands)


def _thick_width(st: _Stack, i: int, x: float, y: float) -> float:
    """Left-right extent (mm) of the bone running through the column point at its own
    antero-posterior level (gaps under 6 mm bridged): a body's width, far more at the sacrum
    whose alae run on to the sacroiliac joints.  Transverse processes and ribs leave behind
    the body's centre, and the psoas separates the iliac wings, so neither counts."""
    rows = st.hu.shape[1]
    r, c = st.pixel(i, x, y)
    # Rows from 12 mm in front of the centre to 2 mm behind it: the alae spring from the
    # body's sides, rib heads from its back corners.
    r0, r1 = r - int(12.0 / st.px), r + int(2.0 / st.px) + 1
    band = st.hu[i, max(0, r0):min(rows, r1)] > WIDTH_HU
    if band.size == 0:
        return 0.0
    cols = band.any(axis=0)
    # The body's own marrow (often under WIDTH_HU) is bone too: only its cortex is that dense.
    inner = round(BODY_HALF_MM / st.px)
    cols[max(0, c - inner):max(0, c + inner + 1)] = True
    gap = max(1, round(6.0 / st.px))
    cols = ndimage.binary_closing(cols, structure=np.ones(2 * gap + 1, dtype=bool)) | cols
    lab, _ = ndimage.label(cols)
    c = min(max(c, 0), len(cols) - 1)
    k = lab[c]
    if k == 0:
        return 0.0
    run = np.flatnonzero(lab == k)
    return float((run[-1] - run[0] + 1) * st.px)


def _rib_sides(st: _Stack, i: int, x: float, y: float) -> tuple[bool, bool]:
    """Is there bone beside the body, farther out than any lumbar transverse process reaches,
    at the body's antero-posterior level (right, left)?  That is a rib near its vertebra (or,
    low down, the iliac wing, which :func:`_name` sets apart)."""
    bone = st.hu[i] > RIB_HU
    rows, cols = bone.shape
    yy = st.y0[i] + (np.arange(rows) + 0.5) * st.px - y
    xx = st.x0[i] + (np.arange(cols) + 0.5) * st.px - x
    band = (yy >= RIB_BAND_MM[0]) & (yy <= RIB_BAND_MM[1])
    sub = bone[band]
    far = np.abs(xx) > RIB_LATERAL_MM
    near = np.abs(xx) < RIB_LATERAL_MM + 45.0
    right = sub[:, far & near & (xx < 0)].sum() * st.px**2 >= RIB_MIN_MM2
    left = sub[:, far & near & (xx > 0)].sum() * st.px**2 >= RIB_MIN_MM2
    return bool(right), bool(left)
