"""Tissue HU values of one patient: ``shared/ANATOMY.md`` §5 with per-patient jitter.

Separate from the geometry because it is the only place the contrast phase, age, habitus and
sex turn into numbers: every solid of the scene takes its HU from this table, and the truth
reports it (``tissue_hu``).
"""

from __future__ import annotations

import numpy as np

from .patient import Patient

__all__ = ["hu_table"]


def hu_table(p: Patient, rng: np.random.Generator) -> dict[str, float]:
    """Every tissue's HU for this patient, drawn in a fixed order (the scene's first draws)."""
    c = p.contrast
    pick = {"none": 0, "arterial": 1, "portal-venous": 2}[c]

    def ph(none: float, art: float, pv: float) -> float:
        return (none, art, pv)[pick] + float(rng.normal(0, 6))

    muscle = 50.0 - 0.15 * (p.age - 25) - 10.0 * p.habitus - (5.0 if p.sex == "F" else 0.0)
    return {
        "air": -1000.0,
        "fat": -103.0 + float(rng.normal(0, 4)),
        "vat": -92.0 + float(rng.normal(0, 4)),
        "muscle": muscle + float(rng.normal(0, 4)),
        "lung": -850.0 + float(rng.normal(0, 25)),
        "cortex": 900.0 + float(rng.normal(0, 80)),
        "cancellous": p.cancellous_hu,
        "marrow": -40.0 + float(rng.normal(0, 20)),
        "rib_marrow": 120.0 + 0.5 * (p.cancellous_hu - 150),
        "disc": 80.0 + float(rng.normal(0, 8)),
        "csf": 8.0,
        "cord": 32.0,
        "cartilage": 120.0,
        "brain": 35.0,
        "artery": ph(40, 320, 175),
        "vein": ph(40, 90, 155),
        "portal": ph(40, 120, 170),
        "liver": ph(60, 75, 118),
        "spleen": ph(48, 110, 115),
        "kidney_cortex": ph(35, 180, 165),
        "kidney_medulla": ph(32, 80, 150),
        "pancreas": ph(45, 110, 95),
        "myocardium": ph(45, 110, 100),
        "bowel_wall": ph(38, 90, 100),
        "fluid": 12.0,
        "urine": 10.0,
        "thyroid": ph(90, 150, 140),
        "soft": 40.0,
        "table_shell": 250.0,
        "table_core": -900.0,
        "metal": 12000.0,
        "teeth": 2200.0,
        "oral_contrast": float(rng.uniform(180, 320)),
    }
