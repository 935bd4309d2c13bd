"""The bowel: the colon along its frame round the cavity, and small-bowel loops as
persistent random walks in the mid and lower abdomen.

Bowel paints only inside the cavity (``only_in``), so its loops need no exact geometry; the
walks draw most of the scene's random numbers, which is why this module runs at a fixed place
in :func:`~l3node.phantom.scene.build_scene`.
"""

from __future__ import annotations

import itertools

import numpy as np

from ..builder import L_BOWEL, Builder, Point
from ..raster import Region


def build(b: Builder) -> None:
    """Colon along its frame and small-bowel loops as random walks, filling the cavity."""
    p, s, h, lm, rng = b.p, b.s, b.hu, b.p.landmarks, b.rng
    l1, l2, l3 = p.vertebra("L1"), p.vertebra("L2"), p.vertebra("L3")
    crest = lm["iliac_crest"]

    def rel(fx: float, fy: float, z: float) -> Point:
        o = b.at(z)
        return (fx * o["a_c"], o["cy_c"] + fy * o["b_c"], z)

    sac = b.sacral_path()
    frame = [
        rel(-0.55, 0.0, crest - 15),
        rel(-0.62, 0.15, l3.z_mid),
        rel(-0.58, 0.0, l2.z_mid),
        rel(-0.5, -0.2, lm["liver_tip"] + 10),
        rel(-0.2, -0.55, l3.z_mid - rng.uniform(0, 40)),
        rel(0.25, -0.55, l2.z_mid - rng.uniform(0, 30)),
        rel(0.6, 0.0, l1.z_hi + 15),
        rel(0.68, 0.2, l2.z_lo),
        rel(0.66, 0.25, l3.z_mid),
        rel(0.62, 0.2, crest),
        rel(0.3, -0.1, p.z_s1_top - 25),
        rel(-0.1, -0.2, p.z_s1_top - 45),
        (0.0, sac[3][1] - 30 * s, sac[3][2]),
        (0.0, sac[-1][1] - 25 * s, lm["symphysis"] - 20 * s),
    ]
    pts = smooth_path(frame, step=14.0 * s)
    rs = [float(np.clip(rng.normal(22, 3), 15, 30)) * s for _ in pts[:-1]]
    gas_fraction = rng.uniform(0.1, 0.5)
    for a0, a1, r in zip(pts[:-1], pts[1:], rs, strict=False):
        b.capsule(
            a0, a1, r, h["bowel_wall"], Region.BOWEL, L_BOWEL, only_in=(Region.CAVITY, Region.BOWEL)
        )
        gas = rng.random() < gas_fraction
        b.capsule(
            a0,
            a1,
            r - 2.5,
            -1000.0 if gas else -60.0,
            Region.BOWEL,
            L_BOWEL,
            only_in=(Region.BOWEL,),
            texture_hu=0.0 if gas else 160.0,
        )
    # Small bowel: persistent random walks in the mid and lower abdomen.
    oral = rng.random() < 0.2
    for _ in range(18):
        z0 = rng.uniform(crest - 60 * s, l2.z_hi)
        cur = np.array(rel(rng.uniform(-0.4, 0.4), rng.uniform(-0.5, 0.2), z0))
        d = rng.normal(0, 1, 3)
        d /= np.linalg.norm(d)
        walk = [tuple(cur)]
        for _k in range(14):
            d = d + rng.normal(0, 0.6, 3)
            d /= np.linalg.norm(d)
            nxt = cur + d * 16 * s
            o = b.at(float(nxt[2]))
            if abs(nxt[0]) > 0.8 * o["a_c"] or abs(nxt[1] - o["cy_c"]) > 0.8 * o["b_c"]:
                d = -d
                nxt = cur + d * 16 * s
            cur = nxt
            walk.append(tuple(cur))
        r = float(rng.uniform(10, 14)) * s
        content = h["oral_contrast"] if oral else (h["fluid"] + 10)
        b.chain(
            walk, r, h["bowel_wall"], Region.BOWEL, L_BOWEL, only_in=(Region.CAVITY, Region.BOWEL)
        )
        for a0, a1 in itertools.pairwise(walk):
            gas = rng.random() < 0.12
            b.capsule(
                a0,
                a1,
                r - 2.2,
                -1000.0 if gas else content,
                Region.BOWEL,
                L_BOWEL,
                only_in=(Region.BOWEL,),
            )


def smooth_path(frame: list[Point], step: float) -> list[Point]:
    """Resample a polyline with Catmull-Rom smoothing at about ``step`` mm."""
    pts = np.array(frame, dtype=np.float64)
    pts = np.vstack([pts[0], pts, pts[-1]])
    out = []
    for i in range(1, len(pts) - 2):
        p0, p1, p2, p3 = pts[i - 1], pts[i], pts[i + 1], pts[i + 2]
        n = max(int(np.linalg.norm(p2 - p1) / step), 1)
        for t in np.linspace(0, 1, n, endpoint=False):
            t2, t3 = t * t, t * t * t
            out.append(
                tuple(
                    0.5
                    * (
                        (2 * p1)
                        + (-p0 + p2) * t
                        + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t2
                        + (-p0 + 3 * p1 - 3 * p2 + p3) * t3
                    )
                )
            )
    out.append(tuple(pts[-2]))
    return out  # type: ignore[return-value]
