"""The ribs: from each rib-bearing vertebra round the cavity wall, with costal cartilage.

Which vertebrae carry ribs is the patient's (11, 12 or 13 pairs, a lumbar rib on L1 with 13),
so counting down from the last rib is as ambiguous here as it is in real CT.
"""

from __future__ import annotations

import numpy as np

from ..builder import L_CORTEX, Builder, Point
from ..raster import Region


def build(b: Builder) -> None:
    """Ribs from the costovertebral joints round the cavity wall, dropping as they go forward.

    Ribs 1-7 continue as costal cartilage to the sternum; 8-10 end on the costal margin; the
    last two float.  Which vertebrae carry ribs follows the patient's rib count (11/12/13).
    """
    p, s, h = b.p, b.s, b.hu
    sy, s_top, s_bot = b.sternum
    ribbed = [v for v in p.vertebrae if v.ribs]
    n = len(ribbed)
    drops = [28, 50, 70, 85, 95, 105, 115, 120, 125, 125, 95, 55, 35]
    for k, v in enumerate(ribbed):
        floating = k >= n - 2
        drop = drops[min(k, len(drops) - 1)] * s
        if floating:
            drop = (90 if k == n - 2 else 50) * s
        phi_end = (
            (0.55 if k == n - 2 else 0.38) * np.pi
            if floating
            else (0.62 + 0.12 * min(k, 6) / 6) * np.pi
        )
        z_head = v.z_mid + 0.2 * (v.z_hi - v.z_lo)
        for side in (-1, 1):
            pts: list[Point] = [(v.cx + side * 0.45 * v.width, v.cy + 0.3 * v.depth, z_head)]
            phis = np.linspace(0.2 * np.pi, phi_end, 10)
            for phi in phis:
                f = (phi - phis[0]) / (phis[-1] - phis[0])
                z = z_head + 4 * s - drop * f**1.25
                o = b.at(z)
                a_r = max(o["a_c"], 30.0) + 4 * s
                b_r = max(o["b_c"], 30.0) + 3 * s
                pts.append((side * a_r * np.sin(phi), o["cy_c"] + b_r * np.cos(phi), z))
            r = (4.0 if k == 0 else 5.0) * s
            b.bone_chain(pts, r, shell=1.3, cortex=h["cortex"] * 0.75, marrow=h["rib_marrow"])
            if not floating and k < 10:
                end = pts[-1]
                if k < 7:
                    zt = s_top - (s_top - s_bot) * k / 6.5
                    target = (side * 14 * s, sy(zt), zt)
                else:
                    zt = s_bot - 10 * s * (k - 6)
                    target = (side * (40 + 25 * (k - 6)) * s, sy(zt) + 10 * s, zt)
                mid = (
                    0.5 * (end[0] + target[0]) + side * 10 * s,
                    0.5 * (end[1] + target[1]),
                    0.5 * (end[2] + target[2]) - 8 * s,
                )
                b.chain([end, mid, target], 4.5 * s, h["cartilage"], Region.BONE, L_CORTEX)
