"""The presacral spine: vertebral bodies and discs with tilted endplates, pedicles, laminae,
facets, spinous and transverse processes, the canal with CSF and the cord.

Sizes per level come from the drawn vertebrae (:class:`~..patient.Vertebra`); lumbar levels are
told apart by their name counted from the sacrum, so L3's longest transverse processes and
narrowest canal follow the truth's L3 whatever the lumbar count.
"""

from __future__ import annotations

import numpy as np

from ..builder import L_CANAL, L_CORTEX, L_MARROW, L_ORGAN2, Builder, Point
from ..raster import Region


def build(b: Builder) -> None:
    """Bodies, discs, pedicles, laminae, spinous and transverse processes, facets, canal."""
    p, s, h = b.p, b.s, b.hu
    verts = p.vertebrae
    canal_pts: list[Point] = []
    for i, v in enumerate(verts):
        hgt = v.z_hi - v.z_lo
        lum, thor, _cerv = v.region == "lumbar", v.region == "thoracic", v.region == "cervical"
        bw, bd = 0.5 * v.width, 0.5 * v.depth
        yb = v.cy + bd  # posterior wall of the body
        canal_d = (16 if lum else 15 if thor else 13) * s
        if v.name_from_sacrum == "L3":
            canal_d -= 1.5 * s  # narrowest canal at L3
        canal_w = (
            22 + 1.2 * (int(v.name_from_sacrum[1:]) if v.name_from_sacrum[0] == "L" else 0)
            if lum
            else 17
            if thor
            else 23
        ) * s
        canal_pts.append((v.cx, yb + 0.5 * canal_d, v.z_mid))
        pr = (6.0 if lum else 4.2 if thor else 3.2) * s
        # Disc below the body (down to the next body or the sacrum).
        lo_z = verts[i + 1].z_hi if i + 1 < len(verts) else p.z_s1_top
        nxt = verts[i + 1] if i + 1 < len(verts) else v
        if v.name != "C1":
            b.cylinder(
                (0.5 * (v.cx + nxt.cx), 0.5 * (v.cy + nxt.cy)),
                (0.5 * (bw + 0.5 * nxt.width) * 1.03, 0.5 * (bd + 0.5 * nxt.depth) * 1.03),
                lo_z - 0.5,
                v.z_lo + 0.5,
                h["disc"],
                Region.ORGAN,
                L_ORGAN2,
                slope=0.5 * (v.slope + nxt.slope),
            )
            # The body: cortical shell, cancellous core; lumbar bodies notched at the back.
            notch = 0.14 * v.depth if lum else 0.0
            b.cylinder(
                (v.cx, v.cy),
                (bw, bd),
                v.z_lo,
                v.z_hi,
                h["cortex"] * 0.8,
                Region.BONE,
                L_CORTEX,
                slope=v.slope,
                notch=notch,
            )
            b.cylinder(
                (v.cx, v.cy),
                (bw - 1.6, bd - 1.6),
                v.z_lo + 1.2,
                v.z_hi - 1.2,
                h["cancellous"],
                Region.BONE,
                L_MARROW,
                slope=v.slope,
                notch=notch + 1.6 if notch else 0.0,
                texture_hu=28.0,
            )
        else:  # atlas: a ring with lateral masses; the dens of C2 sits inside it
            ring = [
                (v.cx + 22 * s * np.sin(t), v.cy + 8 * s - 20 * s * np.cos(t), v.z_mid)
                for t in np.linspace(0, 2 * np.pi, 11)
            ]
            b.bone_chain(ring, 4.5 * s, shell=1.5)
            for side in (-1, 1):
                b.bone_ellipsoid(
                    (v.cx + side * 22 * s, v.cy + 6 * s, v.z_mid), (9 * s, 12 * s, 8 * s)
                )
            c2 = verts[i + 1]
            b.bone_chain([(c2.cx, c2.cy - 2 * s, c2.z_hi), (v.cx, v.cy - 6 * s, v.z_hi)], 5 * s)
            continue
        zp = v.z_mid + 0.18 * hgt  # pedicles in the upper half of the body
        sx = 0.5 * canal_w + pr
        ped_end_y = yb + 0.75 * canal_d
        for side in (-1, 1):
            for dz in (-0.15 * hgt, 0.15 * hgt) if lum else (0.0,):
                b.bone_chain(
                    [
                        (v.cx + side * sx, yb - 4 * s, zp + dz),
                        (v.cx + side * sx, ped_end_y, zp + dz),
                    ],
                    pr,
                    shell=1.5,
                )
            # Laminae: from the pedicles round the back of the canal, reaching below the body.
            junction = (v.cx, yb + canal_d + 4 * s)
            lam_r = (4.8 if lum else 3.6) * s  # thick laminae with a cancellous core
            for dz in (0.0, -0.3 * hgt, -0.6 * hgt):
                b.bone_chain(
                    [
                        (v.cx + side * sx, ped_end_y, zp + dz),
                        (junction[0], junction[1], zp + dz - 3 * s),
                    ],
                    lam_r,
                    shell=1.4,
                )
            # Facets: superior articular process up to the disc above, inferior one down.
            fx = v.cx + side * (sx + 2 * s)
            up = v.z_hi + 0.5 * (verts[i - 1].z_lo - v.z_hi) if i > 0 else v.z_hi
            dn = v.z_lo - 0.5 * (v.z_lo - lo_z)
            b.bone_chain(
                [(fx, ped_end_y + 2 * s, zp), (fx + side * 2 * s, ped_end_y + 5 * s, up)],
                4.2 * s,
                shell=1.5,
            )
            b.bone_chain(
                [
                    (v.cx + side * (sx - 2 * s), ped_end_y + 8 * s, zp - 0.3 * hgt),
                    (v.cx + side * (sx - 3 * s), ped_end_y + 10 * s, dn),
                ],
                4.0 * s,
                shell=1.5,
            )
            # Transverse processes.
            if lum:
                tip_x = max(0.5 * v.tp_span, sx + 8 * s)
                rise = 5 * s if v.name_from_sacrum in ("L4", "L5") else 0.0
                tp_r = (6.0 if v.name_from_sacrum == "L5" else 4.2) * s
                b.bone_chain(
                    [
                        (v.cx + side * sx, ped_end_y - 2 * s, zp),
                        (v.cx + side * tip_x, ped_end_y + 2 * s, zp + rise),
                    ],
                    tp_r,
                    shell=1.5,
                )
            elif thor:
                b.bone_chain(
                    [
                        (v.cx + side * sx, ped_end_y, zp),
                        (v.cx + side * (bw + 26 * s), ped_end_y + 14 * s, zp + 2 * s),
                    ],
                    5.0 * s,
                    shell=1.5,
                )
            else:
                b.bone_chain(
                    [
                        (v.cx + side * bw, v.cy, v.z_mid),
                        (v.cx + side * (bw + 9 * s), v.cy + 4 * s, v.z_mid),
                    ],
                    4.0 * s,
                    shell=1.4,
                )
        # Spinous process: horizontal in the lumbar spine, steeply down in the mid-thorax.
        ang = np.deg2rad(10 if lum else 50 if thor else 25)
        base = (v.cx, yb + canal_d + 4 * s, zp - 3 * s)
        ln = v.sp_length
        tip = (v.cx, base[1] + ln * np.cos(ang), base[2] - ln * np.sin(ang))
        for dz in (-7 * s, 0.0, 7 * s) if lum else (0.0,):
            b.bone_chain(
                [(base[0], base[1], base[2] + dz), (tip[0], tip[1], tip[2] + dz * 0.8)],
                (4.6 if lum else 3.6) * s,
                shell=1.3,
            )
    # Canal (CSF) and cord down to the conus at about L1.
    sac = b.sacral_path()
    canal_pts.append((sac[0][0], sac[0][1] + 20 * s, sac[0][2]))
    b.chain(canal_pts, 7.0 * s, h["csf"], Region.ORGAN, L_CANAL)
    conus = p.vertebra("L1").z_lo - 5.0
    cord = [q for q in canal_pts if q[2] >= conus]
    b.chain(cord, 4.5 * s, h["cord"], Region.ORGAN, L_CANAL)
