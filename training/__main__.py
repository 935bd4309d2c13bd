"""``python -m training COMMAND``: build phantom sets, train, (search: see the trainer docs)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from l3node.localize.decision import DecisionParams


def _make_phantom_set(args: argparse.Namespace) -> int:
    from l3node.phantom import StudyRequest, generate_study

    rng = np.random.default_rng(args.seed)
    presets = ["abdomen-pelvis", "chest-abdomen-pelvis", "whole-body", "chest"]
    weights = [0.4, 0.35, 0.1, 0.15]
    thick = [1.25, 2.0, 2.5, 3.0, 5.0]
    tw = [0.1, 0.15, 0.25, 0.2, 0.3]
    for k in range(args.count):
        preset = str(rng.choice(presets, p=weights))
        mm = float(rng.choice(thick, p=tw))
        if preset == "whole-body":
            mm = max(mm, 3.0)  # keep the set small: whole-body at 3-5 mm
        if (args.out / f"case-{k:04d}" / "truth.json").is_file():
            continue  # written by an earlier, interrupted run (truth.json comes last)
        t = time.perf_counter()
        truth = generate_study(
            args.out / f"case-{k:04d}",
            StudyRequest(seed=args.seed, index=k, preset=preset, slice_mm=mm,
                         transitional_rate=args.transitional_rate,
                         truncated_rate=args.truncated_rate, matrix=args.matrix),
            workers=args.workers,
        )
        print(f"case {k + 1}/{args.count}: {preset} {mm:g} mm, "
              f"{truth['series']['slice_count']} slices, L3 "
              f"{'present' if truth['l3']['present'] else 'absent'} "
              f"({time.perf_counter() - t:.1f} s)", flush=True)
    return 0


def _decision(cases: list, cache: object) -> DecisionParams:
    """Decision parameters with the L3 height range learned from the cases' truth (complete
    L3s only); the defaults when fewer than three cases have one."""
    from l3node.localize.decision import DecisionParams

    heights = [(c.l3_last - c.l3_first + 1) * cache.spacing_mm[i] for i, c in enumerate(cases)
               if c.l3_first is not None and not c.hard.get("l3_truncated")]
    return DecisionParams().with_heights(np.array(heights)) if len(heights) >= 3 else (
        DecisionParams())


def _train(args: argparse.Namespace) -> int:
    from l3node.localize.model import ModelSpec, save_artifact
    from l3node.localize.preprocess import Preprocessing

    from .data import build_cache, cases_from_phantoms
    from .loop import TrainConfig, config_dict, evaluate, train

    cases = cases_from_phantoms(args.data)
    pre = Preprocessing()
    cache = build_cache(cases, pre, args.cache, log=lambda m: print(m, flush=True))
    n = len(cases)
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(n)
    n_val = round(n * args.val_fraction)
    val, tr = sorted(order[:n_val].tolist()), sorted(order[n_val:].tolist())
    dec = _decision(cases, cache)
    if args.input_mode == "context":
        # A coarse slice's ±Δ context neighbours are coarse slices too: each is preprocessed
        # once (docs/localizer.md, "Coarse to fine"); the margin follows the step.
        from dataclasses import replace

        off = TrainConfig.context_offset_mm
        dec = replace(dec, coarse_step_mm=off, refine_margin_mm=off)
    cfg = TrainConfig(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                      input_mode=args.input_mode, seed=args.seed, l2=args.l2,
                      class_weight=args.class_weight, oversample=args.oversample,
                      optimizer=args.optimizer, neg_per_case=args.neg_per_case,
                      augment=args.augment)
    init = None
    if args.init is not None:
        from l3node.localize.model import load_artifact

        init = load_artifact(args.init).net

    def show(epoch: int, rec: dict) -> None:
        print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v)
                          for k, v in rec.items()}), flush=True)

    net, hist = train(cache, tr, cfg, val_cases=val, decision=dec, on_epoch=show,
                      keep_best=bool(val), init=init, checkpoint=args.checkpoint,
                      stop_after=args.stop_after)
    summary = {"config": config_dict(cfg), "history": hist.epochs,
               "init": str(args.init) if args.init else None,
               "train_cases": len(tr), "val_cases": len(val),
               "stopped_after_epoch": args.stop_after}
    if val:
        ev = evaluate(net, cache, val, cfg, dec)
        summary["validation"] = ev["summary"]
        summary["validation_cases"] = ev["cases"]
    spec = ModelSpec(input_mode=cfg.input_mode, context_offset_mm=cfg.context_offset_mm,
                     preprocessing=pre, decision=dec, version=args.version,
                     training={k: v for k, v in summary.items() if k != "validation_cases"})
    save_artifact(args.out, net, spec, half=args.half)
    (args.out / "training.json").write_text(json.dumps(summary, indent=1, default=str))
    print(f"model written to {args.out}")
    return 0


def _load_cases(args: argparse.Namespace) -> list:
    from .data import cases_from_phantoms
    from .labels import case_from_mask, cases_from_csv

    cases = []
    if args.data:
        cases += cases_from_phantoms(args.data)
    if args.csv:
        cases += cases_from_csv(args.csv)
    for spec in args.mask or []:
        parts = spec.split(",")
        if len(parts) < 2:
            raise SystemExit(f"--mask wants SERIES_DIR,MASK[,LABEL[,BODY_MASK]], got {spec!r}")
        label = int(parts[2]) if len(parts) > 2 and parts[2] else None
        body = Path(parts[3]) if len(parts) > 3 else None
        cases.append(case_from_mask(Path(parts[0]), Path(parts[1]), label, body))
    if not cases:
        raise SystemExit("no cases: give --data, --csv or --mask")
    return cases


def _run_log(run: Path) -> Callable[[str], None]:
    """Create the run folder; the returned ``log`` prints a line and appends it to
    ``RUN/log.txt`` (flushed: a long run can be followed with ``tail -f``)."""
    run.mkdir(parents=True, exist_ok=True)
    log_f = (run / "log.txt").open("a")

    def log(msg: str) -> None:
        print(msg, flush=True)
        log_f.write(msg + "\n")
        log_f.flush()

    return log


def _search(args: argparse.Namespace) -> int:
    from l3node.localize.localizer import pick_device
    from l3node.localize.model import ModelSpec, save_artifact
    from l3node.localize.preprocess import Preprocessing

    from .data import build_cache
    from .loop import TrainConfig, train
    from .report import summarise, write_report
    from .search import BUDGETS, apply_params, cross_validate, folds, run_search

    budget = BUDGETS[args.budget]
    trials = args.trials or budget.trials
    epochs = args.epochs or budget.epochs
    k = args.folds or budget.folds
    cases = _load_cases(args)
    if budget.max_cases and len(cases) > budget.max_cases:
        cases = cases[: budget.max_cases]
    run: Path = args.run
    log = _run_log(run)

    pre = Preprocessing(size=budget.input_size)
    cache = build_cache(cases, pre, args.cache, log=log)
    decision = _decision(cases, cache)
    device = pick_device(args.device)
    base = TrainConfig(epochs=epochs, input_mode=args.input_mode, seed=args.seed,
                       neg_per_case=budget.neg_per_case, device=device,
                       precision="bf16" if device == "cpu" else "fp32")
    fold_list = folds(len(cases), k, args.seed)
    val0 = fold_list[0]
    tr0 = [i for f in fold_list[1:] for i in f]
    storage = f"sqlite:///{(run / 'optuna.db').resolve()}"
    searches = ["hyper", "hyper+imbalance"] if args.search == "both" else [args.search]
    results, cvs, best_cfgs = [], [], []
    for search in searches:
        name = {"hyper": "control (hyper)", "hyper+imbalance": "proposed (hyper+imbalance)"}[
            search]
        log(f"== search {search}, input {args.input_mode}: {trials} trials, {epochs} epochs")
        study = run_search(cache, tr0, val0, base, search, trials, storage,
                           f"{search}-{args.input_mode}", args.sampler, decision, log=log)
        best = study.best_trial.params
        cfg = apply_params(base, best)
        log(f"best trial {study.best_trial.number}: 1/F1 {study.best_value:.3f}")
        cv = cross_validate(cache, fold_list, cfg, decision, log=log)
        results.append(summarise(name, cv, best, args.input_mode))
        cvs.append(cv)
        best_cfgs.append(cfg)
    extra = {"cases": len(cases), "folds": k, "budget": args.budget, "sampler": args.sampler,
             "seed": args.seed, "trials": trials, "epochs": epochs,
             "decision": decision.__dict__}
    write_report(run, results, cvs, extra)
    pick = min(range(len(results)), key=lambda i: results[i]["all"].get(
        "error_slices_mean", float("inf")) if results[i]["all"].get("error_slices_mean")
        is not None else float("inf"))
    cfg = best_cfgs[pick]
    log(f"final model: {results[pick]['name']} on all {len(cases)} cases")
    net, hist = train(cache, list(range(len(cases))), cfg, decision=decision)
    summary = {"report": str(run / "report.md"), "chosen": results[pick]["name"],
               "cv": results[pick]["all"], "hard": results[pick]["hard"],
               "params": results[pick]["params"], "final_history": hist.epochs,
               "cases": len(cases), "folds": k, "budget": args.budget}
    spec = ModelSpec(input_mode=args.input_mode, context_offset_mm=base.context_offset_mm,
                     preprocessing=pre, decision=decision, version=args.version,
                     training=summary)
    out = args.out or run / "model"
    save_artifact(out, net, spec, half=args.half)
    log(f"model written to {out}")
    return 0


def _cv(args: argparse.Namespace) -> int:
    """Cross-validate one fixed configuration (e.g. the shipped model's) per input mode.

    The search's cross-validation without the search: it answers "which input mode, and
    what error does this configuration reach on unseen patients" when a full search does not
    fit the machine.  ``--check-fp16 MODE`` also tests that mode's fold networks with float16
    weights, as the artifact stores them.
    """
    import dataclasses

    from l3node.localize.localizer import pick_device
    from l3node.localize.preprocess import Preprocessing

    from .data import build_cache
    from .loop import TrainConfig
    from .report import summarise, write_report
    from .search import cross_validate, folds

    cases = _load_cases(args)
    run: Path = args.run
    log = _run_log(run)

    raw = json.loads(args.config.read_text())
    raw = raw.get("config", raw)  # a training.json or a bare TrainConfig dict
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    device = pick_device(args.device)
    cache = build_cache(cases, Preprocessing(), args.cache, log=log)
    decision = _decision(cases, cache)
    fold_list = folds(len(cases), args.folds, args.seed)
    results, cvs, checks = [], [], {}
    for mode in args.input_mode:
        cfg = TrainConfig(**{k: v for k, v in raw.items() if k in names})
        cfg = dataclasses.replace(cfg, input_mode=mode, device=device, seed=args.seed,
                                  epochs=args.epochs or cfg.epochs,
                                  precision="bf16" if device == "cpu" else "fp32")
        log(f"== cross-validation, input {mode}: {args.folds} folds, {cfg.epochs} epochs, "
            f"config {args.config}")
        cv = cross_validate(cache, fold_list, cfg, decision, log=log,
                            eval_precision=args.eval_precision,
                            check_half=mode in args.check_fp16,
                            checkpoint=run / "folds" / mode)
        params = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "device"}
        results.append(summarise(f"fixed config, {mode} input", cv, params, mode))
        cvs.append(cv)
        if "half_checks" in cv:
            checks[mode] = cv["half_checks"]
        extra = {"cases": len(cases), "folds": args.folds, "budget": "fixed configuration",
                 "sampler": "none", "seed": args.seed, "epochs": args.epochs,
                 "eval_precision": args.eval_precision, "fp16_checks": checks,
                 "config_from": str(args.config), "decision": decision.__dict__}
        write_report(run, results, cvs, extra)  # after each mode: a long run keeps its part
        log(f"report written to {run / 'report.md'} ({', '.join(r['name'] for r in results)})")
    if args.record_in:
        record_cross_validation(args.record_in, run, results, extra)
        log(f"cross-validation summary recorded in {args.record_in / 'model.json'}")
    return 0


def record_cross_validation(model_dir: Path, run: Path, results: list[dict],
                            extra: dict) -> None:
    """Put a cv run's summary into a model artifact's ``model.json`` (``training.
    cross_validation``), so the artifact a node deploys says what error its configuration
    reached on unseen cases and which input mode won; the weights are not touched."""
    from l3node.localize.model import load_artifact

    doc_path = model_dir / "model.json"
    doc = json.loads(doc_path.read_text())
    doc.setdefault("training", {})["cross_validation"] = {
        "report": str(run / "report.md"), "model_input_mode": doc.get("input_mode"),
        **{k: extra[k] for k in ("cases", "folds", "epochs", "eval_precision", "fp16_checks",
                                 "config_from") if k in extra},
        "results": [{k: r[k] for k in ("name", "input_mode", "all", "ordinary", "hard")}
                    for r in results],
    }
    tmp = doc_path.with_suffix(".json.part")
    tmp.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    tmp.replace(doc_path)
    load_artifact(model_dir)  # still a valid artifact (format, weights' sha256)


def _evaluate(args: argparse.Namespace) -> int:
    """The production path (DICOM → Localizer, coarse-to-fine) on labelled held-out cases."""
    from l3node.localize.localizer import Localizer, pick_device
    from l3node.localize.model import load_artifact
    from l3node.localize.series import load_series

    from .report import case_errors, error_metrics, hard_case_metrics
    from .threeways import three_ways

    cases = _load_cases(args)
    model = load_artifact(args.model, device=pick_device(args.device))
    loc = Localizer(model, precision=args.precision, device=pick_device(args.device),
                    runtime=args.runtime)
    records = []
    for c in cases:
        s = load_series(Path(c.folder))
        res = loc.run(s)
        rec = {"case_id": c.case_id, "folder": c.folder, "status": res.status,
               "index": res.index, "hard": c.hard, "evaluated": res.evaluated,
               "slices": len(s), "seconds": round(res.timings.total_s, 2)}
        rec.update(case_errors(s.z_mm, res.index, c.l3_first, c.l3_last))
        if args.three_ways:
            ways = three_ways(s, res)
            rec["ways"] = ways
            for name in ("model", "anatomy", "combined"):
                rec[f"{name}_errors"] = case_errors(s.z_mm, ways[name], c.l3_first, c.l3_last)
        records.append(rec)
        print(json.dumps(rec), flush=True)
    ordinary = [r for r in records if not (r["hard"].get("transitional")
                                           or r["hard"].get("l3_truncated"))]
    out = {"model": str(args.model), "all": error_metrics(records),
           "ordinary": error_metrics(ordinary), "hard": hard_case_metrics(records),
           "cases": records}
    if args.three_ways:
        def way(name: str, recs: list[dict]) -> dict:
            return error_metrics([{"status": "found" if r["ways"][name] is not None
                                   else "not_found", **r[f"{name}_errors"]} for r in recs])

        trans = [r for r in records if r["hard"].get("transitional")]
        out["three_ways"] = {name: {"all": way(name, records), "transitional": way(name, trans)}
                             for name in ("model", "anatomy", "combined")}
    text = json.dumps(out, indent=1)
    if args.out:
        args.out.write_text(text)
    print(json.dumps({k: out[k] for k in ("all", "ordinary", "hard", "three_ways") if k in out},
                     indent=1))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    sub = ap.add_subparsers(dest="command", metavar="COMMAND", required=True)
    mk = sub.add_parser("make-phantom-set", help="generate a phantom training set")
    mk.add_argument("--out", type=Path, required=True)
    mk.add_argument("--count", type=int, required=True)
    mk.add_argument("--seed", type=int, default=1000)
    mk.add_argument("--workers", type=int, default=None)
    mk.add_argument("--transitional-rate", type=float, default=0.10)
    mk.add_argument("--truncated-rate", type=float, default=0.05)
    mk.add_argument("--matrix", type=int, default=512,
                    help="pixels per side; 256 renders ~4x faster and the network sees 224")
    mk.set_defaults(func=_make_phantom_set)
    tr = sub.add_parser("train", help="train one configuration and write a model artifact")
    tr.add_argument("--data", type=Path, required=True, help="folder of phantom studies")
    tr.add_argument("--out", type=Path, required=True, help="model artifact folder")
    tr.add_argument("--cache", type=Path, default=Path(".cache/slices"))
    tr.add_argument("--epochs", type=int, default=5)
    tr.add_argument("--lr", type=float, default=1e-3)
    tr.add_argument("--l2", type=float, default=1e-4)
    tr.add_argument("--batch-size", type=int, default=32)
    tr.add_argument("--class-weight", type=float, default=1.0)
    tr.add_argument("--oversample", type=float, default=0.0)
    tr.add_argument("--optimizer", choices=("adam", "sgdm"), default="adam")
    tr.add_argument("--neg-per-case", type=int, default=24)
    tr.add_argument("--input-mode", choices=("paper", "context"), default="context")
    tr.add_argument("--val-fraction", type=float, default=0.15)
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--version", default="dev")
    tr.add_argument("--half", action="store_true", help="store fp16 weights")
    tr.add_argument("--augment", type=float, default=0.0,
                    help="chance each image gets the realism augmentation (training/augment.py)")
    tr.add_argument("--init", type=Path, default=None,
                    help="start from this model artifact's weights (fine-tuning)")
    tr.add_argument("--checkpoint", type=Path, default=None,
                    help="write a resumable checkpoint here after every epoch; resume from it")
    tr.add_argument("--stop-after", type=int, default=None,
                    help="end after this epoch (schedule of the full --epochs); with "
                    "--checkpoint, write the artifact of a run cut short")
    tr.set_defaults(func=_train)
    se = sub.add_parser("search", help="Bayesian search, cross-validation, report, artifact")
    se.add_argument("--data", type=Path, help="folder of phantom studies (truth.json)")
    se.add_argument("--csv", type=Path, help="CSV: series_folder,l3_first,l3_last,unit")
    se.add_argument("--mask", action="append",
                    help="SERIES_DIR,MASK[,LABEL[,BODY_MASK]] (NIfTI or NRRD); repeatable")
    se.add_argument("--run", type=Path, required=True, help="run folder (report, optuna.db)")
    se.add_argument("--out", type=Path, default=None, help="model artifact (default RUN/model)")
    se.add_argument("--cache", type=Path, default=Path(".cache/slices"))
    se.add_argument("--search", choices=("hyper", "hyper+imbalance", "both"),
                    default="hyper+imbalance")
    se.add_argument("--input-mode", choices=("paper", "context"), default="paper")
    se.add_argument("--sampler", choices=("gp", "tpe"), default="gp")
    se.add_argument("--budget", choices=("tiny", "small", "paper"), default="small")
    se.add_argument("--trials", type=int, default=None)
    se.add_argument("--epochs", type=int, default=None)
    se.add_argument("--folds", type=int, default=None)
    se.add_argument("--device", choices=("cpu", "cuda", "auto"), default="auto")
    se.add_argument("--seed", type=int, default=0)
    se.add_argument("--version", default="dev")
    se.add_argument("--half", action="store_true", help="store fp16 weights")
    se.set_defaults(func=_search)
    cv = sub.add_parser("cv", help="cross-validate a fixed configuration per input mode")
    cv.add_argument("--data", type=Path, help="folder of phantom studies (truth.json)")
    cv.add_argument("--csv", type=Path)
    cv.add_argument("--mask", action="append")
    cv.add_argument("--run", type=Path, required=True, help="run folder (report, log)")
    cv.add_argument("--config", type=Path, required=True,
                    help="training.json of a model, or a JSON TrainConfig")
    cv.add_argument("--input-mode", nargs="+", choices=("paper", "context"),
                    default=["context", "paper"])
    cv.add_argument("--cache", type=Path, default=Path(".cache/slices"))
    cv.add_argument("--folds", type=int, default=5)
    cv.add_argument("--epochs", type=int, default=None, help="default: the config's")
    cv.add_argument("--eval-precision", choices=("fp32", "bf16"), default="bf16",
                    help="precision of the test passes (bf16: as the search scores trials)")
    cv.add_argument("--check-fp16", choices=("paper", "context"), action="append", default=[],
                    help="also test this input mode's fold networks with float16 weights "
                         "(in fp32, as the node runs)")
    cv.add_argument("--device", choices=("cpu", "cuda", "auto"), default="auto")
    cv.add_argument("--seed", type=int, default=0)
    cv.add_argument("--record-in", type=Path, default=None, metavar="MODEL_DIR",
                    help="also write the summary into this artifact's model.json "
                         "(training.cross_validation); its weights are not touched")
    cv.set_defaults(func=_cv)

    ev = sub.add_parser("evaluate", help="run a model artifact on labelled held-out series")
    ev.add_argument("--model", type=Path, required=True)
    ev.add_argument("--data", type=Path)
    ev.add_argument("--csv", type=Path)
    ev.add_argument("--mask", action="append")
    ev.add_argument("--out", type=Path, default=None, help="write the JSON results here")
    ev.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu")
    ev.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    ev.add_argument("--runtime", choices=("auto", "torch", "onnxruntime"), default="auto")
    ev.add_argument("--three-ways", action="store_true",
                    help="also score the model alone, the vertebra count alone and combined")
    ev.set_defaults(func=_evaluate)
    er = sub.add_parser("evaluate-real", help="the production path on every real CT case in "
                        "shared/data: status, slice vs L3 body, error, highest p, AUC, QC PNG")
    er.add_argument("--data", type=Path,
                    default=Path(__file__).resolve().parents[2] / "shared" / "data")
    er.add_argument("--model", type=Path,
                    default=Path(__file__).resolve().parents[1] / "models" / "default")
    er.add_argument("--work", type=Path, default=Path("real-eval"),
                    help="converted series, QC pictures and real-eval.json go here")
    er.add_argument("--out", type=Path, default=None, help="write the JSON results here")
    er.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu")
    er.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    er.add_argument("--runtime", choices=("auto", "torch", "onnxruntime"), default="auto")
    er.set_defaults(func=lambda a: __import__("training.realeval", fromlist=["run"]).run(a))
    nd = sub.add_parser("nifti-to-dicom", help="write a NIfTI CT volume (HU) as a DICOM series")
    nd.add_argument("nifti", type=Path)
    nd.add_argument("out", type=Path)
    nd.set_defaults(func=lambda a: print(
        f"{__import__('training.nifti', fromlist=['x']).nifti_to_dicom(a.nifti, a.out)} slices "
        f"written to {a.out}") or 0)
    args = ap.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
