"""From discs to bodies: find the sacrum, repair the disc list, cut the column into bodies.

The sacrum is found by width (its alae run wide across the column), a disc is made sure of
between it and L5, a false disc splitting one body in two is dropped, and the segments
between discs become :class:`.result.Body` records with their slice ranges and rib flags.
"""

from __future__ import annotations

import itertools
import logging

import numpy as np

from ...series import CTSeries
from .constants import (
    MIN_BODY_MM,
    MIN_DISC_GAP_MM,
    RIB_FRACTION,
    SACRAL_FRACTION,
    SACRAL_GAP_MM,
    SACRAL_REF_MM,
    SACRAL_RUN_MM,
    SACRAL_WIDTH_MM,
    SACRAL_WIDTH_RATIO,
    SPLIT_FRACTION,
)
from .result import Body
from .stack import _rib_sides, _Stack

log = logging.getLogger(__package__)  # the counter's one logger, as before the split


def _sacrum_top(z: np.ndarray, widths: np.ndarray, tracked: np.ndarray) -> int | None:
    """The sample where the sacrum begins, or ``None``.

    A sample is wide when the bone through the column is ``SACRAL_WIDTH_MM`` across and
    ``SACRAL_WIDTH_RATIO`` times the bodies above it; the sacrum is where most of the next
    ``SACRAL_RUN_MM`` are wide.  Only the lowest such stretch counts: the column can look wide
    higher up too (rib heads, a track slipped onto the arch), but nothing below the sacrum
    is a body again."""
    n = len(z)
    wide = np.zeros(n, dtype=bool)
    for k in range(n):
        above = widths[(np.abs(z - z[k]) <= SACRAL_REF_MM) & (np.arange(n) < k) & (widths > 0)]
        if len(above) < 3:
            continue
        ref = float(np.median(above))
        wide[k] = widths[k] >= max(SACRAL_WIDTH_MM, SACRAL_WIDTH_RATIO * ref)
    sacral = np.zeros(n, dtype=bool)
    for k in np.flatnonzero(wide):
        below = (np.abs(z - z[k]) <= SACRAL_RUN_MM) & (np.arange(n) >= k)
        extent = float(np.abs(z[below] - z[k]).max())
        # Samples where the column was lost (the lower sacrum curves back and thins) do not
        # count against it; the scan's end does (a chest scan ending at a wide-looking T12).
        seen = below & tracked
        sacral[k] = (extent >= SACRAL_RUN_MM - 3.5 and wide[seen].sum() >= 3
                     and wide[seen].mean() >= SACRAL_FRACTION)
    ks = np.flatnonzero(sacral)
    if len(ks) == 0:
        return None
    # The top of the lowest stretch: walk up while the sacral samples are less than a short
    # body apart.
    top = int(ks[-1])
    for k in ks[::-1][1:]:
        if abs(z[top] - z[k]) > MIN_DISC_GAP_MM:
            break
        top = int(k)
    return top


def _heights(z: np.ndarray, discs: np.ndarray) -> np.ndarray:
    """Disc-to-disc heights (mm) of the bodies between consecutive discs."""
    return np.abs(np.diff(z[discs])) if len(discs) > 1 else np.zeros(0)


def _merge_split_bodies(z: np.ndarray, ring: np.ndarray, discs: np.ndarray,
                        top: int | None) -> np.ndarray:
    """Drop a false disc that cuts one body in two: two neighbouring "bodies" each shorter
    than ``SPLIT_FRACTION`` of the typical height nearby, together about one.  (A dip of the
    ring profile inside a body: a track slipped for a slice, a fracture-like texture.)  Only
    above the sacrum, where the count is made."""
    d = [int(k) for k in discs]
    changed = True
    while changed and len(d) >= 4:
        changed = False
        h = _heights(z, np.array(d))
        for j in range(len(h) - 1):
            if top is not None and d[j + 2] > top:
                break
            # The typical height here: the neighbours' (lumbar bodies are taller than
            # thoracic ones, so not the whole column's).
            near = np.concatenate([h[max(0, j - 3):j], h[j + 2:j + 5]])
            if len(near) < 2:
                continue
            ref = float(np.median(near))
            a, b = h[j], h[j + 1]
            if (a < SPLIT_FRACTION * ref and b < SPLIT_FRACTION * ref
                    and 0.75 * ref <= a + b <= 1.35 * ref):
                del d[j + 1]
                changed = True
                break
    return np.array(d, dtype=int)


