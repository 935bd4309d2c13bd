"""Build the result objects (highdicom), in the input study, in new series.

One builder per object, each checking its inputs and returning a finished highdicom object:

* :func:`build_axial_sc` — Secondary Capture 1, the L3 axial slice with a burnt-in banner;
* :func:`build_sagittal_sc` — Secondary Capture 2, a sagittal reformat with L3 in red;
* :func:`build_key_object` — a Key Object Selection (113000 "Of Interest") referencing the
  original L3 CT slice and the first SC;
* :func:`build_not_found_sc` — when L3 is not found: no KOS, and optionally one SC saying so;
* :func:`build_measurement_report` — a TID 1500 Measurement Report (Comprehensive 3D SR), for
  found and not found: the slice, the confidence and the second opinion as coded content.

:func:`compose` runs the builders a decision needs and writes their objects; every object is
built before the first is written, so bad input leaves no object half-written.  UIDs derive
from (input study, input series, model version), so re-sending never duplicates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, get_args

import pydicom

from ..series import CTSeries
from ..views import window8
from .captures import build_axial_sc, build_not_found_sc, build_sagittal_sc
from .identity import (
    DISCLAIMER,
    KO_SERIES_NUMBER,
    MANUFACTURER,
    SC_SERIES_NUMBER,
    SR_SERIES_NUMBER,
    ResultUIDs,
)
from .key_object import build_key_object
from .report import build_measurement_report

if TYPE_CHECKING:
    from ..localize.opinion import Opinion

__all__ = [
    "DISCLAIMER",
    "KO_SERIES_NUMBER",
    "MANUFACTURER",
    "SC_SERIES_NUMBER",
    "SR_SERIES_NUMBER",
    "Composed",
    "ComposedObject",
    "Kind",
    "ResultUIDs",
    "build_axial_sc",
    "build_key_object",
    "build_measurement_report",
    "build_not_found_sc",
    "build_sagittal_sc",
    "compose",
    "window8",
]

Kind = Literal["kos", "sc-axial", "sc-sagittal", "sc-not-found", "sr"]


@dataclass(frozen=True)
class ComposedObject:
    """One object written: what it is, where, and its identity (for export and the web UI)."""

    kind: Kind
    path: Path
    sop_instance_uid: str
    sop_class_uid: str
    series_instance_uid: str = ""

    def __post_init__(self) -> None:
        if self.kind not in get_args(Kind):
            raise ValueError(f'Argument "kind" must be one of {get_args(Kind)}, '
                             f"got {self.kind!r}.")


@dataclass
class Composed:
    """The objects :func:`compose` wrote, in writing order: the key image (axial or
    not-found SC) first, then the report, the KOS last."""

    objects: list[ComposedObject] = field(default_factory=list)

    @property
    def files(self) -> list[Path]:
        """The written files, in :attr:`objects` order (what the node exports)."""
        return [o.path for o in self.objects]

    def of_kind(self, kind: Kind) -> ComposedObject | None:
        """The object of ``kind``, or ``None`` when none was composed."""
        return next((o for o in self.objects if o.kind == kind), None)


def compose(series: CTSeries, index: int | None, confidence: float, model_version: str,
            out_dir: Path, reason: str = "", not_found_sc_enabled: bool = True,
            anatomy: str = "", opinion: Opinion | None = None) -> Composed:
    """Write the result objects for one localized series into ``out_dir``.

    ``index`` is the L3 slice (sorted superior first) or ``None`` when L3 was not found;
    ``confidence`` is used only then.  ``anatomy`` is the second opinion's one line
    (:meth:`l3node.localize.opinion.Opinion.banner`), burnt into the banners and added to the
    key object's text so the radiologist sees whether the vertebra count agrees; ``opinion``
    itself goes into the report as coded evaluations.  The report is composed for found and
    not found alike (``not_found_sc_enabled`` is about the SC only).  Raises
    ``ValueError``/``TypeError`` from the builders on bad input, before writing anything."""
    out_dir.mkdir(parents=True, exist_ok=True)
    built: list[tuple[Kind, pydicom.Dataset]] = []
    if index is None:
        if not_found_sc_enabled:
            built.append(("sc-not-found",
                          build_not_found_sc(series, reason, model_version, anatomy)))
        built.append(("sr", build_measurement_report(series, None, 0.0, model_version,
                                                     reason, opinion)))
    else:
        sc1 = build_axial_sc(series, index, confidence, model_version, anatomy)
        sc2 = build_sagittal_sc(series, index, model_version)
        sr = build_measurement_report(series, index, confidence, model_version, reason,
                                      opinion)
        kos = build_key_object(series, index, confidence, model_version, sc1, anatomy)
        built += [("sc-axial", sc1), ("sc-sagittal", sc2), ("sr", sr), ("kos", kos)]
    return Composed([ComposedObject(kind, _save(ds, out_dir), str(ds.SOPInstanceUID),
                                    str(ds.SOPClassUID), str(ds.SeriesInstanceUID))
                     for kind, ds in built])


def _save(ds: pydicom.Dataset, out_dir: Path) -> Path:
    """Write ``ds`` as a DICOM file (preamble and file meta) named by modality and UID."""
    path = out_dir / f"{ds.Modality}-{ds.SOPInstanceUID}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path
