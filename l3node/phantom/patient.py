"""The phantom patient as data: its vertebrae and every random parameter drawn for it.

Kept apart from the drawing (:mod:`.anatomy`) so that the modules which read a patient — the
sagittal curve, the scene builders, the DICOM writer — can import the types without pulling in
the code that draws them, and without import cycles.

Everything is in DICOM patient coordinates (LPS, mm): x to the patient's left, y posterior,
z superior.  The patient lies supine on a table whose top is the plane ``y = table_y``.

Vertebrae are named twice, because transitional anatomy makes "L3" ambiguous:

* ``name`` counts from C1 downward (C1..C7, T1..T12, L1..Ln, n = 4, 5 or 6);
* ``name_from_sacrum`` counts the presacral vertebrae upward from the sacrum as a 24-vertebra
  spine would be labelled (L5, L4, L3, L2, L1, T12, ...).

The truth's L3 is ``name_from_sacrum == "L3"``, the third mobile vertebra above the sacrum:
the convention body-composition studies use when they find L3 by counting up from the sacrum.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

__all__ = ["Patient", "Vertebra", "interp_levels"]


@dataclass
class Vertebra:
    """One presacral vertebra: its body geometry and its names."""

    name: str
    name_from_sacrum: str
    region: str  # cervical | thoracic | lumbar
    z_lo: float  # inferior endplate at the body centre
    z_hi: float  # superior endplate at the body centre
    cx: float
    cy: float
    width: float
    depth: float
    slope: float  # endplate tilt dz/dy (perpendicular to the spine axis)
    ribs: bool = False
    tp_span: float = 0.0
    sp_length: float = 0.0

    @property
    def z_mid(self) -> float:
        return 0.5 * (self.z_lo + self.z_hi)


@dataclass
class Patient:
    """Every random parameter of one phantom patient (written to ``truth.json``)."""

    seed: int
    sex: str
    age: int
    stature_mm: float
    scale: float
    habitus: float  # 0 thin .. 1 obese
    sat_abd_mm: float
    vat_mm: float
    muscularity: float
    lumbar_count: int
    rib_pairs: int
    variant: str  # none | sacralisation | lumbarisation | 11-ribs | 13-ribs
    lordosis: float
    kyphosis: float
    scoliosis_mm: float
    contrast: str  # none | arterial | portal-venous
    arms: str  # sides | raised
    metal_hip: str  # none | left | right
    table_y: float
    z_s1_top: float
    lumbar_gap_mm: float
    headrest_mm: float
    cancellous_hu: float
    landmarks: dict[str, float] = field(default_factory=dict)
    vertebrae: list[Vertebra] = field(default_factory=list)

    def vertebra(self, name_from_sacrum: str) -> Vertebra:
        for v in self.vertebrae:
            if v.name_from_sacrum == name_from_sacrum:
                return v
        raise KeyError(f"no vertebra labelled {name_from_sacrum!r} counted from the sacrum")

    def by_name(self, name: str) -> Vertebra:
        for v in self.vertebrae:
            if v.name == name:
                return v
        raise KeyError(f"no vertebra named {name!r}")

    @property
    def l3(self) -> Vertebra:
        return self.vertebra("L3")

    def to_json(self) -> dict:
        d = asdict(self)
        d["vertebrae"] = [asdict(v) for v in self.vertebrae]
        return d

    # Body-outline profile ---------------------------------------------------------------
    def back_y(self, z: np.ndarray | float) -> np.ndarray | float:
        """y of the back skin: on the table, lifted under the lumbar lordosis and the neck.

        The head rests on a headrest, so the back of the neck rises off the table between T2
        and C5.
        """
        zz = np.asarray(z, dtype=np.float64)
        lift = self.lumbar_gap_mm * np.exp(-(((zz - self.l3.z_mid) / 60.0) ** 2))
        t2, c5 = self.by_name("T2").z_mid, self.by_name("C5").z_mid
        ramp = np.clip((zz - t2) / (c5 - t2), 0.0, 1.0)
        lift = lift + self.headrest_mm * ramp * ramp * (3 - 2 * ramp)
        out = self.table_y - lift
        return float(out) if out.ndim == 0 else out


def interp_levels(z: float, zs: list[float], vals: list[float]) -> float:
    """Linear interpolation of per-level values at ``z``; the levels may come in any order."""
    order = np.argsort(zs)
    return float(np.interp(z, np.asarray(zs)[order], np.asarray(vals)[order]))
