"""``python -m training COMMAND``: build phantom sets, train, (search: see the trainer docs)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from l3node.cli_predict import add_model_options, model_config
from l3node.config import Device, Precision, default_model_dir
from l3node.localize.preprocess import InputMode

# Each command imports its module when it runs: ``--help`` stays fast (no torch).


def _make_phantom_set(args: argparse.Namespace) -> int:
    from .phantoms import make_phantom_set

    make_phantom_set(args.out, args.count, seed=args.seed, workers=args.workers,
                     transitional_rate=args.transitional_rate,
                     truncated_rate=args.truncated_rate, matrix=args.matrix)
    return 0


def _train(args: argparse.Namespace) -> int:
    from .loop import TrainConfig
    from .runs import train_model

    cfg = TrainConfig(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                      input_mode=args.input_mode, seed=args.seed, l2=args.l2,
                      class_weight=args.class_weight, oversample=args.oversample,
                      optimizer=args.optimizer, neg_per_case=args.neg_per_case,
                      augment=args.augment)
    train_model(args.data, args.out, cfg, args.cache, val_fraction=args.val_fraction,
                version=args.version, half=args.half, init=args.init,
                checkpoint=args.checkpoint, stop_after=args.stop_after)
    return 0


def _load_cases(args: argparse.Namespace) -> list:
    """The cases of ``--data``, ``--csv`` and each ``--mask SERIES_DIR,MASK[,LABEL[,BODY]]``."""
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


def _search(args: argparse.Namespace) -> int:
    from .runs import search_run
    from .storage import StudyStore

    if args.workers < 1:
        raise SystemExit("--workers must be at least 1")
    try:
        store = StudyStore(args.storage, args.study_name, heartbeat_s=args.heartbeat,
                           grace_s=args.grace, max_retry=args.max_retry)
    except ValueError as e:
        raise SystemExit(str(e)) from None
    search_run(_load_cases(args), args.run, args.cache, search=args.search,
               input_mode=args.input_mode, budget_name=args.budget, trials=args.trials,
               epochs=args.epochs, k=args.folds, sampler=args.sampler, device=args.device,
               seed=args.seed, version=args.version, half=args.half, out=args.out,
               store=store, workers=args.workers, search_only=args.search_only,
               augment=args.augment)
    return 0


def _cv(args: argparse.Namespace) -> int:
    from .runs import cv_run

    cv_run(_load_cases(args), args.run, args.config, args.input_mode, args.cache,
           k=args.folds, epochs=args.epochs, eval_precision=args.eval_precision,
           check_fp16=args.check_fp16, device=args.device, seed=args.seed,
           record_in=args.record_in)
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from l3node.localize.localizer import Localizer

    from .heldout import evaluate_heldout

    cases = _load_cases(args)
    loc = Localizer.open(model_config(args, args.model))
    evaluate_heldout(loc, cases, args.model, ways=args.three_ways, out=args.out)
    return 0


def _evaluate_real(args: argparse.Namespace) -> int:
    from .realeval import run

    return run(args)


def _calibrate(args: argparse.Namespace) -> int:
    from .calibrate import run

    return run(args)


def _int8_check(args: argparse.Namespace) -> int:
    from .int8check import run

    return run(args)


def _nifti_to_dicom(args: argparse.Namespace) -> int:
    from .nifti import nifti_to_dicom

    print(f"{nifti_to_dicom(args.nifti, args.out)} slices written to {args.out}")
    return 0


def add_distribution_options(se: argparse.ArgumentParser) -> None:
    """``search``'s options for many workers on one study (docs/training.md, *Distributed
    search*)."""
    se.add_argument("--storage", default=None, metavar="URL",
                    help="the study's database, shared by every worker, e.g. "
                         "postgresql://USER@HOST:5432/DB (default: sqlite:///RUN/optuna.db)")
    se.add_argument("--study-name", default=None, metavar="NAME",
                    help="the study to create or join (default ARM-INPUT_MODE; "
                         "NAME-ARM with --search both)")
    se.add_argument("--workers", type=int, default=1,
                    help="search processes on this machine, each on its share of the cores "
                         "(or one GPU each with CUDA)")
    se.add_argument("--search-only", action="store_true",
                    help="only add trials to the study, then stop: cross-validation and the "
                         "model are left to one run without it")
    se.add_argument("--heartbeat", type=int, default=60, metavar="S",
                    help="seconds between a running trial's heartbeats")
    se.add_argument("--grace", type=int, default=None, metavar="S",
                    help="a trial silent this long is failed and its variables re-queued "
                         "(default twice the heartbeat)")
    se.add_argument("--max-retry", type=int, default=3,
                    help="how often one trial whose worker died is re-queued")


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
    tr.add_argument("--input-mode", choices=[m.value for m in InputMode], default="context")
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
    se.add_argument("--input-mode", choices=[m.value for m in InputMode], default="paper")
    se.add_argument("--sampler", choices=("gp", "tpe"), default="gp")
    se.add_argument("--budget", choices=("tiny", "small", "paper"), default="small")
    se.add_argument("--trials", type=int, default=None)
    se.add_argument("--epochs", type=int, default=None)
    se.add_argument("--folds", type=int, default=None)
    se.add_argument("--device", choices=[d.value for d in Device], default=Device.AUTO.value)
    se.add_argument("--seed", type=int, default=0)
    se.add_argument("--version", default="dev")
    se.add_argument("--half", action="store_true", help="store fp16 weights")
    se.add_argument("--augment", type=float, default=0.0,
                    help="chance each training image gets the realism augmentation (the "
                    "default model's recipe: 0.9), the same in every trial, fold and the "
                    "final model")
    add_distribution_options(se)
    se.set_defaults(func=_search)
    cv = sub.add_parser("cv", help="cross-validate a fixed configuration per input mode")
    cv.add_argument("--data", type=Path, help="folder of phantom studies (truth.json)")
    cv.add_argument("--csv", type=Path)
    cv.add_argument("--mask", action="append")
    cv.add_argument("--run", type=Path, required=True, help="run folder (report, log)")
    cv.add_argument("--config", type=Path, required=True,
                    help="training.json of a model, or a JSON TrainConfig")
    cv.add_argument("--input-mode", nargs="+", choices=[m.value for m in InputMode],
                    default=["context", "paper"])
    cv.add_argument("--cache", type=Path, default=Path(".cache/slices"))
    cv.add_argument("--folds", type=int, default=5)
    cv.add_argument("--epochs", type=int, default=None, help="default: the config's")
    cv.add_argument("--eval-precision", choices=[Precision.FP32.value, Precision.BF16.value],
                    default="bf16",
                    help="precision of the test passes (bf16: as the search scores trials)")
    cv.add_argument("--check-fp16", choices=[m.value for m in InputMode], action="append",
                    default=[],
                    help="also test this input mode's fold networks with float16 weights "
                         "(in fp32, as the node runs)")
    cv.add_argument("--device", choices=[d.value for d in Device], default=Device.AUTO.value)
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
    add_model_options(ev)  # l3node predict's: the same ModelConfig, the same defaults
    ev.add_argument("--three-ways", action="store_true",
                    help="also score the model alone, the vertebra count alone and combined")
    ev.set_defaults(func=_evaluate)
    er = sub.add_parser("evaluate-real", help="the production path on every real CT case in "
                        "shared/data: status, slice vs L3 body, error, highest p, AUC, QC PNG")
    er.add_argument("--data", type=Path,
                    default=Path(__file__).resolve().parents[2] / "shared" / "data")
    er.add_argument("--model", type=Path, default=default_model_dir())
    er.add_argument("--work", type=Path, default=Path("real-eval"),
                    help="converted series, QC pictures and real-eval.json go here")
    er.add_argument("--out", type=Path, default=None, help="write the JSON results here")
    add_model_options(er)
    er.set_defaults(func=_evaluate_real)
    ca = sub.add_parser("calibrate", help="int8: measure the activation ranges of a model on "
                        "phantom slices, offline (MODEL/int8-calibration.json)")
    ca.add_argument("--data", type=Path, required=True,
                    help="phantom studies (truth.json; make-phantom-set), never real cases")
    ca.add_argument("--model", type=Path, default=default_model_dir())
    ca.add_argument("--per-case", type=int, default=24,
                    help="slices evenly over each series, plus its L3 body's")
    ca.add_argument("--out", type=Path, default=None,
                    help="default MODEL/int8-calibration.json")
    ca.set_defaults(func=_calibrate)
    ic = sub.add_parser("int8-check", help="int8 against fp32, case by case: status, L3 "
                        "slice, max |p difference| on phantoms and the real cases")
    ic.add_argument("--data", type=Path, action="append", default=[],
                    help="phantom studies (truth.json); repeatable")
    ic.add_argument("--real", type=Path, default=None,
                    help="the real cases (shared/data layout, as evaluate-real)")
    ic.add_argument("--work", type=Path, default=Path("real-eval"),
                    help="converted real series (as evaluate-real's --work)")
    ic.add_argument("--model", type=Path, default=default_model_dir())
    ic.add_argument("--out", type=Path, required=True, help="the comparison (JSON)")
    ic.set_defaults(func=_int8_check)
    nd = sub.add_parser("nifti-to-dicom", help="write a NIfTI CT volume (HU) as a DICOM series")
    nd.add_argument("nifti", type=Path)
    nd.add_argument("out", type=Path)
    nd.set_defaults(func=_nifti_to_dicom)
    args = ap.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
