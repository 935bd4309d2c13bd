"""Head and neck: scalp, skull and brain, face, orbits, sinuses, mandible, teeth, pharynx.

The head rests on the headrest above the table (``Patient.headrest_mm``); its centre is kept
on the builder (``b.head``) because raised arms are placed beside it.
"""

from __future__ import annotations

from ..builder import L_CARVE, L_CORTEX, L_LEAN, L_MARROW, L_OUTER, L_VESSEL, Builder
from ..raster import Region


def build(b: Builder) -> None:
    p, s, h, lm = b.p, b.s, b.hu, b.p.landmarks
    hc_z = lm["vertex"] - 100 * s
    hb = 92 * s
    hy = p.table_y - p.headrest_mm - hb - 4.0
    b.head = (0.0, hy, hc_z)
    scalp = 4.0 + 0.08 * p.sat_abd_mm
    base = ("z", hc_z - 30 * s, 1)
    b.ellipsoid(
        (0, hy, hc_z),
        (72 * s + scalp, hb + scalp, 100 * s + scalp),
        h["fat"],
        Region.FAT,
        L_OUTER,
        cuts=[("z", hc_z - 60 * s, 1)],
    )
    # Face and jaw below the skull base.
    fy, fz = hy - 30 * s, hc_z - 65 * s
    b.ellipsoid((0, fy, fz), (58 * s, 68 * s, 50 * s), h["muscle"], Region.MUSCLE, L_LEAN)
    b.ellipsoid(
        (0, hy, hc_z), (72 * s, hb, 100 * s), h["cortex"] + 200, Region.BONE, L_CORTEX, cuts=[base]
    )
    b.ellipsoid(
        (0, hy, hc_z),
        (65 * s, hb - 7 * s, 93 * s),
        h["brain"],
        Region.ORGAN,
        L_MARROW,
        cuts=[base],
    )
    for side in (-1, 1):
        b.ellipsoid(
            (side * 8 * s, hy - 5 * s, hc_z + 10 * s),
            (6 * s, 24 * s, 12 * s),
            h["csf"],
            Region.ORGAN,
            L_CARVE,
        )
        # Orbits with the eyes, maxillary sinuses.
        b.ellipsoid(
            (side * 32 * s, hy - 68 * s, hc_z - 22 * s),
            (17 * s, 22 * s, 16 * s),
            h["fat"],
            Region.ORGAN,
            L_CARVE,
        )
        b.ellipsoid(
            (side * 32 * s, hy - 76 * s, hc_z - 22 * s),
            (12 * s, 12 * s, 12 * s),
            12.0,
            Region.ORGAN,
            L_CARVE,
        )
        b.bone_ellipsoid(
            (side * 28 * s, fy - 28 * s, hc_z - 55 * s), (22 * s, 24 * s, 20 * s), shell=2.0
        )
        b.ellipsoid(
            (side * 26 * s, fy - 28 * s, hc_z - 55 * s),
            (17 * s, 19 * s, 16 * s),
            -1000,
            Region.AIR,
            L_CARVE,
        )
    b.ellipsoid(
        (0, fy - 35 * s, hc_z - 50 * s), (8 * s, 25 * s, 18 * s), -1000, Region.AIR, L_CARVE
    )
    # Mandible and teeth.
    jz = hc_z - 95 * s
    mand = [
        (-48 * s, hy + 5 * s, hc_z - 45 * s),
        (-45 * s, hy - 5 * s, jz),
        (-30 * s, hy - 55 * s, jz - 5 * s),
        (0, hy - 75 * s, jz - 8 * s),
        (30 * s, hy - 55 * s, jz - 5 * s),
        (45 * s, hy - 5 * s, jz),
        (48 * s, hy + 5 * s, hc_z - 45 * s),
    ]
    b.bone_chain(mand, 7 * s, shell=2.0)
    for tz in (hc_z - 70 * s, hc_z - 80 * s):
        arch = [
            (-32 * s, hy - 30 * s, tz),
            (-25 * s, hy - 60 * s, tz),
            (0, hy - 72 * s, tz),
            (25 * s, hy - 60 * s, tz),
            (32 * s, hy - 30 * s, tz),
        ]
        b.chain(arch, 4.5 * s, h["teeth"], Region.BONE, L_CARVE)
    # Airway: pharynx down to the trachea.
    c5 = p.by_name("C5")
    c2 = p.by_name("C2")
    pharynx = [
        (0, hy - 20 * s, hc_z - 45 * s),
        (0, c2.cy - 30 * s, c2.z_mid),
        (0, c5.cy - 32 * s, c5.z_mid),
    ]
    b.chain(pharynx, 8 * s, -1000, Region.AIR, L_VESSEL)
