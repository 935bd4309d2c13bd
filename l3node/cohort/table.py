"""The cohort's answer: one row per study, in a journal that makes a run resumable.

Each finished study is appended to ``cohort.jsonl`` and flushed to disk before the next one
starts, so a run killed at any point keeps every row it wrote; ``cohort.csv`` is rewritten
(atomically) from the journal after every row, for the spreadsheet.  A later run reads the
journal and skips the studies whose latest row is final (:data:`FINAL`); the rest — not in
the PACS, retrieval or processing errors — are tried again, and their new row replaces the
old one in the CSV.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

# A study with one of these is done: the localizer gave its answer about that study.
FINAL = frozenset({"found", "not_found", "no_series"})
COLUMNS = ("request", "study_instance_uid", "accession_number", "status", "reason",
           "series_instance_uid", "l3_sop_instance_uid", "l3_frame_number", "l3_index",
           "z_mm", "confidence", "instances", "retrieve_s", "process_s", "version",
           "finished_at")


class Table:
    """``OUT/cohort.jsonl`` (the journal) and ``OUT/cohort.csv`` (the table)."""

    def __init__(self, out: Path) -> None:
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.journal = self.out / "cohort.jsonl"
        self.csv = self.out / "cohort.csv"
        self.rows: dict[str, dict] = {}  # latest row per study (or per unanswered request)
        if self.journal.exists():
            self._read()

    def _read(self) -> None:
        lines = self.journal.read_bytes().split(b"\n")
        for n, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                if n == len(lines) - 1:  # a line cut by a kill mid-write: that row is redone
                    continue
                raise ValueError(f"{self.journal}, line {n + 1}: not a JSON row") from None
            self.rows[_key(row)] = row

    def done(self, key: str) -> bool:
        row = self.rows.get(key)
        return row is not None and row.get("status") in FINAL

    def done_request(self, request: str) -> bool:
        """Every study found for ``request`` (a UID or ``accession:…``) has a final row."""
        mine = [r for r in self.rows.values() if r.get("request") == request]
        return bool(mine) and all(r.get("status") in FINAL for r in mine)

    def add(self, row: dict) -> None:
        """Append ``row`` durably, then rewrite the CSV; an unanswered request's row is
        replaced by its studies' rows once they exist."""
        row = {k: row.get(k) for k in COLUMNS}
        with self.journal.open("ab") as f:
            f.write(json.dumps(row, sort_keys=True).encode() + b"\n")
            f.flush()
            os.fsync(f.fileno())
        if row["study_instance_uid"]:
            self.rows.pop(f"request:{row['request']}", None)
        self.rows[_key(row)] = row
        self._write_csv()

    def _write_csv(self) -> None:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
        w.writeheader()
        for row in self.rows.values():
            w.writerow({k: "" if row.get(k) is None else row[k] for k in COLUMNS})
        tmp = self.csv.with_name(".cohort.csv.part")
        tmp.write_text(buf.getvalue())
        os.replace(tmp, self.csv)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for row in self.rows.values():
            out[row["status"]] = out.get(row["status"], 0) + 1
        return out


def _key(row: dict) -> str:
    return row.get("study_instance_uid") or f"request:{row.get('request', '')}"
