"""Where a search's Optuna study lives, and what keeps a shared one honest.

By default a run owns its study: SQLite in ``RUN/optuna.db``, which no other process touches,
so a trial found RUNNING at start-up was left by an interrupted run and can be failed at once.
With ``--storage URL`` (PostgreSQL for a cluster) the study is *shared*: other workers, on
this machine or others, may be running trials in it right now, so nothing is failed at
start-up.  A dead worker is found by Optuna's heartbeat instead — each running trial writes a
heartbeat every ``heartbeat_s`` seconds; one silent for ``grace_s`` is marked FAILED by the next
worker that looks, and :class:`~optuna.storages.RetryHeartbeatStaleTrialCallback` queues the
same variables again as a WAITING trial (``system_attrs``: ``failed_trial``,
``retry_history``), which the next free worker takes.  Heartbeats are on for the private
SQLite study too, for the worker processes of ``--workers N``.

Every worker of one study must train on the same cases, folds and settings, or their
objective values are not comparable: the first one records a fingerprint of its setup in the
study (user attribute ``l3node_setup``) and any later one with another setup is refused.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import optuna
import sqlalchemy.exc
from sqlalchemy.engine import make_url

SETUP_ATTR = "l3node_setup"


@dataclass(frozen=True)
class StudyStore:
    """The study's database and its liveness settings (picklable: workers get a copy).

    ``url`` None is the run's own SQLite file (:meth:`resolve` fills it in and marks it
    ``private``); ``heartbeat_s``/``grace_s`` are Optuna's ``heartbeat_interval`` and
    ``grace_period`` (grace None: Optuna's default, twice the heartbeat); ``max_retry`` is how
    often one set of variables is retried after its worker died (then it stays FAILED and a
    new trial takes its place in the budget).
    """

    url: str | None = None
    study_name: str | None = None
    heartbeat_s: int = 60
    grace_s: int | None = None
    max_retry: int = 3
    private: bool = False

    def __post_init__(self) -> None:
        if self.heartbeat_s <= 0 or (self.grace_s is not None
                                     and self.grace_s <= self.heartbeat_s):
            raise ValueError(f"heartbeat must be > 0 s and the grace period longer than it, "
                             f"got {self.heartbeat_s} s / {self.grace_s} s")

    @property
    def shared(self) -> bool:
        """Whether other processes may be working on the study (``--storage`` says so)."""
        return self.url is not None and not self.private

    def resolve(self, run: Path) -> StudyStore:
        """The same store with the run's own SQLite file where no URL was given."""
        if self.url is not None:
            return self
        return replace(self, url=f"sqlite:///{(run / 'optuna.db').resolve()}", private=True)

    def open(self) -> optuna.storages.RDBStorage:
        """Optuna's RDBStorage with heartbeats and the retry of trials whose worker died."""
        assert self.url is not None, "resolve() the store first"
        if make_url(self.url).get_backend_name() == "sqlite":
            # several worker processes write one file: wait for its lock rather than fail
            engine: dict = {"connect_args": {"timeout": 60}}
        else:
            # a trial lasts minutes to hours: check a pooled connection before using it
            engine = {"pool_pre_ping": True}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=self.max_retry)
            for attempt in range(6):
                try:
                    return optuna.storages.RDBStorage(
                        self.url, engine_kwargs=engine, heartbeat_interval=self.heartbeat_s,
                        grace_period=self.grace_s, heartbeat_stale_trial_callback=retry)
                except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
                    # workers started together on an empty database all create Optuna's
                    # tables; all but one collide (a duplicate type or version row): by the
                    # next try the tables are there
                    if attempt == 5:
                        raise
                    time.sleep(random.uniform(0.2, 1.0) * (attempt + 1))
        raise AssertionError("unreachable")

    @property
    def poll_s(self) -> float:
        """How often an idle worker looks for stale or re-queued trials."""
        return float(max(1, min(self.heartbeat_s, 10)))

    def describe(self) -> str:
        """The URL for logs, without its password."""
        return make_url(self.url).render_as_string(hide_password=True) if self.url else "-"


def check_setup(study: optuna.Study, setup: dict) -> None:
    """Record ``setup`` in a new study; refuse to join one that was started with another."""
    blob = json.dumps(setup, sort_keys=True, default=str)
    mine = {"sha256": hashlib.sha256(blob.encode()).hexdigest()[:16], **json.loads(blob)}
    theirs = study.user_attrs.get(SETUP_ATTR)
    if theirs is None:
        study.set_user_attr(SETUP_ATTR, mine)
        return
    if theirs["sha256"] != mine["sha256"]:
        differ = sorted(k for k in set(mine) | set(theirs)
                        if k != "sha256" and mine.get(k) != theirs.get(k))
        raise SystemExit(f"study {study.study_name!r} was started with another setup "
                         f"(differs in: {', '.join(differ)}): give the same data and options, "
                         f"or another --study-name")
