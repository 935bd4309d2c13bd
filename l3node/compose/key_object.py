"""The Key Object Selection: the machine-readable answer, "this CT slice is L3".

Titled (113000, DCM, "Of Interest"), observed by the l3node device, it references the L3 CT
slice itself and the axial Secondary Capture, with the decision in words.  Many viewers show
a KOS poorly (the SCs are what everyone sees), but a worklist or a body-composition tool can
follow it to the original slice.

When the slice is a frame of a multi-frame CT (Enhanced or Legacy Converted Enhanced), the
reference names the instance and its ``ReferencedFrameNumber``: the instance alone would
point at the whole stack.
"""

from __future__ import annotations

import highdicom as hd
import pydicom
from highdicom.sr.coding import CodedConcept
from highdicom.sr.enum import RelationshipTypeValues
from pydicom.sr.codedict import codes

from ..series import CTSeries
from .identity import (
    DISCLAIMER,
    KO_SERIES_NUMBER,
    MANUFACTURER,
    SERIES_DESCRIPTION,
    ResultUIDs,
    device_uid,
)
from .inputs import check_confidence, check_index, check_series, check_text, reference_header

SC_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.7"


def kos_description(series: CTSeries, index: int, confidence: float, model_version: str,
                    anatomy: str = "") -> str:
    """The key object's text: which slice, how found, how sure, and the second opinion."""
    sl = series.slices[index]
    where = f"InstanceNumber {sl.instance_number}" + (
        f", frame {sl.frame_number}" if sl.frame_number is not None else "")
    return (f"L3 slice {index + 1}/{len(series)} ({where}, "
            f"z = {sl.z_mm:.1f} mm), found automatically by l3node model {model_version} "
            f"with confidence {confidence:.2f}; "
            + (f"{anatomy}; " if anatomy else "") + DISCLAIMER)


def build_key_object(series: CTSeries, index: int, confidence: float, model_version: str,
                     key_image: hd.sc.SCImage,
                     anatomy: str = "") -> hd.ko.KeyObjectSelectionDocument:
    """The KOS pointing at slice ``index`` of ``series`` and at ``key_image`` (the axial SC
    of the same study, :func:`.captures.build_axial_sc`)."""
    check_series(series)
    index = check_index(series, index)
    confidence = check_confidence(confidence)
    check_text("model_version", model_version, required=True)
    check_text("anatomy", anatomy)
    if str(getattr(key_image, "SOPClassUID", "")) != SC_IMAGE_STORAGE:
        raise ValueError('Argument "key_image" must be a Secondary Capture Image, got SOP '
                         f"class {getattr(key_image, 'SOPClassUID', None)!r}.")
    if key_image.StudyInstanceUID != series.study_instance_uid:
        raise ValueError(f'Argument "key_image" belongs to study {key_image.StudyInstanceUID}, '
                         f"not to the series' study {series.study_instance_uid}.")
    ref = reference_header(series, index)
    uids = ResultUIDs.derive(series.study_instance_uid, series.series_instance_uid,
                             model_version)
    content = hd.ko.KeyObjectSelection(
        document_title=CodedConcept.from_code(codes.DCM.OfInterest),
        referenced_objects=[ref, key_image],
        observer_device_context=hd.sr.ObserverContext(
            observer_type=codes.DCM.Device,
            observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
                uid=device_uid(), name="l3node", manufacturer_name=MANUFACTURER),
        ),
        description=kos_description(series, index, confidence, model_version,
                                    anatomy)[:1024],
    )
    frame = series.slices[index].frame_number
    if frame is not None:
        _reference_frame(content, ref, frame)
    kos = hd.ko.KeyObjectSelectionDocument(
        evidence=[ref, key_image], content=content, series_instance_uid=uids.ko_series,
        series_number=KO_SERIES_NUMBER, sop_instance_uid=uids.ko, instance_number=1,
        manufacturer=MANUFACTURER, institution_name=None)
    kos.SeriesDescription = SERIES_DESCRIPTION
    return kos


def _reference_frame(content: hd.ko.KeyObjectSelection, ref: pydicom.Dataset,
                     frame: int) -> None:
    """Make the content item that references ``ref`` name its ``frame`` (1-based).

    highdicom's :class:`~highdicom.ko.KeyObjectSelection` references whole instances; its
    :class:`~highdicom.sr.ImageContentItem` takes frame numbers, so that item is rebuilt with
    the same concept name and relationship, and the frame.
    """
    items = content[0].ContentSequence
    for k, item in enumerate(items):
        refs = item.get("ReferencedSOPSequence") or []
        if item.ValueType == "IMAGE" and refs and \
                refs[0].ReferencedSOPInstanceUID == ref.SOPInstanceUID:
            # del + insert, not items[k] = ...: highdicom's ContentSequence.__setitem__
            # takes a Dataset for an iterable of items and refuses it.
            del items[k]
            items.insert(k, hd.sr.ImageContentItem(
                name=CodedConcept.from_dataset(item.ConceptNameCodeSequence[0]),
                referenced_sop_class_uid=ref.SOPClassUID,
                referenced_sop_instance_uid=ref.SOPInstanceUID,
                referenced_frame_numbers=frame,
                relationship_type=RelationshipTypeValues.CONTAINS))
            return
    raise ValueError(f"the key object has no image item for {ref.SOPInstanceUID}")
