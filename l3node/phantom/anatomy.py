"""Draw a random patient: stature, habitus, spine with its variants, and landmark levels.

Numbers come from ``shared/ANATOMY.md`` (vertebra sizes per level, disc heights, curvature,
landmark level distributions, HU values); where it marks a value EST the same estimate is used
here.  All the randomness of the anatomy is drawn in this module, in one fixed order, so a seed
gives the same patient; the result is a :class:`~.patient.Patient` (coordinates and the two
vertebra names are explained there), bent into its sagittal curve by :mod:`.sagittal`.
"""

from __future__ import annotations

import numpy as np

from .patient import Patient, Vertebra
from .sagittal import bend_spine, sat_profile, spine_x, spine_y

# Re-exported: callers have long imported the patient types and the profiles from here.
__all__ = [
    "GENERATOR_VERSION",
    "SACRUM_COUNT_NAMES",
    "Patient",
    "Vertebra",
    "draw_patient",
    "sat_profile",
    "spine_x",
    "spine_y",
]

GENERATOR_VERSION = "1.2.0"

# Body heights (mm) before scaling by stature, and disc heights below each body.
_THORACIC_H = [17, 17, 17, 17.5, 18, 18.5, 19, 20, 21, 22, 23, 24]
_THORACIC_W = [24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35]
_THORACIC_D = [16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27]
# Lumbar, indexed from the sacrum: L5, L4, L3, L2, L1, (extra above L1).
_LUMBAR_H = [27.5, 27.5, 27.0, 26.0, 25.0, 24.5]
_LUMBAR_DISC = [11.0, 11.0, 10.0, 9.0, 8.0, 7.0]  # disc *below* each body
_LUMBAR_W_M = [46.0, 43.5, 41.0, 38.5, 36.3, 35.5]
_LUMBAR_W_F = [42.8, 40.0, 37.0, 34.5, 31.6, 31.0]
_LUMBAR_D = [35.7, 35.3, 34.5, 33.5, 32.5, 31.0]
# Transverse process tip-to-tip span (EST, Panjabi recalled in ANATOMY.md): L3 longest.
_LUMBAR_TP_SPAN = [88.0, 83.0, 92.0, 80.0, 72.0, 68.0]
# Spinous process length (mm from the lamina junction): L3 longest, L5 smallest.
_LUMBAR_SP = [24.0, 30.0, 34.0, 31.0, 28.0, 27.0]

SACRUM_COUNT_NAMES = (
    ["L5", "L4", "L3", "L2", "L1"]
    + [f"T{i}" for i in range(12, 0, -1)]
    + [f"C{i}" for i in range(7, 0, -1)]
    + ["C0"]
)  # a 25th presacral vertebra (lumbarised S1) pushes the count past C1


