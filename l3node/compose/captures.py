"""The Secondary Captures: what every viewer shows, KOS-aware or not.

* :func:`build_axial_sc` — the L3 slice in a soft-tissue window, 8-bit, with a burnt-in banner
  "L3 (automated) - slice N/M, z = … mm, confidence …, model …; not for diagnosis";
* :func:`build_sagittal_sc` — a sagittal reformat (RGB, bone window) with the L3 level in
  red, so the level count can be checked at a glance;
* :func:`build_not_found_sc` — the middle slice with a banner saying L3 was not found and why.

Each takes the series and the decision, checks them (:mod:`.inputs`) and returns a finished
highdicom ``SCImage``: UIDs from :class:`.identity.ResultUIDs`, patient and study copied from
the input slice, and the attributes the IOD wants that highdicom leaves to the caller.
"""

from __future__ import annotations

import highdicom as hd
import numpy as np
import pydicom
from PIL import Image, ImageDraw, ImageFont
from skimage.transform import resize

from ..series import CTSeries
from ..views import BONE, SOFT_TISSUE, sagittal, window8
from .identity import (
    DISCLAIMER,
    SC_SERIES_NUMBER,
    SERIES_DESCRIPTION,
    ResultUIDs,
    common_sc_attributes,
)
from .inputs import check_confidence, check_index, check_series, check_text, reference_header

SAGITTAL_MAX_ROWS = 400  # slices sampled for the reformat (it is resized to square pixels)


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # older Pillow
        return ImageFont.load_default()


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


def _source(ref: pydicom.Dataset, frame: int | None) -> pydicom.Dataset:
    """A Source Image Sequence item: the CT slice the SC's pixels come from — with its
    frame when the CT is multi-frame, so a viewer can open the very frame."""
    item = pydicom.Dataset()
    item.ReferencedSOPClassUID = ref.SOPClassUID
    item.ReferencedSOPInstanceUID = ref.SOPInstanceUID
    if frame is not None:
        item.ReferencedFrameNumber = frame
    purpose = pydicom.Dataset()  # CID 7202: "Source image for image processing operation"
    purpose.CodeValue, purpose.CodingSchemeDesignator = "121322", "DCM"
    purpose.CodeMeaning = "Source image for image processing operation"
    item.PurposeOfReferenceCodeSequence = [purpose]
    return item


def _sc(ref: pydicom.Dataset, img: Image.Image, sop_instance_uid: str, uids: ResultUIDs,
        instance_number: int, pixel_spacing: tuple[float, float] | None,
        source_frame: int | None = None, from_slice: bool = True) -> hd.sc.SCImage:
    """An SC of ``img`` in the result SC series, copying patient and study from ``ref``;
    ``from_slice``: its pixels are that slice's (``source_frame`` of a multi-frame CT),
    named in the Source Image Sequence."""
    extra = {} if pixel_spacing is None else {"pixel_spacing": pixel_spacing}
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=ref, pixel_array=np.asarray(img),
        photometric_interpretation="MONOCHROME2" if img.mode == "L" else "RGB",
        bits_allocated=8, coordinate_system="PATIENT", series_instance_uid=uids.sc_series,
        series_number=SC_SERIES_NUMBER, sop_instance_uid=sop_instance_uid,
        instance_number=instance_number, series_description=SERIES_DESCRIPTION,
        **extra, **common_sc_attributes())
    if "Laterality" not in sc:
        sc.Laterality = None  # General Series, Type 2C: present and empty (unpaired trunk)
    sc.BurnedInAnnotation = "YES"  # the banner is in the pixels
    if from_slice:
        sc.SourceImageSequence = [_source(ref, source_frame)]
    return sc


def axial_banner(series: CTSeries, index: int, confidence: float, model_version: str,
                 anatomy: str = "") -> list[str]:
    """The axial SC's banner lines (also what a person reads first on the key image)."""
    sl = series.slices[index]
    lines = [f"L3 (automated) - slice {index + 1}/{len(series)}, z = {sl.z_mm:.1f} mm, "
             f"confidence {confidence:.2f}", f"model {model_version}; {DISCLAIMER}"]
    if anatomy:
        lines.append(anatomy[:90])
    return lines


