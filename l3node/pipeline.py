"""One claimed study through the stages: select a series → localize → compose → record.

:meth:`Pipeline.run` returns the run's :class:`~l3node.state.studies.Outcome` after
recording it (with one pending export per destination when there are objects to deliver);
any exception inside a run becomes a ``failed`` outcome with its reason, so one bad study
never stops the scheduler — except a full disk (ENOSPC, EDQUOT, SQLite's "database or disk
is full"; :func:`l3node.state.storage_full`): that is the node's trouble, not the study's,
so the run raises :class:`Deferred` instead, its partial results removed and nothing
recorded, and the scheduler runs the same claim again later.
"""

from __future__ import annotations

import logging
import shutil
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from .compose import compose
from .compose.rejection import write_rejection_note
from .config import Config
from .logs import event
from .metrics import Metrics
from .select import select_series
from .series import CTSeries
from .spool import safe_name
from .state import StudyState, storage_full
from .state.studies import Outcome, delivered_before, record_outcome

if TYPE_CHECKING:
    from .localize.localizer import Localizer

log = logging.getLogger(__name__)
METRIC_RESULT = {StudyState.DONE: "found", StudyState.NOT_FOUND: "not_found"}


class Deferred(RuntimeError):
    """A run that could not finish for want of disk space: nothing was recorded and its
    partial results are gone; the claim stands, to be run again once there is room."""


class Pipeline:
    """Processes claimed studies from the spool; results go under ``results_root``."""

    def __init__(self, cfg: Config, db: sqlite3.Connection, metrics: Metrics,
                 localizer: Callable[[], Localizer], spool_root: Path) -> None:
        self.cfg = cfg
        self.db = db
        self.metrics = metrics
        self.localizer = localizer
        self.spool_root = Path(spool_root)
        self.results_root = self.spool_root / "_results"

    def run(self, study_uid: str, version: int) -> Outcome:
        t0 = time.perf_counter()
        try:
            outcome = self._localize(study_uid, version, t0)
        except Exception as exc:
            if (full := storage_full(exc)) is not None:
                self._defer(study_uid, version, full)
            event(log, "study.failed", logging.ERROR, exc_info=True, study=study_uid,
                  version=version, reason=str(exc))
            outcome = Outcome(study_uid, version, StudyState.FAILED, "error", reason=str(exc))
        outcome.seconds = time.perf_counter() - t0
        try:
            record_outcome(self.db, outcome, [d.name for d in self.cfg.destinations])
        except sqlite3.Error as exc:
            if (full := storage_full(exc)) is not None:
                self._defer(study_uid, version, full)
            raise
        result = METRIC_RESULT.get(outcome.state, "failed")
        self.metrics.studies.labels(result).inc()
        self.metrics.processing_seconds.observe(outcome.seconds)
        if result == "failed":
            self.metrics.failures.labels("processing").inc()
        return outcome

    def _out_dir(self, study_uid: str, version: int) -> Path:
        return self.results_root / safe_name(study_uid) / f"v{version}"

    def _defer(self, study_uid: str, version: int, full: BaseException) -> NoReturn:
        """Remove the run's partial results (a file cut short by ENOSPC, objects no row
        names: they would only hold the space the node needs) and raise :class:`Deferred`
        (counted as a processing failure in the metrics: an alert sees it)."""
        shutil.rmtree(self._out_dir(study_uid, version), ignore_errors=True)
        self.metrics.failures.labels("processing").inc()
        raise Deferred(f"no room on the disk: {full}") from full

    def _localize(self, study_uid: str, version: int, t0: float) -> Outcome:
        sel = select_series(self.spool_root / safe_name(study_uid), self.cfg.selection)
        if sel.series is None:
            return Outcome(study_uid, version, StudyState.FAILED, "no_series",
                           reason=f"no usable CT series ({sel.why_none()})"[:2000],
                           skipped=sel.skipped)
        series = sel.series
        loc = self.localizer()
        res = loc.run(series)
        d = res.decision
        index = d.index if res.status == "found" and d is not None else None
        out_dir = self._out_dir(study_uid, version)
        composed = compose(series, index, d.confidence if index is not None else 0.0,
                           loc.model.spec.version, out_dir,
                           reason=res.reason,
                           not_found_sc_enabled=self.cfg.results.not_found_sc,
                           anatomy=res.opinion.banner() if res.opinion else "",
                           opinion=res.opinion)
        sl = series.slices[index] if index is not None else None
        outcome = Outcome(
            study_uid, version, StudyState.DONE if sl else StudyState.NOT_FOUND, res.status,
            reason=res.reason, series_uid=series.series_instance_uid, l3_index=index,
            l3_sop_instance_uid=sl.sop_instance_uid if sl else None,
            l3_frame_number=sl.frame_number if sl else None,
            z_mm=sl.z_mm if sl else None,
            confidence=d.confidence if sl and d is not None else None, skipped=sel.skipped,
            objects=[{"kind": o.kind, "path": str(o.path),
                      "sop_instance_uid": o.sop_instance_uid,
                      "sop_class_uid": o.sop_class_uid,
                      "series_instance_uid": o.series_instance_uid}
                     for o in composed.objects])
        outcome.objects += self._rejections(series, version, outcome.objects, out_dir)
        event(log, "study.processed", study=study_uid, version=version, status=res.status,
              series=series.series_instance_uid, l3_index=index,
              l3_frame=sl.frame_number if sl else None,
              seconds=round(time.perf_counter() - t0, 2),
              evaluated=res.evaluated, slices=res.slice_count,
              anatomy=res.opinion.agreement if res.opinion else None)
        return outcome

    def _rejections(self, series: CTSeries, version: int, new: list[dict],
                    out_dir: Path) -> list[dict]:
        """Rejection notes (IHE IOCM) for the delivered older results this run's objects do
        not overwrite, each to go to the destinations that were sent that result — after
        the new objects (:attr:`Outcome.objects` order), so a PACS is never left without
        a result between the two."""
        new_uids = {o["sop_instance_uid"] for o in new}
        out = []
        study_uid = series.study_instance_uid
        for old, (dests, objects) in delivered_before(self.db, study_uid, version).items():
            written = write_rejection_note(series, objects, new_uids, old, version, out_dir)
            if written is None:
                continue
            path, note = written
            out.append({"kind": "rejection", "path": str(path),
                        "sop_instance_uid": str(note.SOPInstanceUID),
                        "sop_class_uid": str(note.SOPClassUID),
                        "series_instance_uid": str(note.SeriesInstanceUID),
                        "destinations": dests})
            event(log, "study.rejection", study=study_uid, version=version, withdrawn=old,
                  objects=sum(len(s.ReferencedSOPSequence) for s in
                              note.CurrentRequestedProcedureEvidenceSequence[0]
                              .ReferencedSeriesSequence), destinations=dests)
        return out

