"""Bayesian optimisation of the paper's design variables, cross-validation, final model.

One run (``python -m training search``):

1. **Search** — Optuna (GPSampler by default, TPE as an option) proposes the design variables
   of :data:`TABLE_1`; each trial trains on fold 0's training cases and reports 1/F1 on its
   validation slices after every epoch (poor trials are pruned by the median rule).  The study
   lives in SQLite (``RUN/optuna.db``): rerunning the same command resumes it, and
   ``optuna-dashboard sqlite:///RUN/optuna.db`` shows it.  ``--workers N`` runs trials in N
   pinned processes (:mod:`training.workers`); ``--storage URL --study-name NAME`` puts the
   study in a shared database (PostgreSQL) that workers on other machines join
   (:mod:`training.storage`), all drawing on one trial budget (:mod:`training.budget`).
2. **Cross-validation** — the best variables are trained and tested on each of k patient-level
   folds (default 5); every case gets its L3 slice error in slices and mm.
3. **Final model** — trained on all cases with the best variables and written as a model
   artifact whose ``model.json`` carries the report's summary.

``--search hyper`` searches the first five variables (the paper's control: over-sampling 0,
equal class weights); ``hyper+imbalance`` all seven (the proposed model); ``both`` runs both
and the report compares them (the paper's Table 2).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from multiprocessing.synchronize import Barrier
from pathlib import Path

import numpy as np
import optuna
import torch
from optuna.trial import TrialState

from l3node.localize.decision import DecisionParams, decide
from l3node.localize.model import write_atomic
from l3node.localize.preprocess import Preprocessing

from .budget import FINISHED, take_trials
from .data import Cache, Case, build_cache
from .loop import TrainConfig, case_probabilities, evaluate, train
from .runlog import run_log
from .storage import StudyStore, check_setup
from .workers import Placement, run_workers

# The paper's Table 1: name, kind, range.  Names are the ones Optuna stores.
TABLE_1: list[tuple[str, str, tuple]] = [
    ("l2_regularization", "float-log", (1e-5, 1e-2)),
    ("initial_learning_rate", "float-log", (1e-5, 1e-2)),
    ("minibatch_size", "int", (16, 64, 16)),
    ("gradient_threshold", "int", (1, 6, 1)),
    ("gradient_threshold_method", "categorical", ("l2norm", "global-l2norm")),
    ("over_sampling_rate", "float", (0.0, 0.25)),
    ("class_weight", "float", (0.0, 1.0)),
]
SEARCHES = {"hyper": 5, "hyper+imbalance": 7}


@dataclass(frozen=True)
class Budget:
    trials: int
    epochs: int
    folds: int
    neg_per_case: int | None
    input_size: int
    max_cases: int | None


BUDGETS = {
    # CPU, a few minutes: what the tests run.  Small images keep ResNet50 cheap.
    "tiny": Budget(trials=2, epochs=1, folds=2, neg_per_case=4, input_size=64, max_cases=6),
    # CPU: ~3 min per trial epoch on 2 cores for ~60 phantoms; ~3 h with --search both.
    "small": Budget(trials=6, epochs=4, folds=3, neg_per_case=16, input_size=224, max_cases=None),
    # The paper's protocol: 5 folds, every slice, a real search (GPU advised).
    "paper": Budget(trials=30, epochs=20, folds=5, neg_per_case=None, input_size=224,
                    max_cases=None),
}


def suggest(trial: optuna.Trial, search: str) -> dict:
    """Draw the search's design variables; the control fixes the two imbalance variables."""
    out: dict = {}
    for name, kind, rng in TABLE_1[: SEARCHES[search]]:
        if kind == "float-log":
            out[name] = trial.suggest_float(name, rng[0], rng[1], log=True)
        elif kind == "float":
            out[name] = trial.suggest_float(name, rng[0], rng[1])
        elif kind == "int":
            out[name] = trial.suggest_int(name, rng[0], rng[1], step=rng[2])
        else:
            out[name] = trial.suggest_categorical(name, list(rng))
    return out


