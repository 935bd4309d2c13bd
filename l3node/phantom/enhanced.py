"""The multi-frame twin of a phantom series: the same slices as one Enhanced CT instance.

The twin is built by highdicom's :class:`~highdicom.legacy.LegacyConvertedEnhancedCTImage`
(a Legacy Converted Enhanced CT, SOP class 1.2.840.10008.5.1.4.1.1.2.2), the kept library
way to turn single-frame CT into a valid multi-frame one: geometry, pixel measures and
rescale go into the functional groups the reader must follow (``PlanePositionSequence``
per frame, the rest shared), so a localizer that reads the twin differently from the
original is caught.

``kind="enhanced"`` relabels the same object as Enhanced CT (…1.2.1) and drops the
legacy-conversion bookkeeping.  It carries everything the reader uses, laid out as a scanner
lays it out, but not the CT-specific functional groups a complete Enhanced CT IOD requires
(CT Acquisition Details, CT Exposure, …): it exercises the reader's SOP class path, and
dciodvfy would call it incomplete.  (dciodvfy also reports one error in highdicom 0.28's
legacy conversion itself: its ``ReferencedSeriesSequence`` "does not reference Instances".)

The twin's ``truth.json`` is the original's with the series rewritten: one SOP Instance UID
for every slice, and ``frame_numbers`` saying which frame each truth slice became.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Literal

import highdicom as hd
import pydicom

from .dicom import det_uid

__all__ = ["Kind", "convert", "multiframe_twin"]

Kind = Literal["legacy", "enhanced"]
SOP_CLASS = {"legacy": "1.2.840.10008.5.1.4.1.1.2.2", "enhanced": "1.2.840.10008.5.1.4.1.1.2.1"}
LEGACY_ONLY = ("UnassignedSharedConvertedAttributesSequence",
               "UnassignedPerFrameConvertedAttributesSequence",
               "ConversionSourceAttributesSequence")


def _source_uids(ds: pydicom.Dataset) -> list[str]:
    """Per frame, the SOP Instance UID of the single-frame image it was converted from."""
    return [str(item.ConversionSourceAttributesSequence[0].ReferencedSOPInstanceUID)
            for item in ds.PerFrameFunctionalGroupsSequence]


def convert(series_dir: Path, kind: Kind = "legacy",
            scramble: int | None = None) -> tuple[pydicom.Dataset, list[str]]:
    """The multi-frame twin of the single-frame CT files in ``series_dir`` (one series) and,
    per frame, the source slice's SOP Instance UID.  UIDs derive from the source series, so
    converting twice gives the same object.

    highdicom stores the frames sorted by position; ``scramble`` (a seed) stores them in a
    random order instead, so that a test sees the reader order frames by their position and
    not by their number."""
    if kind not in SOP_CLASS:
        raise ValueError(f'Argument "kind" must be one of {tuple(SOP_CLASS)}, got {kind!r}.')
    sources = [pydicom.dcmread(f) for f in sorted(Path(series_dir).glob("*.dcm"))]
    if scramble is not None:
        random.Random(scramble).shuffle(sources)
    if not sources:
        raise ValueError(f"{series_dir}: no .dcm files to convert")
    series_uids = {str(ds.SeriesInstanceUID) for ds in sources}
    if len(series_uids) != 1:
        raise ValueError(f"{series_dir}: {len(series_uids)} series; the twin is of one")
    (source_series,) = series_uids
    mf = hd.legacy.LegacyConvertedEnhancedCTImage(
        sources, series_instance_uid=det_uid("multiframe-series", kind, source_series),
        series_number=int(sources[0].get("SeriesNumber", 1) or 1) + 100,
        sop_instance_uid=det_uid("multiframe-instance", kind, source_series),
        instance_number=1, include_dimension_index=scramble is None)
    frame_sources = _source_uids(mf)
    if kind == "enhanced":
        mf.SOPClassUID = SOP_CLASS["enhanced"]
        mf.file_meta.MediaStorageSOPClassUID = SOP_CLASS["enhanced"]
        for item in [*mf.SharedFunctionalGroupsSequence, *mf.PerFrameFunctionalGroupsSequence]:
            for keyword in LEGACY_ONLY:
                if keyword in item:
                    delattr(item, keyword)
    return mf, frame_sources


def multiframe_twin(series_dir: Path, out_dir: Path, kind: Kind = "legacy",
                    scramble: int | None = None) -> Path:
    """Write the twin of the phantom series in ``series_dir`` into ``out_dir`` (its one DICOM
    file and its ``truth.json``); returns the DICOM file's path.  ``scramble``: see
    :func:`convert`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    mf, frame_sources = convert(series_dir, kind, scramble)
    path = out_dir / f"CT-{mf.SOPInstanceUID}.dcm"
    mf.save_as(path, enforce_file_format=True)
    truth_path = Path(series_dir) / "truth.json"
    if truth_path.is_file():
        truth = json.loads(truth_path.read_text())
        s = truth["series"]
        frame_of = {uid: k for k, uid in enumerate(frame_sources, start=1)}
        s["frame_numbers"] = [frame_of[uid] for uid in s["sop_instance_uids"]]
        s["source_sop_instance_uids"] = s["sop_instance_uids"]
        s["sop_instance_uids"] = [str(mf.SOPInstanceUID)] * len(frame_sources)
        s["series_instance_uid"] = str(mf.SeriesInstanceUID)
        s["sop_class_uid"] = SOP_CLASS[kind]
        truth["l3"]["middle_sop_instance_uid"] = str(mf.SOPInstanceUID)
        (out_dir / "truth.json").write_text(json.dumps(truth, indent=1))
    return path
