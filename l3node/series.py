"""Read the CT series of a folder and order their slices; decode only what is asked.

Which series of a folder is used is :mod:`l3node.select`'s decision, not this module's.

Headers are read first (pixel data deferred, not read), so choosing a series and ordering it costs a
fraction of decoding it; pixel data is decoded per slice, on demand, by :meth:`CTSeries.hu`.

A multi-frame CT instance (Enhanced CT, Legacy Converted Enhanced CT) is read through the same
interface: each frame becomes one slice (:class:`SliceHeader` with its 1-based ``frame``,
geometry from the functional groups, :mod:`l3node.frames`), grouped and ordered exactly like
single-frame slices, and only the frames asked for are decoded.

Slices are ordered by their position along the slice normal (``ImagePositionPatient`` ·
(row × column direction)), never by InstanceNumber or file name, and then presented
superior to inferior: index 0 is the most superior slice, for head-first and feet-first
scans alike.  This is the order ``truth.json`` of the phantom uses.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom

from .frames import (
    ENHANCED_CT_IMAGE_STORAGE,
    LEGACY_CONVERTED_ENHANCED_CT_IMAGE_STORAGE,
    MULTIFRAME_CT_CLASSES,
    Frame,
    FrameError,
    read_frames,
    read_frames_hu,
    to_hu,
)

log = logging.getLogger(__name__)

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
CT_CLASSES = (CT_IMAGE_STORAGE, ENHANCED_CT_IMAGE_STORAGE,
              LEGACY_CONVERTED_ENHANCED_CT_IMAGE_STORAGE)
AXIAL_TOLERANCE_DEG = 5.0  # slice normal within this of the patient z axis
GANTRY_TILT_TOLERANCE_DEG = 2.0  # slice stack direction vs slice normal
MIN_SLICES = 2  # to order a stack; how many a study needs is selection.min_slices
LARGE_GAP_FACTOR = 3.0  # a gap this many times the usual spacing ...
LARGE_GAP_MIN_MM = 12.0  # ... and at least this wide is an error
MAX_MATRIX = 4096  # rows or columns beyond this are a corrupt header, not a CT image


class SeriesError(ValueError):
    """No usable axial CT series; the message says why."""


@dataclass(frozen=True)
class SliceHeader:
    """What the localizer needs from one slice, read without its pixel data.

    A slice is a file, or one frame of a multi-frame file: ``frame`` is then set, and the
    slice is (``sop_instance_uid``, ``frame.number``) — what a reference to it must name.
    """

    path: Path
    sop_instance_uid: str
    instance_number: int | None
    position_mm: float  # along the slice normal
    z_mm: float  # patient z of the slice centre
    rows: int
    columns: int
    pixel_spacing: tuple[float, float]  # row spacing, column spacing
    slice_thickness: float | None
    frame: Frame | None = None  # the frame of a multi-frame image; None: a single-frame one

    @property
    def frame_number(self) -> int | None:
        """The 1-based frame number (ReferencedFrameNumber), ``None`` for a single frame."""
        return self.frame.number if self.frame is not None else None

    @property
    def label(self) -> str:
        """The slice in a message: its file name, and its frame when it is one."""
        return self.path.name + ("" if self.frame is None else f" frame {self.frame.number}")


@dataclass
class CTSeries:
    """One axial CT series, sorted superior to inferior."""

    series_instance_uid: str
    study_instance_uid: str
    slices: list[SliceHeader]
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    description: str = ""
    image_type: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.slices)

    @property
    def z_mm(self) -> np.ndarray:
        return np.array([s.z_mm for s in self.slices], dtype=np.float64)

    @property
    def spacing_mm(self) -> float:
        """Median distance between neighbouring slices."""
        z = self.z_mm
        return float(np.median(np.abs(np.diff(z)))) if len(z) > 1 else 0.0

    @property
    def slice_thickness_mm(self) -> float:
        t = [s.slice_thickness for s in self.slices if s.slice_thickness]
        return float(np.median(t)) if t else self.spacing_mm

    def hu(self, indices: Sequence[int]) -> np.ndarray:
        """Decode the given slices to HU (float32, N × rows × columns).

        Each image is returned in the canonical orientation (patient right on the left, anterior
        at the top): feet-first images stored with a mirrored row direction are flipped back.
        """
        first = self.slices[0]
        out = np.empty((len(indices), first.rows, first.columns), dtype=np.float32)
        frames: dict[Path, list[tuple[int, Frame]]] = defaultdict(list)
        for k, i in enumerate(indices):
            sl = self.slices[i]
            if sl.frame is None:
                out[k] = read_hu(sl.path)
            else:  # one read per file for all its frames asked
                frames[sl.path].append((k, sl.frame))
        for path, wanted in frames.items():
            for (k, _), img in zip(wanted, _read_frames(path, [f for _, f in wanted]),
                                   strict=True):
                out[k] = img
        return out


def read_hu(path: Path) -> np.ndarray:
    """One slice's pixels in HU, canonical orientation (see :meth:`CTSeries.hu`); raises
    :class:`SeriesError` naming the file when its pixel data cannot be decoded."""
    try:
        return _read_hu(path)
    except Exception as exc:  # a corrupt file raises anything from pydicom or a codec
        raise SeriesError(f"{path.name}: cannot decode the pixel data "
                          f"({exc.__class__.__name__}: {exc})") from exc


def _read_frames(path: Path, frames: list[Frame]) -> list[np.ndarray]:
    """Frames of one multi-frame file in HU; :class:`SeriesError` names file and frames."""
    try:
        return read_frames_hu(path, frames)
    except Exception as exc:  # as read_hu: a corrupt file raises anything
        shown = ", ".join(str(f.number) for f in frames[:5]) + (" …" if len(frames) > 5 else "")
        raise SeriesError(f"{path.name}: cannot decode the pixel data of frame(s) {shown} "
                          f"({exc.__class__.__name__}: {exc})") from exc


def _read_hu(path: Path) -> np.ndarray:
    ds = pydicom.dcmread(path)
    return to_hu(ds.pixel_array, float(ds.get("RescaleSlope", 1) or 1),
                 float(ds.get("RescaleIntercept", 0) or 0),
                 [float(v) for v in ds.ImageOrientationPatient])


def _uid(ds: pydicom.Dataset, keyword: str, meta_keyword: str | None = None) -> str:
    value = str(ds.get(keyword, "") or "").strip()
    if not value and meta_keyword and hasattr(ds, "file_meta"):
        value = str(ds.file_meta.get(meta_keyword, "") or "").strip()
    return value


def _normal(iop: np.ndarray) -> np.ndarray:
    n = np.cross(iop[:3], iop[3:])
    return n / np.linalg.norm(n)


@dataclass
class _Candidate:
    headers: list[tuple[SliceHeader, np.ndarray, np.ndarray]] = field(default_factory=list)
    study_uid: str = ""
    description: str = ""
    image_type: tuple[str, ...] = ()
    primary: bool = True
    localizer: bool = False


def scan_folder(folder: Path) -> tuple[dict[str, _Candidate], list[tuple[Path, str]]]:
    """Read every file's header; group CT images by SeriesInstanceUID.

    Files that are not DICOM, not CT, or lack geometry are skipped and named with the reason.
    Files with an empty SeriesInstanceUID (seen in de-identified data) are grouped together
    by their Frame of Reference, or into one anonymous group.
    """
    groups: dict[str, _Candidate] = defaultdict(_Candidate)
    skipped: list[tuple[Path, str]] = []
    paths = sorted(p for p in Path(folder).rglob("*") if p.is_file())
    for path in paths:
        if path.name in ("truth.json", "DICOMDIR") or path.suffix in (".json", ".png", ".txt"):
            continue
        try:
            # defer_size: large values (pixel data) are skipped, not read, yet their presence
            # is known; cheaper than decoding and one read per file.
            ds = pydicom.dcmread(path, defer_size=2048)
        except Exception as exc:  # a corrupt file raises anything (zlib.error, struct.error)
            skipped.append((path, f"unreadable: {exc.__class__.__name__}: {exc}"))
            continue
        try:  # every value first: an element read lazily can still raise (a bad VR)
            sop_class = _uid(ds, "SOPClassUID", "MediaStorageSOPClassUID")
            modality = str(ds.get("Modality", "")).upper()
            if sop_class not in CT_CLASSES and modality != "CT":
                raise _Skip(f"not a CT image (SOP class {sop_class or 'missing'})")
            if sop_class in MULTIFRAME_CT_CLASSES or "PerFrameFunctionalGroupsSequence" in ds:
                rows = _frame_headers(path, ds, sop_class)
            else:
                rows = [_single_header(path, ds)]
            image_type = tuple(str(v).upper() for v in ds.get("ImageType", []) or [])
            series_uid = _uid(ds, "SeriesInstanceUID")
            key = series_uid or f"(no SeriesInstanceUID; frame of reference "\
                f"{_uid(ds, 'FrameOfReferenceUID') or 'unknown'})"
            study_uid = _uid(ds, "StudyInstanceUID")
            description = str(ds.get("SeriesDescription", ""))
        except _Skip as exc:
            skipped.append((path, str(exc)))
            continue
        except Exception as exc:  # found by the loader fuzzer: pydicom's NotImplementedError
            skipped.append((path, f"unreadable header: {exc.__class__.__name__}: {exc}"))
            continue
        g = groups[key]
        g.headers.extend(rows)
        g.study_uid = g.study_uid or study_uid
        g.description = g.description or description
        g.image_type = g.image_type or image_type
        g.primary = g.primary and ("ORIGINAL" in image_type or not image_type)
        g.localizer = g.localizer or "LOCALIZER" in image_type
    for path, why in skipped:
        log.warning("skipped %s: %s", path.name, why)
    return dict(groups), skipped


class _Skip(ValueError):
    """A file that gives no slice; the message is the reason it is skipped."""


def _matrix(ds: pydicom.Dataset) -> tuple[int, int]:
    try:
        return int(ds.Rows), int(ds.Columns)
    except (AttributeError, TypeError, ValueError) as exc:
        raise _Skip(f"no image geometry ({exc})") from exc


def _single_header(path: Path, ds: pydicom.Dataset
                   ) -> tuple[SliceHeader, np.ndarray, np.ndarray]:
    """The one slice of a single-frame CT image, with its orientation and position."""
    try:
        iop = np.asarray(ds.ImageOrientationPatient, dtype=np.float64)
        ipp = np.asarray(ds.ImagePositionPatient, dtype=np.float64)
        spacing = tuple(float(v) for v in ds.PixelSpacing)
    except (AttributeError, TypeError, ValueError) as exc:
        raise _Skip(f"no image geometry ({exc})") from exc
    rows, cols = _matrix(ds)
    if iop.shape != (6,) or ipp.shape != (3,) or len(spacing) != 2:
        raise _Skip("malformed ImageOrientationPatient/ImagePositionPatient")
    if "PixelData" not in ds:
        raise _Skip("no pixel data")
    header = SliceHeader(
        path=path,
        sop_instance_uid=_uid(ds, "SOPInstanceUID", "MediaStorageSOPInstanceUID"),
        instance_number=_optional(ds.get("InstanceNumber"), int),
        position_mm=float(ipp @ _normal(iop)),
        z_mm=float(ipp[2]),
        rows=rows,
        columns=cols,
        pixel_spacing=(spacing[0], spacing[1]),
        slice_thickness=_optional(ds.get("SliceThickness"), float),
    )
    return header, iop, ipp


def _frame_headers(path: Path, ds: pydicom.Dataset, sop_class: str
                   ) -> list[tuple[SliceHeader, np.ndarray, np.ndarray]]:
    """One slice per frame of a multi-frame CT image (geometry from its functional groups);
    a frame that cannot be placed skips the whole instance, naming the frame."""
    kind = MULTIFRAME_CT_CLASSES.get(sop_class, "multi-frame CT")
    try:
        frames = read_frames(ds)
    except FrameError as exc:
        raise _Skip(f"{kind}: {exc}") from exc
    rows, cols = _matrix(ds)
    if "PixelData" not in ds:
        raise _Skip(f"{kind}: no pixel data")
    sop_uid = _uid(ds, "SOPInstanceUID", "MediaStorageSOPInstanceUID")
    inst = _optional(ds.get("InstanceNumber"), int)
    out = []
    for f in frames:
        iop = np.asarray(f.orientation, dtype=np.float64)
        ipp = np.asarray(f.position, dtype=np.float64)
        out.append((SliceHeader(
            path=path, sop_instance_uid=sop_uid, instance_number=inst,
            position_mm=float(ipp @ _normal(iop)), z_mm=float(ipp[2]), rows=rows,
            columns=cols, pixel_spacing=f.pixel_spacing, slice_thickness=f.slice_thickness,
            frame=f), iop, ipp))
    return out


def _optional(value: object, kind: type) -> Any:
    """An optional number; a malformed one (an IS of 'XIV') counts as absent: neither is
    needed to order the slices."""
    try:
        return kind(value) if value not in (None, "") else None
    except (TypeError, ValueError, OverflowError):
        return None


def build_series(key: str, cand: _Candidate, skipped: list[tuple[Path, str]]) -> CTSeries:
    """Validate one candidate and sort it; raises :class:`SeriesError` with the reason."""
    headers = cand.headers
    if len(headers) < MIN_SLICES:
        raise SeriesError(
            f"series {key} has {len(headers)} slice(s); at least {MIN_SLICES} are needed to "
            "order a stack"
        )
    sizes = sorted({(h[0].rows, h[0].columns) for h in headers})
    if len(sizes) > 1:
        shown = ", ".join(f"{r} × {c}" for r, c in sizes)
        raise SeriesError(f"series {key} mixes image sizes ({shown})")
    if not 0 < sizes[0][0] <= MAX_MATRIX or not 0 < sizes[0][1] <= MAX_MATRIX:
        raise SeriesError(f"series {key} has images of {sizes[0][0]} × {sizes[0][1]} "
                          f"pixels; at most {MAX_MATRIX} × {MAX_MATRIX} are read")
    iops = np.array([h[1] for h in headers])
    if np.abs(iops - iops[0]).max() > 1e-3:
        raise SeriesError(f"series {key} mixes image orientations")
    normal = _normal(iops[0])
    tilt_from_axial = np.degrees(np.arccos(min(abs(normal[2]), 1.0)))
    if tilt_from_axial > AXIAL_TOLERANCE_DEG:
        raise SeriesError(
            f"series {key} is not axial: slice normal is {tilt_from_axial:.1f}° from the "
            f"patient z axis (tolerance {AXIAL_TOLERANCE_DEG}°)"
        )
    order = sorted(range(len(headers)), key=lambda i: headers[i][0].position_mm)
    pos = np.array([headers[i][0].position_mm for i in order])
    ipps = np.array([headers[i][2] for i in order])
    steps = np.diff(pos)
    if np.any(steps < 1e-3):
        k = int(np.argmin(steps))
        a, b = headers[order[k]][0], headers[order[k + 1]][0]
        raise SeriesError(
            f"series {key} has two slices at the same position {pos[k]:.2f} mm "
            f"({a.label}, {b.label})"
        )
    # Gantry tilt: the stack of slice origins must run along the normal.
    stack = ipps[-1] - ipps[0]
    stack_angle = np.degrees(np.arccos(min(abs(stack @ normal) / np.linalg.norm(stack), 1.0)))
    if stack_angle > GANTRY_TILT_TOLERANCE_DEG:
        raise SeriesError(
            f"series {key} has a gantry tilt of {stack_angle:.1f}° (tolerance "
            f"{GANTRY_TILT_TOLERANCE_DEG}°)"
        )
    usual = float(np.median(steps))
    big = steps > max(LARGE_GAP_FACTOR * usual, LARGE_GAP_MIN_MM)
    if np.any(big):
        k = int(np.argmax(steps))
        raise SeriesError(
            f"series {key} has a gap of {steps[k]:.1f} mm between {pos[k]:.1f} and "
            f"{pos[k + 1]:.1f} mm along the normal (usual spacing {usual:.2f} mm)"
        )
    sorted_headers = [headers[i][0] for i in order]
    if sorted_headers[0].z_mm < sorted_headers[-1].z_mm:
        sorted_headers.reverse()  # superior first
    return CTSeries(
        series_instance_uid=key,
        study_instance_uid=cand.study_uid,
        slices=sorted_headers,
        skipped=skipped,
        description=cand.description,
        image_type=cand.image_type,
    )
