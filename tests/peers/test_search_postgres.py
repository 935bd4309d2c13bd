"""Distributed search on a real PostgreSQL: workers of several runs share one study.

A throw-away PostgreSQL cluster (the Debian package's ``initdb``/``pg_ctl``, as the
``postgres`` user when the tests run as root: PostgreSQL refuses to run as root) on a free
loopback port holds one study.  A search-only worker is killed with SIGKILL in the middle of
a trial; a run with ``--workers 2`` then joins the study: the heartbeat fails the dead
worker's trial, its variables are re-queued and trained by a surviving worker, the budget
ends with exactly the trials asked for, and only that run cross-validates and writes the
model.  Racing workers with a trivial objective check that the budget is exact however the
trials are contended.  Tiny budget (64-pixel inputs, 2 epochs): about a minute on 2 cores.
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from l3node.phantom import StudyRequest, generate_study

from ..support import free_port, wait_for

STUDY = "shared-tiny"
# every invocation joins the same study with the same setup (epochs included)
COMMON = ("--budget", "tiny", "--search", "hyper+imbalance", "--input-mode", "context",
          "--device", "cpu", "--epochs", "2", "--study-name", STUDY,
          "--heartbeat", "1", "--grace", "4")


def _pg_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parts[4]))
    assert found, "PostgreSQL is required (Debian package postgresql): run `make peers`"
    return Path(found[-1]).parent


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    """A PostgreSQL server on 127.0.0.1:PORT with an empty database; its URL.  Stopped and
    deleted afterwards."""
    bin_dir = _pg_bin()
    as_user: list[str] = []
    owner = None
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root without a 'postgres' user to run PostgreSQL as "
                        "(the Debian package creates it)")
        as_user = ["runuser", "-u", "postgres", "--"]
    root = Path(tempfile.mkdtemp(prefix="l3node-pg-"))  # not under pytest's 0700 root tmp
    if owner is not None:
        os.chown(root, owner.pw_uid, owner.pw_gid)
    data, port = root / "data", free_port()

    def pg(*cmd: str) -> subprocess.CompletedProcess:
        return subprocess.run([*as_user, *cmd], capture_output=True, text=True, timeout=120)

    try:
        res = pg(str(bin_dir / "initdb"), "-D", str(data), "-U", "l3node", "--auth=trust",
                 "-E", "UTF8", "--no-sync")
        assert res.returncode == 0, res.stdout + res.stderr
        opts = (f"-h 127.0.0.1 -p {port} -k {root} -c fsync=off -c synchronous_commit=off "
                f"-c full_page_writes=off")
        res = pg(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"),
                 "-o", opts, "-w", "-t", "60", "start")
        assert res.returncode == 0, res.stdout + res.stderr + _read(root / "server.log")
        res = subprocess.run([str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port),
                              "-U", "l3node", "optuna"], capture_output=True, text=True,
                             timeout=60)
        assert res.returncode == 0, res.stdout + res.stderr
        yield f"postgresql://l3node@127.0.0.1:{port}/optuna"
    finally:
        if (data / "postmaster.pid").exists():
            pg(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


def _read(path: Path) -> str:
    return path.read_text() if path.is_file() else ""


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six 5 mm phantoms (one chest without L3) as the in-process tiny search uses, at 128²
    (twice as fast to render; the tiny budget trains on 64² anyway)."""
    root = tmp_path_factory.mktemp("pg-set")
    for k in range(6):
        generate_study(root / f"case-{k}", StudyRequest(
            seed=500, index=k, preset="abdomen-pelvis" if k != 5 else "chest", slice_mm=5.0,
            transitional_rate=0.0, matrix=128), workers=2)
    return root


def _search(data: Path, run: Path, cache: Path, storage: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "training", "search", "--data", str(data), "--run", str(run),
            "--cache", str(cache), "--storage", storage, *COMMON, *extra]


def _trials(storage: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=STUDY, storage=storage).get_trials(deepcopy=False)


def _heartbeats(storage: str, trial: optuna.trial.FrozenTrial) -> int:
    """The heartbeats stored for ``trial`` (Optuna's table: no API reads it)."""
    import psycopg

    with psycopg.connect(storage) as conn:
        row = conn.execute("SELECT count(*) FROM trial_heartbeats WHERE trial_id = %s",
                           (trial._trial_id,)).fetchone()
    return int(row[0]) if row else 0


