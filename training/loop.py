"""Train one configuration of the paper's design variables; evaluate per slice and per case.

Design variables (the paper's Table 1) map onto :class:`TrainConfig`:

* ``l2`` — L2 regularisation, as weight decay on every parameter;
* ``lr`` — initial learning rate (cosine-annealed to 1 % over the run);
* ``batch_size`` — minibatch size;
* ``grad_threshold`` with ``grad_method`` — ``l2norm`` clips each parameter tensor's gradient
  by its own L2 norm, ``global-l2norm`` clips all gradients together (MATLAB's two methods);
* ``oversample`` — fraction of the epoch's training set added as augmented L3 slices, each
  with one augmentation drawn at random from rotation, translation, shear and reflection;
* ``class_weight`` w in [0, 1] — the weight of the L3 class is ``1 + (1 - w) * (r - 1)``,
  r being the epoch's negative:positive ratio: w = 1 gives equal weights (the paper's initial
  model), w = 0 gives inverse-frequency balancing.

Negatives are sampled per case per epoch (half near L3, half anywhere) to fit CPU budgets;
``neg_per_case=None`` uses every slice, as the paper did.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from torch import nn

from l3node.localize.decision import DecisionParams, decide
from l3node.localize.model import L3Net
from l3node.localize.preprocess import CONTEXT_OFFSET_MM, InputMode

from .augment import AugmentParams, augment_realism
from .data import Cache
from .report import case_errors, slice_metrics

GRAD_METHODS = ("l2norm", "global-l2norm")


@dataclass
class TrainConfig:
    l2: float = 1e-4
    lr: float = 1e-3
    batch_size: int = 32
    grad_threshold: float = 5.0
    grad_method: str = "global-l2norm"
    oversample: float = 0.0
    class_weight: float = 1.0
    epochs: int = 5
    input_mode: InputMode = InputMode.CONTEXT
    context_offset_mm: float = CONTEXT_OFFSET_MM  # the artifact's default (ModelSpec)
    optimizer: str = "adam"  # adam | sgdm
    neg_per_case: int | None = 24
    augment: float = 0.0  # chance each training image gets the realism augmentation
    precision: str = "bf16"  # bf16 autocast on CPU, fp32 otherwise
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.grad_method not in GRAD_METHODS:
            raise ValueError(f'"grad_method" must be one of {GRAD_METHODS}, got '
                             f"{self.grad_method!r}")
        if not 0.0 <= self.class_weight <= 1.0:
            raise ValueError(f'"class_weight" must be in [0, 1], got {self.class_weight}')
        if not 0.0 <= self.oversample <= 1.0:
            raise ValueError(f'"oversample" must be in [0, 1], got {self.oversample}')
        if not 0.0 <= self.augment <= 1.0:
            raise ValueError(f'"augment" must be in [0, 1], got {self.augment}')
        try:
            self.input_mode = InputMode(self.input_mode)
        except ValueError:
            raise ValueError(f'"input_mode" must be paper or context, got '
                             f'{self.input_mode!r}') from None


@dataclass
class EpochPlan:
    """What one epoch feeds the loss: slice indices, which are augmented, the L3 weight."""

    indices: np.ndarray
    augment: np.ndarray  # bool per sample
    labels: np.ndarray
    pos_weight: float


@dataclass
class History:
    epochs: list[dict] = field(default_factory=list)


def plan_epoch(cache: Cache, cases: list[int], cfg: TrainConfig,
               rng: np.random.Generator) -> EpochPlan:
    pos, neg = [], []
    for c in cases:
        sl = cache.case_slices(c)
        idx = np.arange(sl.start, sl.stop)
        lab = cache.labels[sl]
        p, n = idx[lab == 1], idx[lab == 0]
        pos.append(p)
        if cfg.neg_per_case is None or len(n) <= cfg.neg_per_case:
            neg.append(n)
            continue
        k = cfg.neg_per_case
        if len(p):
            zc = cache.z_mm[p].mean()
            near = n[np.abs(cache.z_mm[n] - zc) <= 60.0]
            take = rng.choice(near, min(k // 2, len(near)), replace=False) if len(near) else []
        else:
            take = np.array([], dtype=np.int64)
        rest = np.setdiff1d(n, take)
        more = rng.choice(rest, k - len(take), replace=False)
        neg.append(np.concatenate([np.asarray(take, dtype=np.int64), more]))
    pos_a = np.concatenate(pos) if pos else np.zeros(0, np.int64)
    neg_a = np.concatenate(neg) if neg else np.zeros(0, np.int64)
    base = len(pos_a) + len(neg_a)
    n_aug = round(cfg.oversample * base) if len(pos_a) else 0
    aug = rng.choice(pos_a, n_aug, replace=True) if n_aug else np.zeros(0, np.int64)
    indices = np.concatenate([pos_a, neg_a, aug]).astype(np.int64)
    labels = np.concatenate([np.ones(len(pos_a)), np.zeros(len(neg_a)), np.ones(n_aug)])
    augment = np.concatenate([np.zeros(base, bool), np.ones(n_aug, bool)])
    n_pos = len(pos_a) + n_aug
    ratio = len(neg_a) / n_pos if n_pos else 1.0
    pos_weight = 1.0 + (1.0 - cfg.class_weight) * (ratio - 1.0)
    order = rng.permutation(len(indices))
    return EpochPlan(indices[order], augment[order], labels[order], max(pos_weight, 1e-3))


def batch_tensor(cache: Cache, idx: np.ndarray, cfg: TrainConfig) -> torch.Tensor:
    """N × 3 × S × S float tensor in [0, 1] for these global slice indices."""
    if cfg.input_mode == "paper":
        x = torch.from_numpy(np.asarray(cache.images[idx])).float().div_(255.0)
        return x[:, None].expand(-1, 3, -1, -1).contiguous()
    up, down = cache.neighbours(idx, cfg.context_offset_mm)
    chans = [cache.images[up], cache.images[idx], cache.images[down]]
    return torch.from_numpy(np.stack(chans, axis=1)).float().div_(255.0)


def augment_batch(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """One random augmentation per image: rotation, translation, shear or reflection.

    Magnitudes are drawn away from zero (2-10°, 2-10 % of the size) so no copy comes out
    identical to its original; interpolation is bilinear.
    """
    out = x.clone()
    size = x.shape[-1]
    bil = TF.InterpolationMode.BILINEAR

    def signed(lo: float, hi: float) -> float:
        return float(rng.uniform(lo, hi) * rng.choice([-1.0, 1.0]))

    for k in range(x.shape[0]):
        kind = int(rng.integers(4))
        img = x[k]
        if kind == 0:
            img = TF.affine(img, angle=signed(2, 10), translate=[0, 0], scale=1.0,
                            shear=[0.0, 0.0], interpolation=bil)
        elif kind == 1:
            t = [round(signed(0.02, 0.10) * size) for _ in range(2)]
            img = TF.affine(img, angle=0.0, translate=t, scale=1.0, shear=[0.0, 0.0],
                            interpolation=bil)
        elif kind == 2:
            img = TF.affine(img, angle=0.0, translate=[0, 0], scale=1.0,
                            shear=[signed(2, 10), 0.0], interpolation=bil)
        else:
            img = TF.horizontal_flip(img)
        out[k] = img
    return out


def clip_gradients(net: nn.Module, cfg: TrainConfig) -> None:
    params = [p for p in net.parameters() if p.grad is not None]
    if cfg.grad_method == "global-l2norm":
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_threshold)
    else:
        for p in params:
            torch.nn.utils.clip_grad_norm_([p], cfg.grad_threshold)


def _autocast(cfg: TrainConfig):
    if cfg.precision == "bf16":
        return torch.autocast(device_type=cfg.device, dtype=torch.bfloat16)
    return torch.autocast(device_type=cfg.device, enabled=False)


def train(cache: Cache, train_cases: list[int], cfg: TrainConfig,
          val_cases: list[int] | None = None, decision: DecisionParams | None = None,
          on_epoch: Callable[[int, dict], None] | None = None,
          init: L3Net | None = None, keep_best: bool = False,
          checkpoint: Path | None = None,
          stop_after: int | None = None) -> tuple[L3Net, History]:
    """Train a fresh (or ``init``) network; ``on_epoch`` may raise to prune a trial.

    ``keep_best`` (with validation cases) returns the weights of the epoch with the best
    validation F1 rather than the last: validation swings from epoch to epoch on small sets.
    ``checkpoint``: after every epoch the network, optimiser, schedule, random state, history
    and best weights are written there, and a later call with the same file resumes after the
    last finished epoch (a CPU run of hours survives a stopped session).  ``stop_after``
    ends the run after that epoch with the schedule of the full run (an artifact from a run
    cut short; rerun without it to go on).
    """
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    net = (init or L3Net()).to(cfg.device).to(memory_format=torch.channels_last)
    if cfg.optimizer == "sgdm":
        opt: torch.optim.Optimizer = torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=0.9,
                                                     weight_decay=cfg.l2)
    else:
        opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.l2)
    plans = [plan_epoch(cache, train_cases, cfg, rng) for _ in range(cfg.epochs)]
    total_steps = sum(math.ceil(len(p.indices) / cfg.batch_size) for p in plans)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(total_steps, 1),
                                                       eta_min=cfg.lr * 0.01)
    hist = History()
    best: tuple[float, dict] | None = None
    start = 1
    if checkpoint is not None and Path(checkpoint).is_file():
        ck = torch.load(checkpoint, map_location=cfg.device, weights_only=False)
        if ck["config"] != asdict(cfg):
            raise ValueError(f"{checkpoint} was written with another configuration")
        net.load_state_dict(ck["net"])
        opt.load_state_dict(ck["opt"])
        sched.load_state_dict(ck["sched"])
        rng.bit_generator.state = ck["rng"]
        hist.epochs = ck["history"]
        best = ck["best"]
        start = ck["epoch"] + 1
    aug = AugmentParams(p=cfg.augment)
    for epoch, plan in enumerate(plans, start=1):
        if epoch < start:
            continue
        if stop_after is not None and epoch > stop_after:
            break
        net.train()
        t0 = time.perf_counter()
        loss_sum, correct, seen = 0.0, 0, 0
        pw = torch.tensor(plan.pos_weight)
        for k in range(0, len(plan.indices), cfg.batch_size):
            idx = plan.indices[k : k + cfg.batch_size]
            x = batch_tensor(cache, idx, cfg)
            over = plan.augment[k : k + cfg.batch_size]
            if over.any():
                x[torch.from_numpy(over)] = augment_batch(x[torch.from_numpy(over)], rng)
            if cfg.augment > 0:
                x = augment_realism(x, rng, aug)
            x = x.to(cfg.device).contiguous(memory_format=torch.channels_last)
            y = torch.from_numpy(plan.labels[k : k + cfg.batch_size]).float().to(cfg.device)
            with _autocast(cfg):
                logits = net(x)
            loss = nn.functional.binary_cross_entropy_with_logits(
                logits.float(), y, pos_weight=pw.to(cfg.device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            clip_gradients(net, cfg)
            opt.step()
            sched.step()
            loss_sum += float(loss.detach()) * len(idx)
            correct += int(((logits.detach().float() > 0) == (y > 0.5)).sum())
            seen += len(idx)
        rec = {"epoch": epoch, "train_loss": loss_sum / max(seen, 1),
               "train_accuracy": correct / max(seen, 1), "samples": seen,
               "pos_weight": plan.pos_weight, "seconds": time.perf_counter() - t0}
        if val_cases:
            rec.update(evaluate(net, cache, val_cases, cfg, decision or DecisionParams())
                       ["summary"])
        hist.epochs.append(rec)
        if keep_best and val_cases and (best is None or rec["val_f1"] > best[0]):
            best = (rec["val_f1"], {k: v.detach().clone() for k, v in net.state_dict().items()})
            rec["kept"] = True
        if on_epoch:
            on_epoch(epoch, rec)
        if checkpoint is not None:
            part = Path(checkpoint).with_suffix(".part")
            torch.save({"config": asdict(cfg), "net": net.state_dict(), "opt": opt.state_dict(),
                        "sched": sched.state_dict(), "rng": rng.bit_generator.state,
                        "history": hist.epochs, "best": best, "epoch": epoch}, part)
            part.replace(checkpoint)
    if best is not None:
        net.load_state_dict(best[1])
    net.eval()
    return net, hist


def case_probabilities(net: L3Net, cache: Cache, c: int, cfg: TrainConfig,
                       batch: int = 64) -> np.ndarray:
    """The network's L3 probability for every slice of case ``c`` (from the cache)."""
    net.eval()
    sl = cache.case_slices(c)
    idx = np.arange(sl.start, sl.stop)
    out = np.empty(len(idx))
    with torch.inference_mode():
        for k in range(0, len(idx), batch):
            x = batch_tensor(cache, idx[k : k + batch], cfg).to(cfg.device)
            x = x.contiguous(memory_format=torch.channels_last)
            with _autocast(cfg):
                out[k : k + batch] = net(x).float().sigmoid().cpu().numpy()
    return out


