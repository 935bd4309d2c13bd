"""Run a model over a CT series and decide where L3 is.

Coarse-to-fine: slices at a stride of ``coarse_step_mm`` go through the network first; only
around those reaching ``refine_threshold`` and ``refine_relative`` × the best coarse
probability is every slice evaluated.  Unevaluated slices take
the profile linearly interpolated from their evaluated neighbours, then the decision runs on
the whole profile.  ``exhaustive=True`` evaluates every slice.  The answer then gets the
anatomical second opinion (:mod:`.opinion`: a classical vertebra count around it).

Each slice is decoded and preprocessed at most once (a cache keyed by slice index); in
``context`` mode the neighbours at ±Δ mm are decoded too, but cost no network time.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from ..config import Device, ModelConfig, Runtime
from ..series import CTSeries
from .decision import Decision, decide
from .model import LoadedModel, load_artifact
from .opinion import Opinion, combine
from .preprocess import context_neighbours, preprocess
from .runtime import OnnxNet, resolve_runtime


@dataclass
class Timings:
    decode_s: float = 0.0
    preprocess_s: float = 0.0
    inference_s: float = 0.0
    total_s: float = 0.0


@dataclass
class Result:
    status: str  # found | not_found | error
    slice_count: int
    evaluated: int
    decision: Decision | None = None
    probs: np.ndarray | None = None
    timings: Timings = field(default_factory=Timings)
    reason: str = ""
    opinion: Opinion | None = None  # the anatomical second opinion (vertebra count)
    scored: np.ndarray | None = None  # which slices went through the network (the rest of
    # ``probs`` is interpolated)

    @property
    def index(self) -> int | None:
        return self.decision.index if self.decision else None


def pick_device(name: Device | str = Device.AUTO) -> str:
    """The torch device for a configured :class:`Device`; "auto" is CUDA when present."""
    name = Device(name)
    if name is Device.AUTO:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name is Device.CUDA and not torch.cuda.is_available():
        raise ValueError('device "cuda" was asked for but no CUDA device is available')
    return name.value


class Localizer:
    """Holds a loaded model; :meth:`run` localizes L3 in one series.

    ``settings`` (a validated :class:`ModelConfig`) says how it runs: device, precision,
    runtime, batch size; its ``path`` is used by :meth:`open` only.
    """

    def __init__(self, model: LoadedModel, settings: ModelConfig | None = None) -> None:
        settings = settings or ModelConfig()
        self.settings = settings
        self.model = model
        self.batch_size = settings.batch_size
        self.precision = settings.precision
        self.device = device = pick_device(settings.device)
        if device == "cpu":
            torch.set_num_threads(max(1, os.cpu_count() or 1))
        self.runtime = resolve_runtime(settings.runtime, settings.precision, device)
        self.net: Callable[[torch.Tensor], torch.Tensor]
        if self.runtime is Runtime.ONNXRUNTIME:
            self.net, self.model = OnnxNet.from_model(model, settings.precision)
        elif model.net is None:
            raise ValueError("this model's PyTorch network was released; load it again")
        else:
            self.net = model.net.to(device).to(memory_format=torch.channels_last).eval()

    @classmethod
    def open(cls, settings: ModelConfig) -> Localizer:
        """Load the artifact at ``settings.path`` onto the configured device."""
        return cls(load_artifact(settings.path, device=pick_device(settings.device)), settings)

    # -- per-series state -------------------------------------------------------------------
    def run(self, series: CTSeries, exhaustive: bool = False) -> Result:
        t0 = time.perf_counter()
        spec = self.model.spec
        params = spec.decision
        z = series.z_mm
        n = len(z)
        self._cache: dict[int, np.ndarray] = {}
        self._t = Timings()
        self._series = series
        probs = np.full(n, np.nan)
        if exhaustive:
            self._score(list(range(n)), probs)
        else:
            step = max(1, round(params.coarse_step_mm / max(series.spacing_mm, 1e-3)))
            coarse = sorted(set(range(0, n, step)) | {n - 1})
            self._score(coarse, probs)
            todo: set[int] = set()
            bar = max(params.refine_threshold,
                      params.refine_relative * float(np.max(probs[coarse])))
            fine = max(1, round(params.refine_step_mm / max(series.spacing_mm, 1e-3)))
            for c in coarse:
                if probs[c] >= bar:
                    near = np.nonzero(np.abs(z - z[c]) <= params.refine_margin_mm)[0]
                    todo.update(int(i) for i in near if (i - c) % fine == 0)
            self._score(sorted(todo - set(coarse)), probs)
        done = ~np.isnan(probs)
        # z is descending; np.interp needs ascending x
        profile = np.interp(z[::-1], z[done][::-1], probs[done][::-1])[::-1]
        decision, opinion = combine(series, decide(z, profile, params), params)
        self._t.total_s = time.perf_counter() - t0
        return Result(status=decision.status, slice_count=n, evaluated=int(done.sum()),
                      decision=decision, probs=profile, timings=self._t,
                      reason=decision.reason, opinion=opinion, scored=done)

    def _slices(self, idx: list[int]) -> np.ndarray:
        """Preprocessed single-channel images for these slice indices (cached)."""
        need = [i for i in idx if i not in self._cache]
        spec = self.model.spec
        for k in range(0, len(need), self.batch_size):
            chunk = need[k : k + self.batch_size]
            t = time.perf_counter()
            hu = self._series.hu(chunk)
            t1 = time.perf_counter()
            x = preprocess(hu, spec.preprocessing)
            t2 = time.perf_counter()
            self._t.decode_s += t1 - t
            self._t.preprocess_s += t2 - t1
            for i, img in zip(chunk, x, strict=True):
                self._cache[i] = img
        return np.stack([self._cache[i] for i in idx])

    def _channels(self, idx: list[int]) -> np.ndarray:
        """N × 3 × S × S network input for these slices, in the model's input mode."""
        spec = self.model.spec
        if spec.input_mode == "paper":
            one = self._slices(idx)
            return np.repeat(one[:, None], 3, axis=1)
        z = self._series.z_mm
        up, down = (n.tolist() for n in context_neighbours(z, idx, spec.context_offset_mm))
        allx = self._slices(sorted(set(idx) | set(up) | set(down)))
        pos = {i: k for k, i in enumerate(sorted(set(idx) | set(up) | set(down)))}
        return np.stack([np.stack([allx[pos[u]], allx[pos[i]], allx[pos[d]]])
                         for i, u, d in zip(idx, up, down, strict=True)])

    def _score(self, idx: list[int], probs: np.ndarray) -> None:
        for k in range(0, len(idx), self.batch_size):
            chunk = idx[k : k + self.batch_size]
            x = torch.from_numpy(self._channels(chunk)).to(self.device)
            if self.runtime == "torch":
                x = x.contiguous(memory_format=torch.channels_last)
            t = time.perf_counter()
            probs[chunk] = predict_logits(self.net, x, self.precision).sigmoid().numpy()
            self._t.inference_s += time.perf_counter() - t


def predict_logits(net: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                   precision: str = "fp32") -> torch.Tensor:
    """Logits for a batch, in inference mode; bf16 autocast when asked."""
    with torch.inference_mode():
        if precision == "bf16":
            with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16):
                out = net(x)
        else:
            out = net(x)
    return out.float().cpu()