def build_axial_sc(series: CTSeries, index: int, confidence: float, model_version: str,
                   anatomy: str = "") -> hd.sc.SCImage:
    """The L3 slice ``index`` of ``series``, soft-tissue window, banner on top (8-bit
    MONOCHROME2, the slice's pixel spacing); ``anatomy`` is the second opinion's line."""
    check_series(series)
    index = check_index(series, index)
    confidence = check_confidence(confidence)
    check_text("model_version", model_version, required=True)
    check_text("anatomy", anatomy)
    ref = reference_header(series, index)
    uids = ResultUIDs.derive(series.study_instance_uid, series.series_instance_uid,
                             model_version)
    text = axial_banner(series, index, confidence, model_version, anatomy)
    img = _banner(Image.fromarray(window8(series.hu([index])[0], SOFT_TISSUE), mode="L"), text)
    # The slice's spacing, not ref.PixelSpacing: a multi-frame CT keeps it per frame.
    spacing = series.slices[index].pixel_spacing
    return _sc(ref, img, uids.sc_axial, uids, 1, (float(spacing[0]), float(spacing[1])),
               source_frame=series.slices[index].frame_number)


def build_sagittal_sc(series: CTSeries, index: int, model_version: str,
                      max_rows: int = SAGITTAL_MAX_ROWS) -> hd.sc.SCImage:
    """A sagittal reformat through the image centre, bone window, square pixels of the
    row spacing, with slice ``index``'s level marked in red (RGB)."""
    check_series(series)
    index = check_index(series, index)
    check_text("model_version", model_version, required=True)
    if isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 1:
        raise ValueError(f'Argument "max_rows" must be a positive integer, got {max_rows!r}.')
    ref = reference_header(series, index)
    uids = ResultUIDs.derive(series.study_instance_uid, series.series_instance_uid,
                             model_version)
    view = sagittal(series, max_rows=max_rows)  # rows: z, superior first
    sag = view.sagittal
    assert sag is not None
    dy = series.slices[0].pixel_spacing[0]
    height = max(1, round(sag.shape[0] * view.slice_spacing_mm / dy))  # square pixels of dy
    sag = resize(sag, (height, sag.shape[1]), order=1, preserve_range=True, anti_aliasing=True)
    gray = window8(sag, BONE)  # bone window: count the vertebrae
    img = Image.fromarray(np.repeat(gray[..., None], 3, axis=2), mode="RGB")
    row = round((series.z_mm[0] - series.z_mm[index]) / dy)
    draw = ImageDraw.Draw(img)
    draw.line([(0, row), (img.width - 1, row)], fill=(255, 0, 0), width=2)
    draw.text((4, max(0, row - 16)), "L3", fill=(255, 0, 0), font=_font(14))
    img = _banner(img, [f"L3 level (red) - {DISCLAIMER}"])
    return _sc(ref, img, uids.sc_sagittal, uids, 2, (dy, dy), from_slice=False)


def build_not_found_sc(series: CTSeries, reason: str, model_version: str,
                       anatomy: str = "") -> hd.sc.SCImage:
    """The middle slice of ``series`` with a banner: L3 not found, ``reason`` and the second
    opinion's ``anatomy`` line (8-bit MONOCHROME2)."""
    check_series(series)
    check_text("reason", reason)
    check_text("model_version", model_version, required=True)
    check_text("anatomy", anatomy)
    mid = len(series) // 2
    ref = reference_header(series, mid)
    uids = ResultUIDs.derive(series.study_instance_uid, series.series_instance_uid,
                             model_version)
    text = ["L3 not in field of view (automated)", f"model {model_version}; {DISCLAIMER}",
            reason[:70]]
    if anatomy:
        text.append(anatomy[:90])
    img = _banner(Image.fromarray(window8(series.hu([mid])[0], SOFT_TISSUE), mode="L"), text)
    return _sc(ref, img, uids.sc_not_found, uids, 1, None,
               source_frame=series.slices[mid].frame_number)
