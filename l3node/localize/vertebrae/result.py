"""What the counter says: the bodies it found, the two L3 counts, and snapping to a body.

Kept apart from the image analysis so the result types (used by the second opinion, the
node's result file and the tests) import without scipy's morphology being involved.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ...series import CTSeries


@dataclass(frozen=True)
class Body:
    """One vertebral body (or the sacrum) found along the column.

    ``first``/``last`` are sorted slice indices (0 = most superior) of the slices whose centre
    lies in the body; ``partial`` marks a body cut by the scanned (or windowed) range, whose
    true extent is unknown.
    """

    first: int
    last: int
    z_mm: float  # centre
    x_mm: float  # body centre, image column direction (to the patient's left), from column 0
    y_mm: float  # body centre, image row direction (posterior), from row 0
    width_mm: float  # left-right extent of the bone it is part of (wide at the sacrum)
    partial: bool = False
    height_mm: float = 0.0  # z-extent from the middle of the disc above to that of the disc below
    ribs: bool = False
    sacral: bool = False
    name_from_sacrum: str | None = None
    name_from_ribs: str | None = None


@dataclass
class VertebraCount:
    """The bodies found and the two L3 counts; ``note`` says in words what was (not) found."""

    bodies: list[Body]
    l3_from_sacrum: tuple[int, int] | None
    l3_from_ribs: tuple[int, int] | None
    agree: bool | None
    transitional: bool
    lumbar_count: int | None  # bodies between the last rib-bearing one and the sacrum
    sacrum_found: bool
    ribs_found: bool
    note: str
    sampled: list[int] = field(default_factory=list)  # sorted indices decoded

    def snap(self, index: int) -> tuple[int, int] | None:
        """See :func:`snap`."""
        return snap(index, self)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON types (for the node's result file and logs): bodies as dicts, L3 ranges
        as ``[first, last]`` lists or ``None``, the flags and the note."""

        def rng(r: tuple[int, int] | None) -> list[int] | None:
            return [int(r[0]), int(r[1])] if r is not None else None

        return {
            "bodies": [{k: (float(v) if isinstance(v, float | np.floating) else
                            bool(v) if isinstance(v, bool | np.bool_) else
                            int(v) if isinstance(v, int | np.integer) else v)
                        for k, v in asdict(b).items()} for b in self.bodies],
            "l3_from_sacrum": rng(self.l3_from_sacrum),
            "l3_from_ribs": rng(self.l3_from_ribs),
            "agree": None if self.agree is None else bool(self.agree),
            "transitional": bool(self.transitional),
            "lumbar_count": None if self.lumbar_count is None else int(self.lumbar_count),
            "sacrum_found": bool(self.sacrum_found),
            "ribs_found": bool(self.ribs_found),
            "note": self.note,
            "sampled": [int(i) for i in self.sampled],
        }


def snap(index: int, count: VertebraCount) -> tuple[int, int] | None:
    """The (first, last) slice range of the body containing ``index``, else of the nearest
    non-sacral body; ``None`` when no body was found.  Used to snap a model's answer to a
    whole vertebral body (a slice in a disc goes to the nearer neighbour)."""
    bodies = [b for b in count.bodies if not b.sacral]
    if not bodies:
        return None

    def dist(b: Body) -> float:
        if b.first <= index <= b.last:
            return 0.0
        return float(min(abs(index - b.first), abs(index - b.last)))

    best = min(bodies, key=dist)
    return best.first, best.last


def window_around(series: CTSeries, index: int, half_mm: float = 160.0) -> tuple[float, float]:
    """A z-window (mm, patient z) of ±``half_mm`` around slice ``index``, for ``z_range_mm``."""
    z = float(series.z_mm[index])
    return z - half_mm, z + half_mm


def _empty(idx: np.ndarray, why: str) -> VertebraCount:
    """A count that declines, saying ``why`` (the pipeline stops early, never raises)."""
    return VertebraCount(bodies=[], l3_from_sacrum=None, l3_from_ribs=None, agree=None,
                         transitional=False, lumbar_count=None, sacrum_found=False,
                         ribs_found=False, note=f"cannot count: {why}",
                         sampled=[int(i) for i in idx])
