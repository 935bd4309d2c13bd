"""Build the result objects (highdicom), in the input study, in new series.

* Secondary Capture 1: the L3 axial slice in a soft-tissue window, 8-bit, with a burned-in
  banner "L3 (automated) — slice N/M, z = … mm, confidence …, model …; not for diagnosis".
* Secondary Capture 2: a sagittal reformat (RGB) with the L3 level marked in red, so the
  level count can be checked at a glance.
* Key Object Selection (title 113000 "Of Interest") referencing the original L3 CT slice and
  the first SC.  (Many viewers show a KOS poorly; the SCs are what everyone sees.)

Each builder is a function returning a validated highdicom object; UIDs derive from (input
study, input series, model version), so re-sending never duplicates.  When L3 is not found
there is no KOS, and optionally one SC saying so.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from highdicom.sr.coding import CodedConcept
from PIL import Image, ImageDraw, ImageFont
from pydicom.sr.codedict import codes
from skimage.transform import resize

from .localize.series import CTSeries
from .uids import derived_uid

MANUFACTURER = "l3node"
SC_SERIES_NUMBER = 9301
KO_SERIES_NUMBER = 9302
DISCLAIMER = "not for diagnosis"


@dataclass(frozen=True)
class ResultUIDs:
    sc_series: str
    ko_series: str
    sc_axial: str
    sc_sagittal: str
    sc_not_found: str
    ko: str

    @classmethod
    def derive(cls, study_uid: str, series_uid: str, model_version: str) -> ResultUIDs:
        def u(kind: str) -> str:
            return derived_uid("l3node-result", study_uid, series_uid, model_version, kind)

        return cls(u("sc-series"), u("ko-series"), u("sc-axial"), u("sc-sagittal"),
                   u("sc-not-found"), u("ko"))


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # older Pillow
        return ImageFont.load_default()


def window8(hu: np.ndarray, center: float = 40.0, width: float = 400.0) -> np.ndarray:
    lo = center - width / 2
    return (np.clip((hu - lo) / width, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _banner(img: Image.Image, lines: list[str]) -> Image.Image:
    """Burn text into the top of the image on a black band (so it reads on any anatomy)."""
    size = max(12, img.width // 40)
    font = _font(size)
    band = (size + 4) * len(lines) + 6
    out = Image.new(img.mode, (img.width, img.height + band))
    out.paste(img, (0, band))
    draw = ImageDraw.Draw(out)
    fill = 255 if img.mode == "L" else (255, 255, 0)
    for k, line in enumerate(lines):
        draw.text((4, 3 + k * (size + 4)), line, fill=fill, font=font)
    return out


def _common() -> dict:
    now = dt.datetime.now()
    return {
        "manufacturer": MANUFACTURER,
        "patient_orientation": ("L", "P"),
        "content_date": now.date(),
        "content_time": now.time().replace(microsecond=0),
    }


def axial_sc(ref: pydicom.Dataset, hu: np.ndarray, uids: ResultUIDs, text: list[str],
             instance_number: int = 1) -> hd.sc.SCImage:
    """The L3 slice, soft-tissue window, banner on top (8-bit MONOCHROME2)."""
    img = _banner(Image.fromarray(window8(hu), mode="L"), text)
    return hd.sc.SCImage.from_ref_dataset(
        ref_dataset=ref, pixel_array=np.asarray(img), photometric_interpretation="MONOCHROME2",
        bits_allocated=8, coordinate_system="PATIENT", series_instance_uid=uids.sc_series,
        series_number=SC_SERIES_NUMBER, sop_instance_uid=uids.sc_axial,
        instance_number=instance_number, series_description="L3 (automated)",
        pixel_spacing=tuple(float(v) for v in ref.PixelSpacing), **_common())


def sagittal_sc(ref: pydicom.Dataset, series: CTSeries, index: int | None, uids: ResultUIDs,
                text: list[str], max_rows: int = 400) -> hd.sc.SCImage:
    """A sagittal reformat through the image centre with the L3 level marked (RGB)."""
    n = len(series)
    step = max(1, int(np.ceil(n / max_rows)))
    idx = list(range(0, n, step))
    col = series.slices[0].columns // 2
    # rows: z (superior first).  Filled one slice at a time: a list of column views would
    # keep every decoded 512 × 512 slice alive until the stack (~400 MB for a 1 mm series).
    sag = np.empty((len(idx), series.slices[0].rows), dtype=np.float32)
    for k, i in enumerate(idx):
        sag[k] = series.hu([i])[0][:, col]
    dy = series.slices[0].pixel_spacing[0]
    dz = series.spacing_mm * step
    height = max(1, round(sag.shape[0] * dz / dy))  # square pixels of size dy
    sag = resize(sag, (height, sag.shape[1]), order=1, preserve_range=True, anti_aliasing=True)
    gray = window8(sag, 400.0, 1800.0)  # bone window: count the vertebrae
    rgb = np.repeat(gray[..., None], 3, axis=2)
    img = Image.fromarray(rgb, mode="RGB")
    if index is not None:
        row = round((series.z_mm[0] - series.z_mm[index]) / dy)
        draw = ImageDraw.Draw(img)
        draw.line([(0, row), (img.width - 1, row)], fill=(255, 0, 0), width=2)
        draw.text((4, max(0, row - 16)), "L3", fill=(255, 0, 0), font=_font(14))
    img = _banner(img, text)
    return hd.sc.SCImage.from_ref_dataset(
        ref_dataset=ref, pixel_array=np.asarray(img), photometric_interpretation="RGB",
        bits_allocated=8, coordinate_system="PATIENT", series_instance_uid=uids.sc_series,
        series_number=SC_SERIES_NUMBER, sop_instance_uid=uids.sc_sagittal, instance_number=2,
        series_description="L3 (automated)", pixel_spacing=(dy, dy), **_common())


def not_found_sc(ref: pydicom.Dataset, hu: np.ndarray, uids: ResultUIDs,
                 reason: str, model: str, anatomy: str = "") -> hd.sc.SCImage:
    text = ["L3 not in field of view (automated)", f"model {model}; {DISCLAIMER}", reason[:70]]
    if anatomy:
        text.append(anatomy[:90])
    img = _banner(Image.fromarray(window8(hu), mode="L"), text)
    return hd.sc.SCImage.from_ref_dataset(
        ref_dataset=ref, pixel_array=np.asarray(img), photometric_interpretation="MONOCHROME2",
        bits_allocated=8, coordinate_system="PATIENT", series_instance_uid=uids.sc_series,
        series_number=SC_SERIES_NUMBER, sop_instance_uid=uids.sc_not_found, instance_number=1,
        series_description="L3 (automated)", **_common())


def key_object(l3_ref: pydicom.Dataset, sc: hd.sc.SCImage, uids: ResultUIDs,
               description: str) -> hd.ko.KeyObjectSelectionDocument:
    """KOS titled (113000, DCM, "Of Interest") pointing at the L3 CT slice and the SC."""
    content = hd.ko.KeyObjectSelection(
        document_title=CodedConcept.from_code(codes.DCM.OfInterest),
        referenced_objects=[l3_ref, sc],
        observer_device_context=hd.sr.ObserverContext(
            observer_type=codes.DCM.Device,
            observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
                uid=derived_uid("l3node-device"), name="l3node", manufacturer_name=MANUFACTURER),
        ),
        description=description[:1024],
    )
    return hd.ko.KeyObjectSelectionDocument(
        evidence=[l3_ref, sc], content=content, series_instance_uid=uids.ko_series,
        series_number=KO_SERIES_NUMBER, sop_instance_uid=uids.ko, instance_number=1,
        manufacturer=MANUFACTURER, institution_name=None)


@dataclass
class Composed:
    files: list[Path]
    kos_uid: str | None
    sc_uids: list[str]


def compose(series: CTSeries, index: int | None, confidence: float, model_version: str,
            out_dir: Path, reason: str = "", not_found_sc_enabled: bool = True,
            anatomy: str = "") -> Composed:
    """Write the result objects for one localized series into ``out_dir``; ``anatomy`` is
    the second opinion's one line (:meth:`l3node.localize.opinion.Opinion.banner`), burnt
    into the banner and added to the key object's text so the radiologist sees whether the
    vertebra count agrees."""
    out_dir.mkdir(parents=True, exist_ok=True)
    uids = ResultUIDs.derive(series.study_instance_uid, series.series_instance_uid,
                             model_version)
    files: list[Path] = []
    n = len(series)
    if index is None:
        if not not_found_sc_enabled:
            return Composed([], None, [])
        mid = n // 2
        ref = pydicom.dcmread(series.slices[mid].path, stop_before_pixels=True)
        sc = not_found_sc(ref, series.hu([mid])[0], uids, reason, model_version, anatomy)
        files.append(_save(sc, out_dir))
        return Composed(files, None, [uids.sc_not_found])
    sl = series.slices[index]
    ref = pydicom.dcmread(sl.path, stop_before_pixels=True)
    banner = [f"L3 (automated) - slice {index + 1}/{n}, z = {sl.z_mm:.1f} mm, "
              f"confidence {confidence:.2f}", f"model {model_version}; {DISCLAIMER}"]
    if anatomy:
        banner.append(anatomy[:90])
    sc1 = axial_sc(ref, series.hu([index])[0], uids, banner)
    sc2 = sagittal_sc(ref, series, index, uids, [f"L3 level (red) - {DISCLAIMER}"])
    kos = key_object(ref, sc1, uids, f"L3 slice {index + 1}/{n} (InstanceNumber "
                     f"{sl.instance_number}, z = {sl.z_mm:.1f} mm), found automatically by "
                     f"l3node model {model_version} with confidence {confidence:.2f}; "
                     + (f"{anatomy}; " if anatomy else "") + DISCLAIMER)
    files += [_save(sc1, out_dir), _save(sc2, out_dir), _save(kos, out_dir)]
    return Composed(files, uids.ko, [uids.sc_axial, uids.sc_sagittal])


def _save(ds: pydicom.Dataset, out_dir: Path) -> Path:
    if ds.Modality != "KO":
        if "Laterality" not in ds:
            ds.Laterality = None  # General Series, Type 2C: present and empty (unpaired trunk)
        ds.BurnedInAnnotation = "YES"  # the banner is in the pixels
    else:
        ds.SeriesDescription = "L3 (automated)"
    path = out_dir / f"{ds.Modality}-{ds.SOPInstanceUID}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path