def apply_params(cfg: TrainConfig, params: dict) -> TrainConfig:
    """Design variables (Table 1 names) → a training configuration."""
    return replace(
        cfg,
        l2=params["l2_regularization"],
        lr=params["initial_learning_rate"],
        batch_size=int(params["minibatch_size"]),
        grad_threshold=float(params["gradient_threshold"]),
        grad_method=params["gradient_threshold_method"],
        oversample=params.get("over_sampling_rate", 0.0),
        class_weight=params.get("class_weight", 1.0),
    )


def folds(n: int, k: int, seed: int, groups: list[str] | None = None) -> list[list[int]]:
    """Patient-level k-fold split: all cases of one patient land in the same fold."""
    groups = groups or [str(i) for i in range(n)]
    uniq = sorted(set(groups))
    order = np.random.default_rng(seed).permutation(len(uniq))
    fold_of = {uniq[g]: i % k for i, g in enumerate(order)}
    return [[i for i in range(n) if fold_of[groups[i]] == f] for f in range(k)]


def objective_value(f1: float) -> float:
    """The paper's objective, 1/F1 (minimised); a trial with F1 = 0 scores 1000."""
    return 1.0 / f1 if f1 > 0 else 1000.0


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=5)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    raise ValueError(f'sampler must be "gp" or "tpe", got {name!r}')


@dataclass(frozen=True)
class SearchJob:
    """One arm's search in plain values: what every worker of its study needs (picklable,
    so a worker process of ``--workers N`` gets a copy and rebuilds the rest)."""

    cases: list[Case]
    pre: Preprocessing
    cache_dir: Path
    train_idx: list[int]
    val_idx: list[int]
    base: TrainConfig
    search: str
    trials: int
    store: StudyStore  # resolved: its url is set
    study_name: str
    sampler: str
    decision: DecisionParams
    run: Path  # log.txt goes here

    def setup(self) -> dict:
        """What the objective values depend on: every worker of the study must agree."""
        cases = [[c.case_id, c.l3_first, c.l3_last] for c in self.cases]
        config = {k: v for k, v in asdict(self.base).items()
                  if k not in ("device", "precision", "seed")}
        return {"cases": hashlib.sha256(json.dumps(cases).encode()).hexdigest()[:16],
                "n_cases": len(cases), "train_idx": self.train_idx, "val_idx": self.val_idx,
                "preprocessing": self.pre.to_json(), "search": self.search, "config": config,
                "decision": asdict(self.decision)}


def open_study(job: SearchJob, seed: int) -> optuna.Study:
    """Create the job's study, or load it when it exists (a rerun, or another worker)."""
    return optuna.create_study(study_name=job.study_name, storage=job.store.open(),
                               direction="minimize", sampler=make_sampler(job.sampler, seed),
                               pruner=optuna.pruners.MedianPruner(n_startup_trials=2,
                                                                  n_warmup_steps=1),
                               load_if_exists=True)


def worker_seed(seed: int, index: int, shared: bool) -> int:
    """The sampler's seed of one worker.  Workers with one seed would propose the same
    variables; the run's only worker keeps ``seed`` (reproducible), local workers add their
    index, and workers of a shared study also mix in their host and process."""
    if not shared:
        return seed + index
    tag = f"{seed}:{index}:{socket.gethostname()}:{os.getpid()}"
    return int.from_bytes(hashlib.sha256(tag.encode()).digest()[:4], "big")


def run_search(job: SearchJob, cache: Cache, workers: int = 1,
               log: Callable[[str], None] = print) -> optuna.Study:
    """Run (or resume, or join) the job's study until it holds ``job.trials`` finished
    trials, with ``workers`` processes (1: in this one); then it is this process's alone
    again, for cross-validation and the final model."""
    study = open_study(job, worker_seed(job.base.seed, 0, job.store.shared))
    check_setup(study, job.setup())
    if not job.store.shared:
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            # the run's own study: a trial still running was left by an interrupted run and
            # will never report (a shared study's are left to the heartbeat)
            study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
            log(f"trial {t.number} was interrupted; marked failed")
    done = len(study.get_trials(deepcopy=False, states=FINISHED))
    if done:
        log(f"resuming study {job.study_name}: {done} trials done, "
            f"{max(0, job.trials - done)} to go")
    if workers > 1:
        run_workers(_worker, (job,), workers, job.base.device, log)
    else:
        take_trials(study, _objective(job, cache, log), job.trials, job.store.poll_s, log)
    done = len(study.get_trials(deepcopy=False, states=FINISHED))
    if done < job.trials:
        raise SystemExit(f"study {job.study_name}: only {done} of {job.trials} trials finished "
                         f"(the workers ended early; see {job.run / 'log.txt'})")
    return study


