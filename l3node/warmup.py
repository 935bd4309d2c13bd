"""Warm-up at start: one small synthetic series through select → localize → compose.

Why: the first study after a start used to pay ~1–2 s of one-time costs that have nothing to
do with it — ONNX Runtime's first run at the batch shape (its kernels and buffers),
highdicom's IOD tables and pydicom's dictionaries, scipy's and scikit-image's lazy imports —
so the first patient waited longer than the rest.  Running the same code once on a
synthetic series while the node starts moves those costs before the listener accepts an
instance.  The series is a plain cylinder of water with a "bone" disc (no anatomy: the answer
does not matter and is thrown away, as are the objects written to a temporary folder).
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from .compose import compose
from .logs import event
from .select import load_series

if TYPE_CHECKING:
    from .localize.localizer import Localizer

log = logging.getLogger(__name__)
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
SLICES, SIZE, SPACING_MM = 24, 128, 5.0


def write_synthetic_series(folder: Path, slices: int = SLICES, size: int = SIZE) -> None:
    """``slices`` axial CT images of ``size``² pixels, 5 mm apart, into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    yy, xx = np.mgrid[:size, :size] - size / 2
    r = np.hypot(yy, xx)
    image = np.where(r < size * 0.4, 1024, 24).astype(np.int16)  # water in air (+1024 offset)
    image[np.hypot(yy - size * 0.15, xx) < size * 0.06] = 1024 + 700  # a "vertebral body"
    for k in range(slices):
        sop = generate_uid()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CT_IMAGE_STORAGE, sop
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CT_IMAGE_STORAGE, sop
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.Modality, ds.ImageType = "CT", ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.PatientName, ds.PatientID, ds.StudyID, ds.AccessionNumber = "WARMUP^", "WARMUP", "", ""
        ds.PatientBirthDate = ds.PatientSex = ds.ReferringPhysicianName = ""
        ds.StudyDate, ds.StudyTime, ds.SeriesNumber, ds.InstanceNumber = "20000101", "", 1, k + 1
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [-size / 2, -size / 2, -SPACING_MM * k]
        ds.PixelSpacing, ds.SliceThickness = [1.0, 1.0], SPACING_MM
        ds.Rows = ds.Columns = size
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.PixelData = image.tobytes()
        ds.save_as(folder / f"{k:03d}.dcm", enforce_file_format=True)


def warm_up(localizer: Localizer, model_version: str) -> float:
    """Run the processing path once on a synthetic series; the seconds it took."""
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="l3node-warmup-") as tmp:
        folder = Path(tmp) / "series"
        write_synthetic_series(folder)
        series = load_series(folder)
        res = localizer.run(series)
        # the found path (KOS + axial and sagittal SC), whatever the synthetic answer was
        compose(series, len(series) // 2, 0.5, model_version, Path(tmp) / "out",
                anatomy="warm-up")
    seconds = time.perf_counter() - t0
    event(log, "node.warmed_up", seconds=round(seconds, 2), evaluated=res.evaluated)
    return seconds
