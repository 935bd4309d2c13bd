"""Prometheus metrics of one node (``/metrics`` on the status server).

Each node owns its own registry, so several nodes in one process (the
tests) do not share counters.  Counters count events since the process started — Prometheus
handles the reset at a restart; the queue depth is read from the state database at scrape
time, so it is right even for work left over from before a restart.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from .state import StudyState
from .state.views import pending_exports, state_counts

# From a 5 mm study on a fast machine to a 1 mm whole-body study on 2 busy cores.
LATENCY_BUCKETS = (1, 2, 5, 10, 15, 20, 30, 45, 60, 120, 300, 600, 1800)

WAITING = (StudyState.RECEIVING, StudyState.COMPLETE, StudyState.PROCESSING)

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]


class Metrics:
    """The node's counters, histograms and gauges, in a private registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.instances = Counter(
            "l3node_instances_received", "C-STORE requests answered, by outcome "
            "(stored, duplicate, ignored, refused)", ["outcome"], registry=r)
        self.studies = Counter(
            "l3node_studies_processed", "Studies run through the localizer, by result "
            "(found, not_found, failed)", ["result"], registry=r)
        self.processing_seconds = Histogram(
            "l3node_processing_seconds", "Series selection + localization + composing results",
            buckets=LATENCY_BUCKETS, registry=r)
        self.latency_seconds = Histogram(
            "l3node_result_latency_seconds", "Last instance received to results delivered to "
            "every destination (includes the quiet period)", buckets=LATENCY_BUCKETS,
            registry=r)
        self.exports = Counter(
            "l3node_exports", "Result sets sent, by destination and outcome (sent, retry, "
            "failed)", ["destination", "outcome"], registry=r)
        self.failures = Counter(
            "l3node_failures", "Failures by stage (receive, processing, export, metrics)",
            ["stage"], registry=r)
        self.queue = Gauge("l3node_queue_depth", "Studies waiting, by state", ["state"],
                           registry=r)
        self.pending_exports = Gauge("l3node_pending_exports",
                                     "Result sets waiting for a destination", registry=r)
        self._state_db: Callable[[], sqlite3.Connection] | None = None

    def watch_queue(self, connect: Callable[[], sqlite3.Connection]) -> None:
        """Read the queue depth from the state database (a fresh connection per scrape)."""
        self._state_db = connect

    def render(self) -> bytes:
        """The exposition text, queue depth refreshed first."""
        if self._state_db is not None:
            db = self._state_db()
            try:
                counts = state_counts(db)
                for state in WAITING:
                    self.queue.labels(state).set(counts.get(state, 0))
                self.pending_exports.set(pending_exports(db))
            except sqlite3.Error:
                self.failures.labels("metrics").inc()
            finally:
                db.close()
        return generate_latest(self.registry)
