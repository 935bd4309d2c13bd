"""The frames of a CT image: each frame's geometry in a multi-frame image, and stored values → HU.

An Enhanced CT (1.2.840.10008.5.1.4.1.1.2.1) or Legacy Converted Enhanced CT
(1.2.840.10008.5.1.4.1.1.2.2) instance holds a whole stack in one object.  What a
single-frame CT image keeps at the top level lives there in functional groups, one
``PerFrameFunctionalGroupsSequence`` item per frame and one ``SharedFunctionalGroupsSequence``
item for all (PS3.3 C.7.6.16): a group present in a frame's item is that frame's, otherwise the
shared one applies.  The reader needs four of them:

* ``PlanePositionSequence`` → ``ImagePositionPatient``;
* ``PlaneOrientationSequence`` → ``ImageOrientationPatient``;
* ``PixelMeasuresSequence`` → ``PixelSpacing``, ``SliceThickness``;
* ``PixelValueTransformationSequence`` → ``RescaleSlope``, ``RescaleIntercept``.

A frame whose geometry cannot be read refuses the whole instance (:class:`FrameError`, naming
the frame and the attribute): a stack with a frame nobody can place is malformed, and
guessing its position would move the answer.

This module knows no series — :mod:`l3node.series` turns frames into slices — so both the
single-frame and the multi-frame path share :func:`to_hu` from below.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import iter_pixels

ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"
LEGACY_CONVERTED_ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.2"
MULTIFRAME_CT_CLASSES = {
    ENHANCED_CT_IMAGE_STORAGE: "Enhanced CT",
    LEGACY_CONVERTED_ENHANCED_CT_IMAGE_STORAGE: "Legacy Converted Enhanced CT",
}


class FrameError(ValueError):
    """A multi-frame image whose functional groups do not give a frame's geometry."""


@dataclass(frozen=True)
class Frame:
    """One frame's geometry and rescale, read from the functional groups (no pixels)."""

    number: int  # 1-based, as ReferencedFrameNumber counts
    orientation: tuple[float, ...]  # ImageOrientationPatient: row then column direction
    position: tuple[float, float, float]  # ImagePositionPatient
    pixel_spacing: tuple[float, float]  # row spacing, column spacing
    slice_thickness: float | None
    slope: float = 1.0
    intercept: float = 0.0


def _group(item: Dataset, shared: Dataset, keyword: str) -> Dataset | None:
    """The frame's own functional group ``keyword``, else the shared one, else ``None``."""
    for source in (item, shared):
        seq = source.get(keyword)
        if seq:
            return seq[0]
    return None


def _numbers(group: Dataset | None, keyword: str, count: int, where: str) -> tuple[float, ...]:
    """``count`` finite numbers of ``keyword`` in ``group``; :class:`FrameError` otherwise."""
    value = group.get(keyword) if group is not None else None
    if value is None or value == "":
        raise FrameError(f"no {keyword} ({where}, in neither its per-frame nor the shared "
                         "functional groups)")
    try:
        values = tuple(float(v) for v in (value if isinstance(value, Sequence)
                                          and not isinstance(value, str) else [value]))
    except (TypeError, ValueError) as exc:
        raise FrameError(f"malformed {keyword} {value!r} ({where})") from exc
    if len(values) != count or not all(math.isfinite(v) for v in values):
        raise FrameError(f"malformed {keyword} {value!r} ({where}): {count} finite "
                         f"number(s) expected")
    return values


def _optional(group: Dataset | None, keyword: str, default: float | None) -> float | None:
    value = group.get(keyword) if group is not None else None
    try:
        out = float(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        return default
    return out if out is None or math.isfinite(out) else default


def read_frames(ds: Dataset) -> list[Frame]:
    """Every frame of the multi-frame image ``ds`` (a header; pixel data need not be read), in
    frame-number order; raises :class:`FrameError` naming the first frame that cannot be
    placed, or a frame count that does not match."""
    try:
        n = int(ds.get("NumberOfFrames", 0) or 0)
    except (TypeError, ValueError) as exc:
        raise FrameError(f"malformed NumberOfFrames {ds.get('NumberOfFrames')!r}") from exc
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if not per_frame:
        raise FrameError("no PerFrameFunctionalGroupsSequence: its frames cannot be placed")
    if n != len(per_frame):
        raise FrameError(f"NumberOfFrames is {n} but PerFrameFunctionalGroupsSequence has "
                         f"{len(per_frame)} item(s)")
    shared_seq = ds.get("SharedFunctionalGroupsSequence")
    shared = shared_seq[0] if shared_seq else Dataset()
    # Some writers keep the rescale at the top level only; it then applies to every frame.
    top_slope = _optional(ds, "RescaleSlope", 1.0)
    top_intercept = _optional(ds, "RescaleIntercept", 0.0)
    frames = []
    for k, item in enumerate(per_frame, start=1):
        where = f"frame {k} of {n}"
        pos = _numbers(_group(item, shared, "PlanePositionSequence"), "ImagePositionPatient",
                       3, f"{where}, PlanePositionSequence")
        iop = _numbers(_group(item, shared, "PlaneOrientationSequence"),
                       "ImageOrientationPatient", 6, f"{where}, PlaneOrientationSequence")
        measures = _group(item, shared, "PixelMeasuresSequence")
        spacing = _numbers(measures, "PixelSpacing", 2, f"{where}, PixelMeasuresSequence")
        rescale = _group(item, shared, "PixelValueTransformationSequence")
        frames.append(Frame(
            number=k, orientation=iop, position=(pos[0], pos[1], pos[2]),
            pixel_spacing=(spacing[0], spacing[1]),
            slice_thickness=_optional(measures, "SliceThickness", None),
            slope=_optional(rescale, "RescaleSlope", top_slope) or 1.0,
            intercept=_optional(rescale, "RescaleIntercept", top_intercept) or 0.0))
    return frames


def to_hu(stored: np.ndarray, slope: float, intercept: float,
          orientation: Sequence[float]) -> np.ndarray:
    """Stored values → HU (float32), in the canonical orientation: patient right on the
    left, anterior at the top (a mirrored row or column direction is flipped back)."""
    arr = stored.astype(np.float32)
    if slope != 1.0:
        arr *= slope
    if intercept:
        arr += intercept
    if orientation[0] < 0:
        arr = arr[:, ::-1]
    if orientation[4] < 0:
        arr = arr[::-1, :]
    return np.ascontiguousarray(arr)


def read_frames_hu(path: Path, frames: Sequence[Frame]) -> list[np.ndarray]:
    """The given frames of the file at ``path`` in HU, in the order asked.

    pydicom's :func:`~pydicom.pixels.iter_pixels` reads the file once and decodes only the
    frames named (native data is seeked to, encapsulated frames found by their offsets), so
    a chunk of the localizer costs its frames, not the instance.
    """
    numbers = sorted({f.number for f in frames})
    decoded = dict(zip(numbers, iter_pixels(path, indices=[k - 1 for k in numbers]),
                       strict=True))
    return [to_hu(decoded[f.number], f.slope, f.intercept, f.orientation) for f in frames]
