"""What a cohort asks for: the researcher's list of studies, or a date range to query.

A cohort is given as a CSV file (one study per row, by Study Instance UID or by accession
number — the columns a PACS export or a research database usually has) or as a study date
range with a modality.  Reading the file is strict: a file without a usable column, or a
row with an invalid UID, is a precise error before anything is asked of the PACS.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path

# PS3.5 9.1: components of digits, no leading zero, dot-separated, at most 64 characters.
_UID_RE = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
UID_COLUMNS = ("studyinstanceuid", "study_instance_uid", "study_uid", "studyuid", "uid")
ACCESSION_COLUMNS = ("accessionnumber", "accession_number", "accession")


class WorklistError(ValueError):
    """The cohort's list or range is unusable; the message says where and why."""


@dataclass(frozen=True)
class Wanted:
    """One line of the researcher's list: a study by UID, or by accession number."""

    study_uid: str = ""
    accession: str = ""

    @property
    def key(self) -> str:
        return self.study_uid or f"accession:{self.accession}"


@dataclass(frozen=True)
class DateRange:
    """StudyDate from..to (inclusive) and the modality the study must contain."""

    first: date
    last: date
    modality: str = "CT"

    @property
    def dicom(self) -> str:
        """The range as a DICOM DA range matcher (``YYYYMMDD-YYYYMMDD``)."""
        return f"{self.first:%Y%m%d}-{self.last:%Y%m%d}"


def is_uid(value: str) -> bool:
    return len(value) <= 64 and bool(_UID_RE.match(value))


def read_worklist(path: Path) -> list[Wanted]:
    """The studies of a CSV file with a header naming a Study Instance UID or an accession
    number column (case and ``_`` ignored); duplicates are kept once, in file order."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise WorklistError(f"{path}: cannot read the study list: {exc}") from exc
    rows = list(csv.reader(text.splitlines()))
    if not rows:
        raise WorklistError(f"{path}: the study list is empty")
    header = [h.strip().lower().replace(" ", "") for h in rows[0]]
    uid_col = next((header.index(c) for c in UID_COLUMNS if c in header), None)
    acc_col = next((header.index(c) for c in ACCESSION_COLUMNS if c in header), None)
    if uid_col is None and acc_col is None:
        raise WorklistError(
            f"{path}: the header {rows[0]!r} names no StudyInstanceUID or AccessionNumber "
            "column")
    out: dict[str, Wanted] = {}
    for n, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        uid = row[uid_col].strip() if uid_col is not None and uid_col < len(row) else ""
        acc = row[acc_col].strip() if acc_col is not None and acc_col < len(row) else ""
        if uid and not is_uid(uid):
            raise WorklistError(f"{path}, line {n}: {uid!r} is not a valid UID")
        if not uid and not acc:
            raise WorklistError(f"{path}, line {n}: neither a Study Instance UID nor an "
                                "accession number")
        if acc and len(acc) > 16:
            raise WorklistError(f"{path}, line {n}: accession number {acc!r} is longer "
                                "than 16 characters")
        w = Wanted(uid, "" if uid else acc)
        out.setdefault(w.key, w)
    if not out:
        raise WorklistError(f"{path}: no study in the list")
    return list(out.values())


def parse_range(text: str, modality: str = "CT") -> DateRange:
    """``YYYY-MM-DD..YYYY-MM-DD`` (or one day) as a :class:`DateRange`."""
    first_s, _, last_s = text.partition("..")
    try:
        first = date.fromisoformat(first_s.strip())
        last = date.fromisoformat((last_s or first_s).strip())
    except ValueError:
        raise WorklistError(f"--dates: expected YYYY-MM-DD..YYYY-MM-DD, got {text!r}") from None
    if last < first:
        raise WorklistError(f"--dates: {last} is before {first}")
    if not re.fullmatch(r"[A-Z]{2}", modality):
        raise WorklistError(f"--modality: a two-letter DICOM modality, got {modality!r}")
    return DateRange(first, last, modality)
