"""Great vessels: aorta to the iliac arteries, IVC and iliac veins, renal vessels, portal
vein and SMV, SMA, pulmonary trunk, and the neck's carotids and jugulars.

They follow the spine and start from the heart (``b.heart``, set by :mod:`.thorax`), so this
module runs after the chest; their HU is the contrast phase's (``artery``, ``vein``, ``portal``).
"""

from __future__ import annotations

from ..builder import L_VESSEL, Builder, Point
from ..raster import Region
from ..sagittal import spine_x, spine_y


def build(b: Builder) -> None:
    """Aorta to the femoral arteries, IVC and iliac veins, portal/SMV, SMA, renal, pulmonary."""
    p, s, h, lm = b.p, b.s, b.hu, b.p.landmarks
    art, vein = h["artery"], h["vein"]
    heart_c, _hax = b.heart
    carina = lm["carina"]
    t3, t4 = p.by_name("T3"), p.by_name("T4")
    tr_y = spine_y(p, carina) - 28 * s
    age_r = 1.0 + 0.004 * (p.age - 25)
    aorta: list[Point] = [
        (heart_c[0] - 10 * s, heart_c[1] - 5 * s, heart_c[2] + 20 * s),
        (3 * s, tr_y - 30 * s, carina + 15 * s),
        (8 * s, tr_y - 5 * s, t3.z_mid),
        (20 * s, spine_y(p, t4.z_mid) - 0.5 * t4.depth - 13 * s, t4.z_mid - 5 * s),
    ]
    bif = lm["aortic_bifurcation"]
    for v in p.vertebrae:
        if v.z_mid < t4.z_lo and v.z_mid > bif:
            dx = 20 * s if v.region == "thoracic" else 12 * s
            aorta.append((v.cx + dx, v.cy - 0.5 * v.depth - 13 * s, v.z_mid))
    bif_pt = (spine_x(p, bif) + 8 * s, spine_y(p, bif) - 28 * s, bif)
    aorta.append(bif_pt)
    radii = [15 * s, 14 * s, 13 * s] + [12 * s] * (len(aorta) - 4)
    radii = [r * age_r for r in radii]
    b.chain(aorta, radii, art, Region.VESSEL, L_VESSEL)
    hip_x, hip_y, zh = b.hip_x, b.hip_y, lm["hip"]
    ivc: list[Point] = [(heart_c[0] - 40 * s, heart_c[1] + 10 * s, heart_c[2] - 25 * s)]
    conf = p.vertebra("L5").z_mid
    for v in p.vertebrae:
        if v.z_mid < heart_c[2] - 40 and v.z_mid > conf:
            ivc.append((v.cx - 24 * s, v.cy - 0.5 * v.depth - 14 * s, v.z_mid))
    ivc.append((spine_x(p, conf) - 10 * s, spine_y(p, conf) - 30 * s, conf))
    b.chain(ivc, 11 * s, vein, Region.VESSEL, L_VESSEL)
    for side in (-1, 1):
        iliac = [
            bif_pt,
            (side * 40 * s, spine_y(p, p.z_s1_top) - 35 * s, p.z_s1_top - 10 * s),
            (side * (hip_x - 18 * s), hip_y - 38 * s, zh + 20 * s),
            (side * (hip_x - 12 * s), hip_y - 42 * s, zh - 30 * s),
            (side * (hip_x - 15 * s), hip_y - 30 * s, lm["knee"] + 150 * s),
        ]
        b.chain(iliac, [7 * s, 5.5 * s, 5 * s, 4.5 * s], art, Region.VESSEL, L_VESSEL)
        veins = [ivc[-1]] + [
            (q[0] + side * 0 - side * 10 * s, q[1] + 6 * s, q[2]) for q in iliac[1:]
        ]
        b.chain(veins, [8 * s, 7 * s, 6 * s, 5.5 * s], vein, Region.VESSEL, L_VESSEL)
        # Renal vessels to each kidney's hilum.
        key = "left" if side > 0 else "right"
        kz = lm[f"{key}_kidney_upper"] - 0.5 * lm["kidney_length"]
        kx = p.l3.cx + side * 50 * s
        b.capsule(
            (spine_x(p, kz) + 10 * s, spine_y(p, kz) - 25 * s, kz + 10 * s),
            (kx, spine_y(p, kz), kz),
            3.5 * s,
            art,
            Region.VESSEL,
            L_VESSEL,
        )
        b.capsule(
            (spine_x(p, kz) - 22 * s, spine_y(p, kz) - 28 * s, kz + 5 * s),
            (kx, spine_y(p, kz) - 4 * s, kz - 2 * s),
            5 * s,
            vein,
            Region.VESSEL,
            L_VESSEL,
        )
    l1, l4 = p.vertebra("L1"), p.vertebra("L4")
    o1 = b.at(l1.z_hi)
    portal = [
        (-0.25 * o1["a_c"], o1["cy_c"] - 0.05 * o1["b_c"], l1.z_hi + 25 * s),
        (0.0, l1.cy - 48 * s, l1.z_mid),
        (-4 * s, l4.cy - 55 * s, l4.z_mid),
    ]
    b.chain(portal, [7 * s, 5 * s], h["portal"], Region.VESSEL, L_VESSEL)
    b.chain(
        [
            (l1.cx + 8 * s, l1.cy - 0.5 * l1.depth - 20 * s, l1.z_mid),
            (6 * s, l1.cy - 50 * s, l1.z_lo - 15 * s),
            (4 * s, l4.cy - 62 * s, l4.z_mid),
        ],
        4.0 * s,
        art,
        Region.VESSEL,
        L_VESSEL,
    )
    # Pulmonary trunk to both hila.
    pa = (heart_c[0] + 5 * s, heart_c[1] - 20 * s, heart_c[2] + 45 * s)
    split = (6 * s, tr_y - 8 * s, carina + 8 * s)
    b.capsule(pa, split, 13 * s, vein, Region.VESSEL, L_VESSEL)
    for side in (-1, 1):
        b.capsule(
            split,
            (side * 48 * s, tr_y + 2 * s, carina - 8 * s),
            10 * s,
            vein,
            Region.VESSEL,
            L_VESSEL,
        )
        c = b.at(p.by_name("C5").z_mid)
        for off, r in ((24, 4.0), (34, 6.0)):
            b.capsule(
                (side * off * s, tr_y + 6 * s, p.by_name("T2").z_mid),
                (side * off * s, c["cy_l"] + 6 * s, lm["skull_base"] - 10),
                r * s,
                art if r < 5 else vein,
                Region.VESSEL,
                L_VESSEL,
            )
