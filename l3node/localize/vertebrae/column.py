"""The column: follow the spine through the sampled slices and find its discs.

A Viterbi track picks one thick-bone candidate per slice, a robust smooth line joins them,
rays cast from that line measure how much cortex surrounds it (the "ring profile"), and the
dips of the profile are the discs.  Everything here works on the sampled stack of
:mod:`.stack`; naming the bodies between the discs is :mod:`.levels`' and :mod:`.naming`'.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage, signal

from .constants import (
    CORTEX_HU,
    DISC_RANGE_MM,
    DISC_RING_MAX,
    DISC_RING_PROMINENCE,
    MAX_BODY_RADIUS_MM,
    MIDLINE_MM,
    MIN_DISC_GAP_MM,
    RAY_MM,
    RAYS,
    RING_PERCENTILE,
    SOFT_TISSUE_HU,
    THICK_BEHIND_MM,
)
from .stack import _Stack


def _track(st: _Stack) -> tuple[np.ndarray, np.ndarray]:
    """Pick one candidate per slice by dynamic programming (Viterbi): large thick bone near the
    midline, moving little from slice to slice.  Bowel contrast, vessels and the table jump
    about or sit off the column, so the best chain follows the spine; "no body" is a state
    too (discs, gaps).  Returns the picked x, y (NaN where none)."""
    n = len(st.z)
    states: list[list[tuple[float, float, float]]] = []
    for i in range(n):
        row = []
        cands = [c for c in st.cands[i]
                 if abs(c[0] - st.x_mid[i]) <= MIDLINE_MM and c[2] <= MAX_BODY_RADIUS_MM]
        for cx, cy, rad, top in cands:
            # Nothing as thick lies behind a body (only its thin arch): this tells it from the
            # aorta, bowel and kidneys, which all lie in front of or beside the column.
            behind = any(12.0 < c[1] - cy < 70.0 and abs(c[0] - cx) < 25.0
                         and c[2] >= max(0.6 * rad, THICK_BEHIND_MM)
                         for c in cands)
            cortex = 1.5 if top >= CORTEX_HU else 0.0  # a cortical shell, not a vessel
            off = abs(cx - st.x_mid[i]) / 10.0  # the column runs near the midline
            row.append((cx, cy, rad / 4.0 + (0.0 if behind else 2.0) + cortex - off - 3.0))
        states.append(row)
    none_gain, switch = 0.0, 0.5
    prev_score = np.array([none_gain] + [g for *_, g in states[0]]) if n else np.zeros(1)
    back: list[np.ndarray] = []
    for i in range(1, n):
        dz = abs(st.z[i] - st.z[i - 1])
        tol = 4.0 + 0.3 * dz
        cur = states[i]
        prv = states[i - 1]
        m = len(cur) + 1
        score = np.empty(m)
        arg = np.empty(m, dtype=np.int64)
        for j in range(m):
            if j == 0:
                trans = prev_score.copy()
                trans[1:] -= switch
                gain = none_gain
            else:
                cx, cy, gain = cur[j - 1]
                trans = np.empty(len(prv) + 1)
                trans[0] = prev_score[0] - switch
                for k, (px_, py_, _g) in enumerate(prv):
                    d = np.hypot(cx - px_, cy - py_)
                    trans[k + 1] = prev_score[k + 1] - max(0.0, d - tol) / tol
            arg[j] = int(np.argmax(trans))
            score[j] = trans[arg[j]] + gain
        back.append(arg)
        prev_score = score
    x = np.full(n, np.nan)
    y = np.full(n, np.nan)
    if n == 0:
        return x, y
    j = int(np.argmax(prev_score))
    for i in range(n - 1, -1, -1):
        if j > 0:
            x[i], y[i] = states[i][j - 1][:2]
        if i > 0:
            j = int(back[i - 1][j])
    return x, y


def _smooth_line(z: np.ndarray, v: np.ndarray, sigma_mm: float) -> np.ndarray:
    """Robustly smoothed v(z): a running median rejects outliers, gaps are interpolated, then
    Gaussian smoothing in mm."""
    ok = np.isfinite(v)
    if ok.sum() < 2:
        return np.full_like(v, np.nanmean(v) if ok.any() else np.nan)
    order = np.argsort(z)
    zs, vs = z[order], v[order]
    good = np.isfinite(vs)
    filled = np.interp(zs, zs[good], vs[good])
    dz = float(np.median(np.diff(zs))) if len(zs) > 1 else 1.0
    med = ndimage.median_filter(filled, size=max(3, round(25.0 / dz) | 1), mode="nearest")
    good &= np.abs(vs - med) < 8.0
    if good.sum() >= 2:
        filled = np.interp(zs, zs[good], vs[good])
    out = ndimage.gaussian_filter1d(filled, sigma=max(sigma_mm / dz, 0.5), mode="nearest")
    res = np.empty_like(out)
    res[order] = out
    return res


def _ring_profile(st: _Stack, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Per sampled slice, how strongly bone surrounds the column's centre: the
    ``RING_PERCENTILE`` of the brightest (smoothed) HU met along each of ``RAYS`` rays of
    ``RAY_MM``.  Through a body every ray meets its cortical ring or an endplate, whatever the
    marrow's density; through a disc most rays see soft tissue only (the odd one reaching the
    aorta, a rib head or a facet).  The marrow's mean density, used before, fails in the old:
    osteoporotic cancellous bone is as dense as a disc.  No fixed HU threshold either: a
    noisy sharp-kernel phantom sprinkles 200 HU specks, a 3 mm-pixel scan blurs cortex to
    150 HU; :func:`_discs` looks for relative dips."""
    n = len(st.z)
    ang = np.linspace(0.0, 2.0 * np.pi, RAYS, endpoint=False)
    rr = np.arange(0.0, RAY_MM, 0.7 * st.px)
    dx, dy = np.cos(ang)[:, None] * rr[None], np.sin(ang)[:, None] * rr[None]
    out = np.full(n, np.nan)
    for i in range(n):
        if not (np.isfinite(xs[i]) and np.isfinite(ys[i])):
            continue
        cc = (xs[i] + dx - st.x0[i]) / st.px - 0.5
        rw = (ys[i] + dy - st.y0[i]) / st.px - 0.5
        v = ndimage.map_coordinates(st.smooth[i], [rw.ravel(), cc.ravel()], order=1,
                                    cval=-1000.0).reshape(rw.shape)
        out[i] = float(np.percentile(v.max(axis=1), RING_PERCENTILE))
    return out


