"""Write phantom slices as CT Image Storage instances (pydicom), optionally compressed.

The modules dciodvfy checks for CT are all filled: Patient, General Study, General Series,
Frame of Reference, General Equipment, General Image, Image Plane, Image Pixel, CT Image,
SOP Common.  UIDs derive from the study seed, so a seed reproduces the files exactly.

This module knows DICOM, not the study plan: :func:`write_slice` takes the slice's geometry as
plain values, so the planner (:mod:`.study`) imports the writer and never the other way round.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)

from ..uids import derived_uid
from .patient import Patient
from .request import StudyRequest

TS_UIDS = {
    "explicit": ExplicitVRLittleEndian,
    "jpeg2000-lossless": JPEG2000Lossless,
    "jpegls-lossless": JPEGLSLossless,
    "rle": RLELossless,
}


def det_uid(*parts: object) -> str:
    """A phantom UID derived from its parts (see :mod:`l3node.uids`)."""
    return derived_uid("l3node-phantom", *parts)


@dataclass(frozen=True)
class SeriesInfo:
    """Study- and series-level attributes shared by every slice of one series."""

    study_uid: str
    series_uid: str
    for_uid: str
    patient_name: str
    patient_id: str
    birth_date: str
    study_date: str
    study_time: str
    accession: str
    series_number: int
    kvp: float
    kernel: str
    seed_parts: tuple[int, ...]
    sex: str = "O"
    age_years: int | None = None
    study_description: str = ""
    series_description: str = ""
    body_part: str = "ABDOMEN"
    contrast: bool = False
    manufacturer_model: str = "synthetic phantom"

    @classmethod
    def draw(
        cls,
        rng: np.random.Generator,
        req: StudyRequest,
        p: Patient,
        thickness: float,
        position: str,
    ) -> SeriesInfo:
        parts = (int(req.seed), int(req.index))
        day = dt.date(2024, 1, 1) + dt.timedelta(days=int(rng.integers(0, 700)))
        birth = dt.date(day.year - p.age, int(rng.integers(1, 13)), int(rng.integers(1, 29)))
        body = {"whole-body": "WHOLEBODY", "chest": "CHEST", "head-neck": "HEADNECK"}
        return cls(
            study_uid=det_uid(*parts, "study"),
            series_uid=det_uid(*parts, "series"),
            for_uid=det_uid(*parts, "for"),
            patient_name=f"PHANTOM^{req.seed}-{req.index}",
            patient_id=f"PH{req.seed:06d}{req.index:04d}",
            birth_date=birth.strftime("%Y%m%d"),
            study_date=day.strftime("%Y%m%d"),
            study_time=f"{int(rng.integers(7, 19)):02d}{int(rng.integers(0, 60)):02d}00",
            accession=f"A{req.seed % 10**6:06d}{req.index:04d}",
            series_number=int(rng.integers(2, 9)),
            kvp=float(rng.choice([100.0, 120.0, 120.0, 140.0])),
            kernel=str(rng.choice(["B30f", "Br40", "STANDARD", "FC08"])),
            seed_parts=parts,
            sex=p.sex,
            age_years=p.age,
            study_description=f"Phantom {req.preset}",
            series_description=f"Phantom {thickness:g} mm {req.preset}",
            body_part=body.get(req.preset, "ABDOMEN"),
            contrast=p.contrast != "none",
        )


def ct_dataset(
    info: SeriesInfo,
    hu: np.ndarray,
    *,
    sop: str,
    instance: int,
    ipp: list[float],
    iop: list[float],
    spacing: tuple[float, float],
    thickness: float,
    signed: bool,
    patient_position: str,
    transfer_syntax: str = "explicit",
) -> Dataset:
    """One CT Image Storage instance (file meta included) for an HU image.

    ``signed`` stores int16 with intercept 0; otherwise uint16 with intercept -1024 and 12
    bits stored — both occur in real data, and the localizer must read both.
    """
    if signed:
        pixels = np.rint(hu).astype(np.int16)
        intercept, rep, bits = 0.0, 1, 16
    else:
        pixels = np.clip(np.rint(hu + 1024.0), 0, 4095).astype(np.uint16)
        intercept, rep, bits = -1024.0, 0, 12
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = info.study_date
    ds.StudyTime = ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = info.study_time
    ds.AccessionNumber = info.accession
    ds.Modality = "CT"
    ds.Manufacturer = "l3node"
    ds.ManufacturerModelName = info.manufacturer_model
    ds.InstitutionName = "l3node phantom"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = info.study_description
    ds.SeriesDescription = info.series_description
    ds.PatientName = info.patient_name
    ds.PatientID = info.patient_id
    ds.PatientBirthDate = info.birth_date
    ds.PatientSex = info.sex
    if info.age_years is not None:
        ds.PatientAge = f"{info.age_years:03d}Y"
    if info.contrast:
        ds.ContrastBolusAgent = "IODINATED"
    ds.BodyPartExamined = info.body_part
    ds.SliceThickness = f"{thickness:g}"
    ds.KVP = f"{info.kvp:g}"
    ds.ConvolutionKernel = info.kernel
    ds.PatientPosition = patient_position
    ds.StudyInstanceUID = info.study_uid
    ds.SeriesInstanceUID = info.series_uid
    ds.StudyID = "1"
    ds.SeriesNumber = info.series_number
    ds.AcquisitionNumber = 1
    ds.InstanceNumber = instance
    ds.ImagePositionPatient = [f"{v:.3f}" for v in ipp]
    ds.ImageOrientationPatient = [f"{v:g}" for v in iop]
    ds.FrameOfReferenceUID = info.for_uid
    ds.PositionReferenceIndicator = ""
    ds.SliceLocation = f"{ipp[2]:.3f}"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.PixelSpacing = [f"{spacing[0]:g}", f"{spacing[1]:g}"]
    ds.BitsAllocated = 16
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = rep
    ds.RescaleIntercept = f"{intercept:g}"
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    ds.WindowCenter = "40"
    ds.WindowWidth = "400"
    ds.PixelData = pixels.tobytes()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    ts = TS_UIDS[transfer_syntax]
    if ts != ExplicitVRLittleEndian:
        ds.compress(ts, pixels, generate_instance_uid=False)
    return ds


def write_slice(
    out_dir: Path,
    info: SeriesInfo,
    hu: np.ndarray,
    *,
    index: int,
    count: int,
    z: float,
    origin: tuple[float, float],
    spacing: float,
    thickness: float,
    signed: bool,
    patient_position: str,
    transfer_syntax: str,
) -> tuple[str, int]:
    """Write sorted slice ``index`` of ``count`` (0 = most superior) at height ``z``, its
    canonical image's first pixel at ``origin`` (x, y); return (SOP UID, InstanceNumber)."""
    feet_first = patient_position == "FFS"
    # Head-first scans run head to feet, feet-first scans feet to head.
    inst = (count - index) if feet_first else (index + 1)
    sop = det_uid(*info.seed_parts, "sop", index)
    x0, y0 = origin
    if feet_first:  # row direction -x: the canonical image mirrored left-right
        ipp = [x0 + (hu.shape[1] - 1) * spacing, y0, z]
        hu = hu[:, ::-1]
        iop = [-1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    else:
        iop = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ipp = [x0, y0, z]
    ds = ct_dataset(info, hu, sop=sop, instance=inst, ipp=ipp, iop=iop,
                    spacing=(spacing, spacing), thickness=thickness, signed=signed,
                    patient_position=patient_position, transfer_syntax=transfer_syntax)
    path = Path(out_dir) / f"CT{inst:05d}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return sop, inst
