"""``python -m training calibrate``: the int8 ranges of a model, from phantom slices, offline.

Static int8 quantisation (:mod:`l3node.localize.int8`) needs the range of every activation
tensor.  They are measured here, once per set of weights, not at node start: the node stays
fast to start and its int8 graph is a function of the weights and this file alone.

The calibration images are phantom slices only — never the real cases in ``shared/data``,
which are kept for checking (``evaluate-real``) — made by the project's generator (each
case's ``truth.json`` must say ``l3node.phantom``), preprocessed by the node's own
:func:`~l3node.localize.preprocess.preprocess` and put into the model's input mode with the
node's own :func:`~l3node.localize.preprocess.context_neighbours`, so the network sees in
calibration exactly what it sees in service.  Per case: ``per_case`` slices evenly over the
series plus every slice of the L3 body (the decision depends on the probabilities there).
"""

from __future__ import annotations

import json
from itertools import groupby
from pathlib import Path

import numpy as np

from l3node.localize.int8 import CALIBRATION_FILE, calibrate, calibration_record
from l3node.localize.model import LoadedModel, ModelSpec, load_artifact, write_atomic
from l3node.localize.preprocess import context_neighbours, preprocess
from l3node.localize.runtime import export_onnx
from l3node.select import load_series
from l3node.series import CTSeries


def network_input(series: CTSeries, idx: list[int], spec: ModelSpec) -> np.ndarray:
    """N × 3 × S × S input for these slices, as :class:`~l3node.localize.localizer.Localizer`
    builds it (paper: the slice three times; context: the slices nearest z + Δ, z, z − Δ)."""
    if spec.input_mode == "paper":
        one = preprocess(series.hu(idx), spec.preprocessing)
        return np.repeat(one[:, None], 3, axis=1)
    up, down = context_neighbours(series.z_mm, idx, spec.context_offset_mm)
    need = sorted(set(idx) | set(up.tolist()) | set(down.tolist()))
    img = dict(zip(need, preprocess(series.hu(need), spec.preprocessing), strict=True))
    return np.stack([np.stack([img[int(u)], img[i], img[int(d)]])
                     for i, u, d in zip(idx, up, down, strict=True)])


def case_indices(n: int, truth: dict, per_case: int) -> list[int]:
    """``per_case`` slices evenly over a series of ``n``, plus the L3 body's slices."""
    idx = set(np.linspace(0, n - 1, min(per_case, n)).round().astype(int).tolist())
    l3 = truth["l3"]
    if l3.get("present") and l3.get("first_index") is not None:
        idx.update(range(int(l3["first_index"]), int(l3["last_index"]) + 1))
    return sorted(idx)


class PhantomSlices:
    """ONNX Runtime's ``CalibrationDataReader``: batches ``{"x": N × 3 × S × S}`` of the same
    N (the histogram collector stacks the batches of a stride), over the cases in order; the
    last ``< batch`` slices are left out."""

    def __init__(self, cases: list[tuple[CTSeries, list[int]]], spec: ModelSpec,
                 batch: int = 4) -> None:
        items = [(s, i) for s, idx in cases for i in idx]
        self._work = [items[k : k + batch] for k in range(0, len(items) // batch * batch,
                                                           batch)]
        self._spec = spec
        self.images = sum(len(w) for w in self._work)
        self.set_range(0, len(self._work))

    def __len__(self) -> int:
        return len(self._work)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._it = iter(self._work[start_index:end_index])

    def get_next(self) -> dict | None:
        item = next(self._it, None)
        if item is None:
            return None
        groups = [list(g) for _, g in groupby(item, key=lambda si: id(si[0]))]
        parts = [network_input(g[0][0], [i for _, i in g], self._spec) for g in groups]
        return {"x": np.concatenate(parts).astype(np.float32)}

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        out = self.get_next()
        if out is None:
            raise StopIteration
        return out


def phantom_cases(data: Path, per_case: int) -> tuple[list[tuple[CTSeries, list[int]]],
                                                      list[dict]]:
    """Each phantom study under ``data`` with its calibration slices, and its provenance."""
    cases, seeds = [], []
    for tj in sorted(Path(data).rglob("truth.json")):
        truth = json.loads(tj.read_text())
        if truth.get("generator") != "l3node.phantom":
            raise SystemExit(f"{tj.parent}: not a phantom (generator "
                             f"{truth.get('generator')!r}); calibration uses phantoms only")
        series = load_series(tj.parent)
        idx = case_indices(len(series), truth, per_case)
        cases.append((series, idx))
        req = truth.get("request", {})
        seeds.append({"case": tj.parent.name, "seed": req.get("seed"),
                      "index": req.get("index"), "preset": req.get("preset"),
                      "slice_mm": req.get("slice_mm"), "generator": truth.get("generator"),
                      "generator_version": truth.get("generator_version"),
                      "slices": len(idx)})
    if not cases:
        raise SystemExit(f"no phantom studies (truth.json) under {data}")
    return cases, seeds


def calibrate_model(model: LoadedModel, data: Path, per_case: int = 24,
                    out: Path | None = None) -> Path:
    """Measure the ranges on the phantoms under ``data``; write ``MODEL/int8-calibration.json``
    (or ``out``)."""
    assert model.net is not None and model.path is not None
    graph = export_onnx(model.net, model.spec.preprocessing.size)
    cases, seeds = phantom_cases(data, per_case)
    reader = PhantomSlices(cases, model.spec)
    print(f"calibrating on {reader.images} slices of {len(cases)} phantoms", flush=True)
    ranges = calibrate(graph, reader)
    record = calibration_record(graph, ranges, weights_sha256=model.sha256,
                                model_version=model.spec.version, phantoms=seeds,
                                images=reader.images)
    out = Path(out) if out else model.path / CALIBRATION_FILE
    write_atomic(out, json.dumps(record, indent=1) + "\n")
    print(f"{len(ranges)} tensor ranges written to {out}", flush=True)
    return out


def run(args) -> int:
    calibrate_model(load_artifact(args.model), args.data, args.per_case, args.out)
    return 0
