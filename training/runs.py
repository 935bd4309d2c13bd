"""The trainer's runs from cases to report and artifact: ``train``, ``search`` and ``cv``.

Each run is a function of plain values (the CLI in ``__main__`` only parses arguments), so a
run is the same whether it is started from the command line or from a notebook:

* :func:`train_model` — one configuration, an optional validation split, one artifact;
* :func:`search_run` — Bayesian search per arm, cross-validation of each arm's best
  variables, the report, and the winning arm trained on every case as the artifact;
* :func:`cv_run` — cross-validation of one fixed configuration per input mode, optionally
  recorded in an existing artifact.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from l3node.localize.localizer import pick_device
from l3node.localize.model import ModelSpec, load_artifact, record_cross_validation, save_artifact
from l3node.localize.preprocess import Preprocessing

from .data import Case, build_cache, cases_from_phantoms
from .heights import context_steps, learned_decision
from .loop import TrainConfig, config_dict, evaluate, train
from .report import best_result, cross_validation_summary, summarise, write_report
from .runlog import run_log
from .search import BUDGETS, SearchJob, apply_params, cross_validate, folds, run_search
from .storage import StudyStore


def train_model(data: Path, out: Path, cfg: TrainConfig, cache_dir: Path,
                val_fraction: float = 0.15, version: str = "dev", half: bool = False,
                init: Path | None = None, checkpoint: Path | None = None,
                stop_after: int | None = None) -> Path:
    """Train ``cfg`` (a :class:`~training.loop.TrainConfig`) on the phantoms under ``data``,
    holding out ``val_fraction`` of the cases (seeded by ``cfg.seed``) to keep the best epoch
    and report on; write the artifact and its ``training.json`` into ``out``."""
    cases = cases_from_phantoms(data)
    pre = Preprocessing()
    cache = build_cache(cases, pre, cache_dir, log=lambda m: print(m, flush=True))
    n = len(cases)
    order = np.random.default_rng(cfg.seed).permutation(n)
    n_val = round(n * val_fraction)
    val, tr = sorted(order[:n_val].tolist()), sorted(order[n_val:].tolist())
    dec = learned_decision(cases, cache)
    if cfg.input_mode == "context":
        dec = context_steps(dec, cfg.context_offset_mm)

    def show(epoch: int, rec: dict) -> None:
        print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v)
                          for k, v in rec.items()}), flush=True)

    net, hist = train(cache, tr, cfg, val_cases=val, decision=dec, on_epoch=show,
                      keep_best=bool(val),
                      init=load_artifact(init).net if init is not None else None,
                      checkpoint=checkpoint, stop_after=stop_after)
    summary = {"config": config_dict(cfg), "history": hist.epochs,
               "init": str(init) if init else None,
               "train_cases": len(tr), "val_cases": len(val),
               "stopped_after_epoch": stop_after}
    if val:
        ev = evaluate(net, cache, val, cfg, dec)
        summary["validation"] = ev["summary"]
        summary["validation_cases"] = ev["cases"]
    spec = ModelSpec(input_mode=cfg.input_mode, context_offset_mm=cfg.context_offset_mm,
                     preprocessing=pre, decision=dec, version=version,
                     training={k: v for k, v in summary.items() if k != "validation_cases"})
    save_artifact(out, net, spec, half=half)
    (out / "training.json").write_text(json.dumps(summary, indent=1, default=str))
    print(f"model written to {out}")
    return out


ARM_NAMES = {"hyper": "control (hyper)", "hyper+imbalance": "proposed (hyper+imbalance)"}


def search_run(cases: list[Case], run: Path, cache_dir: Path, search: str = "hyper+imbalance",
               input_mode: str = "paper", budget_name: str = "small",
               trials: int | None = None, epochs: int | None = None, k: int | None = None,
               sampler: str = "gp", device: str = "auto", seed: int = 0,
               version: str = "dev", half: bool = False, out: Path | None = None,
               store: StudyStore | None = None, workers: int = 1,
               search_only: bool = False, augment: float = 0.0) -> Path | None:
    """Search the arm ``search`` (``both``: each arm of :data:`ARM_NAMES`) on fold 0,
    cross-validate its best variables over ``k`` folds, write the report, and train the arm
    with the lowest mean slice error on all cases as the artifact (``out``, default
    ``RUN/model``).  ``trials``, ``epochs`` and ``k`` default to the budget's, whose case
    limit (if any) keeps the first cases.

    ``store``: where the study lives (default ``RUN/optuna.db``; a shared database lets other
    runs join it by study name), ``workers`` search processes on this machine;
    ``search_only`` stops after the search (a helper worker: returns None), leaving
    cross-validation and the model to one run.  ``augment``: the realism augmentation's
    chance per training image, the same for every trial, fold and the final model (the
    shipped model's recipe is 0.9: a search on "the default model's data" needs it).  The
    study of an arm is ``store.study_name`` (``NAME-ARM`` with ``both``), default
    ``ARM-INPUT_MODE``.
    """
    budget = BUDGETS[budget_name]
    trials = trials or budget.trials
    epochs = epochs or budget.epochs
    k = k or budget.folds
    if budget.max_cases and len(cases) > budget.max_cases:
        cases = cases[: budget.max_cases]
    searches = list(ARM_NAMES) if search == "both" else [search]
    log = run_log(run)
    pre = Preprocessing(size=budget.input_size)
    cache = build_cache(cases, pre, cache_dir, log=log)
    decision = learned_decision(cases, cache)
    device = pick_device(device)
    base = TrainConfig(epochs=epochs, input_mode=input_mode, seed=seed,
                       neg_per_case=budget.neg_per_case, device=device, augment=augment,
                       precision="bf16" if device == "cpu" else "fp32")
    fold_list = folds(len(cases), k, seed)
    val0 = fold_list[0]
    tr0 = [i for f in fold_list[1:] for i in f]
    store = (store or StudyStore()).resolve(run)
    results, cvs, best_cfgs = [], [], []
    for search in searches:
        name = store.study_name or f"{search}-{input_mode}"
        if store.study_name and len(searches) > 1:
            name = f"{store.study_name}-{search}"
        log(f"== search {search}, input {input_mode}: {trials} trials, {epochs} epochs; "
            f"study {name} in {store.describe()}, {workers} worker(s)")
        job = SearchJob(cases, pre, cache_dir, tr0, val0, base, search, trials, store, name,
                        sampler, decision, run)
        study = run_search(job, cache, workers, log=log)
        if search_only:
            log(f"search only: study {name} holds its {trials} trials; cross-validation and "
                f"the model are left to the run without --search-only")
            continue
        best = study.best_trial.params
        cfg = apply_params(base, best)
        log(f"best trial {study.best_trial.number}: 1/F1 {study.best_value:.3f}")
        cv = cross_validate(cache, fold_list, cfg, decision, log=log)
        results.append(summarise(ARM_NAMES[search], cv, best, input_mode))
        cvs.append(cv)
        best_cfgs.append(cfg)
    if search_only:
        return None
    extra = {"cases": len(cases), "folds": k, "budget": budget_name, "sampler": sampler,
             "seed": seed, "trials": trials, "epochs": epochs, "augment": augment,
             "decision": decision.__dict__}
    write_report(run, results, cvs, extra)
    pick = best_result(results)
    log(f"final model: {results[pick]['name']} on all {len(cases)} cases")
    net, hist = train(cache, list(range(len(cases))), best_cfgs[pick], decision=decision)
    summary = {"report": str(run / "report.md"), "chosen": results[pick]["name"],
               "cv": results[pick]["all"], "hard": results[pick]["hard"],
               "params": results[pick]["params"], "final_history": hist.epochs,
               "cases": len(cases), "folds": k, "budget": budget_name, "augment": augment}
    spec = ModelSpec(input_mode=input_mode, context_offset_mm=base.context_offset_mm,
                     preprocessing=pre, decision=decision, version=version,
                     training=summary)
    out = out or run / "model"
    save_artifact(out, net, spec, half=half)
    log(f"model written to {out}")
    return out


def cv_run(cases: list[Case], run: Path, config: Path, input_modes: list[str],
           cache_dir: Path, k: int = 5, epochs: int | None = None,
           eval_precision: str = "bf16", check_fp16: Sequence[str] = (),
           device: str = "auto", seed: int = 0, record_in: Path | None = None) -> None:
    """Cross-validate one fixed configuration (e.g. the shipped model's) per input mode.

    The search's cross-validation without the search: it answers "which input mode, and
    what error does this configuration reach on unseen patients" when a full search does not
    fit the machine.  ``config`` is a model's ``training.json`` or a bare TrainConfig dict;
    the modes in ``check_fp16`` also test their fold networks with float16 weights, as the
    artifact stores them.  The report is rewritten after each mode, so a long run keeps its
    part; ``record_in`` also puts the summary into that artifact's ``model.json``.
    """
    log = run_log(run)
    raw = json.loads(config.read_text())
    raw = raw.get("config", raw)  # a training.json or a bare TrainConfig dict
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    device = pick_device(device)
    cache = build_cache(cases, Preprocessing(), cache_dir, log=log)
    decision = learned_decision(cases, cache)
    fold_list = folds(len(cases), k, seed)
    results, cvs, checks = [], [], {}
    for mode in input_modes:
        cfg = TrainConfig(**{n: v for n, v in raw.items() if n in names})
        cfg = dataclasses.replace(cfg, input_mode=mode, device=device, seed=seed,
                                  epochs=epochs or cfg.epochs,
                                  precision="bf16" if device == "cpu" else "fp32")
        log(f"== cross-validation, input {mode}: {k} folds, {cfg.epochs} epochs, "
            f"config {config}")
        cv = cross_validate(cache, fold_list, cfg, decision, log=log,
                            eval_precision=eval_precision, check_half=mode in check_fp16,
                            checkpoint=run / "folds" / mode)
        params = {n: v for n, v in dataclasses.asdict(cfg).items() if n != "device"}
        results.append(summarise(f"fixed config, {mode} input", cv, params, mode))
        cvs.append(cv)
        if "half_checks" in cv:
            checks[mode] = cv["half_checks"]
        extra = {"cases": len(cases), "folds": k, "budget": "fixed configuration",
                 "sampler": "none", "seed": seed, "epochs": epochs,
                 "eval_precision": eval_precision, "fp16_checks": checks,
                 "config_from": str(config), "decision": decision.__dict__}
        write_report(run, results, cvs, extra)
        log(f"report written to {run / 'report.md'} ({', '.join(r['name'] for r in results)})")
    if record_in:
        record_cross_validation(record_in, str(run / "report.md"),
                                cross_validation_summary(results, extra))
        log(f"cross-validation summary recorded in {record_in / 'model.json'}")
