"""Turn a :class:`~l3node.phantom.anatomy.Patient` into a list of solids to rasterise.

Each function adds one organ system.  Positions hang on the spine and on the body outline
(trunk, cavity), so a patient who is taller, fatter or more lordotic moves everything with it.
HU values follow ``shared/ANATOMY.md`` §5; contrast phase changes vessels and organs.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .anatomy import Patient, Vertebra, sat_profile, spine_x, spine_y
from .raster import Capsule, Cylinder, Ellipsoid, Primitive, Region, Section

Point = tuple[float, float, float]

# Painting layers (lower first).
L_TABLE, L_OUTER, L_LEAN, L_CAVITY, L_LUNG, L_LUNGVES = 0, 10, 20, 30, 35, 36
L_BOWEL, L_ORGAN, L_ORGAN2, L_MUSCLE, L_VESSEL, L_CANAL = 40, 45, 46, 50, 55, 60
L_CORTEX, L_MARROW, L_CARVE, L_METAL = 70, 71, 72, 80
L_JOINT = 73  # bones that sit inside a socket painted earlier (femoral heads)


@dataclass
class Scene:
    """Solids sorted by layer, with their z extents for fast per-slice selection."""

    prims: list[Primitive] = field(default_factory=list)
    zmin: np.ndarray = field(default_factory=lambda: np.zeros(0))
    zmax: np.ndarray = field(default_factory=lambda: np.zeros(0))
    dome: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None
    metal: list[Primitive] = field(default_factory=list)
    hu: dict[str, float] = field(default_factory=dict)

    @property
    def outer(self) -> Section:
        """The body outline (skin and subcutaneous fat) of the trunk: its width sets the
        field of view and the noise level of each slice."""
        return self._outer

    def finish(self) -> Scene:
        self._outer = next(q for q in self.prims if isinstance(q, Section) and q.layer == L_OUTER)
        self.prims.sort(key=lambda q: q.layer)  # stable: insertion order within a layer
        zr = np.array([q.z_range() for q in self.prims], dtype=np.float64)
        self.zmin, self.zmax = zr[:, 0], zr[:, 1]
        return self

    def active(self, z: float) -> list[Primitive]:
        idx = np.nonzero((self.zmin <= z) & (self.zmax >= z))[0]
        return [self.prims[i] for i in idx]


class _Builder:
    """Holds the patient, the HU table and helpers while the scene is assembled."""

    def __init__(self, p: Patient, rng: np.random.Generator) -> None:
        self.p = p
        self.rng = rng
        self.s = p.scale
        self.prims: list[Primitive] = []
        self.metal: list[Primitive] = []
        self.hu = _hu_table(p, rng)
        lm = p.landmarks
        self.z_top = lm["vertex"] + 5.0
        self.z_bottom = lm["sole"] - 5.0
        self._profiles()

    # -- generic helpers ---------------------------------------------------------------
    def add(self, prim: Primitive) -> Primitive:
        self.prims.append(prim)
        return prim

    def capsule(
        self, p0: Point, p1: Point, r: float, hu: float, region: int | None, layer: int, **kw
    ) -> None:
        self.add(Capsule(hu=hu, region=region, layer=layer, p0=p0, p1=p1, radius=r, **kw))

    def chain(
        self,
        pts: list[Point],
        r: float | list[float],
        hu: float,
        region: int | None,
        layer: int,
        **kw,
    ) -> None:
        rs = r if isinstance(r, list) else [r] * (len(pts) - 1)
        for a, b, rr in zip(pts[:-1], pts[1:], rs, strict=False):
            self.capsule(a, b, rr, hu, region, layer, **kw)

    def bone_chain(
        self,
        pts: list[Point],
        r: float,
        shell: float = 1.6,
        cortex: float | None = None,
        marrow: float | None = None,
    ) -> None:
        """A bone as a capsule chain: cortex, and a cancellous core unless ``marrow`` is given
        (long-bone shafts pass yellow marrow)."""
        cortex = self.hu["cortex"] if cortex is None else cortex
        marrow = self.hu["cancellous"] if marrow is None else marrow
        self.chain(pts, r, cortex, Region.BONE, L_CORTEX)
        if r - shell > 0.8:
            self.chain(pts, r - shell, marrow, Region.BONE, L_MARROW, texture_hu=25.0)

    def bone_ellipsoid(
        self,
        c: Point,
        axes: Point,
        shell: float = 1.5,
        marrow: float | None = None,
        layer: int = L_CORTEX,
        **kw,
    ) -> None:
        """An ellipsoidal bone: cortex at ``layer``, cancellous core just after it."""
        marrow = self.hu["cancellous"] if marrow is None else marrow
        self.add(
            Ellipsoid(
                hu=self.hu["cortex"], region=Region.BONE, layer=layer, center=c, axes=axes, **kw
            )
        )
        inner = tuple(max(a - shell, 0.5) for a in axes)
        self.add(
            Ellipsoid(
                hu=marrow,
                region=Region.BONE,
                layer=L_MARROW if layer == L_CORTEX else layer,
                center=c,
                axes=inner,
                texture_hu=25.0,
                **kw,
            )
        )  # type: ignore[arg-type]

    def jit(self, sd: float = 1.0) -> float:
        return float(self.rng.normal(0.0, sd))

    # -- body outline ------------------------------------------------------------------
    def _profiles(self) -> None:
        """Sample the trunk outline, its lean (muscle) boundary and the cavity along z."""
        p, s, lm = self.p, self.s, self.p.landmarks
        female = p.sex == "F"
        v = p.by_name
        mus = p.muscularity**0.5
        # (z, lean half-width, lean half-depth, female width factor)
        rows = [
            (lm["crotch"] - 1.0, 150, 90, 1.05),
            (lm["hip"], 165, 100, 1.08),
            (p.z_s1_top, 150, 96, 1.05),
            (p.vertebra("L3").z_mid, 133, 92, 0.97),
            (v("T12").z_mid, 143, 102, 0.93),
            (v("T9").z_mid, 150, 108, 0.9),
            (v("T6").z_mid, 157, 104, 0.9),
            (v("T3").z_mid, 163, 96, 0.9),
            (v("T1").z_hi, 150, 82, 0.9),
            (v("C7").z_mid, 62, 58, 0.9),
            (v("C4").z_mid, 55, 55, 0.9),
            (lm["skull_base"] - 10.0, 52, 54, 0.9),
        ]
        zs = np.array([r[0] for r in rows])
        order = np.argsort(zs)
        self.trunk_z = np.linspace(lm["crotch"] - 1.0, lm["skull_base"] - 10.0, 240)
        a_l = (
            np.interp(
                self.trunk_z,
                zs[order],
                np.array([r[1] * (r[3] if female else 1.0) for r in rows])[order],
            )
            * s
            * mus
        )
        b_l = np.interp(self.trunk_z, zs[order], np.array([r[2] for r in rows])[order]) * s
        if female:
            b_l *= 0.94
        # Visceral fat widens the abdomen, mostly forward.
        l1, l5 = p.vertebra("L1"), p.vertebra("L5")
        w_vat = np.interp(
            self.trunk_z, [lm["hip"], l5.z_lo, l1.z_hi, v("T10").z_mid], [0.3, 1.0, 1.0, 0.0]
        )
        b_l += p.vat_mm * w_vat
        a_l += 0.45 * p.vat_mm * w_vat
        sat = np.array([sat_profile(p, z) for z in self.trunk_z])
        back = np.asarray(p.back_y(self.trunk_z))
        sat_back = 0.5 * sat
        back_l = back - sat_back
        front_l = back_l - 2 * b_l
        self.a_o = a_l + 1.1 * sat
        self.b_o = b_l + 0.5 * (sat + sat_back)
        self.cy_o = back - self.b_o
        self.a_l, self.b_l, self.cy_l = a_l, b_l, back_l - b_l
        self.front_l, self.back_l = front_l, back_l
        # Cavity: explicit lateral half-width and antero-posterior limits per level.
        sp_y = np.array([spine_y(p, z) for z in self.trunk_z])
        sac = self.sacral_path()
        below = self.trunk_z < p.z_s1_top
        sp_y[below] = np.interp(self.trunk_z[below], sac[:, 2][::-1], sac[:, 1][::-1])
        self.spine_y_at = sp_y
        ctrl = [  # (z, lateral inset, anterior wall, posterior offset from spine axis)
            (lm["crotch"] + 15, -1, 40, -10),
            (lm["hip"], -2, 28, -8),
            (p.z_s1_top, 20, 18, 10),
            (p.vertebra("L3").z_mid, 16, 13, 24),
            (v("T12").z_mid, 18, 14, 28),
            (v("T9").z_mid, 22, 17, 30),
            (v("T6").z_mid, 24, 18, 30),
            (v("T3").z_mid, 34, 24, 28),
            (v("T1").z_hi, -3, 30, 22),
            (v("T1").z_hi + 1, 0, 0, 0),
        ]
        cz = np.array([c[0] for c in ctrl])
        o = np.argsort(cz)

        def ci(k: int) -> np.ndarray:
            return np.interp(self.trunk_z, cz[o], np.array([c[k] for c in ctrl])[o])

        inset, ant, post = ci(1), ci(2) * s, ci(3) * s
        # Negative inset codes an absolute half-width (pelvic inlet, apex of the chest).
        pelvic_a = np.where(inset == -1, 38.0, np.where(inset == -2, 62.0, 48.0)) * s
        a_c = np.where(inset < 0, pelvic_a, a_l - inset * s)
        a_c = np.where(self.trunk_z > v("T1").z_hi, 0.0, a_c)
        ant_y = front_l + ant
        post_y = sp_y + post
        self.a_c = np.maximum(a_c, 0.0)
        self.cy_c = 0.5 * (ant_y + post_y)
        self.b_c = np.maximum(0.5 * (post_y - ant_y), 0.0)

    def at(self, z: float) -> dict[str, float]:
        """The outline quantities at one height."""
        tz = self.trunk_z
        names = (
            "a_o",
            "b_o",
            "cy_o",
            "a_l",
            "b_l",
            "cy_l",
            "front_l",
            "back_l",
            "a_c",
            "b_c",
            "cy_c",
            "spine_y_at",
        )
        return {n: float(np.interp(z, tz, getattr(self, n))) for n in names}

    def sacral_path(self) -> np.ndarray:
        """Centres of the sacral and coccygeal segments, top down: (x, y, z, half-len)."""
        if hasattr(self, "_sacrum"):
            return self._sacrum
        p, s = self.p, self.s
        low = p.vertebrae[-1]
        n_seg = 5 + (5 - p.lumbar_count)
        lengths = [24, 22, 20, 18, 15, 12][:n_seg] if n_seg <= 6 else [24] * n_seg
        lengths = [*lengths, 9, 8, 7]  # coccyx
        angle = np.deg2rad(22.0 + 8.0 * (p.lordosis - 1.0))
        x, y, z = low.cx, low.cy + 6.0 * s, p.z_s1_top
        pts = []
        for k, ln in enumerate(lengths):
            ln *= s
            a = angle + np.deg2rad(6.0) * k - (np.deg2rad(40.0) if k >= n_seg + 1 else 0.0)
            dy, dz = np.sin(a) * ln, -np.cos(a) * ln
            pts.append((x, y + dy / 2, z + dz / 2, ln / 2))
            y, z = y + dy, z + dz
        self._sacrum = np.array(pts)
        self.n_sacral = n_seg
        return self._sacrum


def _hu_table(p: Patient, rng: np.random.Generator) -> dict[str, float]:
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


# ---------------------------------------------------------------------------------------
def build_scene(p: Patient, rng: np.random.Generator) -> Scene:
    """Every solid of the patient and the table, ready to rasterise slice by slice."""
    b = _Builder(p, rng)
    dome = _dome_surface(b)
    _table_and_outline(b)
    _head_neck(b)
    _limbs(b)
    _thorax(b)
    _abdomen(b)
    _pelvis(b)
    _spine(b)
    _ribs(b)
    _muscles(b)
    _vessels(b)
    scene = Scene(prims=b.prims, metal=b.metal, dome=dome, hu=b.hu)
    return scene.finish()


def _section(
    b: _Builder,
    a: np.ndarray,
    bb: np.ndarray,
    cy: np.ndarray,
    hu: float,
    region: int,
    layer: int,
    p_post: float,
    zs: np.ndarray | None = None,
    cx: np.ndarray | None = None,
) -> None:
    zs = b.trunk_z if zs is None else zs
    cx = np.zeros_like(zs) if cx is None else cx
    b.add(
        Section(
            hu=hu,
            region=region,
            layer=layer,
            zs=zs,
            cx=cx,
            cy=cy,
            a=a,
            b=bb,
            p_ant=2.0,
            p_post=p_post,
        )
    )


def _table_and_outline(b: _Builder) -> None:
    p, h = b.p, b.hu
    zs = np.array([b.z_bottom - 50, b.z_top + 200])
    one = np.ones(2)
    ty = p.table_y + 1.0
    _section(
        b, 230 * one, 28 * one, (ty + 28) * one, h["table_shell"], Region.TABLE, L_TABLE, 6.0, zs=zs
    )
    _section(
        b, 226 * one, 24 * one, (ty + 28) * one, h["table_core"], Region.TABLE, L_TABLE, 6.0, zs=zs
    )
    # Trunk and neck: fat, then muscle, then the cavity.
    _section(b, b.a_o, b.b_o, b.cy_o, h["fat"], Region.FAT, L_OUTER, 3.2)
    _section(b, b.a_l, b.b_l, b.cy_l, h["muscle"], Region.MUSCLE, L_LEAN, 3.0)
    _section(b, b.a_c, b.b_c, b.cy_c, h["vat"], Region.CAVITY, L_CAVITY, 2.2)


def _head_neck(b: _Builder) -> None:
    p, s, h, lm = b.p, b.s, b.hu, b.p.landmarks
    hc_z = lm["vertex"] - 100 * s
    hb = 92 * s
    hy = p.table_y - p.headrest_mm - hb - 4.0
    b.head = (0.0, hy, hc_z)  # type: ignore[attr-defined]
    scalp = 4.0 + 0.08 * p.sat_abd_mm
    base = ("z", hc_z - 30 * s, 1)
    b.add(
        Ellipsoid(
            hu=h["fat"],
            region=Region.FAT,
            layer=L_OUTER,
            center=(0, hy, hc_z),
            axes=(72 * s + scalp, hb + scalp, 100 * s + scalp),
            cuts=[("z", hc_z - 60 * s, 1)],
        )
    )
    # Face and jaw below the skull base.
    fy, fz = hy - 30 * s, hc_z - 65 * s
    b.add(
        Ellipsoid(
            hu=h["muscle"],
            region=Region.MUSCLE,
            layer=L_LEAN,
            center=(0, fy, fz),
            axes=(58 * s, 68 * s, 50 * s),
        )
    )
    b.add(
        Ellipsoid(
            hu=h["cortex"] + 200,
            region=Region.BONE,
            layer=L_CORTEX,
            center=(0, hy, hc_z),
            axes=(72 * s, hb, 100 * s),
            cuts=[base],
        )
    )
    b.add(
        Ellipsoid(
            hu=h["brain"],
            region=Region.ORGAN,
            layer=L_MARROW,
            center=(0, hy, hc_z),
            axes=(65 * s, hb - 7 * s, 93 * s),
            cuts=[base],
        )
    )
    for side in (-1, 1):
        b.add(
            Ellipsoid(
                hu=h["csf"],
                region=Region.ORGAN,
                layer=L_CARVE,
                center=(side * 8 * s, hy - 5 * s, hc_z + 10 * s),
                axes=(6 * s, 24 * s, 12 * s),
            )
        )
        # Orbits with the eyes, maxillary sinuses.
        b.add(
            Ellipsoid(
                hu=h["fat"],
                region=Region.ORGAN,
                layer=L_CARVE,
                center=(side * 32 * s, hy - 68 * s, hc_z - 22 * s),
                axes=(17 * s, 22 * s, 16 * s),
            )
        )
        b.add(
            Ellipsoid(
                hu=12.0,
                region=Region.ORGAN,
                layer=L_CARVE,
                center=(side * 32 * s, hy - 76 * s, hc_z - 22 * s),
                axes=(12 * s, 12 * s, 12 * s),
            )
        )
        b.bone_ellipsoid(
            (side * 28 * s, fy - 28 * s, hc_z - 55 * s), (22 * s, 24 * s, 20 * s), shell=2.0
        )
        b.add(
            Ellipsoid(
                hu=-1000,
                region=Region.AIR,
                layer=L_CARVE,
                center=(side * 26 * s, fy - 28 * s, hc_z - 55 * s),
                axes=(17 * s, 19 * s, 16 * s),
            )
        )
    b.add(
        Ellipsoid(
            hu=-1000,
            region=Region.AIR,
            layer=L_CARVE,
            center=(0, fy - 35 * s, hc_z - 50 * s),
            axes=(8 * s, 25 * s, 18 * s),
        )
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


def _limbs(b: _Builder) -> None:
    """Legs (sections with femur, tibia, fibula) and arms (capsule chains)."""
    p, s, h, lm = b.p, b.s, b.hu, b.p.landmarks
    hip_x = (88 + (6 if p.sex == "F" else 0)) * s
    b.hip_x = hip_x  # type: ignore[attr-defined]
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
        _section(b, ro * 1.05, ro, cy_o, h["fat"], Region.FAT, L_OUTER, 2.6, zs=zs, cx=side * xs)
        _section(
            b,
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
    b.hip_y = hy  # type: ignore[attr-defined]
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
            cup = Ellipsoid(
                hu=h["metal"], region=Region.METAL, layer=L_METAL, center=head, axes=(r_head,) * 3
            )
            b.add(cup)
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
        b.add(
            Ellipsoid(
                hu=h["muscle"],
                region=Region.MUSCLE,
                layer=L_LEAN,
                center=(side * ax_, ay_ - 55 * s, fz),
                axes=(40 * s, 105 * s, 24 * s),
            )
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
            _hx, hyy, hz = b.head  # type: ignore[attr-defined]
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


def _dome_surface(b: _Builder) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
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

    b.dome = dome  # type: ignore[attr-defined]
    return dome


class _Lung(Primitive):
    """Cavity above the diaphragm dome and below the apex paraboloid of one side."""

    def __init__(self, b: _Builder, side: int) -> None:
        super().__init__(
            hu=b.hu["lung"], region=Region.LUNG, layer=L_LUNG, only_in=(Region.CAVITY,)
        )
        self.b, self.side = b, side
        lm = b.p.landmarks
        self.z_lo = lm["right_dome"] - 80.0 * b.s
        self.z_hi = lm["lung_apex"]

    def z_range(self) -> tuple[float, float]:
        return self.z_lo, self.z_hi

    def mask(self, cv):  # type: ignore[override]
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
        m &= cv.z > self.b.dome(xs, ys)  # type: ignore[attr-defined]
        # Apex: a paraboloid centred over each lung.
        r2 = ((xs - self.side * 0.5 * a) / (0.6 * a)) ** 2 + ((ys - cy - 0.2 * bb) / bb) ** 2
        m &= cv.z < self.z_hi - 40.0 * r2
        return rs, cs, m


def _thorax(b: _Builder) -> None:
    p, s, h, lm, rng = b.p, b.s, b.hu, b.p.landmarks, b.rng
    for side in (-1, 1):
        b.add(_Lung(b, side))
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
    b.add(
        Cylinder(
            hu=-60.0,
            region=Region.ORGAN,
            layer=L_ORGAN,
            center=(8.0, 0.5 * (med_y0 + med_y1)),
            axes=(30 * s, 0.5 * (med_y1 - med_y0)),
            z_lo=lm["right_dome"] - 10,
            z_hi=t1.z_hi,
            texture_hu=30.0,
        )
    )
    b.add(
        Ellipsoid(
            hu=-80.0,
            region=Region.ORGAN,
            layer=L_ORGAN,
            center=heart_c,
            axes=tuple(a + 5 * s for a in ax),
            angle=0.45,
        )
    )  # type: ignore[arg-type]
    b.add(
        Ellipsoid(
            hu=h["myocardium"],
            region=Region.ORGAN,
            layer=L_ORGAN2,
            center=heart_c,
            axes=ax,
            angle=0.45,
        )
    )
    b.add(
        Ellipsoid(
            hu=h["artery"] if p.contrast != "none" else 42.0,
            region=Region.ORGAN,
            layer=L_ORGAN2,
            center=heart_c,
            axes=tuple(a - 11 * s for a in ax),
            angle=0.45,
        )
    )  # type: ignore[arg-type]
    b.heart = (heart_c, ax)  # type: ignore[attr-defined]
    # Airway: trachea and main bronchi; oesophagus.
    c5 = p.by_name("C5")
    tr = [(0.0, spine_y(p, z) - 28 * s, z) for z in np.linspace(c5.z_mid, carina, 6)]
    b.chain(tr, 10 * s, h["soft"], Region.ORGAN, L_VESSEL)
    b.chain(tr, 8 * s, -1000.0, Region.AIR, L_VESSEL)
    for side in (-1, 1):
        br = [tr[-1], (side * 40 * s, tr[-1][1] + 6 * s, carina - 22 * s)]
        b.chain(br, 8 * s, h["soft"], Region.ORGAN, L_VESSEL)
        b.chain(br, 6.5 * s, -1000.0, Region.AIR, L_VESSEL)
        b.add(
            Ellipsoid(
                hu=h["thyroid"],
                region=Region.ORGAN,
                layer=L_ORGAN,
                center=(
                    side * 17 * s,
                    spine_y(p, p.by_name("C7").z_mid) - 32 * s,
                    p.by_name("C7").z_mid,
                ),
                axes=(9 * s, 11 * s, 22 * s),
            )
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
    b.sternum = (sy, t3.z_hi, t9.z_lo)  # type: ignore[attr-defined]
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


def _abdomen(b: _Builder) -> None:
    p, s, h, lm, rng = b.p, b.s, b.hu, b.p.landmarks, b.rng
    dome = b.dome  # type: ignore[attr-defined]
    below = {"surface": dome, "z_clip": -1}
    # Liver: right lobe from the dome to the tip, left lobe forward and across.
    zr, tip = lm["right_dome"], lm["liver_tip"]
    o = b.at(zr - 40)
    half = 0.5 * (zr + 25 - tip)
    b.add(
        Ellipsoid(
            hu=h["liver"],
            region=Region.ORGAN,
            layer=L_ORGAN,
            center=(-0.42 * o["a_c"], o["cy_c"] + 0.05 * o["b_c"], tip + half),
            axes=(0.55 * o["a_c"], 0.9 * o["b_c"], half),
            texture_hu=6.0,
            **below,
        )
    )
    b.add(
        Ellipsoid(
            hu=h["liver"],
            region=Region.ORGAN,
            layer=L_ORGAN,
            center=(0.05 * o["a_c"], o["cy_c"] - 0.45 * o["b_c"], zr - 45 * s),
            axes=(0.45 * o["a_c"], 0.45 * o["b_c"], 55 * s),
            texture_hu=6.0,
            **below,
        )
    )
    b.add(
        Ellipsoid(
            hu=h["fluid"],
            region=Region.ORGAN,
            layer=L_ORGAN2,
            center=(-0.2 * o["a_c"], o["cy_c"] - 0.35 * o["b_c"], tip + 45 * s),
            axes=(14 * s, 16 * s, 35 * s),
        )
    )
    # Spleen and stomach under the left dome.
    zl = lm["left_dome"]
    ol = b.at(zl - 55 * s)
    b.add(
        Ellipsoid(
            hu=h["spleen"],
            region=Region.ORGAN,
            layer=L_ORGAN,
            center=(0.62 * ol["a_c"], ol["cy_c"] + 0.5 * ol["b_c"], zl - 55 * s),
            axes=(26 * s, 55 * s, 55 * s),
            angle=-0.6,
            **below,
        )
    )
    st_c = (0.3 * ol["a_c"], ol["cy_c"] - 0.2 * ol["b_c"], zl - 45 * s)
    st_ax = (55 * s, 45 * s, 65 * s)
    b.add(
        Ellipsoid(
            hu=h["bowel_wall"], region=Region.ORGAN, layer=L_ORGAN, center=st_c, axes=st_ax, **below
        )
    )
    inner = tuple(a - 4 for a in st_ax)
    b.add(
        Ellipsoid(
            hu=h["fluid"] + 10,
            region=Region.ORGAN,
            layer=L_ORGAN2,
            center=st_c,
            axes=inner,
            texture_hu=15.0,
            **below,
        )
    )  # type: ignore[arg-type]
    gas_level = st_c[1] - rng.uniform(0.1, 0.6) * st_ax[1]
    b.add(
        Ellipsoid(
            hu=-1000.0,
            region=Region.AIR,
            layer=L_ORGAN2,
            center=st_c,
            axes=inner,  # type: ignore[arg-type]
            cuts=[("y", gas_level, -1)],
            **below,
        )
    )
    # Pancreas across L1-L2.
    l1, l2, l3 = p.vertebra("L1"), p.vertebra("L2"), p.vertebra("L3")
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
        b.add(
            Ellipsoid(
                hu=h["kidney_cortex"],
                region=Region.ORGAN,
                layer=L_ORGAN,
                center=c,
                axes=axk,
                angle=ang,
            )
        )
        b.add(
            Ellipsoid(
                hu=h["kidney_medulla"],
                region=Region.ORGAN,
                layer=L_ORGAN2,
                center=c,
                axes=(axk[0] - 7 * s, axk[1] - 8 * s, axk[2] - 10 * s),
                angle=ang,
            )
        )
        b.add(
            Ellipsoid(
                hu=h["vat"],
                region=Region.ORGAN,
                layer=L_ORGAN2,
                center=(c[0] - side * 16 * s, c[1] - 6 * s, c[2]),
                axes=(9 * s, 9 * s, 22 * s),
            )
        )
    # Bladder, and prostate or uterus.
    zh = lm["hip"]
    op = b.at(zh + 10)
    fill = rng.uniform(0.5, 1.3)
    b.add(
        Ellipsoid(
            hu=h["urine"],
            region=Region.ORGAN,
            layer=L_ORGAN,
            center=(0.0, op["cy_c"] - 0.25 * op["b_c"], zh + 15 * s),
            axes=(40 * s * fill, 32 * s * fill, 32 * s * fill),
        )
    )
    if p.sex == "M":
        b.add(
            Ellipsoid(
                hu=45.0,
                region=Region.ORGAN,
                layer=L_ORGAN,
                center=(0.0, op["cy_c"], zh - 25 * s),
                axes=(20 * s, 16 * s, 18 * s),
            )
        )
    else:
        b.add(
            Ellipsoid(
                hu=80.0,
                region=Region.ORGAN,
                layer=L_ORGAN,
                center=(0.0, op["cy_c"] + 0.2 * op["b_c"], zh + 45 * s),
                axes=(30 * s, 22 * s, 38 * s),
            )
        )
    _bowel(b, l1, l2, l3)


def _bowel(b: _Builder, l1: Vertebra, l2: Vertebra, l3: Vertebra) -> None:
    """Colon along its frame and small-bowel loops as random walks, filling the cavity."""
    p, s, h, lm, rng = b.p, b.s, b.hu, b.p.landmarks, b.rng
    crest = lm["iliac_crest"]

    def rel(fx: float, fy: float, z: float) -> Point:
        o = b.at(z)
        return (fx * o["a_c"], o["cy_c"] + fy * o["b_c"], z)

    sac = b.sacral_path()
    frame = [
        rel(-0.55, 0.0, crest - 15),
        rel(-0.62, 0.15, l3.z_mid),
        rel(-0.58, 0.0, l2.z_mid),
        rel(-0.5, -0.2, lm["liver_tip"] + 10),
        rel(-0.2, -0.55, l3.z_mid - rng.uniform(0, 40)),
        rel(0.25, -0.55, l2.z_mid - rng.uniform(0, 30)),
        rel(0.6, 0.0, l1.z_hi + 15),
        rel(0.68, 0.2, l2.z_lo),
        rel(0.66, 0.25, l3.z_mid),
        rel(0.62, 0.2, crest),
        rel(0.3, -0.1, p.z_s1_top - 25),
        rel(-0.1, -0.2, p.z_s1_top - 45),
        (0.0, sac[3][1] - 30 * s, sac[3][2]),
        (0.0, sac[-1][1] - 25 * s, lm["symphysis"] - 20 * s),
    ]
    pts = _smooth_path(frame, step=14.0 * s)
    rs = [float(np.clip(rng.normal(22, 3), 15, 30)) * s for _ in pts[:-1]]
    gas_fraction = rng.uniform(0.1, 0.5)
    for a0, a1, r in zip(pts[:-1], pts[1:], rs, strict=False):
        b.capsule(
            a0, a1, r, h["bowel_wall"], Region.BOWEL, L_BOWEL, only_in=(Region.CAVITY, Region.BOWEL)
        )
        gas = rng.random() < gas_fraction
        b.capsule(
            a0,
            a1,
            r - 2.5,
            -1000.0 if gas else -60.0,
            Region.BOWEL,
            L_BOWEL,
            only_in=(Region.BOWEL,),
            texture_hu=0.0 if gas else 160.0,
        )
    # Small bowel: persistent random walks in the mid and lower abdomen.
    oral = rng.random() < 0.2
    for _ in range(18):
        z0 = rng.uniform(crest - 60 * s, l2.z_hi)
        cur = np.array(rel(rng.uniform(-0.4, 0.4), rng.uniform(-0.5, 0.2), z0))
        d = rng.normal(0, 1, 3)
        d /= np.linalg.norm(d)
        walk = [tuple(cur)]
        for _k in range(14):
            d = d + rng.normal(0, 0.6, 3)
            d /= np.linalg.norm(d)
            nxt = cur + d * 16 * s
            o = b.at(float(nxt[2]))
            if abs(nxt[0]) > 0.8 * o["a_c"] or abs(nxt[1] - o["cy_c"]) > 0.8 * o["b_c"]:
                d = -d
                nxt = cur + d * 16 * s
            cur = nxt
            walk.append(tuple(cur))
        r = float(rng.uniform(10, 14)) * s
        content = h["oral_contrast"] if oral else (h["fluid"] + 10)
        b.chain(
            walk, r, h["bowel_wall"], Region.BOWEL, L_BOWEL, only_in=(Region.CAVITY, Region.BOWEL)
        )
        for a0, a1 in itertools.pairwise(walk):
            gas = rng.random() < 0.12
            b.capsule(
                a0,
                a1,
                r - 2.2,
                -1000.0 if gas else content,
                Region.BOWEL,
                L_BOWEL,
                only_in=(Region.BOWEL,),
            )


def _smooth_path(frame: list[Point], step: float) -> list[Point]:
    """Resample a polyline with Catmull-Rom smoothing at about ``step`` mm."""
    pts = np.array(frame, dtype=np.float64)
    pts = np.vstack([pts[0], pts, pts[-1]])
    out = []
    for i in range(1, len(pts) - 2):
        p0, p1, p2, p3 = pts[i - 1], pts[i], pts[i + 1], pts[i + 2]
        n = max(int(np.linalg.norm(p2 - p1) / step), 1)
        for t in np.linspace(0, 1, n, endpoint=False):
            t2, t3 = t * t, t * t * t
            out.append(
                tuple(
                    0.5
                    * (
                        (2 * p1)
                        + (-p0 + p2) * t
                        + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t2
                        + (-p0 + 3 * p1 - 3 * p2 + p3) * t3
                    )
                )
            )
    out.append(tuple(pts[-2]))
    return out  # type: ignore[return-value]


def _pelvis(b: _Builder) -> None:
    """Sacrum and coccyx, iliac wings (crest at the drawn level), acetabula, pubis, ischium."""
    p, s, h, lm = b.p, b.s, b.hu, b.p.landmarks
    sac = b.sacral_path()
    n_seg = b.n_sacral  # type: ignore[attr-defined]
    low = p.vertebrae[-1]
    widths = [low.width * (1.0 - 0.15 * k) for k in range(len(sac))]
    for k, (x, y, z, hl) in enumerate(sac):
        w = max(widths[k], 12 * s) if k < n_seg else 10 * s
        d = max(30 * s - 4 * s * k, 9 * s)
        b.bone_ellipsoid((x, y, z), (0.5 * w, 0.5 * d, hl * 1.15))
        if k < min(3, n_seg):
            ala_w = (42 - 9 * k) * s
            for side in (-1, 1):
                b.bone_ellipsoid(
                    (x + side * (0.5 * w + 0.5 * ala_w - 4 * s), y + 4 * s, z),
                    (0.5 * ala_w, 0.5 * d + 4 * s, hl * 1.2),
                )
        if k < n_seg:  # sacral canal and median crest
            b.capsule(
                (x, y + 0.5 * d + 6 * s, z + hl),
                (x, y + 0.5 * d + 6 * s, z - hl),
                5 * s,
                h["csf"],
                Region.ORGAN,
                L_CARVE,
            )
            b.capsule(
                (x, y + 0.5 * d + 14 * s, z + hl),
                (x, y + 0.5 * d + 14 * s, z - hl),
                3 * s,
                h["cortex"],
                Region.BONE,
                L_CARVE,
            )
    # Iliac wings: a stack of arcs from the acetabular roof to the crest.
    hip_x, hip_y, zh = b.hip_x, b.hip_y, lm["hip"]  # type: ignore[attr-defined]
    crest = lm["iliac_crest"]
    z_roof = zh + 25 * s
    span = (118 if p.sex == "M" else 126) * s
    for side in (-1, 1):
        for z in np.arange(z_roof, crest + 0.1, 4.0):
            t = (z - z_roof) / max(crest - z_roof, 1.0)
            x_s = float(np.interp(z, sac[:, 2][::-1], sac[:, 0][::-1]))
            y_s = float(np.interp(z, sac[:, 2][::-1], sac[:, 1][::-1]))
            w_s = 0.5 * low.width + (42 - 9 * 0) * s * (1.0 - 0.5 * (1 - t))
            post = np.array([side * (abs(x_s) + w_s + 3 * s), y_s + 4 * s + 18 * s * t])
            ant = np.array([side * (hip_x + (span - hip_x) * t), hip_y - 25 * s - 30 * s * t])
            mid = 0.5 * (post + ant) + np.array([side * (12 + 18 * t) * s, 10 * s])
            arc = [
                (*tuple((1 - u) ** 2 * post + 2 * (1 - u) * u * mid + u * u * ant), z)
                for u in np.linspace(0, 1, 5)
            ]
            r = 7.0 * s if t > 0.93 else (9.0 * s if t < 0.25 else 3.2 * s)
            b.chain(arc, r, h["cortex"] * 0.75, Region.BONE, L_CORTEX)
            if r > 5:
                b.chain(arc, r - 2.0, h["cancellous"], Region.BONE, L_MARROW)
        # Acetabulum: a bony cup medial and above the femoral head.
        head = (side * hip_x, hip_y, zh)
        r_out = 34 * s
        b.add(
            Ellipsoid(
                hu=h["cortex"] * 0.8,
                region=Region.BONE,
                layer=L_CORTEX,
                center=head,
                axes=(r_out,) * 3,
                cuts=[("x", side * (hip_x + 10 * s), -side), ("z", zh - 12 * s, 1)],
            )
        )
        b.add(
            Ellipsoid(
                hu=h["cartilage"] - 70,
                region=Region.ORGAN,
                layer=L_MARROW,
                center=head,
                axes=(26 * s,) * 3,
                cuts=[("z", zh - 12 * s, 1)],
            )
        )
        # Pubic rami to the symphysis, ischium down to the tuberosity.
        sym = (side * 6 * s, hip_y - 45 * s, lm["symphysis"])
        b.bone_chain([(side * (hip_x - 20 * s), hip_y - 20 * s, zh - 5 * s), sym], 9 * s)
        b.bone_ellipsoid((side * 14 * s, hip_y - 45 * s, lm["symphysis"]), (10 * s, 13 * s, 22 * s))
        tub = (side * (hip_x - 30 * s), hip_y + 30 * s, zh - 55 * s)
        b.bone_chain([(side * (hip_x - 10 * s), hip_y + 22 * s, zh - 10 * s), tub], 12 * s)
        b.bone_chain([tub, (side * 10 * s, hip_y - 40 * s, lm["symphysis"] - 25 * s)], 7 * s)


def _spine(b: _Builder) -> None:
    """Bodies, discs, pedicles, laminae, spinous and transverse processes, facets, canal."""
    p, s, h = b.p, b.s, b.hu
    verts = p.vertebrae
    canal_pts: list[Point] = []
    for i, v in enumerate(verts):
        hgt = v.z_hi - v.z_lo
        lum, thor, _cerv = v.region == "lumbar", v.region == "thoracic", v.region == "cervical"
        bw, bd = 0.5 * v.width, 0.5 * v.depth
        yb = v.cy + bd  # posterior wall of the body
        canal_d = (16 if lum else 15 if thor else 13) * s
        if v.name_from_sacrum == "L3":
            canal_d -= 1.5 * s  # narrowest canal at L3
        canal_w = (
            22 + 1.2 * (int(v.name_from_sacrum[1:]) if v.name_from_sacrum[0] == "L" else 0)
            if lum
            else 17
            if thor
            else 23
        ) * s
        canal_pts.append((v.cx, yb + 0.5 * canal_d, v.z_mid))
        pr = (6.0 if lum else 4.2 if thor else 3.2) * s
        # Disc below the body (down to the next body or the sacrum).
        lo_z = verts[i + 1].z_hi if i + 1 < len(verts) else p.z_s1_top
        nxt = verts[i + 1] if i + 1 < len(verts) else v
        if v.name != "C1":
            b.add(
                Cylinder(
                    hu=h["disc"],
                    region=Region.ORGAN,
                    layer=L_ORGAN2,
                    center=(0.5 * (v.cx + nxt.cx), 0.5 * (v.cy + nxt.cy)),
                    axes=(0.5 * (bw + 0.5 * nxt.width) * 1.03, 0.5 * (bd + 0.5 * nxt.depth) * 1.03),
                    z_lo=lo_z - 0.5,
                    z_hi=v.z_lo + 0.5,
                    slope=0.5 * (v.slope + nxt.slope),
                )
            )
            notch = 0.14 * v.depth if lum else 0.0
            b.add(
                Cylinder(
                    hu=h["cortex"] * 0.8,
                    region=Region.BONE,
                    layer=L_CORTEX,
                    center=(v.cx, v.cy),
                    axes=(bw, bd),
                    z_lo=v.z_lo,
                    z_hi=v.z_hi,
                    slope=v.slope,
                    notch=notch,
                )
            )
            b.add(
                Cylinder(
                    hu=h["cancellous"],
                    region=Region.BONE,
                    layer=L_MARROW,
                    center=(v.cx, v.cy),
                    axes=(bw - 1.6, bd - 1.6),
                    z_lo=v.z_lo + 1.2,
                    z_hi=v.z_hi - 1.2,
                    slope=v.slope,
                    notch=notch + 1.6 if notch else 0.0,
                    texture_hu=28.0,
                )
            )
        else:  # atlas: a ring with lateral masses; the dens of C2 sits inside it
            ring = [
                (v.cx + 22 * s * np.sin(t), v.cy + 8 * s - 20 * s * np.cos(t), v.z_mid)
                for t in np.linspace(0, 2 * np.pi, 11)
            ]
            b.bone_chain(ring, 4.5 * s, shell=1.5)
            for side in (-1, 1):
                b.bone_ellipsoid(
                    (v.cx + side * 22 * s, v.cy + 6 * s, v.z_mid), (9 * s, 12 * s, 8 * s)
                )
            c2 = verts[i + 1]
            b.bone_chain([(c2.cx, c2.cy - 2 * s, c2.z_hi), (v.cx, v.cy - 6 * s, v.z_hi)], 5 * s)
            continue
        zp = v.z_mid + 0.18 * hgt  # pedicles in the upper half of the body
        sx = 0.5 * canal_w + pr
        ped_end_y = yb + 0.75 * canal_d
        for side in (-1, 1):
            for dz in (-0.15 * hgt, 0.15 * hgt) if lum else (0.0,):
                b.bone_chain(
                    [
                        (v.cx + side * sx, yb - 4 * s, zp + dz),
                        (v.cx + side * sx, ped_end_y, zp + dz),
                    ],
                    pr,
                    shell=1.5,
                )
            # Laminae: from the pedicles round the back of the canal, reaching below the body.
            junction = (v.cx, yb + canal_d + 4 * s)
            lam_r = (4.8 if lum else 3.6) * s  # thick laminae with a cancellous core
            for dz in (0.0, -0.3 * hgt, -0.6 * hgt):
                b.bone_chain(
                    [
                        (v.cx + side * sx, ped_end_y, zp + dz),
                        (junction[0], junction[1], zp + dz - 3 * s),
                    ],
                    lam_r,
                    shell=1.4,
                )
            # Facets: superior articular process up to the disc above, inferior one down.
            fx = v.cx + side * (sx + 2 * s)
            up = v.z_hi + 0.5 * (verts[i - 1].z_lo - v.z_hi) if i > 0 else v.z_hi
            dn = v.z_lo - 0.5 * (v.z_lo - lo_z)
            b.bone_chain(
                [(fx, ped_end_y + 2 * s, zp), (fx + side * 2 * s, ped_end_y + 5 * s, up)],
                4.2 * s,
                shell=1.5,
            )
            b.bone_chain(
                [
                    (v.cx + side * (sx - 2 * s), ped_end_y + 8 * s, zp - 0.3 * hgt),
                    (v.cx + side * (sx - 3 * s), ped_end_y + 10 * s, dn),
                ],
                4.0 * s,
                shell=1.5,
            )
            # Transverse processes.
            if lum:
                tip_x = max(0.5 * v.tp_span, sx + 8 * s)
                rise = 5 * s if v.name_from_sacrum in ("L4", "L5") else 0.0
                tp_r = (6.0 if v.name_from_sacrum == "L5" else 4.2) * s
                b.bone_chain(
                    [
                        (v.cx + side * sx, ped_end_y - 2 * s, zp),
                        (v.cx + side * tip_x, ped_end_y + 2 * s, zp + rise),
                    ],
                    tp_r,
                    shell=1.5,
                )
            elif thor:
                b.bone_chain(
                    [
                        (v.cx + side * sx, ped_end_y, zp),
                        (v.cx + side * (bw + 26 * s), ped_end_y + 14 * s, zp + 2 * s),
                    ],
                    5.0 * s,
                    shell=1.5,
                )
            else:
                b.bone_chain(
                    [
                        (v.cx + side * bw, v.cy, v.z_mid),
                        (v.cx + side * (bw + 9 * s), v.cy + 4 * s, v.z_mid),
                    ],
                    4.0 * s,
                    shell=1.4,
                )
        # Spinous process: horizontal in the lumbar spine, steeply down in the mid-thorax.
        ang = np.deg2rad(10 if lum else 50 if thor else 25)
        base = (v.cx, yb + canal_d + 4 * s, zp - 3 * s)
        ln = v.sp_length
        tip = (v.cx, base[1] + ln * np.cos(ang), base[2] - ln * np.sin(ang))
        for dz in (-7 * s, 0.0, 7 * s) if lum else (0.0,):
            b.bone_chain(
                [(base[0], base[1], base[2] + dz), (tip[0], tip[1], tip[2] + dz * 0.8)],
                (4.6 if lum else 3.6) * s,
                shell=1.3,
            )
    # Canal (CSF) and cord down to the conus at about L1.
    sac = b.sacral_path()
    canal_pts.append((sac[0][0], sac[0][1] + 20 * s, sac[0][2]))
    b.chain(canal_pts, 7.0 * s, h["csf"], Region.ORGAN, L_CANAL)
    conus = p.vertebra("L1").z_lo - 5.0
    cord = [q for q in canal_pts if q[2] >= conus]
    b.chain(cord, 4.5 * s, h["cord"], Region.ORGAN, L_CANAL)


def _ribs(b: _Builder) -> None:
    """Ribs from the costovertebral joints round the cavity wall, dropping as they go forward.

    Ribs 1-7 continue as costal cartilage to the sternum; 8-10 end on the costal margin; the
    last two float.  Which vertebrae carry ribs follows the patient's rib count (11/12/13).
    """
    p, s, h = b.p, b.s, b.hu
    sy, s_top, s_bot = b.sternum  # type: ignore[attr-defined]
    ribbed = [v for v in p.vertebrae if v.ribs]
    n = len(ribbed)
    drops = [28, 50, 70, 85, 95, 105, 115, 120, 125, 125, 95, 55, 35]
    for k, v in enumerate(ribbed):
        floating = k >= n - 2
        drop = drops[min(k, len(drops) - 1)] * s
        if floating:
            drop = (90 if k == n - 2 else 50) * s
        phi_end = (
            (0.55 if k == n - 2 else 0.38) * np.pi
            if floating
            else (0.62 + 0.12 * min(k, 6) / 6) * np.pi
        )
        z_head = v.z_mid + 0.2 * (v.z_hi - v.z_lo)
        for side in (-1, 1):
            pts: list[Point] = [(v.cx + side * 0.45 * v.width, v.cy + 0.3 * v.depth, z_head)]
            phis = np.linspace(0.2 * np.pi, phi_end, 10)
            for phi in phis:
                f = (phi - phis[0]) / (phis[-1] - phis[0])
                z = z_head + 4 * s - drop * f**1.25
                o = b.at(z)
                a_r = max(o["a_c"], 30.0) + 4 * s
                b_r = max(o["b_c"], 30.0) + 3 * s
                pts.append((side * a_r * np.sin(phi), o["cy_c"] + b_r * np.cos(phi), z))
            r = (4.0 if k == 0 else 5.0) * s
            b.bone_chain(pts, r, shell=1.3, cortex=h["cortex"] * 0.75, marrow=h["rib_marrow"])
            if not floating and k < 10:
                end = pts[-1]
                if k < 7:
                    zt = s_top - (s_top - s_bot) * k / 6.5
                    target = (side * 14 * s, sy(zt), zt)
                else:
                    zt = s_bot - 10 * s * (k - 6)
                    target = (side * (40 + 25 * (k - 6)) * s, sy(zt) + 10 * s, zt)
                mid = (
                    0.5 * (end[0] + target[0]) + side * 10 * s,
                    0.5 * (end[1] + target[1]),
                    0.5 * (end[2] + target[2]) - 8 * s,
                )
                b.chain([end, mid, target], 4.5 * s, h["cartilage"], Region.BONE, L_CORTEX)


def _muscles(b: _Builder) -> None:
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
                b.add(
                    Cylinder(
                        hu=hu,
                        region=Region.MUSCLE,
                        layer=L_MUSCLE,
                        center=(v.cx + side * (off_x + 0.3 * grow), cy),
                        axes=(ax + grow, ay + grow),
                        z_lo=lo,
                        z_hi=v.z_hi,
                    )
                )
    sac = b.sacral_path()
    for x, y, z, hl in sac[:3]:
        for side in (-1, 1):
            b.add(
                Ellipsoid(
                    hu=m,
                    region=Region.MUSCLE,
                    layer=L_MUSCLE,
                    center=(x + side * 25 * s, y + 30 * s, z),
                    axes=(22 * s, 14 * s, hl * 1.3),
                )
            )
    # Psoas: from T12/L1, growing caudally, over the pelvic brim to the lesser trochanter.
    hip_x, hip_y, zh = b.hip_x, b.hip_y, lm["hip"]  # type: ignore[attr-defined]
    lumbar = [v for v in verts if v.region == "lumbar" and v.z_hi <= lm["psoas_origin"] + 25]
    for side in (-1, 1):
        pts: list[Point] = [(0, 0, 0)]
        pts = []
        radii = []
        first = True
        for v in reversed(lumbar[::-1]):
            r = 7 * s if first else min(radii[-1] + 4.5 * s, 24 * s)
            first = False
            radii.append(r * mus**0.5)
            pts.append((v.cx + side * (0.5 * v.width + r * 0.9), v.cy + 2 * s, v.z_mid))
        pts.append((side * 55 * s, sac[1][1] - 45 * s, sac[1][2]))
        radii.append(radii[-1])
        pts.append((side * (hip_x - 12 * s), hip_y - 32 * s, zh + 5 * s))
        radii.append(18 * s)
        pts.append((side * (hip_x + 5 * s), hip_y + 10 * s, zh - 55 * s))
        radii.append(11 * s)
        if len(pts) >= 2:
            b.chain(pts, [r + 1.5 for r in radii[1:]], h["fat"], Region.MUSCLE, L_MUSCLE)
            b.chain(pts, radii[1:], m, Region.MUSCLE, L_MUSCLE)
        # Quadratus lumborum, from the 12th rib to the crest.
        t12 = p.by_name("T12")
        ql = [
            (t12.cx + side * 45 * s, t12.cy + 28 * s, t12.z_lo),
            (p.l3.cx + side * (0.5 * p.l3.width + 30 * s), p.l3.cy + 24 * s, p.l3.z_mid),
            (side * 75 * s, p.vertebra("L5").cy + 20 * s, lm["iliac_crest"] - 5),
        ]
        b.chain(ql, [9 * s * mus + 1.5, 13 * s * mus + 1.5], h["fat"], Region.MUSCLE, L_MUSCLE)
        b.chain(ql, [9 * s * mus, 13 * s * mus], m, Region.MUSCLE, L_MUSCLE)
        # Iliacus in the iliac fossa; gluteus maximus and medius outside the pelvis.
        crest = lm["iliac_crest"]
        b.add(
            Ellipsoid(
                hu=m,
                region=Region.MUSCLE,
                layer=L_MUSCLE,
                center=(side * (hip_x + 5 * s), hip_y - 5 * s, 0.5 * (crest + zh) + 10 * s),
                axes=(22 * s, 20 * s, 0.5 * (crest - zh)),
            )
        )
        o = b.at(zh + 20)
        b.add(
            Ellipsoid(
                hu=m,
                region=Region.MUSCLE,
                layer=L_MUSCLE,
                center=(side * 80 * s, o["back_l"] - 35 * s, zh + 10 * s),
                axes=(60 * s * mus, 35 * s * mus, 85 * s),
                only_in=(Region.FAT, Region.MUSCLE, Region.CAVITY),
            )
        )
        b.add(
            Ellipsoid(
                hu=m,
                region=Region.MUSCLE,
                layer=L_MUSCLE,
                center=(side * (hip_x + 35 * s), hip_y + 35 * s, crest - 50 * s),
                axes=(28 * s, 45 * s, 55 * s),
                only_in=(Region.FAT, Region.MUSCLE),
            )
        )
        t4 = p.by_name("T4")
        o4 = b.at(t4.z_mid)
        b.add(
            Ellipsoid(
                hu=m,
                region=Region.MUSCLE,
                layer=L_MUSCLE,
                center=(side * 75 * s, o4["front_l"] + 8 * s, t4.z_mid),
                axes=(70 * s, 16 * s * mus, 50 * s),
                only_in=(Region.FAT, Region.MUSCLE),
            )
        )


def _vessels(b: _Builder) -> None:
    """Aorta to the femoral arteries, IVC and iliac veins, portal/SMV, SMA, renal, pulmonary."""
    p, s, h, lm = b.p, b.s, b.hu, b.p.landmarks
    art, vein = h["artery"], h["vein"]
    heart_c, _hax = b.heart  # type: ignore[attr-defined]
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
    hip_x, hip_y, zh = b.hip_x, b.hip_y, lm["hip"]  # type: ignore[attr-defined]
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
