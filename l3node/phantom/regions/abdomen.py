"""The solid abdominal and pelvic organs: liver and gallbladder, spleen, stomach, pancreas,
kidneys, bladder, prostate or uterus (the bowel that fills the rest is :mod:`.bowel`).

Liver, spleen and stomach are clipped below the diaphragm surface (``b.dome``); the kidneys
hang at their drawn pole levels beside the spine.
"""

from __future__ import annotations

from ..builder import L_ORGAN, L_ORGAN2, Builder
from ..raster import Region
from ..sagittal import spine_y


def build(b: Builder) -> None:
    """Liver, gallbladder, spleen, stomach, pancreas, kidneys, bladder, prostate or uterus."""
    p, s, h, lm, rng = b.p, b.s, b.hu, b.p.landmarks, b.rng
    below = {"surface": b.dome, "z_clip": -1}  # kept under the diaphragm
    # Liver: right lobe from the dome to the tip, left lobe forward and across.
    zr, tip = lm["right_dome"], lm["liver_tip"]
    o = b.at(zr - 40)
    half = 0.5 * (zr + 25 - tip)
    b.ellipsoid(  # right lobe
        (-0.42 * o["a_c"], o["cy_c"] + 0.05 * o["b_c"], tip + half),
        (0.55 * o["a_c"], 0.9 * o["b_c"], half),
        h["liver"],
        Region.ORGAN,
        L_ORGAN,
        texture_hu=6.0,
        **below,
    )
    b.ellipsoid(  # left lobe
        (0.05 * o["a_c"], o["cy_c"] - 0.45 * o["b_c"], zr - 45 * s),
        (0.45 * o["a_c"], 0.45 * o["b_c"], 55 * s),
        h["liver"],
        Region.ORGAN,
        L_ORGAN,
        texture_hu=6.0,
        **below,
    )
    b.ellipsoid(  # gallbladder
        (-0.2 * o["a_c"], o["cy_c"] - 0.35 * o["b_c"], tip + 45 * s),
        (14 * s, 16 * s, 35 * s),
        h["fluid"],
        Region.ORGAN,
        L_ORGAN2,
    )
    # Spleen and stomach under the left dome.
    zl = lm["left_dome"]
    ol = b.at(zl - 55 * s)
    b.ellipsoid(
        (0.62 * ol["a_c"], ol["cy_c"] + 0.5 * ol["b_c"], zl - 55 * s),
        (26 * s, 55 * s, 55 * s),
        h["spleen"],
        Region.ORGAN,
        L_ORGAN,
        angle=-0.6,
        **below,
    )
    st_c = (0.3 * ol["a_c"], ol["cy_c"] - 0.2 * ol["b_c"], zl - 45 * s)
    st_ax = (55 * s, 45 * s, 65 * s)
    b.ellipsoid(st_c, st_ax, h["bowel_wall"], Region.ORGAN, L_ORGAN, **below)
    inner = (st_ax[0] - 4, st_ax[1] - 4, st_ax[2] - 4)
    b.ellipsoid(st_c, inner, h["fluid"] + 10, Region.ORGAN, L_ORGAN2, texture_hu=15.0, **below)
    gas_level = st_c[1] - rng.uniform(0.1, 0.6) * st_ax[1]
    b.ellipsoid(st_c, inner, -1000.0, Region.AIR, L_ORGAN2, cuts=[("y", gas_level, -1)], **below)
    # Pancreas across L1-L2.
    l1, l2 = p.vertebra("L1"), p.vertebra("L2")
    panc = [
        (-0.25 * b.at(l2.z_mid)["a_c"], l2.cy - 55 * s, l2.z_mid),
        (0.0, l1.cy - 48 * s, l1.z_lo),
        (0.45 * ol["a_c"], l1.cy - 20 * s, l1.z_hi + 10 * s),
    ]
    b.chain(panc, [12 * s, 9 * s], h["pancreas"], Region.ORGAN, L_ORGAN)
    # Kidneys: cortex, medulla, sinus fat; the left higher.
    for side, key in ((1, "left"), (-1, "right")):
        up = lm[f"{key}_kidney_upper"]
        c = (p.l3.cx + side * 68 * s, spine_y(p, up) + 5 * s, up - 0.5 * lm["kidney_length"])
        axk = (25 * s, 26 * s, 0.5 * lm["kidney_length"])
        ang = side * 0.55
        b.ellipsoid(c, axk, h["kidney_cortex"], Region.ORGAN, L_ORGAN, angle=ang)
        medulla = (axk[0] - 7 * s, axk[1] - 8 * s, axk[2] - 10 * s)
        b.ellipsoid(c, medulla, h["kidney_medulla"], Region.ORGAN, L_ORGAN2, angle=ang)
        sinus = (c[0] - side * 16 * s, c[1] - 6 * s, c[2])
        b.ellipsoid(sinus, (9 * s, 9 * s, 22 * s), h["vat"], Region.ORGAN, L_ORGAN2)
    # Bladder, and prostate or uterus.
    zh = lm["hip"]
    op = b.at(zh + 10)
    fill = rng.uniform(0.5, 1.3)
    b.ellipsoid(
        (0.0, op["cy_c"] - 0.25 * op["b_c"], zh + 15 * s),
        (40 * s * fill, 32 * s * fill, 32 * s * fill),
        h["urine"],
        Region.ORGAN,
        L_ORGAN,
    )
    if p.sex == "M":  # prostate
        b.ellipsoid(
            (0.0, op["cy_c"], zh - 25 * s), (20 * s, 16 * s, 18 * s), 45.0, Region.ORGAN, L_ORGAN
        )
    else:  # uterus
        b.ellipsoid(
            (0.0, op["cy_c"] + 0.2 * op["b_c"], zh + 45 * s),
            (30 * s, 22 * s, 38 * s),
            80.0,
            Region.ORGAN,
            L_ORGAN,
        )