@pytest.mark.slow
def test_workers_share_one_postgres_study_and_a_killed_workers_trial_is_retried(
        postgres, phantoms, tmp_path):
    cache = tmp_path / "cache"
    # 1. A search-only worker alone, killed (SIGKILL: no clean-up) in the middle of its trial.
    log_a = (tmp_path / "a.log").open("w")
    a = subprocess.Popen(_search(phantoms, tmp_path / "run-a", cache, postgres,
                                 "--trials", "3", "--search-only"),
                         stdout=log_a, stderr=subprocess.STDOUT)

    def beating_trial() -> optuna.trial.FrozenTrial | None:
        """The worker's running trial once its first heartbeat is stored."""
        try:
            ts = _trials(postgres)
        except KeyError:  # the study is not created yet
            return None
        t = next((t for t in ts if t.state == TrialState.RUNNING
                  and t.user_attrs.get("worker", "").endswith(f":{a.pid}")), None)
        return t if t is not None and _heartbeats(postgres, t) else None

    try:
        wait_for(beating_trial, 300, "the first worker's trial to start", every=0.1)
    finally:
        a.send_signal(signal.SIGKILL)
        a.wait(30)
        log_a.close()
    (killed,) = _trials(postgres)
    assert killed.state == TrialState.RUNNING, _read(tmp_path / "a.log")[-3000:]
    assert killed.user_attrs["worker"].endswith(f":{a.pid}")

    # 2. A full run with two pinned worker processes joins the study by name.
    run = tmp_path / "run-b"
    res = subprocess.run(_search(phantoms, run, cache, postgres, "--trials", "3",
                                 "--workers", "2"),
                         capture_output=True, text=True, timeout=900)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-4000:]
    trials = _trials(postgres)
    numbers = [t.number for t in trials]
    assert len(set(numbers)) == len(numbers), numbers
    by_state = {s: [t for t in trials if t.state == s] for s in TrialState}
    finished = by_state[TrialState.COMPLETE] + by_state[TrialState.PRUNED]
    assert len(finished) == 3, [(t.number, t.state) for t in trials]  # none lost, none extra
    assert not by_state[TrialState.RUNNING] and not by_state[TrialState.WAITING]
    # the killed trial was failed by the heartbeat and its variables trained again, once
    (failed,) = [t for t in trials if t.number == killed.number]
    assert failed.state == TrialState.FAIL
    (retry,) = [t for t in trials if t.system_attrs.get("failed_trial") == killed.number]
    assert retry.system_attrs["retry_history"] == [killed.number]
    assert retry in finished and retry.params == killed.params
    # any other failure is a trial that lost the race for the budget and never trained
    for t in by_state[TrialState.FAIL]:
        assert t is failed or (t.user_attrs.get("surplus") and not t.intermediate_values)
    # both worker processes of the run trained trials; the dead worker finished none
    workers = {t.user_attrs["worker"] for t in finished}
    assert len(workers) == 2 and killed.user_attrs["worker"] not in workers, workers
    assert all(t.intermediate_values for t in finished)  # each trained, at least an epoch
    assert "worker 0: cores" in out and "worker 1: cores" in out
    # one process went on: one cross-validation, one report, one model
    assert out.count("final model:") == 1 and out.count("fold 1/2: train") == 1
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["trials"] == 3
    assert (run / "model" / "model.json").is_file()
    assert not (tmp_path / "run-a" / "report.md").exists()

    # 3. One more search-only worker with a larger budget adds exactly the missing trial.
    res = subprocess.run(_search(phantoms, tmp_path / "run-c", cache, postgres,
                                 "--trials", "4", "--search-only"),
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    assert "resuming study shared-tiny: 3 trials done, 1 to go" in res.stdout
    done = [t for t in _trials(postgres) if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(done) == 4
    assert not (tmp_path / "run-c" / "report.md").exists()

    # 4. A worker with another setup (other epochs: incomparable objective values) is refused.
    cmd = _search(phantoms, tmp_path / "run-d", cache, postgres, "--trials", "4",
                  "--search-only")
    cmd[cmd.index("--epochs") + 1] = "3"
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode != 0
    assert "was started with another setup (differs in: config)" in res.stderr


# A worker with a trivial objective: the budget alone, without torch.  "loop": the workers'
# loop (take_trials); "bare": every worker asks for the whole budget with no look first, so
# only the surplus rule keeps the count.
_RACER = """
import random, sys, time
import optuna
from training.budget import Surplus, guarded, take_trials
from training.storage import StudyStore

optuna.logging.set_verbosity(optuna.logging.WARNING)
url, mode, budget = sys.argv[1], sys.argv[2], int(sys.argv[3])
store = StudyStore(url, heartbeat_s=1)
study = optuna.create_study(study_name=f"race-{mode}", storage=store.open(),
                            load_if_exists=True)

def objective(trial):
    x = trial.suggest_float("x", 0, 1)
    time.sleep(random.uniform(0.05, 0.3))
    return x

if mode == "loop":
    take_trials(study, objective, budget, store.poll_s, log=lambda m: None)
else:
    study.optimize(guarded(study, objective, budget), n_trials=budget, catch=(Surplus,))
"""


@pytest.mark.parametrize("mode", ["loop", "bare"])
def test_racing_workers_finish_exactly_the_budget(postgres, mode):
    """Five processes started together on the study (and, the first time, on the empty
    database) asking for trials as fast as they can end with exactly the budget finished,
    each trial number once, every other trial failed as surplus without being run."""
    budget = 12
    procs = [subprocess.Popen([sys.executable, "-c", _RACER, postgres, mode, str(budget)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(5)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * 5, "\n".join(outs)[-3000:]
    study = optuna.load_study(study_name=f"race-{mode}", storage=postgres)
    trials = study.get_trials(deepcopy=False)
    assert len({t.number for t in trials}) == len(trials)
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(done) == budget
    others = [t for t in trials if t.state != TrialState.COMPLETE]
    assert all(t.state == TrialState.FAIL and t.user_attrs.get("surplus") and not t.params
               for t in others), [(t.number, t.state, t.params) for t in others]
    if mode == "bare":
        assert len(others) == 5 * budget - budget  # the rule did all the work


def test_core_shares_split_the_cores_evenly():
    from training.workers import core_shares

    assert core_shares([0, 1, 2, 3, 4], 2) == [(0, 1, 2), (3, 4)]
    assert core_shares([3, 1], 2) == [(1,), (3,)]
    assert core_shares([0, 1], 3) == [(0,), (1,), (0,)]  # more workers than cores: shared
