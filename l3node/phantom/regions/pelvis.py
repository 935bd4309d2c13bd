"""The bony pelvis: sacrum and coccyx (with canal and median crest), iliac wings rising to the
drawn crest level, acetabula round the femoral heads, pubic rami and ischia.

The sacral segments follow the builder's sacral path, whose count depends on the lumbar count
(a sacralised L5 adds a segment, a lumbarised S1 removes one).
"""

from __future__ import annotations

import numpy as np

from ..builder import L_CARVE, L_CORTEX, L_MARROW, Builder
from ..raster import Region


def build(b: Builder) -> None:
    """Sacrum and coccyx, iliac wings (crest at the drawn level), acetabula, pubis, ischium."""
    p, s, h, lm = b.p, b.s, b.hu, b.p.landmarks
    sac = b.sacral_path()
    n_seg = b.n_sacral
    low = p.vertebrae[-1]
    widths = [low.width * (1.0 - 0.15 * k) for k in range(len(sac))]
    for k, (x, y, z, hl) in enumerate(sac):
        w = max(widths[k], 12 * s) if k < n_seg else 10 * s
        d = max(30 * s - 4 * s * k, 9 * s)
        b.bone_ellipsoid((x, y, z), (0.5 * w, 0.5 * d, hl * 1.15))
        if k < min(3, n_seg):
            ala_w = (42 - 9 * k) * s
            for side in (-1, 1):
                b.bone_ellipsoid(
                    (x + side * (0.5 * w + 0.5 * ala_w - 4 * s), y + 4 * s, z),
                    (0.5 * ala_w, 0.5 * d + 4 * s, hl * 1.2),
                )
        if k < n_seg:  # sacral canal and median crest
            b.capsule(
                (x, y + 0.5 * d + 6 * s, z + hl),
                (x, y + 0.5 * d + 6 * s, z - hl),
                5 * s,
                h["csf"],
                Region.ORGAN,
                L_CARVE,
            )
            b.capsule(
                (x, y + 0.5 * d + 14 * s, z + hl),
                (x, y + 0.5 * d + 14 * s, z - hl),
                3 * s,
                h["cortex"],
                Region.BONE,
                L_CARVE,
            )
    # Iliac wings: a stack of arcs from the acetabular roof to the crest.
    hip_x, hip_y, zh = b.hip_x, b.hip_y, lm["hip"]
    crest = lm["iliac_crest"]
    z_roof = zh + 25 * s
    span = (118 if p.sex == "M" else 126) * s
    for side in (-1, 1):
        for z in np.arange(z_roof, crest + 0.1, 4.0):
            t = (z - z_roof) / max(crest - z_roof, 1.0)
            x_s = float(np.interp(z, sac[:, 2][::-1], sac[:, 0][::-1]))
            y_s = float(np.interp(z, sac[:, 2][::-1], sac[:, 1][::-1]))
            w_s = 0.5 * low.width + (42 - 9 * 0) * s * (1.0 - 0.5 * (1 - t))
            post = np.array([side * (abs(x_s) + w_s + 3 * s), y_s + 4 * s + 18 * s * t])
            ant = np.array([side * (hip_x + (span - hip_x) * t), hip_y - 25 * s - 30 * s * t])
            mid = 0.5 * (post + ant) + np.array([side * (12 + 18 * t) * s, 10 * s])
            arc = [
                (*tuple((1 - u) ** 2 * post + 2 * (1 - u) * u * mid + u * u * ant), z)
                for u in np.linspace(0, 1, 5)
            ]
            r = 7.0 * s if t > 0.93 else (9.0 * s if t < 0.25 else 3.2 * s)
            b.chain(arc, r, h["cortex"] * 0.75, Region.BONE, L_CORTEX)
            if r > 5:
                b.chain(arc, r - 2.0, h["cancellous"], Region.BONE, L_MARROW)
        # Acetabulum: a bony cup medial and above the femoral head.
        head = (side * hip_x, hip_y, zh)
        r_out = 34 * s
        roof = ("z", zh - 12 * s, 1)
        b.ellipsoid(
            head,
            (r_out,) * 3,
            h["cortex"] * 0.8,
            Region.BONE,
            L_CORTEX,
            cuts=[("x", side * (hip_x + 10 * s), -side), roof],
        )
        b.ellipsoid(head, (26 * s,) * 3, h["cartilage"] - 70, Region.ORGAN, L_MARROW, cuts=[roof])
        # Pubic rami to the symphysis, ischium down to the tuberosity.
        sym = (side * 6 * s, hip_y - 45 * s, lm["symphysis"])
        b.bone_chain([(side * (hip_x - 20 * s), hip_y - 20 * s, zh - 5 * s), sym], 9 * s)
        b.bone_ellipsoid((side * 14 * s, hip_y - 45 * s, lm["symphysis"]), (10 * s, 13 * s, 22 * s))
        tub = (side * (hip_x - 30 * s), hip_y + 30 * s, zh - 55 * s)
        b.bone_chain([(side * (hip_x - 10 * s), hip_y + 22 * s, zh - 10 * s), tub], 12 * s)
        b.bone_chain([tub, (side * 10 * s, hip_y - 40 * s, lm["symphysis"] - 25 * s)], 7 * s)
