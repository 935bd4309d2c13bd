"""Cases (a CT series folder + its L3 truth) and the preprocessed-slice cache.

Every slice of every case is decoded and preprocessed once, with l3node's own
:func:`~l3node.localize.preprocess.preprocess`, and stored as uint8 in one memmap, so trials
and epochs never touch DICOM again.  The cache is keyed by the preprocessing parameters: a
different window or size builds a new one.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from l3node.localize.preprocess import Preprocessing, context_neighbours, preprocess
from l3node.select import load_series


@dataclass
class Case:
    """One labelled series.  ``l3_first``/``l3_last`` are sorted indices (superior first)."""

    case_id: str
    folder: str
    l3_first: int | None
    l3_last: int | None
    hard: dict  # flags for separate reporting (transitional, truncated, no_l3, ...)
    source: str  # truth.json | csv | mask


def cases_from_phantoms(root: Path) -> list[Case]:
    """Every ``truth.json`` under ``root`` becomes a case."""
    out = []
    found = [Path(d) / "truth.json" for d, _, files in os.walk(root, followlinks=True)
             if "truth.json" in files]
    for tj in sorted(found):
        t = json.loads(tj.read_text())
        l3 = t["l3"]
        out.append(Case(
            case_id=t["series"]["series_instance_uid"], folder=str(tj.parent),
            l3_first=l3.get("first_index") if l3["present"] else None,
            l3_last=l3.get("last_index") if l3["present"] else None,
            hard={k: v for k, v in t["hard_case"].items() if isinstance(v, bool)},
            source="truth.json",
        ))
    if not out:
        raise ValueError(f"no truth.json under {root}")
    return out


@dataclass
class Cache:
    """Preprocessed slices of all cases: ``images[offset[c] + i]`` is slice i of case c."""

    images: np.ndarray  # uint8, N × S × S (memmap)
    offsets: np.ndarray  # int64, one per case, plus the total at the end
    z_mm: np.ndarray  # float64, N
    labels: np.ndarray  # uint8, N (1 = L3 body slice)
    cases: list[Case]
    spacing_mm: np.ndarray  # per case

    def case_slices(self, c: int) -> slice:
        return slice(int(self.offsets[c]), int(self.offsets[c + 1]))

    def neighbours(self, idx: np.ndarray, offset_mm: float) -> tuple[np.ndarray, np.ndarray]:
        """Global indices of the slices nearest z+Δ and z−Δ within each slice's case, by the
        localizer's own rule (:func:`~l3node.localize.preprocess.context_neighbours`)."""
        idx = np.asarray(idx)
        case_of = np.searchsorted(self.offsets, idx, side="right") - 1
        up = np.empty_like(idx)
        down = np.empty_like(idx)
        for c in np.unique(case_of):
            sl = self.case_slices(int(c))
            here = case_of == c
            u, d = context_neighbours(self.z_mm[sl], idx[here] - sl.start, offset_mm)
            up[here], down[here] = sl.start + u, sl.start + d
        return up, down


def _key(cases: list[Case], pre: Preprocessing) -> str:
    blob = json.dumps([pre.to_json(), [asdict(c) for c in cases]], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def build_cache(cases: list[Case], pre: Preprocessing, cache_dir: Path,
                log: callable = print) -> Cache:  # type: ignore[valid-type]
    """Preprocess every slice once; reuse the cache when cases and parameters match."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = _key(cases, pre)
    meta_p, img_p = cache_dir / f"{key}.json", cache_dir / f"{key}.u8"
    if meta_p.is_file() and img_p.is_file():
        meta = json.loads(meta_p.read_text())
        n = meta["offsets"][-1]
        images = np.memmap(img_p, dtype=np.uint8, mode="r", shape=(n, pre.size, pre.size))
        return Cache(images, np.array(meta["offsets"]), np.array(meta["z_mm"]),
                     np.array(meta["labels"], dtype=np.uint8), cases,
                     np.array(meta["spacing_mm"]))
    series = [load_series(Path(c.folder)) for c in cases]
    counts = [len(s) for s in series]
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    n = int(offsets[-1])
    tmp = img_p.with_suffix(".part")
    images = np.memmap(tmp, dtype=np.uint8, mode="w+", shape=(n, pre.size, pre.size))
    z_all = np.empty(n)
    labels = np.zeros(n, dtype=np.uint8)
    for c, (case, s) in enumerate(zip(cases, series, strict=True)):
        base = int(offsets[c])
        for k in range(0, len(s), 32):
            idx = list(range(k, min(k + 32, len(s))))
            x = preprocess(s.hu(idx), pre)
            images[base + k : base + k + len(idx)] = np.rint(x * 255).astype(np.uint8)
        z_all[base : base + len(s)] = s.z_mm
        if case.l3_first is not None:
            labels[base + case.l3_first : base + case.l3_last + 1] = 1
        log(f"cache: case {c + 1}/{len(cases)} {len(s)} slices")
    images.flush()
    del images
    tmp.rename(img_p)
    meta_p.write_text(json.dumps({"offsets": offsets.tolist(), "z_mm": z_all.tolist(),
                                  "labels": labels.tolist(),
                                  "spacing_mm": [s.spacing_mm for s in series]}))
    return build_cache(cases, pre, cache_dir, log)
