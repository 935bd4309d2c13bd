"""One cohort run: find each study, retrieve its CT, run the node's pipeline, write its row.

The work happens in ``OUT/work`` — a spool and a state database of the cohort's own, never
the running node's — through the node's own stages: retrieved instances are made durable
by :class:`~l3node.spool.Spool` (C-GET and WADO-RS through a sink; C-MOVE through the
node's listener, :class:`~l3node.receive.Receiver`), a study is completed once its
retrieval has ended, claimed and run by :class:`~l3node.pipeline.Pipeline` (series
selection, localizer, KOS/SC/SR), and with ``send`` delivered by
:class:`~l3node.export.Exporter` to the configured destinations exactly as the node does.

Retrievals run ``concurrency`` at a time, ahead of the one processing thread (the
localizer is the CPU's), and a study's input is deleted once its row is written unless
``keep_input`` — so the disk holds a few studies, not the cohort.  Resumable: rows already
final in the journal (:mod:`.table`) are skipped before the PACS is asked anything, and a
study the state database has finished but the journal lacks (a kill between the two) gets
its row from the database, not a second run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from pydicom.dataset import Dataset

from ..config import Config, DestinationKind, PathsConfig
from ..dispatch import DispatchError
from ..export import Exporter
from ..logs import event
from ..metrics import Metrics
from ..pipeline import Deferred, Pipeline
from ..receive import Receiver
from ..spool import Spool
from ..state import StudyState, open_db
from ..state.studies import claim, complete_now, latest_result, resume_interrupted
from .pacs import FoundStudy, Pacs, PacsError, Retrieved, open_pacs
from .progress import Progress
from .table import FINAL, Table
from .worklist import DateRange, Wanted

if TYPE_CHECKING:
    from ..localize.localizer import Localizer

log = logging.getLogger(__name__)
FINISHED = (StudyState.DONE, StudyState.NOT_FOUND, StudyState.EXPORTED)


@dataclass(frozen=True)
class Options:
    source: str  # the configured destination that is the PACS to query
    retrieve: str = "auto"  # get | move | wado | auto
    concurrency: int = 2  # retrievals in flight
    send: bool = False  # deliver results to the configured destinations, as the node does
    keep_input: bool = False  # keep the retrieved CT in OUT/work/spool
    move_port: int | None = None  # C-MOVE: listen here instead of node.port


@dataclass
class _Job:
    request: str
    study: FoundStudy
    retrieved: Retrieved | None = None
    retrieve_s: float = 0.0
    error: str = ""


class Cohort:
    """``Cohort(cfg, out, options).run(wanted or dates)`` → the counts of the table."""

    def __init__(self, cfg: Config, out: Path, options: Options,
                 localizer: Localizer | None = None, stream: TextIO | None = None) -> None:
        if options.concurrency < 1:
            raise ValueError(f"--concurrency must be at least 1, got {options.concurrency}")
        work = Path(out) / "work"
        dest = next((d for d in cfg.destinations if d.name == options.source), None)
        if dest is None:
            raise ValueError(f"--pacs {options.source!r}: no such destination in the "
                             f"configuration (have: {[d.name for d in cfg.destinations]})")
        self.cfg = replace(cfg, paths=PathsConfig(spool=work / "spool",
                                                  state_db=work / "state.db"),
                           destinations=cfg.destinations if options.send else ())
        self.options, self.stream = options, stream
        self.pacs: Pacs = open_pacs(dest, cfg.node.ae_title, options.retrieve, cfg.tls)
        self.moving = dest.kind is DestinationKind.DIMSE and options.retrieve == "move"
        self.table = Table(out)
        self.spool = Spool(self.cfg.paths.spool, self.cfg.paths.state_db)
        self.db = open_db(self.cfg.paths.state_db)
        resume_interrupted(self.db)  # a study a kill left processing is run again
        self.metrics = Metrics()
        self._localizer = localizer
        self.pipeline = Pipeline(self.cfg, self.db, self.metrics, lambda: self.localizer,
                                 self.cfg.paths.spool)
        self.exporter = Exporter(self.cfg, self.db, self.metrics) if options.send else None
        self.receiver: Receiver | None = None

    @property
    def localizer(self) -> Localizer:
        if self._localizer is None:
            from ..localize.localizer import Localizer

            self._localizer = Localizer.open(self.cfg.model)
        return self._localizer

    # -- the run ---------------------------------------------------------------------------
    def run(self, wanted: list[Wanted] | None = None,
            dates: DateRange | None = None) -> dict[str, int]:
        try:
            if self.moving:  # the PACS sends to the node's AE title: listen as it
                node = self.cfg.node if self.options.move_port is None else replace(
                    self.cfg.node, port=self.options.move_port)
                self.receiver = Receiver(node, self.spool, metrics=self.metrics)
                self.receiver.start()
            if self.exporter is not None:
                self.exporter.run_due()  # deliveries an earlier run left pending
            jobs, skipped = self._jobs(wanted, dates)
            progress = Progress(len(jobs) + skipped, skipped, self.stream)
            progress.update()
            self._work(jobs, progress)
            progress.close()
            if not self.options.keep_input:
                self._purge_finished()
        finally:
            self.close()
        return self.table.counts()

    def _purge_finished(self) -> None:
        """Delete the input of every study with a final row that is still spooled — left
        by a kill between a row and its study's purge (that study is skipped now)."""
        for uid, row in self.table.rows.items():
            if row.get("status") in FINAL and self.spool.study_folder(uid).exists():
                self.spool.purge(uid)

    def close(self) -> None:
        if self.receiver is not None:
            self.receiver.stop()
            self.receiver = None
        self.spool.close()
        self.db.close()

    def _jobs(self, wanted: list[Wanted] | None,
              dates: DateRange | None) -> tuple[list[_Job], int]:
        """The studies still to do, and how many are done already (skipped)."""
        jobs: list[_Job] = []
        skipped = 0
        if dates is not None:
            request = f"dates:{dates.dicom}:{dates.modality}"
            for st in self.pacs.find_range(dates):
                if self.table.done(st.study_uid):
                    skipped += 1
                else:
                    jobs.append(_Job(request, st))
        for w in wanted or []:
            if self.table.done(w.key) or self.table.done_request(w.key):
                skipped += 1
                continue
            try:
                found = self.pacs.find(w)
            except (PacsError, DispatchError, OSError) as exc:
                self._row(w.key, FoundStudy(w.study_uid, w.accession), "error",
                          f"query failed: {exc}")
                continue
            if not found:
                self._row(w.key, FoundStudy(w.study_uid, w.accession), "missing",
                          "not in the PACS (the query found no such study)")
            jobs += [_Job(w.key, st) for st in found if not self.table.done(st.study_uid)]
        return jobs, skipped

    def _work(self, jobs: list[_Job], progress: Progress) -> None:
        """Retrieve ``concurrency`` ahead; process each as its retrieval ends."""
        todo: Iterator[_Job] = iter(jobs)
        running: dict[Future, _Job] = {}
        with ThreadPoolExecutor(self.options.concurrency,
                                thread_name_prefix="cohort-retrieve") as pool:
            def refill() -> None:
                while len(running) < self.options.concurrency:
                    job = next(todo, None)
                    if job is None:
                        return
                    if self._finished_before(job):  # processed, row not written: a kill
                        progress.update(job_status(self.table, job))
                        continue
                    running[pool.submit(self._retrieve, job)] = job

            refill()
            while running:
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for fut in finished:
                    job = running.pop(fut)
                    fut.result()
                    progress.update(self._process(job))
                refill()

    # -- one study -------------------------------------------------------------------------
    def _finished_before(self, job: _Job) -> bool:
        res = latest_result(self.db, job.study.study_uid)
        if res is None or res["state"] not in FINISHED or res["status"] is None:
            return False
        self._row_from_db(job, res, 0.0)
        return True

    def _retrieve(self, job: _Job) -> None:
        t0 = time.perf_counter()
        try:
            job.retrieved = self.pacs.retrieve(job.study.study_uid, self._sink)
        except (PacsError, DispatchError, OSError) as exc:
            job.error = f"retrieval failed: {exc}"
        except Exception as exc:  # a library's surprise must not end the cohort
            job.error = f"retrieval failed: {type(exc).__name__}: {exc}"
        job.retrieve_s = time.perf_counter() - t0

    def _sink(self, data: bytes, ds: Dataset) -> None:
        self.spool.store(data, sop_class_uid=str(ds.SOPClassUID),
                         sop_instance_uid=str(ds.SOPInstanceUID),
                         study_instance_uid=str(ds.StudyInstanceUID),
                         series_instance_uid=str(ds.SeriesInstanceUID),
                         calling_ae_title=self.options.source[:16])

    def _process(self, job: _Job) -> str:
        uid = job.study.study_uid
        r = job.retrieved
        if job.error:
            return self._row(job.request, job.study, "error", job.error, job)
        assert r is not None
        if r.failed:
            return self._row(job.request, job.study, "error",
                             f"retrieval incomplete: {r.failed} of {r.failed + r.stored} CT "
                             "instances did not arrive", job)
        if r.series == 0 or latest_result(self.db, uid) is None:
            return self._row(job.request, job.study, "no_series",
                             "the PACS holds no CT series of this study", job)
        complete_now(self.db, uid)
        version = claim(self.db, uid)
        if version is None:  # finished by an earlier run (its row is rebuilt below)
            res = latest_result(self.db, uid)
            assert res is not None
            return self._row_from_db(job, res, job.retrieve_s)
        try:
            outcome = self.pipeline.run(uid, version)
        except Deferred as exc:  # a full disk: the next run tries again (claim resumed)
            return self._row(job.request, job.study, "error", str(exc), job)
        if self.exporter is not None:
            self.exporter.run_due()
        res = latest_result(self.db, uid)
        assert res is not None
        status = self._row_from_db(job, res, job.retrieve_s)
        if not self.options.keep_input and status in FINAL:
            self.spool.purge(uid)
        event(log, "cohort.study", study=uid, status=outcome.status,
              seconds=round(outcome.seconds, 2))
        return status

    def _row_from_db(self, job: _Job, res: dict, retrieve_s: float) -> str:
        """The row of a study the pipeline ran: its recorded result (status found,
        not_found, no_series or error, with the pipeline's reason)."""
        job.retrieve_s = retrieve_s
        return self._row(job.request, job.study, res["status"], res["reason"] or "", job, res)

    def _row(self, request: str, study: FoundStudy, status: str, reason: str,
             job: _Job | None = None, res: dict | None = None) -> str:
        res = res or {}
        self.table.add({
            "request": request, "study_instance_uid": study.study_uid,
            "accession_number": study.accession, "status": status, "reason": reason,
            "series_instance_uid": res.get("series_instance_uid"),
            "l3_sop_instance_uid": res.get("l3_sop_instance_uid"),
            "l3_frame_number": res.get("l3_frame_number"),
            "l3_index": res.get("l3_index"),
            "z_mm": None if res.get("z_mm") is None else round(res["z_mm"], 2),
            "confidence": None if res.get("confidence") is None else round(
                res["confidence"], 4),
            "instances": (job.retrieved.stored if job and job.retrieved else None),
            "retrieve_s": round(job.retrieve_s, 2) if job else None,
            "process_s": None if res.get("processing_s") is None else round(
                res["processing_s"], 2),
            "version": res.get("version"),
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        })
        return status


def job_status(table: Table, job: _Job) -> str:
    row = table.rows.get(job.study.study_uid)
    return row["status"] if row else "error"

