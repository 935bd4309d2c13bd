"""Where the spine and the fat lie along z: the sagittal curve and the fat profile.

Separate from the drawing of the patient (:mod:`.anatomy`) because it is deterministic: once
the bodies are stacked and the landmarks placed, the curve follows from the patient's lordosis,
kyphosis and scoliosis, and the scene builders ask for it again at any height (``spine_y``,
``spine_x``, ``sat_profile``).
"""

from __future__ import annotations

import numpy as np

from .patient import Patient, interp_levels

__all__ = ["bend_spine", "sat_profile", "sat_profile_back", "spine_x", "spine_y"]

# Skin-to-body-centre distance without subcutaneous fat (sets the sagittal curve).
_BACK_DEPTH = {
    "C2": 60,
    "C5": 52,
    "C7": 62,
    "T1": 66,
    "T4": 62,
    "T7": 58,
    "T10": 64,
    "T12": 70,
    "L1": 76,
    "L2": 81,
    "L3": 86,
    "L4": 86,
    "L5": 80,
    "S1": 70,
}


def sat_profile(p: Patient, z: float) -> float:
    """Subcutaneous fat thickness (mm, anterior abdomen scale) at height z."""
    lm = p.landmarks
    zs = [
        lm["sole"],
        lm["ankle"],
        lm["knee"],
        lm["crotch"],
        lm["hip"],
        p.l3.z_mid,
        p.by_name("T12").z_mid,
        p.by_name("T6").z_mid,
        p.by_name("T1").z_hi,
        p.by_name("C4").z_mid,
        lm["vertex"],
    ]
    hip_w = 1.3 if p.sex == "F" else 1.05
    ws = [0.1, 0.15, 0.35, 0.85, hip_w, 1.0, 0.75, 0.45, 0.35, 0.22, 0.08]
    return p.sat_abd_mm * interp_levels(z, zs, ws)


def sat_profile_back(p: Patient, z: float) -> float:
    """Fat behind the spine is about half the anterior abdominal fat (EST)."""
    return 0.5 * sat_profile(p, z)


def bend_spine(p: Patient) -> None:
    """Place each body in y (sagittal curve) and x (scoliosis); tilt its endplates.

    The curve is set as the distance from the back skin to the body centre per level
    (``_BACK_DEPTH``), scaled by the patient's lordosis and kyphosis; the endplates are
    perpendicular to the resulting spine axis.  Needs the landmarks (for the fat profile).
    """
    s = p.scale
    level_z = {v.name: v.z_mid for v in p.vertebrae}
    by_sacrum = {v.name_from_sacrum: v.name for v in p.vertebrae}
    level_z["S1"] = p.z_s1_top - 10.0
    mean_l, mean_t = 80.0, 62.0
    ctrl_z, ctrl_d = [], []
    for key, dist in _BACK_DEPTH.items():
        name = by_sacrum.get(key, key) if key.startswith("L") else key
        if name not in level_z:
            continue
        if key[0] == "L" or key == "S1":
            dist = mean_l + (dist - mean_l) * p.lordosis
        elif key[0] == "T":
            dist = mean_t + (dist - mean_t) * p.kyphosis
        ctrl_z.append(level_z[name])
        ctrl_d.append(dist * (0.9 + 0.1 * s))

    def centre_y(zz: float) -> float:
        return float(p.back_y(zz) - sat_profile_back(p, zz) - interp_levels(zz, ctrl_z, ctrl_d))

    z_t1, z_l5 = level_z["T1"], p.vertebrae[-1].z_lo
    for v in p.vertebrae:
        zm = v.z_mid
        g = (centre_y(zm + 5.0) - centre_y(zm - 5.0)) / 10.0  # dy/dz of the spine axis
        frac = np.clip((zm - z_l5) / (z_t1 - z_l5), 0.0, 1.0)
        v.cy = round(centre_y(zm), 3)
        v.cx = round(p.scoliosis_mm * float(np.sin(np.pi * frac)), 3)
        v.slope = round(-g, 4)


def spine_y(p: Patient, z: float) -> float:
    """Body-centre y of the spine axis at any z (interpolated between bodies)."""
    zs = [v.z_mid for v in p.vertebrae]
    return interp_levels(z, zs, [v.cy for v in p.vertebrae])


def spine_x(p: Patient, z: float) -> float:
    """Body-centre x of the spine axis (the scoliosis) at any z."""
    zs = [v.z_mid for v in p.vertebrae]
    return interp_levels(z, zs, [v.cx for v in p.vertebrae])
