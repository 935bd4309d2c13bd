"""The IHE IOCM rejection note: withdraw delivered results that a re-run replaced.

A re-run of the same input series with the same model version composes objects with the same
SOP Instance UIDs (:mod:`.identity`), so its objects overwrite the first run's in the PACS and
nothing is left to withdraw.  A re-run that picks another series (a better one arrived later)
or runs a new model version composes objects with new UIDs; the old ones would stay beside
the new.  For those the node sends a Key Object Selection titled (113001, DCM, "Rejected for
Quality Reasons") — the IOCM "rejection note" — that references every old object: a PACS that
supports IOCM hides or deletes them; one that does not simply stores the note.

Its UIDs derive from (study, superseded version, superseding version), so composing it again
(a retry of the delivery, a restart) gives the same object.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import pydicom
from highdicom.sr.coding import CodedConcept
from pydicom.errors import InvalidDicomError
from pydicom.sr.codedict import codes

from ..series import CTSeries
from ..uids import derived_uid
from .identity import MANUFACTURER, device_uid
from .inputs import check_series, reference_header

REJECTION_SERIES_NUMBER = 9304
REJECTION_SERIES_DESCRIPTION = "L3 (automated) rejected results"
REJECTED_FOR_QUALITY = codes.DCM.RejectedForQualityReasons  # (113001, DCM)
# the input header's patient and study attributes, copied into every reference
_STUDY_ATTRIBUTES = ("SpecificCharacterSet", "PatientID", "PatientName", "PatientBirthDate",
                     "PatientSex", "StudyInstanceUID", "StudyID", "StudyDate", "StudyTime",
                     "AccessionNumber", "ReferringPhysicianName")
IMAGE_SOP_CLASSES = {"1.2.840.10008.5.1.4.1.1.7"}  # Secondary Capture Image Storage


@dataclass(frozen=True)
class RejectedObject:
    """One delivered object to withdraw (its identity, from the old result's record)."""

    sop_class_uid: str
    sop_instance_uid: str
    series_instance_uid: str

    @classmethod
    def from_record(cls, o: dict) -> RejectedObject | None:
        """From one entry of a result's recorded ``objects``; a record from before the SOP
        class and series were recorded is completed from its file's header (``None`` when
        that file is gone)."""
        cls_uid, series_uid = o.get("sop_class_uid"), o.get("series_instance_uid")
        if not (cls_uid and series_uid):
            try:
                ds = pydicom.dcmread(Path(o["path"]), stop_before_pixels=True,
                                     specific_tags=["SOPClassUID", "SeriesInstanceUID"])
            except (OSError, KeyError, InvalidDicomError):
                return None
            cls_uid, series_uid = str(ds.SOPClassUID), str(ds.SeriesInstanceUID)
        return cls(str(cls_uid), str(o["sop_instance_uid"]), str(series_uid))


def write_rejection_note(series: CTSeries, old_objects: Sequence[dict],
                         new_uids: Collection[str], old_version: int, new_version: int,
                         out_dir: Path) -> tuple[Path, pydicom.Dataset] | None:
    """Write the note withdrawing those of ``old_objects`` (a delivered result's records)
    that ``new_uids`` (the superseding result's SOP Instance UIDs) do not overwrite; ``None``
    when every old object is overwritten (same series, same model version) and nothing is
    left to withdraw.  Earlier rejection notes are never withdrawn."""
    check_series(series)
    rejected = [r for o in old_objects
                if o.get("kind") != "rejection" and o.get("sop_instance_uid") not in new_uids
                and (r := RejectedObject.from_record(o)) is not None]
    if not rejected:
        return None
    note = build_rejection_note(reference_header(series, 0), rejected, old_version,
                                new_version)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"KO-rejection-{note.SOPInstanceUID}.dcm"
    note.save_as(path, enforce_file_format=True)
    return path, note


def rejection_uids(study_uid: str, old_version: int, new_version: int) -> tuple[str, str]:
    """(series, SOP instance) UIDs of the note withdrawing ``old_version``'s objects on
    behalf of ``new_version``; one series per study holds every note of that study."""
    return (derived_uid("l3node-rejection", study_uid, "series"),
            derived_uid("l3node-rejection", study_uid, old_version, new_version, "ko"))


def build_rejection_note(header: pydicom.Dataset, rejected: Sequence[RejectedObject],
                         old_version: int, new_version: int
                         ) -> hd.ko.KeyObjectSelectionDocument:
    """The rejection note for ``rejected`` (all of the study of ``header``, an input header
    whose patient and study attributes the note copies)."""
    if not rejected:
        raise ValueError('Argument "rejected" must name at least one object to withdraw.')
    if not isinstance(old_version, int) or not isinstance(new_version, int) or \
            not 0 < old_version < new_version:
        raise ValueError(f"a rejection note withdraws an older version for a newer one, got "
                         f"old {old_version!r}, new {new_version!r}.")
    study_uid = str(header.StudyInstanceUID)
    refs = [_reference(header, r) for r in rejected]
    series_uid, sop_uid = rejection_uids(study_uid, old_version, new_version)
    content = hd.ko.KeyObjectSelection(
        document_title=CodedConcept.from_code(REJECTED_FOR_QUALITY),
        referenced_objects=refs,
        observer_device_context=hd.sr.ObserverContext(
            observer_type=codes.DCM.Device,
            observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
                uid=device_uid(), name="l3node", manufacturer_name=MANUFACTURER),
        ),
        description=(f"l3node results of run {old_version} withdrawn: superseded by the "
                     f"results of run {new_version}"),
    )
    note = hd.ko.KeyObjectSelectionDocument(
        evidence=refs, content=content, series_instance_uid=series_uid,
        series_number=REJECTION_SERIES_NUMBER, sop_instance_uid=sop_uid, instance_number=1,
        manufacturer=MANUFACTURER, institution_name=None)
    note.SeriesDescription = REJECTION_SERIES_DESCRIPTION
    return note


def _reference(header: pydicom.Dataset, r: RejectedObject) -> pydicom.Dataset:
    """What highdicom needs of a referenced object: its study (from ``header``), series and
    SOP identity; an image gets Rows/Columns so highdicom references it as an IMAGE item."""
    ds = pydicom.Dataset()
    for kw in _STUDY_ATTRIBUTES:
        if kw in header:
            setattr(ds, kw, header.data_element(kw).value)  # type: ignore[union-attr]
    for kw in ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "StudyID",
               "AccessionNumber", "StudyDate", "StudyTime"):  # highdicom reads them all
        if kw not in ds:
            setattr(ds, kw, None)
    ds.SeriesInstanceUID = r.series_instance_uid
    ds.SOPClassUID = r.sop_class_uid
    ds.SOPInstanceUID = r.sop_instance_uid
    if r.sop_class_uid in IMAGE_SOP_CLASSES:
        ds.Rows = ds.Columns = 1  # only the item type is read from these
    return ds
