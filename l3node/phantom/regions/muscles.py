"""Skeletal muscle: paraspinals, the sacral erector origin, psoas, quadratus lumborum,
iliacus, glutei and pectorals.

Muscle at L3 is what body-composition studies measure, so each muscle scales with the
patient's muscularity and sits in a thin fat plane, as on real CT.
"""

from __future__ import annotations

from ..builder import L_MUSCLE, Builder, Point
from ..raster import Region


def build(b: Builder) -> None:
    """Paraspinals, psoas, quadratus lumborum, iliacus, glutei, pectorals."""
    p, s, h, lm = b.p, b.s, b.hu, b.p.landmarks
    m = h["muscle"]
    mus = p.muscularity
    verts = p.vertebrae
    for i, v in enumerate(verts[1:], start=1):
        lum, thor = v.region == "lumbar", v.region == "thoracic"
        ax = (30 if lum else 22 if thor else 15) * s * mus**0.5
        ay = (27 if lum else 22 if thor else 18) * s * mus**0.5
        off_x = (30 if lum else 25 if thor else 18) * s
        lo = verts[i + 1].z_hi if i + 1 < len(verts) else p.z_s1_top
        back = b.at(v.z_mid)["back_l"]
        cy = min(v.cy + 0.5 * v.depth + (40 if lum else 32) * s, back - ay - 2.0)
        for side in (-1, 1):
            # A thin fat plane round each muscle keeps neighbours apart, as on real CT.
            for grow, hu in ((1.5, h["fat"]), (0.0, m)):
                b.cylinder(
                    (v.cx + side * (off_x + 0.3 * grow), cy),
                    (ax + grow, ay + grow),
                    lo,
                    v.z_hi,
                    hu,
                    Region.MUSCLE,
                    L_MUSCLE,
                )
    sac = b.sacral_path()
    for x, y, z, hl in sac[:3]:
        for side in (-1, 1):
            b.ellipsoid(
                (x + side * 25 * s, y + 30 * s, z),
                (22 * s, 14 * s, hl * 1.3),
                m,
                Region.MUSCLE,
                L_MUSCLE,
            )
    # Psoas: from T12/L1, growing caudally, over the pelvic brim to the lesser trochanter.
    hip_x, hip_y, zh = b.hip_x, b.hip_y, lm["hip"]
    lumbar = [v for v in verts if v.region == "lumbar" and v.z_hi <= lm["psoas_origin"] + 25]
    for side in (-1, 1):
        pts: list[Point] = []
        radii: list[float] = []
        for v in lumbar:
            r = min(radii[-1] + 4.5 * s, 24 * s) if radii else 7 * s
            radii.append(r * mus**0.5)
            pts.append((v.cx + side * (0.5 * v.width + r * 0.9), v.cy + 2 * s, v.z_mid))
        pts.append((side * 55 * s, sac[1][1] - 45 * s, sac[1][2]))
        radii.append(radii[-1])
        pts.append((side * (hip_x - 12 * s), hip_y - 32 * s, zh + 5 * s))
        radii.append(18 * s)
        pts.append((side * (hip_x + 5 * s), hip_y + 10 * s, zh - 55 * s))
        radii.append(11 * s)
        _sheathed(b, pts, radii[1:])
        # Quadratus lumborum, from the 12th rib to the crest.
        t12 = p.by_name("T12")
        ql = [
            (t12.cx + side * 45 * s, t12.cy + 28 * s, t12.z_lo),
            (p.l3.cx + side * (0.5 * p.l3.width + 30 * s), p.l3.cy + 24 * s, p.l3.z_mid),
            (side * 75 * s, p.vertebra("L5").cy + 20 * s, lm["iliac_crest"] - 5),
        ]
        _sheathed(b, ql, [9 * s * mus, 13 * s * mus])
        # Iliacus in the iliac fossa; gluteus maximus and medius outside the pelvis.
        crest = lm["iliac_crest"]
        b.ellipsoid(
            (side * (hip_x + 5 * s), hip_y - 5 * s, 0.5 * (crest + zh) + 10 * s),
            (22 * s, 20 * s, 0.5 * (crest - zh)),
            m,
            Region.MUSCLE,
            L_MUSCLE,
        )
        o = b.at(zh + 20)
        b.ellipsoid(
            (side * 80 * s, o["back_l"] - 35 * s, zh + 10 * s),
            (60 * s * mus, 35 * s * mus, 85 * s),
            m,
            Region.MUSCLE,
            L_MUSCLE,
            only_in=(Region.FAT, Region.MUSCLE, Region.CAVITY),
        )
        b.ellipsoid(
            (side * (hip_x + 35 * s), hip_y + 35 * s, crest - 50 * s),
            (28 * s, 45 * s, 55 * s),
            m,
            Region.MUSCLE,
            L_MUSCLE,
            only_in=(Region.FAT, Region.MUSCLE),
        )
        # Pectoralis on the front of the chest.
        t4 = p.by_name("T4")
        o4 = b.at(t4.z_mid)
        b.ellipsoid(
            (side * 75 * s, o4["front_l"] + 8 * s, t4.z_mid),
            (70 * s, 16 * s * mus, 50 * s),
            m,
            Region.MUSCLE,
            L_MUSCLE,
            only_in=(Region.FAT, Region.MUSCLE),
        )


def _sheathed(b: Builder, pts: list[Point], radii: list[float]) -> None:
    """A muscle as a capsule chain inside a 1.5 mm fat plane that keeps it apart on CT."""
    b.chain(pts, [r + 1.5 for r in radii], b.hu["fat"], Region.MUSCLE, L_MUSCLE)
    b.chain(pts, radii, b.hu["muscle"], Region.MUSCLE, L_MUSCLE)
