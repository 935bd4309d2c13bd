"""Legs and arms: legs as sections with femur, tibia, fibula and the foot; arms as capsule
chains, at the sides or raised beside the head.

Also the hip joints (femoral heads, or a metal prosthesis on the implant side), whose centres
are kept on the builder (``b.hip_x``, ``b.hip_y``): the pelvis, muscles and vessels meet them.
"""

from __future__ import annotations

import itertools

import numpy as np

from ..builder import L_JOINT, L_LEAN, L_METAL, L_OUTER, Builder
from ..raster import Capsule, Region
from ..sagittal import sat_profile


def build(b: Builder) -> None:
    p, s, h, lm = b.p, b.s, b.hu, b.p.landmarks
    hip_x = (88 + (6 if p.sex == "F" else 0)) * s
    b.hip_x = hip_x
    zs = np.array(
        [
            lm["sole"] - 1,
            lm["sole"] + 25 * s,
            lm["ankle"],
            lm["knee"] - 0.3 * (lm["knee"] - lm["ankle"]),
            lm["knee"],
            lm["crotch"] - 0.5 * (lm["crotch"] - lm["knee"]),
            lm["crotch"],
            lm["hip"] + 10,
        ]
    )
    lean_r = np.array([0, 28, 30, 50, 48, 68, 80, 90]) * s * p.muscularity**0.5
    sat = np.array([sat_profile(p, z) for z in zs]) * 0.8
    sat[0] = 0
    xs = np.array([0.55, 0.58, 0.6, 0.62, 0.66, 0.8, 1.0, 1.05]) * hip_x + 0.3 * sat
    ro = lean_r + sat
    cy_o = p.table_y - ro
    for side in (-1, 1):
        b.section(ro * 1.05, ro, cy_o, h["fat"], Region.FAT, L_OUTER, 2.6, zs=zs, cx=side * xs)
        b.section(
            lean_r * 1.05,
            lean_r,
            cy_o + 0.3 * sat,
            h["muscle"],
            Region.MUSCLE,
            L_LEAN,
            2.4,
            zs=zs,
            cx=side * xs,
        )

    def leg(z: float) -> tuple[float, float]:
        return float(np.interp(z, zs, xs)), float(np.interp(z, zs, cy_o))

    hy = b.at(lm["hip"])["spine_y_at"] - 40 * s
    b.hip_y = hy
    zh = lm["hip"]
    r_head = (23 if p.sex == "M" else 21) * s
    for side in (-1, 1):
        metal = p.metal_hip == ("left" if side > 0 else "right")
        head = (side * hip_x, hy, zh)
        gt = (side * (hip_x + 42 * s), hy + 6 * s, zh - 22 * s)
        kx, ky = leg(lm["knee"] + 40)
        shaft_top = (side * (hip_x + 30 * s), hy + 4 * s, zh - 60 * s)
        knee = (side * kx, ky, lm["knee"] + 35 * s)
        if metal:
            stem = [
                head,
                (side * (hip_x + 25 * s), hy + 4 * s, zh - 30 * s),
                shaft_top,
                (side * (hip_x + 24 * s), hy + 4 * s, zh - 150 * s),
            ]
            for a0, a1 in itertools.pairwise(stem):
                m = Capsule(
                    hu=h["metal"], region=Region.METAL, layer=L_METAL, p0=a0, p1=a1, radius=7 * s
                )
                b.add(m)
                b.metal.append(m)
            cup = b.ellipsoid(head, (r_head,) * 3, h["metal"], Region.METAL, L_METAL)
            b.metal.append(cup)
            b.bone_chain([shaft_top, knee], 13 * s, shell=4.5, marrow=h["marrow"])
        else:
            b.bone_ellipsoid(head, (r_head,) * 3, shell=1.5, layer=L_JOINT)
            b.bone_chain([head, gt], 13 * s, shell=2.0, marrow=h["cancellous"])
            b.bone_ellipsoid(gt, (14 * s, 17 * s, 24 * s))
            b.bone_ellipsoid(
                (side * (hip_x + 8 * s), hy + 16 * s, zh - 55 * s), (9 * s, 9 * s, 12 * s)
            )
            b.bone_chain([shaft_top, knee], 13 * s, shell=4.5, marrow=h["marrow"])
        b.bone_ellipsoid((side * kx, ky, lm["knee"] + 12 * s), (38 * s, 30 * s, 28 * s))
        b.bone_ellipsoid((side * kx, ky - 38 * s, lm["knee"] + 22 * s), (20 * s, 10 * s, 22 * s))
        b.bone_ellipsoid((side * kx, ky, lm["knee"] - 14 * s), (36 * s, 26 * s, 16 * s))
        ax_, ay_ = leg(lm["ankle"])
        b.bone_chain(
            [(side * kx, ky, lm["knee"] - 20 * s), (side * ax_, ay_ - 5 * s, lm["ankle"] + 15 * s)],
            11 * s,
            shell=4.0,
            marrow=h["marrow"],
        )
        b.bone_chain(
            [
                (side * (kx + 20 * s), ky + 12 * s, lm["knee"] - 25 * s),
                (side * (ax_ + 18 * s), ay_ + 5 * s, lm["ankle"] + 5 * s),
            ],
            6 * s,
            shell=2.5,
            marrow=h["marrow"],
        )
        # Foot: the foot stands upright (toes point anteriorly in a supine patient).
        fz = lm["sole"] + 22 * s
        b.ellipsoid(
            (side * ax_, ay_ - 55 * s, fz),
            (40 * s, 105 * s, 24 * s),
            h["muscle"],
            Region.MUSCLE,
            L_LEAN,
        )
        b.bone_ellipsoid((side * ax_, ay_ + 5 * s, fz + 25 * s), (22 * s, 25 * s, 20 * s))
        b.bone_ellipsoid((side * ax_, ay_ - 70 * s, fz), (28 * s, 65 * s, 9 * s))

    # Arms.
    t1 = p.by_name("T1")
    sh = b.at(t1.z_hi)
    for side in (-1, 1):
        shoulder = (side * (sh["a_l"] - 12 * s), sh["cy_l"] + 5 * s, t1.z_hi - 10 * s)
        b.bone_ellipsoid(shoulder, (23 * s,) * 3)
        if p.arms == "sides":
            pts = []
            for z in np.linspace(shoulder[2] - 40 * s, lm["hip"] - 120 * s, 9):
                o = b.at(min(z, t1.z_lo))
                ra = 40 * s if z > shoulder[2] - 0.19 * p.stature_mm else 32 * s
                pts.append(
                    (side * (o["a_o"] + ra + 8 + 0.5 * sat_profile(p, z)), o["cy_o"] + 10 * s, z)
                )
            pts.insert(0, shoulder)
        else:
            _hx, hyy, hz = b.head
            elbow = (side * (82 * s + 40 * s), hyy + 10 * s, hz + 20 * s)
            pts = [
                shoulder,
                (side * (sh["a_l"] - 5 * s), sh["cy_l"], shoulder[2] + 90 * s),
                elbow,
                (side * 70 * s, hyy - 10 * s, lm["vertex"] + 150 * s),
            ]
        fat_r = [44 * s + 0.35 * p.sat_abd_mm] * 3 + [36 * s + 0.3 * p.sat_abd_mm] * (len(pts) - 4)
        mus_r = [40 * s] * 3 + [31 * s] * (len(pts) - 4)
        b.chain(pts, fat_r, h["fat"], Region.FAT, L_OUTER)
        b.chain(pts, mus_r, h["muscle"], Region.MUSCLE, L_LEAN)
        b.bone_chain(pts[:3], 10 * s, shell=3.5, marrow=h["marrow"])
        for off in (-9 * s, 9 * s):
            bones = [(q[0] + off * 0.3, q[1] + off, q[2]) for q in pts[2:]]
            b.bone_chain(bones, 6 * s, shell=2.2, marrow=h["marrow"])