def draw_patient(
    rng: np.random.Generator,
    seed: int,
    transitional_rate: float = 0.10,
) -> Patient:
    """Draw one patient: all randomness of the anatomy happens here."""
    sex = "M" if rng.random() < 0.5 else "F"
    age = int(rng.integers(25, 86))
    stature = float(rng.normal(1750, 70) if sex == "M" else rng.normal(1620, 65))
    stature = float(np.clip(stature, 1450, 2000))
    scale = stature / 1700.0
    habitus = float(np.clip(rng.beta(2.0, 2.4), 0.0, 1.0))
    sat_abd = 6.0 + 58.0 * habitus**1.5 + (10.0 if sex == "F" else 0.0) + rng.normal(0, 4)
    vat = max(0.0, (55.0 if sex == "M" else 32.0) * habitus**1.3 + rng.normal(0, 6))
    muscularity = float(np.clip(rng.normal(1.0 if sex == "M" else 0.82, 0.08), 0.6, 1.3))

    variant = "none"
    lumbar_count, rib_pairs = 5, 12
    if rng.random() < transitional_rate:
        variant = str(
            rng.choice(
                ["sacralisation", "lumbarisation", "11-ribs", "13-ribs"],
                p=[0.35, 0.25, 0.25, 0.15],
            )
        )
        lumbar_count = {"sacralisation": 4, "lumbarisation": 6}.get(variant, 5)
        rib_pairs = {"11-ribs": 11, "13-ribs": 13}.get(variant, 12)

    contrast = str(rng.choice(["none", "arterial", "portal-venous"], p=[0.35, 0.15, 0.5]))
    arms = "raised" if rng.random() < 0.35 else "sides"
    metal_hip = "none"
    if rng.random() < 0.06:
        metal_hip = "left" if rng.random() < 0.5 else "right"
    cancellous = float(np.clip(232 - 2.4 * (age - 25) + rng.normal(0, 30), 70, 300))

    p = Patient(
        seed=seed,
        sex=sex,
        age=age,
        stature_mm=round(stature, 1),
        scale=scale,
        habitus=round(habitus, 4),
        sat_abd_mm=round(max(sat_abd, 3.0), 2),
        vat_mm=round(vat, 2),
        muscularity=round(muscularity, 4),
        lumbar_count=lumbar_count,
        rib_pairs=rib_pairs,
        variant=variant,
        lordosis=float(np.clip(rng.normal(1.0, 0.3), 0.3, 1.8)),
        kyphosis=float(np.clip(rng.normal(1.0, 0.25), 0.4, 1.7)),
        scoliosis_mm=float(rng.normal(0, 9)) if rng.random() < 0.15 else 0.0,
        contrast=contrast,
        arms=arms,
        metal_hip=metal_hip,
        table_y=float(rng.uniform(90, 200)),
        z_s1_top=float(rng.uniform(-1000, -350)),
        lumbar_gap_mm=float(rng.uniform(0, 6)),
        headrest_mm=float(rng.uniform(20, 45)),
        cancellous_hu=round(cancellous, 1),
    )
    _build_spine(p, rng)
    _place_landmarks(p, rng)
    bend_spine(p)
    return p


def _build_spine(p: Patient, rng: np.random.Generator) -> None:
    """Stack the presacral vertebrae upward from S1 and bend them into the sagittal curve."""
    s = p.scale * (0.97 if p.sex == "F" else 1.0)
    jit = lambda: float(rng.normal(1.0, 0.03))  # noqa: E731 - per-vertebra size jitter

    # (name, region, height, disc below, width, depth, tp_span, sp_length), from the top.
    specs: list[tuple[str, str, float, float, float, float, float, float]] = []
    specs.append(("C1", "cervical", 11.0, 0.0, 70.0, 42.0, 0.0, 8.0))
    specs.append(("C2", "cervical", 22.0, 4.0, 19.0, 15.0, 0.0, 18.0))
    for i in range(3, 8):
        specs.append(
            (
                f"C{i}",
                "cervical",
                13.0,
                4.5,
                19.0 + 0.6 * i,
                15.5,
                0.0,
                12.0 + 2.0 * (i - 3) + (8.0 if i == 7 else 0.0),
            )
        )
    for i in range(12):
        disc = 3.0 + 3.0 * i / 11.0
        specs.append(
            (
                f"T{i + 1}",
                "thoracic",
                _THORACIC_H[i],
                disc,
                _THORACIC_W[i],
                _THORACIC_D[i],
                0.0,
                30.0,
            )
        )
    n = p.lumbar_count
    w_tab = _LUMBAR_W_M if p.sex == "M" else _LUMBAR_W_F
    for j in range(n):  # j = 0 is the top lumbar vertebra
        k = n - 1 - j  # index from the sacrum
        specs.append(
            (
                f"L{j + 1}",
                "lumbar",
                _LUMBAR_H[k],
                _LUMBAR_DISC[k],
                w_tab[k],
                _LUMBAR_D[k],
                _LUMBAR_TP_SPAN[k],
                _LUMBAR_SP[k],
            )
        )

    # Stack upward from the top of S1.
    z = p.z_s1_top
    rows = []
    for name, region, h, disc, w, d, tp, sp in reversed(specs):
        z_lo = z + disc * s * jit()
        z_hi = z_lo + h * s * jit()
        rows.append((name, region, z_lo, z_hi, w * s * jit(), d * s * jit(), tp * s, sp * s))
        z = z_hi
    rows.reverse()
    count_from_sacrum = {r[0]: SACRUM_COUNT_NAMES[i] for i, r in enumerate(reversed(rows))}

    for name, region, z_lo, z_hi, w, d, tp, sp in rows:
        p.vertebrae.append(
            Vertebra(
                name=name,
                name_from_sacrum=count_from_sacrum[name],
                region=region,
                z_lo=round(z_lo, 3),
                z_hi=round(z_hi, 3),
                cx=0.0,
                cy=0.0,
                width=round(w, 3),
                depth=round(d, 3),
                slope=0.0,
                tp_span=round(tp, 2),
                sp_length=round(sp, 2),
            )
        )
    # Rib-bearing vertebrae: T1..T12, one fewer or one more (a lumbar rib on L1).
    for v in p.vertebrae:
        if v.region == "thoracic":
            v.ribs = True
    if p.rib_pairs == 11:
        p.by_name("T12").ribs = False
    elif p.rib_pairs == 13:
        p.by_name("L1").ribs = True


