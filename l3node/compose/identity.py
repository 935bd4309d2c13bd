"""Who the result objects are: their UIDs, series numbers, manufacturer and content time.

UIDs derive from (input study, input series, model version, object kind), so composing the
same answer twice — a retry, a re-sent study — gives the same objects and never a duplicate
in the PACS; a new model version gives new ones.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from ..uids import derived_uid

MANUFACTURER = "l3node"
SC_SERIES_NUMBER = 9301
KO_SERIES_NUMBER = 9302
SR_SERIES_NUMBER = 9303
SERIES_DESCRIPTION = "L3 (automated)"
DISCLAIMER = "not for diagnosis"


@dataclass(frozen=True)
class ResultUIDs:
    """The series and SOP Instance UIDs of every object composed for one input series."""

    sc_series: str
    ko_series: str
    sc_axial: str
    sc_sagittal: str
    sc_not_found: str
    ko: str
    sr_series: str
    sr: str
    sr_tracking: str  # the SR finding's Tracking UID: the same finding across re-sends

    @classmethod
    def derive(cls, study_uid: str, series_uid: str, model_version: str) -> ResultUIDs:
        def u(kind: str) -> str:
            return derived_uid("l3node-result", study_uid, series_uid, model_version, kind)

        return cls(u("sc-series"), u("ko-series"), u("sc-axial"), u("sc-sagittal"),
                   u("sc-not-found"), u("ko"), u("sr-series"), u("sr"), u("sr-tracking"))


def device_uid() -> str:
    """The observer device of every key object and report: this software, the same on
    every node."""
    return derived_uid("l3node-device")


def common_sc_attributes() -> dict[str, Any]:
    """Keyword arguments every Secondary Capture gets: manufacturer, orientation, now."""
    now = dt.datetime.now()
    return {
        "manufacturer": MANUFACTURER,
        "patient_orientation": ("L", "P"),
        "content_date": now.date(),
        "content_time": now.time().replace(microsecond=0),
    }
