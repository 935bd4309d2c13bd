"""``python -m training COMMAND``: build phantom sets, train, (search: see the trainer docs)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


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
        t = time.perf_counter()
        truth = generate_study(
            args.out / f"case-{k:04d}",
            StudyRequest(seed=args.seed, index=k, preset=preset, slice_mm=mm,
                         transitional_rate=args.transitional_rate,
                         truncated_rate=args.truncated_rate),
            workers=args.workers,
        )
        print(f"case {k + 1}/{args.count}: {preset} {mm:g} mm, "
              f"{truth['series']['slice_count']} slices, L3 "
              f"{'present' if truth['l3']['present'] else 'absent'} "
              f"({time.perf_counter() - t:.1f} s)", flush=True)
    return 0


def _train(args: argparse.Namespace) -> int:
    from l3node.localize.decision import DecisionParams
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
    heights = [(c.l3_last - c.l3_first + 1) * cache.spacing_mm[i]
               for i, c in enumerate(cases) if c.l3_first is not None
               and not c.hard.get("l3_truncated")]
    dec = DecisionParams().with_heights(np.array(heights))
    cfg = TrainConfig(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                      input_mode=args.input_mode, seed=args.seed, l2=args.l2,
                      class_weight=args.class_weight, oversample=args.oversample,
                      optimizer=args.optimizer, neg_per_case=args.neg_per_case)

    def show(epoch: int, rec: dict) -> None:
        print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v)
                          for k, v in rec.items()}), flush=True)

    net, hist = train(cache, tr, cfg, val_cases=val, decision=dec, on_epoch=show)
    summary = {"config": config_dict(cfg), "history": hist.epochs,
               "train_cases": len(tr), "val_cases": len(val)}
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
    tr.set_defaults(func=_train)
    args = ap.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
