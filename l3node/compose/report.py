"""The Structured Report: the answer as measurements, TID 1500 "Imaging Measurement Report".

A Comprehensive 3D SR observed by the l3node device, its procedure CT, with one measurement
group (the local codes are scheme ``99L3NODE``, listed in docs/conformance-statement.md):

* L3 found — a TID 1410 *planar ROI* group "L3 slice": a POINT at the centre of the chosen CT
  slice (its SOP Instance, and its frame when the slice is a frame of a multi-frame CT),
  finding and site (36470004, SCT, "L3 vertebra"), the algorithm (the model and its version),
  the measurements "Probability" (122157, DCM; the network's confidence, no units) and
  "Image Position (Patient) Z" (110903, DCM; the slice's z in mm), and the second opinion
  as qualitative evaluations: the vertebra count's agreement (Yes / No / "not counted"; no
  item when the counter is off) and transitional anatomy suspected (Yes / No; only when a
  count was made);
* L3 not found — a TID 1501 group with the same finding and site, "L3 slice found" = No and
  the reason as a TEXT item.

The evidence is the CT slice the answer is about (when not found: the middle slice, as the
not-found SC shows), whose header gives the patient and study.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import highdicom as hd
import numpy as np
from highdicom.sr.coding import CodedConcept
from highdicom.sr.enum import GraphicTypeValues, RelationshipTypeValues
from pydicom import Dataset
from pydicom.sr.codedict import codes

from ..series import CTSeries
from ..version import __version__
from .identity import MANUFACTURER, SERIES_DESCRIPTION, SR_SERIES_NUMBER, ResultUIDs, device_uid
from .inputs import check_confidence, check_index, check_series, check_text, reference_header

if TYPE_CHECKING:
    from ..localize.opinion import Opinion

COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"
LOCAL_SCHEME = "99L3NODE"  # PS3.16 8.2: a private scheme designator starts with "99"
ALGORITHM_NAME = "l3node L3 slice classifier"


def _local(value: str, meaning: str) -> CodedConcept:
    return CodedConcept(value, LOCAL_SCHEME, meaning)


# Concepts no standard code expresses (docs/conformance-statement.md, "Local codes").
COUNT_AGREES = _local("L3N001", "Vertebra count agrees")
TRANSITIONAL = _local("L3N002", "Transitional lumbosacral anatomy suspected")
L3_FOUND = _local("L3N003", "L3 slice found")
REASON = _local("L3N004", "Reason")
NOT_COUNTED = _local("L3N005", "Not counted")
NO_UNITS = CodedConcept("1", "UCUM", "no units")
MILLIMETRE = CodedConcept("mm", "UCUM", "millimeter")


def _observation_context() -> hd.sr.ObservationContext:
    return hd.sr.ObservationContext(observer_device_context=hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=device_uid(), name="l3node", manufacturer_name=MANUFACTURER,
            model_name=f"l3node {__version__}")))


def _evaluations(opinion: Opinion | None) -> list[hd.sr.QualitativeEvaluation]:
    """The second opinion as coded answers (none when the counter is off)."""
    if opinion is None or opinion.mode == "off" or opinion.agreement == "off":
        return []
    agreement = {"agree": codes.SCT.Yes, "disagree": codes.SCT.No}.get(opinion.agreement,
                                                                       NOT_COUNTED)
    out = [hd.sr.QualitativeEvaluation(COUNT_AGREES, agreement)]
    if opinion.count:  # a count was made: its transitional flag means something
        out.append(hd.sr.QualitativeEvaluation(
            TRANSITIONAL, codes.SCT.Yes if opinion.transitional else codes.SCT.No))
    return out


def build_measurement_report(series: CTSeries, index: int | None, confidence: float,
                             model_version: str, reason: str = "",
                             opinion: Opinion | None = None) -> hd.sr.Comprehensive3DSR:
    """The TID 1500 report for slice ``index`` of ``series`` (``None``: L3 not found, with
    ``reason``); ``confidence`` is the decision's, ``opinion`` the second opinion's."""
    check_series(series)
    check_text("model_version", model_version, required=True)
    check_text("reason", reason)
    uids = ResultUIDs.derive(series.study_instance_uid, series.series_instance_uid,
                             model_version)
    tracking = hd.sr.TrackingIdentifier(uid=uids.sr_tracking, identifier="L3 slice")
    algorithm = hd.sr.AlgorithmIdentification(name=ALGORITHM_NAME, version=model_version,
                                              manufacturer=MANUFACTURER)
    site = [hd.sr.FindingSite(codes.SCT.L3Vertebra)]
    group: (hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations
            | hd.sr.MeasurementsAndQualitativeEvaluations)
    if index is not None:
        index = check_index(series, index)
        confidence = check_confidence(confidence)
        ref = reference_header(series, index)
        sl = series.slices[index]
        frame = sl.frame_number
        region = hd.sr.ImageRegion(
            graphic_type=GraphicTypeValues.POINT,
            graphic_data=np.array([[sl.columns / 2.0, sl.rows / 2.0]]),
            source_image=hd.sr.SourceImageForRegion(
                referenced_sop_class_uid=ref.SOPClassUID,
                referenced_sop_instance_uid=ref.SOPInstanceUID,
                referenced_frame_numbers=[frame] if frame is not None else None))
        group = hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=tracking, referenced_region=region,
            finding_type=codes.SCT.L3Vertebra, finding_sites=site, algorithm_id=algorithm,
            measurements=[
                hd.sr.Measurement(name=codes.DCM.Probability, value=confidence,
                                  unit=NO_UNITS, algorithm_id=algorithm),
                hd.sr.Measurement(name=codes.DCM.ImagePositionPatientZ,
                                  value=float(sl.z_mm), unit=MILLIMETRE),
            ],
            qualitative_evaluations=_evaluations(opinion) or None)
    else:
        ref = reference_header(series, len(series) // 2)
        group = hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=tracking, finding_type=codes.SCT.L3Vertebra,
            finding_sites=site, algorithm_id=algorithm,
            qualitative_evaluations=[hd.sr.QualitativeEvaluation(L3_FOUND, codes.SCT.No),
                                     *_evaluations(opinion)])
        if reason.strip():
            group[0].ContentSequence.append(hd.sr.TextContentItem(
                name=REASON, value=reason[:1024],
                relationship_type=RelationshipTypeValues.CONTAINS))
    report = hd.sr.MeasurementReport(
        observation_context=_observation_context(),
        procedure_reported=codes.SCT.ComputedTomography,
        imaging_measurements=[group],
        title=codes.cid7021.ImagingMeasurementReport)
    sr = hd.sr.Comprehensive3DSR(
        evidence=[ref], content=report, series_instance_uid=uids.sr_series,
        series_number=SR_SERIES_NUMBER, sop_instance_uid=uids.sr, instance_number=1,
        manufacturer=MANUFACTURER, is_complete=True, institution_name=None)
    sr.SeriesDescription = SERIES_DESCRIPTION
    scheme = Dataset()  # PS3.3 C.12.1.1.2.1: a private scheme is identified in the object
    scheme.CodingSchemeDesignator = LOCAL_SCHEME
    scheme.CodingSchemeName = "l3node local codes"
    scheme.CodingSchemeResponsibleOrganization = MANUFACTURER
    sr.CodingSchemeIdentificationSequence = [scheme]
    return sr
