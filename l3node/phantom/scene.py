"""Turn a :class:`~l3node.phantom.patient.Patient` into a list of solids to rasterise.

:func:`build_scene` runs one region builder per organ system (:mod:`.regions`), in a fixed
order: they share the builder's random stream, so the order is part of what a seed means.
Positions hang on the spine and on the body outline (trunk, cavity), so a patient who is
taller, fatter or more lordotic moves everything with it.  HU values follow
``shared/ANATOMY.md`` §5; contrast phase changes vessels and organs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .builder import L_CAVITY, L_LEAN, L_OUTER, L_TABLE, Builder
from .patient import Patient
from .raster import Primitive, Region, Section
from .regions import (
    abdomen,
    bowel,
    head_neck,
    limbs,
    muscles,
    pelvis,
    ribs,
    spine,
    thorax,
    vessels,
)

__all__ = ["Scene", "build_scene"]

# The region builders after the diaphragm and the outline, in the order they draw from the
# shared random stream (and set what later ones read: head, hips, heart, sternum).
_REGIONS: tuple[Callable[[Builder], None], ...] = (
    head_neck.build,
    limbs.build,
    thorax.build,
    abdomen.build,
    bowel.build,
    pelvis.build,
    spine.build,
    ribs.build,
    muscles.build,
    vessels.build,
)


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


def build_scene(p: Patient, rng: np.random.Generator) -> Scene:
    """Every solid of the patient and the table, ready to rasterise slice by slice."""
    b = Builder(p, rng)
    dome = thorax.dome_surface(b)
    _table_and_outline(b)
    for build in _REGIONS:
        build(b)
    scene = Scene(prims=b.prims, metal=b.metal, dome=dome, hu=b.hu)
    return scene.finish()


def _table_and_outline(b: Builder) -> None:
    """The table (shell and core), then the trunk and neck: fat, muscle, cavity."""
    p, h = b.p, b.hu
    zs = np.array([b.z_bottom - 50, b.z_top + 200])
    one = np.ones(2)
    ty = p.table_y + 1.0
    b.section(
        230 * one, 28 * one, (ty + 28) * one, h["table_shell"], Region.TABLE, L_TABLE, 6.0, zs=zs
    )
    b.section(
        226 * one, 24 * one, (ty + 28) * one, h["table_core"], Region.TABLE, L_TABLE, 6.0, zs=zs
    )
    b.section(b.a_o, b.b_o, b.cy_o, h["fat"], Region.FAT, L_OUTER, 3.2)
    b.section(b.a_l, b.b_l, b.cy_l, h["muscle"], Region.MUSCLE, L_LEAN, 3.0)
    b.section(b.a_c, b.b_c, b.cy_c, h["vat"], Region.CAVITY, L_CAVITY, 2.2)