def _worker(job: SearchJob, place: Placement, start: Barrier) -> None:
    """A worker process of ``--workers N``: the cache (already built), the study, trials."""
    log = run_log(job.run, prefix=f"[worker {place.index}] ")
    cache = build_cache(job.cases, job.pre, job.cache_dir, log=log)
    study = open_study(job, worker_seed(job.base.seed, place.index, job.store.shared))
    try:
        start.wait(timeout=600)
    except threading.BrokenBarrierError:
        log("a sibling worker did not start; going on without waiting")
    take_trials(study, _objective(job, cache, log), job.trials, job.store.poll_s, log)


def _objective(job: SearchJob, cache: Cache,
               log: Callable[[str], None]) -> Callable[[optuna.Trial], float]:
    """1/F1 on fold 0's validation slices after training with the trial's variables."""
    worker = f"{socket.gethostname()}:{os.getpid()}"

    def objective(trial: optuna.Trial) -> float:
        trial.set_user_attr("worker", worker)  # whose trial it is, in the dashboard too
        params = suggest(trial, job.search)
        cfg = apply_params(job.base, params)
        t0 = time.perf_counter()

        def on_epoch(epoch: int, rec: dict) -> None:
            value = objective_value(rec.get("val_f1") or 0.0)
            log(f"  trial {trial.number} epoch {epoch}: loss {rec['train_loss']:.4f} "
                f"acc {rec['train_accuracy']:.3f} val F1 {rec.get('val_f1', 0):.3f} "
                f"(1/F1 {value:.3f})")
            trial.report(value, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()

        log(f"trial {trial.number}: {json.dumps(_round(params))}")
        _, hist = train(cache, job.train_idx, cfg, val_cases=job.val_idx,
                        decision=job.decision, on_epoch=on_epoch)
        last = hist.epochs[-1]
        value = objective_value(last.get("val_f1") or 0.0)
        trial.set_user_attr("history", hist.epochs)
        log(f"trial {trial.number} done in {time.perf_counter() - t0:.0f} s: 1/F1 {value:.3f}")
        return value

    return objective


def cross_validate(cache: Cache, fold_list: list[list[int]], cfg: TrainConfig,
                   decision: DecisionParams, log: Callable[[str], None] = print,
                   eval_precision: str | None = None, check_half: bool = False,
                   checkpoint: Path | None = None) -> dict:
    """Train on k−1 folds, test on the held-out one, for each fold; per-case records.

    ``eval_precision`` tests in another precision than training used (``fp32``: as the node
    runs by default).  ``check_half`` also tests each fold's network with its weights rounded
    to float16 — how the artifact stores them — against the full weights, both in fp32 (in
    bf16 the rounding would vanish), and counts the decisions that change.

    ``checkpoint``: a folder where each finished fold's results are written; a rerun with the
    same configuration and folds reads them back instead of training again, so a run of hours
    that is interrupted loses at most the fold in progress.
    """
    per_case: list[dict] = []
    histories = []
    half_checks = []
    slice_counts = {"tp": 0, "fp": 0, "fn": 0}
    ecfg = replace(cfg, precision=eval_precision) if eval_precision else cfg
    key = _fold_key(cfg, fold_list, decision, eval_precision, check_half)
    for f, test in enumerate(fold_list):
        done = _read_fold(checkpoint, f, key)
        if done is not None:
            log(f"fold {f + 1}/{len(fold_list)}: results read from {checkpoint}")
            per_case.extend(done["cases"])
            histories.append(done["history"])
            for k, v in done["slice_counts"].items():
                slice_counts[k] += v
            if check_half:
                half_checks.append(done["half_check"])
            continue
        tr = [i for g, fold in enumerate(fold_list) if g != f for i in fold]
        log(f"fold {f + 1}/{len(fold_list)}: train {len(tr)} cases, test {len(test)}")
        net, hist = train(cache, tr, cfg, decision=decision, on_epoch=lambda e, r, f=f: log(
            f"  fold {f + 1} epoch {e}: loss {r['train_loss']:.4f} acc "
            f"{r['train_accuracy']:.3f} ({r['seconds']:.0f} s)"))
        ev = evaluate(net, cache, test, ecfg, decision)
        for r in ev["cases"]:
            r["fold"] = f
        per_case.extend(ev["cases"])
        histories.append(hist.epochs)
        s = ev["summary"]
        for k, v in s["slice_counts"].items():
            slice_counts[k] += v
        log(f"fold {f + 1}: F1 {s['val_f1']:.3f}, mean |error| "
            f"{_fmt(s['val_error_slices_mean'])} slices / {_fmt(s['val_error_mm_mean'])} mm")
        hc = None
        if check_half:
            hc = {"fold": f, **half_check(net, cache, test, replace(cfg, precision="fp32"),
                                          decision)}
            half_checks.append(hc)
            log(f"fold {f + 1}: float16 weights change {hc['decisions_changed']} of "
                f"{hc['cases']} decisions; max |Δp| {hc['max_abs_dprob']:.2e}")
        _write_fold(checkpoint, f, key, {"cases": ev["cases"], "history": hist.epochs,
                                         "slice_counts": s["slice_counts"], "half_check": hc})
    out = {"cases": per_case, "histories": histories, "slice_counts": slice_counts}
    if check_half:
        out["half_checks"] = half_checks
    return out


def _fold_key(cfg: TrainConfig, fold_list: list[list[int]], decision: DecisionParams,
               eval_precision: str | None, check_half: bool) -> str:
    """What a fold's results depend on; a checkpoint with another key is not reused."""
    params = {k: v for k, v in asdict(cfg).items() if k != "device"}
    blob = json.dumps([params, fold_list, asdict(decision), eval_precision, check_half],
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _read_fold(folder: Path | None, f: int, key: str) -> dict | None:
    path = folder / f"fold{f + 1}-{key}.json" if folder else None
    return json.loads(path.read_text()) if path and path.exists() else None


def _write_fold(folder: Path | None, f: int, key: str, results: dict) -> None:
    if folder is None:
        return
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(folder / f"fold{f + 1}-{key}.json", json.dumps(results, default=_plain))


def _plain(v: object) -> object:
    """numpy scalars in the per-case records, as JSON numbers of the same kind."""
    return v.item() if isinstance(v, np.generic) else str(v)


def half_check(net: torch.nn.Module, cache: Cache, cases: list[int], cfg: TrainConfig,
               decision: DecisionParams) -> dict:
    """Decisions of ``net`` with float16-rounded weights against its full-precision ones."""
    rounded = copy.deepcopy(net)
    rounded.load_state_dict({k: v.half().float() if v.is_floating_point() else v
                             for k, v in net.state_dict().items()})
    changed, dp = 0, 0.0
    for c in cases:
        z = cache.z_mm[cache.case_slices(c)]
        p_full = case_probabilities(net, cache, c, cfg)
        p_half = case_probabilities(rounded, cache, c, cfg)
        a, b = decide(z, p_full, decision), decide(z, p_half, decision)
        changed += (a.index, a.status) != (b.index, b.status)
        dp = max(dp, float(np.abs(p_full - p_half).max()))
    return {"cases": len(cases), "decisions_changed": int(changed), "max_abs_dprob": dp}


def _fmt(v: float | None) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.2f}"


def _round(d: dict) -> dict:
    return {k: (float(f"{v:.4g}") if isinstance(v, float) else v) for k, v in d.items()}