def _discs(z: np.ndarray, ring: np.ndarray, tracked: np.ndarray) -> np.ndarray:
    """Positions (sample indices) of the intervertebral discs: dips of the ring profile (the
    median HU of the rays' maxima) into the lower ``DISC_RING_MAX`` of its local range that
    are ``DISC_RING_PROMINENCE`` of that range deep, a plateau counted at its middle; two
    dips closer than ``MIN_DISC_GAP_MM`` are one disc (the deeper).  The range is local
    (``DISC_RANGE_MM`` either side, within the tracked column): cortex is brighter in the young
    and in the thoracic spine, and a whole-body scan's head and legs are no column at all."""
    n = len(ring)
    if n < 5:
        return np.zeros(0, dtype=int)
    ok = np.isfinite(ring)
    p = np.interp(np.arange(n), np.flatnonzero(ok), ring[ok])
    pad = np.concatenate([[p.max()], p, [p.max()]])  # a disc next to the range's end still counts
    peaks, props = signal.find_peaks(-pad, prominence=0.0)
    # The column's extent: between the first and last sample where a body was picked.  Discs
    # themselves are rarely picked (no thick bone), so the range uses every sample within.
    picked = np.flatnonzero(tracked)
    span = np.zeros(n, dtype=bool)
    if len(picked):
        span[picked[0]:picked[-1] + 1] = True
    keep: list[int] = []
    for k, prom in sorted(zip((peaks - 1).tolist(), props["prominences"].tolist(),
                              strict=True), key=lambda kp: p[kp[0]]):
        if not 0 < k < n - 1:
            continue
        # Below soft tissue the rays see fat or air: the line has left the column there.
        near = (np.abs(z - z[k]) <= DISC_RANGE_MM) & ok & span & (p > SOFT_TISSUE_HU)
        if near.sum() < 5:
            continue
        lo, hi = np.percentile(p[near], [5.0, 90.0])
        if (p[k] <= lo + DISC_RING_MAX * (hi - lo) and prom >= DISC_RING_PROMINENCE * (hi - lo)
                and all(abs(z[k] - z[j]) >= MIN_DISC_GAP_MM for j in keep)):
            keep.append(k)
    return np.array(sorted(keep), dtype=int)