def evaluate(net: L3Net, cache: Cache, cases: list[int], cfg: TrainConfig,
             decision: DecisionParams) -> dict:
    """Per-slice precision/recall/F1 and per-case L3 slice error (slices and mm)."""
    tp = fp = fn = 0
    per_case = []
    for c in cases:
        probs = case_probabilities(net, cache, c, cfg)
        sl = cache.case_slices(c)
        lab = cache.labels[sl].astype(bool)
        pred = probs >= decision.threshold
        tp += int((pred & lab).sum())
        fp += int((pred & ~lab).sum())
        fn += int((~pred & lab).sum())
        d = decide(cache.z_mm[sl], probs, decision)
        case = cache.cases[c]
        rec = {"case_id": case.case_id, "status": d.status, "index": d.index,
               "confidence": d.confidence, "hard": case.hard}
        rec.update(case_errors(cache.z_mm[sl], d.index, case.l3_first, case.l3_last))
        per_case.append(rec)
    counts = {"tp": tp, "fp": fp, "fn": fn}
    sm = slice_metrics(counts)
    errs = [abs(r["error_slices"]) for r in per_case if "error_slices" in r]
    mm = [r["error_mm"] for r in per_case if "error_mm" in r]
    with_l3 = [r for r in per_case if "truth_index" in r]
    summary = {
        "val_f1": sm["slice_f1"], "val_precision": sm["slice_precision"],
        "val_recall": sm["slice_recall"], "slice_counts": counts,
        "val_error_slices_mean": float(np.mean(errs)) if errs else None,
        "val_error_mm_mean": float(np.mean(mm)) if mm else None,
        "val_found": sum(r["status"] == "found" for r in with_l3),
        "val_cases_with_l3": len(with_l3),
    }
    return {"summary": summary, "cases": per_case}


def config_dict(cfg: TrainConfig) -> dict:
    return asdict(cfg)
