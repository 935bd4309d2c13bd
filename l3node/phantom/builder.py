"""The scene builder: the patient, its HU table, its trunk outline and the solid helpers.

Every region module (:mod:`.regions`) receives one :class:`Builder` and adds its solids to it,
in the fixed order of :func:`~.scene.build_scene`, drawing from the builder's one random stream;
so this module holds what they share and nothing that calls them (they import it, it imports
none of them).

The trunk outline — skin, the lean (muscle) boundary and the abdominal/thoracic cavity — is
sampled once along z here; everything else hangs on it and on the spine, so a patient who is
taller, fatter or more lordotic moves everything with it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .patient import Patient
from .raster import Capsule, Cylinder, Ellipsoid, Primitive, Region, Section
from .sagittal import sat_profile, spine_y
from .tissues import hu_table

__all__ = ["Builder", "Point"]

Point = tuple[float, float, float]

# Painting layers (lower first).
L_TABLE, L_OUTER, L_LEAN, L_CAVITY, L_LUNG, L_LUNGVES = 0, 10, 20, 30, 35, 36
L_BOWEL, L_ORGAN, L_ORGAN2, L_MUSCLE, L_VESSEL, L_CANAL = 40, 45, 46, 50, 55, 60
L_CORTEX, L_MARROW, L_CARVE, L_METAL = 70, 71, 72, 80
L_JOINT = 73  # bones that sit inside a socket painted earlier (femoral heads)


class Builder:
    """Holds the patient, the HU table and helpers while the scene is assembled."""

    # Set by one region builder for those that follow it (see build_scene's order).
    dome: Callable[[np.ndarray, np.ndarray], np.ndarray]  # thorax: the diaphragm surface
    head: Point  # head and neck: centre of the skull
    hip_x: float  # limbs: femoral head centres at (+-hip_x, hip_y, landmarks["hip"])
    hip_y: float
    heart: tuple[Point, Point]  # thorax: centre and semi-axes
    sternum: tuple[Callable[[float], float], float, float]  # thorax: y(z), top z, bottom z

    def __init__(self, p: Patient, rng: np.random.Generator) -> None:
        self.p = p
        self.rng = rng
        self.s = p.scale
        self.prims: list[Primitive] = []
        self.metal: list[Primitive] = []
        self.hu = hu_table(p, rng)
        lm = p.landmarks
        self.z_top = lm["vertex"] + 5.0
        self.z_bottom = lm["sole"] - 5.0
        self._sacrum: np.ndarray | None = None
        self.n_sacral = 0
        self._profiles()

    # -- generic helpers ---------------------------------------------------------------
    def add(self, prim: Primitive) -> Primitive:
        self.prims.append(prim)
        return prim

    def ellipsoid(
        self,
        center: Point,
        axes: Point,
        hu: float,
        region: int | None,
        layer: int,
        **kw,
    ) -> Ellipsoid:
        """Add an ellipsoid (``kw``: angle, cuts, surface, z_clip, only_in, texture_hu)."""
        prim = Ellipsoid(hu=hu, region=region, layer=layer, center=center, axes=axes, **kw)
        self.add(prim)
        return prim

    def cylinder(
        self,
        center: tuple[float, float],
        axes: tuple[float, float],
        z_lo: float,
        z_hi: float,
        hu: float,
        region: int | None,
        layer: int,
        **kw,
    ) -> None:
        """Add an elliptic cylinder between two tilted planes (``kw``: slope, notch, ...)."""
        self.add(
            Cylinder(
                hu=hu,
                region=region,
                layer=layer,
                center=center,
                axes=axes,
                z_lo=z_lo,
                z_hi=z_hi,
                **kw,
            )
        )

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
        """Capsules between consecutive points, one radius for all or one per segment."""
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
        self.ellipsoid(c, axes, self.hu["cortex"], Region.BONE, layer, **kw)
        inner = (max(axes[0] - shell, 0.5), max(axes[1] - shell, 0.5), max(axes[2] - shell, 0.5))
        inner_layer = L_MARROW if layer == L_CORTEX else layer
        self.ellipsoid(c, inner, marrow, Region.BONE, inner_layer, texture_hu=25.0, **kw)

    def section(
        self,
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
        """A z-varying superellipse section (by default sampled along the trunk's z)."""
        zs = self.trunk_z if zs is None else zs
        cx = np.zeros_like(zs) if cx is None else cx
        self.add(
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
        if self._sacrum is not None:
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
