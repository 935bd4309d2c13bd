"""The checks every builder runs on its inputs before it builds anything.

A result object in the PACS is read by a radiologist as the node's word; one built from a
wrong index (another patient's slice count, an off-by-one from a caller) or a confidence that
is not a probability is worse than none.  So each builder rejects such input with a
``ValueError`` (``TypeError`` for the wrong kind of value) that says which argument, what was
expected and what came — in highdicom's words, so a stack trace reads the same throughout.
"""

from __future__ import annotations

import math
import numbers
from pathlib import Path

import pydicom

from ..series import CTSeries


def check_series(series: CTSeries) -> CTSeries:
    """A series with slices and a study to put the results in."""
    if not isinstance(series, CTSeries):
        raise TypeError(f'Argument "series" must be a CTSeries, got {type(series).__name__}.')
    if len(series) == 0:
        raise ValueError(f'Argument "series" ({series.series_instance_uid or "no UID"}) has '
                         "no slices: there is nothing to compose a result from.")
    if not series.study_instance_uid or not series.series_instance_uid:
        raise ValueError('Argument "series" must have a Study and a Series Instance UID: '
                         "the results are filed under them.")
    return series


def check_index(series: CTSeries, index: object) -> int:
    """A slice index of ``series`` (sorted superior first, as the localizer numbers them)."""
    if isinstance(index, bool) or not isinstance(index, numbers.Integral):
        raise TypeError(f'Argument "index" must be an integer slice index, got {index!r}.')
    n = len(series)
    if not 0 <= int(index) < n:
        raise ValueError(f'Argument "index" must be in [0, {n}) for series '
                         f"{series.series_instance_uid} of {n} slices, got {index}.")
    return int(index)


def check_confidence(confidence: object) -> float:
    """A probability: a finite number in [0, 1]."""
    if isinstance(confidence, bool) or not isinstance(confidence, numbers.Real):
        raise TypeError(f'Argument "confidence" must be a number, got {confidence!r}.')
    c = float(confidence)
    if not (math.isfinite(c) and 0.0 <= c <= 1.0):
        raise ValueError(f'Argument "confidence" must be in [0, 1], got {confidence}.')
    return c


def check_text(name: str, value: object, required: bool = False) -> str:
    """A string argument (model version, reason, anatomy line); ``required``: non-empty."""
    if not isinstance(value, str):
        raise TypeError(f'Argument "{name}" must be a str, got {type(value).__name__}.')
    if required and not value.strip():
        raise ValueError(f'Argument "{name}" must not be empty.')
    return value


def reference_header(series: CTSeries, index: int) -> pydicom.Dataset:
    """The header (no pixels) of slice ``index``, checked to be the slice the series names:
    the results copy its patient and study, and the key object points at it."""
    sl = series.slices[index]
    ds = pydicom.dcmread(Path(sl.path), stop_before_pixels=True)
    uid = str(ds.get("SOPInstanceUID", "") or "")
    if uid and uid != sl.sop_instance_uid:
        raise ValueError(f"{Path(sl.path).name}: SOP Instance UID {uid} "
                         f"is not slice {index}'s {sl.sop_instance_uid} (the file changed).")
    return ds