def _place_landmarks(p: Patient, rng: np.random.Generator) -> None:
    """Levels of the landmarks the anatomy hangs on (mm), from their level distributions."""
    s = p.scale
    lm = p.landmarks
    l4, l5 = p.vertebra("L4"), p.vertebra("L5")
    # Iliac crest top: between the middle of L5 and the middle of L4 (80 % range, ANATOMY §3).
    lm["iliac_crest"] = float(rng.uniform(l5.z_mid, l4.z_mid))
    lm["hip"] = p.z_s1_top - float(rng.uniform(85, 105)) * s  # femoral head centre
    lm["symphysis"] = lm["hip"] - 12.0 * s
    lm["crotch"] = lm["hip"] - 75.0 * s
    lm["knee"] = lm["hip"] - 0.245 * p.stature_mm
    lm["ankle"] = lm["knee"] - 0.22 * p.stature_mm
    lm["sole"] = lm["ankle"] - 0.045 * p.stature_mm
    c1 = p.by_name("C1")
    lm["vertex"] = c1.z_hi + 130.0 * s
    lm["skull_base"] = c1.z_hi + 5.0
    # Aortic bifurcation: L4 in ~70 %, else upper L3 .. upper S1 (ANATOMY §3).
    l3 = p.vertebra("L3")
    if rng.random() < 0.7:
        lm["aortic_bifurcation"] = float(rng.uniform(l4.z_lo, l4.z_hi))
    else:
        lm["aortic_bifurcation"] = float(rng.uniform(p.z_s1_top, l3.z_hi))
    t9, t10 = p.by_name("T9"), p.by_name("T10")
    lm["right_dome"] = float(rng.uniform(t10.z_lo, t9.z_hi))
    lm["left_dome"] = lm["right_dome"] - float(rng.uniform(5, 25))
    t12 = p.by_name("T12")
    # Kidneys: lower pole about L3 (upper pole then near T12), the right 12-25 mm lower but
    # never below L4 (ANATOMY §3: left T11/12-L2/3, right T12/L1-L3).
    length = float(np.clip(rng.normal(110, 10), 85, 135) * s)
    lm["kidney_length"] = length
    left_lower = float(rng.uniform(l3.z_lo - 8, p.vertebra("L2").z_lo))
    right_lower = max(left_lower - float(rng.uniform(12, 25)), l4.z_lo + 3.0)
    lm["left_kidney_lower"] = left_lower
    lm["right_kidney_lower"] = right_lower
    lm["left_kidney_upper"] = left_lower + length
    lm["right_kidney_upper"] = right_lower + length
    l1, l2 = p.vertebra("L1"), p.vertebra("L2")
    lm["liver_tip"] = float(
        rng.uniform(l2.z_lo - 10, l2.z_hi) if rng.random() < 0.6 else rng.uniform(l3.z_lo, l1.z_hi)
    )
    lm["carina"] = float(rng.uniform(p.by_name("T5").z_lo, p.by_name("T5").z_hi + 5))
    lm["lung_apex"] = p.by_name("T1").z_hi + float(rng.uniform(15, 35)) * s
    lm["psoas_origin"] = float(rng.uniform(l1.z_lo, t12.z_hi))
    for k in list(lm):
        lm[k] = round(lm[k], 3)
