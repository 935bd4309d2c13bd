"""The chest: diaphragm, lungs and their vessels, mediastinum, heart, airway, thyroid,
oesophagus, sternum, clavicles and scapulae.

The diaphragm surface is built first of all (:func:`dome_surface`): the lungs lie above it and
the liver, spleen and stomach (:mod:`.abdomen`) below it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..builder import (
    L_CORTEX,
    L_LUNG,
    L_LUNGVES,
    L_ORGAN,
    L_ORGAN2,
    L_VESSEL,
    Builder,
    Point,
)
from ..raster import Canvas, Primitive, Region
from ..sagittal import spine_y


def dome_surface(b: Builder) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """The diaphragm: two paraboloid domes; lung above, liver/spleen/stomach below."""
    lm = b.p.landmarks
    ref = b.at(lm["right_dome"])
    a, bb, cy = ref["a_c"], ref["b_c"], ref["cy_c"]
    zr, zl = lm["right_dome"], lm["left_dome"]
    depth = 75.0 * b.s

    def dome(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        dr = ((x + 0.42 * a) / (0.75 * a)) ** 2 + ((y - cy + 0.05 * bb) / bb) ** 2
        dl = ((x - 0.42 * a) / (0.75 * a)) ** 2 + ((y - cy + 0.05 * bb) / bb) ** 2
        return np.maximum(zr - depth * dr, zl - depth * dl)

    b.dome = dome
    return dome


class Lung(Primitive):
    """Cavity above the diaphragm dome and below the apex paraboloid of one side."""

    def __init__(self, b: Builder, side: int) -> None:
        super().__init__(
            hu=b.hu["lung"], region=Region.LUNG, layer=L_LUNG, only_in=(Region.CAVITY,)
        )
        self.b, self.side = b, side
        lm = b.p.landmarks
        self.z_lo = lm["right_dome"] - 80.0 * b.s
        self.z_hi = lm["lung_apex"]

    def z_range(self) -> tuple[float, float]:
        return self.z_lo, self.z_hi

    def mask(self, cv: Canvas) -> tuple[slice, slice, np.ndarray] | None:
        o = self.b.at(min(cv.z, self.b.p.by_name("T1").z_hi - 1))
        a, bb, cy = o["a_c"], o["b_c"], o["cy_c"]
        if a < 1 or bb < 1:
            return None
        x0, x1 = (0.0, a) if self.side > 0 else (-a, 0.0)
        win = cv.window(x0, x1, cy - bb, cy + bb)
        if win is None:
            return None
        rs, cs, xs, ys = win
        m = np.ones((ys.shape[0], xs.shape[1]), dtype=bool)
        m &= cv.z > self.b.dome(xs, ys)
        # Apex: a paraboloid centred over each lung.
        r2 = ((xs - self.side * 0.5 * a) / (0.6 * a)) ** 2 + ((ys - cy - 0.2 * bb) / bb) ** 2
        m &= cv.z < self.z_hi - 40.0 * r2
        return rs, cs, m


def build(b: Builder) -> None:
    """Lungs with their vessels, mediastinum and heart, airway, thyroid, oesophagus,
    sternum, clavicles and scapulae."""
    p, s, h, lm, rng = b.p, b.s, b.hu, b.p.landmarks, b.rng
    for side in (-1, 1):
        b.add(Lung(b, side))
    carina = lm["carina"]
    o = b.at(carina)
    hil_y = b.at(carina)["spine_y_at"] - 45 * s
    # Lung vessels: branches from each hilum, kept inside the lung by the region rule.
    for side in (-1, 1):
        hilum = np.array([side * 45 * s, hil_y, carina - 20 * s])
        for _ in range(28):
            d = rng.normal(0, 1, 3)
            d[0] = side * abs(d[0]) * 1.3
            d /= np.linalg.norm(d)
            pts, r, cur = [tuple(hilum)], 4.5 * s, hilum.copy()
            for _k in range(4):
                d = d + rng.normal(0, 0.35, 3)
                d /= np.linalg.norm(d)
                cur = cur + d * rng.uniform(25, 40) * s
                pts.append(tuple(cur))
            b.chain(
                pts,
                [r, r * 0.7, r * 0.45, r * 0.3],
                h["vein"] if p.contrast != "none" else 40.0,
                Region.VESSEL,
                L_LUNGVES,
                only_in=(Region.LUNG, Region.VESSEL),
            )
    # Mediastinum, heart.
    t1, t2 = p.by_name("T1"), p.by_name("T2")
    heart_c = (0.18 * o["a_c"], 0.0, lm["right_dome"] + 40 * s)
    oh = b.at(heart_c[2])
    heart_c = (heart_c[0], oh["cy_c"] - 0.28 * oh["b_c"], heart_c[2])
    ax = (62 * s, 48 * s, 58 * s)
    sp = b.at(t2.z_mid)
    med_y0 = sp["front_l"] + 22 * s
    med_y1 = sp["spine_y_at"] - 12 * s
    b.cylinder(
        (8.0, 0.5 * (med_y0 + med_y1)),
        (30 * s, 0.5 * (med_y1 - med_y0)),
        lm["right_dome"] - 10,
        t1.z_hi,
        -60.0,
        Region.ORGAN,
        L_ORGAN,
        texture_hu=30.0,
    )
    # Pericardial fat, myocardium, blood pool: one ellipsoid grown and shrunk.
    fat_ax = (ax[0] + 5 * s, ax[1] + 5 * s, ax[2] + 5 * s)
    pool_ax = (ax[0] - 11 * s, ax[1] - 11 * s, ax[2] - 11 * s)
    blood = h["artery"] if p.contrast != "none" else 42.0
    b.ellipsoid(heart_c, fat_ax, -80.0, Region.ORGAN, L_ORGAN, angle=0.45)
    b.ellipsoid(heart_c, ax, h["myocardium"], Region.ORGAN, L_ORGAN2, angle=0.45)
    b.ellipsoid(heart_c, pool_ax, blood, Region.ORGAN, L_ORGAN2, angle=0.45)
    b.heart = (heart_c, ax)
    # Airway: trachea and main bronchi; oesophagus.
    c5 = p.by_name("C5")
    tr = [(0.0, spine_y(p, z) - 28 * s, z) for z in np.linspace(c5.z_mid, carina, 6)]
    _airway(b, tr, 10 * s, 8 * s)
    c7 = p.by_name("C7")
    for side in (-1, 1):
        br = [tr[-1], (side * 40 * s, tr[-1][1] + 6 * s, carina - 22 * s)]
        _airway(b, br, 8 * s, 6.5 * s)
        b.ellipsoid(
            (side * 17 * s, spine_y(p, c7.z_mid) - 32 * s, c7.z_mid),
            (9 * s, 11 * s, 22 * s),
            h["thyroid"],
            Region.ORGAN,
            L_ORGAN,
        )
    eso = [
        (4.0 * (1 if z < carina else 0), spine_y(p, z) - 14 * s, z)
        for z in np.linspace(c5.z_mid, lm["left_dome"] - 10, 8)
    ]
    b.chain(eso, 7 * s, h["soft"], Region.ORGAN, L_VESSEL)
    # Sternum, clavicles, scapulae.
    sy = lambda z: b.at(z)["front_l"] + 14 * s  # noqa: E731
    t3, t4, t9 = p.by_name("T3"), p.by_name("T4"), p.by_name("T9")
    b.bone_ellipsoid((0.0, sy(t3.z_lo), t3.z_lo), (26 * s, 8 * s, 24 * s))
    top, bot = t4.z_lo, t9.z_lo
    b.bone_ellipsoid(
        (0.0, sy(0.5 * (top + bot)), 0.5 * (top + bot)), (15 * s, 6 * s, 0.5 * (top - bot))
    )
    b.sternum = (sy, t3.z_hi, t9.z_lo)
    sh = b.at(t1.z_hi)
    for side in (-1, 1):
        clav = [
            (side * 18 * s, sy(t2.z_hi) - 2 * s, t2.z_hi + 5 * s),
            (side * 60 * s, sy(t2.z_hi) - 8 * s, t1.z_hi + 4 * s),
            (side * 105 * s, sh["cy_l"] - 20 * s, t1.z_hi + 12 * s),
            (side * (sh["a_l"] - 20 * s), sh["cy_l"] + 5 * s, t1.z_hi + 14 * s),
        ]
        b.bone_chain(clav, 7 * s, shell=2.2)
        # Scapula: a plate on the back of the chest from T2 (glenoid) to T7 (inferior angle).
        t7 = p.by_name("T7")
        for z in np.arange(t7.z_lo, t2.z_hi, 4.0):
            f = (z - t7.z_lo) / (t2.z_hi - t7.z_lo)
            o2 = b.at(z)
            med = (side * (62 * s + 10 * s * f), o2["back_l"] - 30 * s, z)
            lat = (
                side * (70 * s + 0.62 * f * (sh["a_l"] - 70 * s)),
                o2["back_l"] - 38 * s - 22 * s * f,
                z,
            )
            b.capsule(
                med, lat, 3.2 * s if f < 0.85 else 6.0 * s, h["cortex"] * 0.8, Region.BONE, L_CORTEX
            )


def _airway(b: Builder, pts: list[Point], r_wall: float, r_air: float) -> None:
    """A tube of soft tissue with air inside (trachea, main bronchi)."""
    b.chain(pts, r_wall, b.hu["soft"], Region.ORGAN, L_VESSEL)
    b.chain(pts, r_air, -1000.0, Region.AIR, L_VESSEL)
