"""The multi-frame twin of a phantom series: the same slices as one Enhanced CT instance.

The twin is built by highdicom's :class:`~highdicom.legacy.LegacyConvertedEnhancedCTImage`
(a Legacy Converted Enhanced CT, SOP class 1.2.840.10008.5.1.4.1.1.2.2), the kept library
way to turn single-frame CT into a valid multi-frame one: geometry, pixel measures and
rescale go into the functional groups the reader must follow (``PlanePositionSequence``
per frame, the rest shared), so a localizer that reads the twin differently from the
original is caught.

``kind="enhanced"`` makes the same object a true Enhanced CT (…1.2.1): the legacy-conversion
bookkeeping goes, and the CT-specific functional groups a scanner writes come in — shared:
CT Acquisition Type, Acquisition Details, Table Dynamics, Geometry, Reconstruction,
Exposure, X-Ray Details and the Irradiation Event; per frame: CT Position (table position
at the frame) and the frame's acquisition duration and reference time — with plausible
values of a spiral abdomen protocol (the phantom has no scanner: they are labels, not
physics).  highdicom has no Enhanced CT class to build them, so pydicom adds them here.
dciodvfy then finds one error only, in highdicom 0.28's legacy conversion itself
(``ReferencedSeriesSequence`` "does not reference Instances"), for both kinds.

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


def _group(**values: object) -> list[pydicom.Dataset]:
    """A functional-group sequence of one item with ``values``."""
    item = pydicom.Dataset()
    for keyword, value in values.items():
        setattr(item, keyword, value)
    return [item]


def _code(value: str, scheme: str, meaning: str) -> list[pydicom.Dataset]:
    return _group(CodeValue=value, CodingSchemeDesignator=scheme, CodeMeaning=meaning)


def _add_ct_groups(mf: pydicom.Dataset, event_uid: str) -> None:
    """The Enhanced CT Image IOD's CT-specific functional groups (PS3.3 A.38.1.4) and the
    image-level attributes it requires beyond the legacy conversion's."""
    shared = mf.SharedFunctionalGroupsSequence[0]
    shared.CTAcquisitionTypeSequence = _group(AcquisitionType="SPIRAL",
                                              ConstantVolumeFlag="NO", FluoroscopyFlag="NO")
    shared.CTAcquisitionDetailsSequence = _group(
        DataCollectionDiameter=500.0, GantryDetectorTilt=0.0, TableHeight=170.0,
        RotationDirection="CW", RevolutionTime=0.5, SingleCollimationWidth=0.625,
        TotalCollimationWidth=40.0)
    shared.CTTableDynamicsSequence = _group(TableSpeed=78.0, TableFeedPerRotation=39.0,
                                            SpiralPitchFactor=0.984)
    shared.CTGeometrySequence = _group(DistanceSourceToDetector=1085.6,
                                       DistanceSourceToDataCollectionCenter=595.0)
    shared.CTReconstructionSequence = _group(
        ReconstructionAlgorithm="FILTER_BACK_PROJ", ConvolutionKernel="B30f",
        ConvolutionKernelGroup="SOFT_TISSUE", ReconstructionDiameter=500.0,
        ReconstructionPixelSpacing=list(shared.PixelMeasuresSequence[0].PixelSpacing),
        ReconstructionAngle=360.0, ImageFilter="NONE")
    shared.CTExposureSequence = _group(
        ExposureTimeInms=500.0, XRayTubeCurrentInmA=200.0, ExposureInmAs=100.0,
        ExposureModulationType="NONE", CTDIvol=8.0,
        CTDIPhantomTypeCodeSequence=_code("113691", "DCM", "IEC Body Dosimetry Phantom"))
    shared.CTXRayDetailsSequence = _group(KVP=120.0, FocalSpots=[1.2], FilterType="FLAT",
                                          FilterMaterial=["ALUMINUM"])
    shared.IrradiationEventIdentificationSequence = _group(IrradiationEventUID=event_uid)
    for item in mf.PerFrameFunctionalGroupsSequence:
        z = float(item.PlanePositionSequence[0].ImagePositionPatient[2])
        item.CTPositionSequence = _group(TablePosition=z,
                                         ReconstructionTargetCenterPatient=[0.0, 0.0, z],
                                         DataCollectionCenterPatient=[0.0, 0.0, z])
        content = item.FrameContentSequence[0]
        content.FrameAcquisitionDuration = 500.0
        content.FrameReferenceDateTime = content.FrameAcquisitionDateTime
    mf.AcquisitionDuration = 0.5 * len(mf.PerFrameFunctionalGroupsSequence)
    mf.BurnedInAnnotation = "NO"
    mf.LossyImageCompression = "00"
    mf.DeviceSerialNumber = "PHANTOM-1"
    mf.SoftwareVersions = "l3node phantom"
    if "ContrastBolusAgent" in mf:  # copied from the single-frame CT; not in this IOD's
        del mf.ContrastBolusAgent  # image modules (the Contrast/Bolus Usage group is)


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
        _add_ct_groups(mf, det_uid("multiframe-irradiation", source_series))
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