def _sacral_disc(z: np.ndarray, ring: np.ndarray, discs: np.ndarray, top: int) -> np.ndarray:
    """Make sure a disc separates L5 from the sacrum beginning at sample ``top``: the L5-S1
    disc is the most tilted of all and often too blurred to dip.  A disc found just above
    ``top`` is kept; otherwise the ring profile's minimum just above it is taken; discs
    inside the sacrum (its fused segments' remnants) are dropped."""
    above = [int(d) for d in discs if d < top and abs(z[top] - z[d]) <= SACRAL_GAP_MM]
    keep = [int(d) for d in discs if d < top and int(d) not in above]
    if above:
        keep.append(max(above))
    else:
        lo = top
        while lo > 0 and abs(z[top] - z[lo - 1]) <= SACRAL_GAP_MM:
            lo -= 1
        if lo < top:
            seg = ring[lo:top]
            keep.append(lo + int(np.nanargmin(seg)) if np.isfinite(seg).any() else top - 1)
    return np.array(sorted(set(keep)), dtype=int)


def _bodies(series: CTSeries, st: _Stack, discs: np.ndarray, xs: np.ndarray,
            ys: np.ndarray, widths: np.ndarray, sacrum_top: int | None) -> list[Body]:
    """The segments between consecutive discs (and the field of view's ends) as bodies, with
    their width under the column and their rib flags; those below the disc above
    ``sacrum_top`` are the sacrum (one "body" per remnant segment, or one in all)."""
    last_disc = max([int(d) for d in discs if sacrum_top is not None and d < sacrum_top],
                    default=None)
    n = len(st.z)
    edges = [0, *[int(d) for d in discs], n - 1]
    zall = series.z_mm
    out: list[Body] = []
    for a, b in itertools.pairwise(edges):
        lo, hi = (a + 1 if a in discs else a), (b - 1 if b in discs else b)
        if hi < lo:
            continue
        partial = (a == 0 and a not in discs) or (b == n - 1 and b not in discs)
        z_top, z_bot = st.z[lo], st.z[hi]
        if abs(z_top - z_bot) + st_step(st) < MIN_BODY_MM:
            continue
        # Slices of the series (not only the sampled ones) whose centre lies in the body.
        za = (st.z[a] + z_top) / 2 if a in discs else z_top
        zb = (st.z[b] + z_bot) / 2 if b in discs else z_bot
        inside = np.flatnonzero((zall <= max(za, zb)) & (zall >= min(za, zb)))
        first, last = int(inside.min()), int(inside.max())
        ks = np.arange(lo, hi + 1)
        ribs = [_rib_sides(st, int(k), xs[k], ys[k]) for k in ks]
        rib_frac = float(np.mean([r and le for r, le in ribs]))
        log.debug("body %d-%d rib fraction %.2f", first, last, rib_frac)
        mid = ks[len(ks) // 2]
        out.append(Body(first=first, last=last, z_mm=float((z_top + z_bot) / 2),
                        height_mm=float(abs(za - zb) + (0.0 if a in discs and b in discs
                                                        else st_step(st))),
                        x_mm=float(xs[mid]), y_mm=float(ys[mid]),
                        width_mm=float(np.median(widths[ks])), partial=bool(partial),
                        ribs=rib_frac >= RIB_FRACTION,
                        sacral=sacrum_top is not None and last_disc is not None
                        and lo > last_disc))
    return out


def st_step(st: _Stack) -> float:
    """The sampling step of the stack (mm)."""
    return float(np.median(np.abs(np.diff(st.z)))) if len(st.z) > 1 else 0.0
