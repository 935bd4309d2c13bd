"""Rasterise 3-D primitives into one axial slice.

The phantom is a scene of simple solids — ellipsoids, capsules (a segment with a radius),
elliptic cylinders cut by tilted end planes, and a z-varying "section" for the body outline.
Each solid is tested exactly against the pixel centres of one axial plane, only inside its
bounding box, so a slice costs a few milliseconds however large the scene is.

Painting is in order (the scene is sorted by layer): a later solid overwrites an earlier one.
A solid may be restricted to pixels whose current *region label* is in a given set, which is
how lung vessels stay inside the lungs and bowel stays inside the abdominal cavity without
exact geometry.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "Canvas",
    "Capsule",
    "Cylinder",
    "Ellipsoid",
    "Primitive",
    "Region",
    "Section",
]


class Region:
    """Region labels painted alongside HU values (uint8)."""

    AIR = 0
    TABLE = 1
    FAT = 2  # subcutaneous fat
    MUSCLE = 3
    CAVITY = 4  # abdominal / pelvic cavity (visceral fat)
    LUNG = 5
    ORGAN = 6
    BONE = 7
    BOWEL = 8
    VESSEL = 9
    METAL = 10


@dataclass
class Canvas:
    """One axial plane at height ``z`` on a pixel grid, in patient coordinates (mm).

    Column ``c`` is at ``x = x0 + c * dx`` and row ``r`` at ``y = y0 + r * dy`` (LPS: x to the
    patient's left, y posterior).
    """

    z: float
    x0: float
    y0: float
    dx: float
    dy: float
    rows: int
    cols: int
    hu: np.ndarray = field(init=False)
    label: np.ndarray = field(init=False)
    texture: np.ndarray | None = None  # unit-variance field for mottled contents

    def __post_init__(self) -> None:
        self.hu = np.full((self.rows, self.cols), -1000.0, dtype=np.float32)
        self.label = np.zeros((self.rows, self.cols), dtype=np.uint8)

    def window(
        self, xmin: float, xmax: float, ymin: float, ymax: float
    ) -> tuple[slice, slice, np.ndarray, np.ndarray] | None:
        """Pixel window covering a box in mm, with the pixel-centre coordinates inside it."""
        c0 = max(int(np.floor((xmin - self.x0) / self.dx)), 0)
        c1 = min(int(np.ceil((xmax - self.x0) / self.dx)) + 1, self.cols)
        r0 = max(int(np.floor((ymin - self.y0) / self.dy)), 0)
        r1 = min(int(np.ceil((ymax - self.y0) / self.dy)) + 1, self.rows)
        if c0 >= c1 or r0 >= r1:
            return None
        xs = (self.x0 + np.arange(c0, c1, dtype=np.float32) * self.dx)[None, :]
        ys = (self.y0 + np.arange(r0, r1, dtype=np.float32) * self.dy)[:, None]
        return slice(r0, r1), slice(c0, c1), xs, ys

    def paint(self, prim: Primitive) -> None:
        """Paint one primitive where it covers a pixel centre (and its region rule allows)."""
        hit = prim.mask(self)
        if hit is None:
            return
        rs, cs, mask = hit
        if prim.only_in is not None:
            mask &= np.isin(self.label[rs, cs], prim.only_in)
        if not mask.any():
            return
        value: float | np.ndarray = prim.hu
        if prim.texture_hu and self.texture is not None:
            value = prim.hu + prim.texture_hu * self.texture[rs, cs][mask]
        self.hu[rs, cs][mask] = value
        if prim.region is not None:
            self.label[rs, cs][mask] = prim.region


@dataclass
class Primitive:
    """Base of all solids: what to paint, in which layer, under which region rule."""

    hu: float
    region: int | None
    layer: int
    only_in: tuple[int, ...] | None = None
    texture_hu: float = 0.0  # amplitude of the canvas texture added to ``hu``

    def z_range(self) -> tuple[float, float]:  # pragma: no cover - abstract
        raise NotImplementedError

    def mask(self, cv: Canvas) -> tuple[slice, slice, np.ndarray] | None:  # pragma: no cover
        raise NotImplementedError


@dataclass
class Ellipsoid(Primitive):
    """Axis-aligned in z, rotated by ``angle`` (rad) in the axial plane.

    ``z_clip`` keeps only the part below (``-1``) or above (``+1``) a surface given by a
    callable ``surface(x, y) -> z``: the diaphragm domes cut the liver and spleen.
    """

    center: tuple[float, float, float] = (0.0, 0.0, 0.0)
    axes: tuple[float, float, float] = (1.0, 1.0, 1.0)
    angle: float = 0.0
    surface: object | None = None
    z_clip: int = 0
    cuts: list[tuple[str, float, int]] | None = None  # keep sign * (coord - value) > 0

    def z_range(self) -> tuple[float, float]:
        return self.center[2] - self.axes[2], self.center[2] + self.axes[2]

    def mask(self, cv: Canvas) -> tuple[slice, slice, np.ndarray] | None:
        cx, cy, cz = self.center
        ax, ay, az = self.axes
        t = 1.0 - ((cv.z - cz) / az) ** 2
        if t <= 0:
            return None
        s = float(np.sqrt(t))
        a, b = ax * s, ay * s
        ext = max(a, b)
        win = cv.window(cx - ext, cx + ext, cy - ext, cy + ext)
        if win is None:
            return None
        rs, cs, xs, ys = win
        dx, dy = xs - cx, ys - cy
        if self.angle:
            ca, sa = np.cos(self.angle), np.sin(self.angle)
            dx, dy = dx * ca + dy * sa, -dx * sa + dy * ca
        m = (dx / a) ** 2 + (dy / b) ** 2 <= 1.0
        if self.surface is not None and self.z_clip:
            zs = self.surface(xs, ys)  # type: ignore[operator]
            m &= (cv.z - zs) * self.z_clip > 0
        for axis, value, sign in self.cuts or ():
            if axis == "z":
                if (cv.z - value) * sign <= 0:
                    return None
            else:
                m &= ((xs if axis == "x" else ys) - value) * sign > 0
        return rs, cs, m


@dataclass
class Capsule(Primitive):
    """All points within ``radius`` of the 3-D segment ``p0``–``p1`` (bones, vessels, bowel)."""

    p0: tuple[float, float, float] = (0.0, 0.0, 0.0)
    p1: tuple[float, float, float] = (0.0, 0.0, 1.0)
    radius: float = 1.0

    def z_range(self) -> tuple[float, float]:
        lo, hi = sorted((self.p0[2], self.p1[2]))
        return lo - self.radius, hi + self.radius

    def mask(self, cv: Canvas) -> tuple[slice, slice, np.ndarray] | None:
        p0 = np.asarray(self.p0, dtype=np.float64)
        d = np.asarray(self.p1, dtype=np.float64) - p0
        r = self.radius
        # Portion of the segment within |z - cv.z| <= r bounds the footprint in x, y.
        if abs(d[2]) > 1e-9:
            t_lo, t_hi = sorted(((cv.z - r - p0[2]) / d[2], (cv.z + r - p0[2]) / d[2]))
            t_lo, t_hi = max(t_lo, 0.0), min(t_hi, 1.0)
            if t_lo > t_hi:
                return None
        else:
            if abs(cv.z - p0[2]) > r:
                return None
            t_lo, t_hi = 0.0, 1.0
        q0, q1 = p0 + t_lo * d, p0 + t_hi * d
        win = cv.window(
            min(q0[0], q1[0]) - r,
            max(q0[0], q1[0]) + r,
            min(q0[1], q1[1]) - r,
            max(q0[1], q1[1]) + r,
        )
        if win is None:
            return None
        rs, cs, xs, ys = win
        px, py, pz = xs - p0[0], ys - p0[1], cv.z - p0[2]
        dd = float(d @ d)
        if dd < 1e-12:
            dist2 = px**2 + py**2 + pz**2
        else:
            t = np.clip((px * d[0] + py * d[1] + pz * d[2]) / dd, 0.0, 1.0)
            dist2 = (px - t * d[0]) ** 2 + (py - t * d[1]) ** 2 + (pz - t * d[2]) ** 2
        return rs, cs, dist2 <= r * r


@dataclass
class Cylinder(Primitive):
    """Elliptic cylinder along z between two planes tilted in y (a vertebral body or disc).

    The end planes are ``z = z_lo + slope * (y - cy)`` and ``z = z_hi + slope * (y - cy)``,
    so a body in a lordotic curve is cut obliquely, as in real CT.  ``notch`` removes a
    circle at the posterior wall (the concave back of a lumbar body).
    """

    center: tuple[float, float] = (0.0, 0.0)
    axes: tuple[float, float] = (1.0, 1.0)
    z_lo: float = 0.0
    z_hi: float = 1.0
    slope: float = 0.0
    notch: float = 0.0

    def z_range(self) -> tuple[float, float]:
        tilt = abs(self.slope) * self.axes[1]
        return self.z_lo - tilt, self.z_hi + tilt

    def mask(self, cv: Canvas) -> tuple[slice, slice, np.ndarray] | None:
        cx, cy = self.center
        a, b = self.axes
        win = cv.window(cx - a, cx + a, cy - b, cy + b)
        if win is None:
            return None
        rs, cs, xs, ys = win
        m = ((xs - cx) / a) ** 2 + ((ys - cy) / b) ** 2 <= 1.0
        shift = self.slope * (ys - cy)
        m &= (cv.z >= self.z_lo + shift) & (cv.z <= self.z_hi + shift)
        if self.notch > 0:
            m &= (xs - cx) ** 2 + (ys - (cy + b)) ** 2 > self.notch**2
        return rs, cs, m


@dataclass
class Section(Primitive):
    """A z-varying superellipse: the body outline, its muscle wall, the cavities.

    ``zs`` is increasing; ``cx, cy, a, b`` are sampled at ``zs`` and interpolated.  The
    posterior half uses exponent ``p_post`` (flattened where the back lies on the table),
    the anterior half ``p_ant``.
    """

    zs: np.ndarray = field(default_factory=lambda: np.zeros(2))
    cx: np.ndarray = field(default_factory=lambda: np.zeros(2))
    cy: np.ndarray = field(default_factory=lambda: np.zeros(2))
    a: np.ndarray = field(default_factory=lambda: np.ones(2))
    b: np.ndarray = field(default_factory=lambda: np.ones(2))
    p_ant: float = 2.0
    p_post: float = 2.6

    def z_range(self) -> tuple[float, float]:
        ok = (self.a > 0) & (self.b > 0)
        return float(self.zs[ok].min()), float(self.zs[ok].max())

    def at(self, z: float) -> tuple[float, float, float, float]:
        return tuple(float(np.interp(z, self.zs, v)) for v in (self.cx, self.cy, self.a, self.b))  # type: ignore[return-value]

    def mask(self, cv: Canvas) -> tuple[slice, slice, np.ndarray] | None:
        cx, cy, a, b = self.at(cv.z)
        if a <= 0.5 or b <= 0.5:
            return None
        win = cv.window(cx - a, cx + a, cy - b, cy + b)
        if win is None:
            return None
        rs, cs, xs, ys = win
        u = np.abs(xs - cx) / a
        v = (ys - cy) / b
        p = np.where(v > 0, self.p_post, self.p_ant)
        return rs, cs, u**p + np.abs(v) ** p <= 1.0
