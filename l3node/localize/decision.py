"""From per-slice L3 probabilities to one L3 slice (or a reasoned "not found").

The profile along z is smoothed (Gaussian, sigma in mm), cut at a threshold into contiguous
runs, and each run is judged by its height: an L3 body is 20-35 mm tall, and the plausible
range is learnt from the training data and stored in the model artifact.  A run that is too
tall (L3 merged with a neighbour) is trimmed to the most probable window of typical height; a
run that touches the first or last slice may be short (the scan ends inside L3).  Among the
plausible runs the one with the largest probability mass wins.

**The reported slice is the run's middle slice**, ``(first + last) // 2`` in sorted order
(superior to inferior; the upper of two on a tie) — the same definition as the phantom
truth's middle slice.  Confidence is the run's mean probability times its share of the mass
of all runs, so a clean single run scores near 1 and two rival runs halve it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from scipy.ndimage import gaussian_filter1d

from .params import from_json_strict


def middle_index(first: int, last: int) -> int:
    """The slice reported for the run ``first..last`` (sorted superior to inferior)."""
    return (first + last) // 2


@dataclass(frozen=True)
class DecisionParams:
    threshold: float = 0.5
    smoothing_sigma_mm: float = 3.0
    min_height_mm: float = 18.0
    max_height_mm: float = 38.0
    typical_height_mm: float = 27.0
    edge_fraction: float = 0.35  # a run touching the scan's end may be this short (× min)
    coarse_step_mm: float = 15.0  # an L3 body (20-35 mm) always holds a coarse slice
    refine_threshold: float = 0.15
    refine_margin_mm: float = 15.0

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f'"threshold" must be in (0, 1), got {self.threshold}')
        if not 0 < self.min_height_mm <= self.typical_height_mm <= self.max_height_mm:
            raise ValueError(
                "heights must satisfy 0 < min <= typical <= max, got "
                f"{self.min_height_mm}, {self.typical_height_mm}, {self.max_height_mm}"
            )

    @classmethod
    def from_json(cls, d: dict) -> DecisionParams:
        return from_json_strict(cls, d, "decision")

    def with_heights(self, heights_mm: np.ndarray) -> DecisionParams:
        """Set the plausible L3 height range from observed L3 body heights (in mm)."""
        h = np.asarray(heights_mm, dtype=float)
        if h.size < 3:
            raise ValueError(f"need at least 3 L3 heights to learn a range, got {h.size}")
        lo, mid, hi = np.percentile(h, [1, 50, 99])
        d = asdict(self)
        d.update(min_height_mm=round(float(lo) * 0.9, 2), typical_height_mm=round(float(mid), 2),
                 max_height_mm=round(float(hi) * 1.1, 2))
        return DecisionParams(**d)


@dataclass
class Run:
    first: int
    last: int
    height_mm: float
    mass: float
    mean_p: float
    at_edge: bool
    trimmed: bool = False
    plausible: bool = False


@dataclass
class Decision:
    status: str  # found | not_found
    index: int | None = None
    first: int | None = None
    last: int | None = None
    confidence: float = 0.0
    reason: str = ""
    runs: list[Run] = field(default_factory=list)
    smoothed: np.ndarray | None = None


def _spacing(z: np.ndarray) -> float:
    return float(np.median(np.abs(np.diff(z)))) if len(z) > 1 else 1.0


def decide(z_mm: np.ndarray, probs: np.ndarray, params: DecisionParams) -> Decision:
    """Pick the L3 run from a probability profile over slices sorted superior to inferior."""
    z = np.asarray(z_mm, dtype=float)
    p = np.asarray(probs, dtype=float)
    if z.shape != p.shape or z.ndim != 1 or len(z) == 0:
        raise ValueError(f"z and probabilities must be equal-length 1-D arrays, got "
                         f"{z.shape} and {p.shape}")
    if np.isnan(p).any():
        raise ValueError("probabilities contain NaN")
    n = len(p)
    dz = _spacing(z)
    sigma = params.smoothing_sigma_mm / dz
    s = gaussian_filter1d(p, sigma, mode="nearest") if sigma >= 0.3 else p.copy()
    above = s >= params.threshold
    runs: list[Run] = []
    i = 0
    while i < n:
        if not above[i]:
            i += 1
            continue
        j = i
        while j + 1 < n and above[j + 1]:
            j += 1
        runs.append(_judge(i, j, s, dz, n, params))
        i = j + 1
    if not runs:
        return Decision("not_found", reason=f"no slice reaches probability {params.threshold:g} "
                        f"(highest {s.max():.2f})", smoothed=s)
    good = [r for r in runs if r.plausible]
    if not good:
        heights = ", ".join(f"{r.height_mm:.0f}" for r in runs)
        return Decision("not_found", runs=runs, smoothed=s, reason=(
            f"{len(runs)} candidate run(s) of height {heights} mm, none within the plausible "
            f"L3 height {params.min_height_mm:g}-{params.max_height_mm:g} mm"))
    best = max(good, key=lambda r: r.mass)
    total = sum(r.mass for r in runs)
    conf = best.mean_p * (best.mass / total if total > 0 else 0.0)
    return Decision("found", index=middle_index(best.first, best.last), first=best.first,
                    last=best.last, confidence=round(float(conf), 4), runs=runs, smoothed=s,
                    reason="run at the scan's edge" if best.at_edge else "")


def _judge(i: int, j: int, s: np.ndarray, dz: float, n: int, params: DecisionParams) -> Run:
    at_edge = i == 0 or j == n - 1
    trimmed = False
    height = (j - i + 1) * dz
    if height > params.max_height_mm + dz:
        w = max(1, round(params.typical_height_mm / dz))
        sums = np.convolve(s[i : j + 1], np.ones(w), mode="valid")
        start = i + int(np.argmax(sums))
        i, j, trimmed = start, start + w - 1, True
        height = w * dz
    seg = s[i : j + 1]
    ok = params.min_height_mm - dz <= height <= params.max_height_mm + dz
    if at_edge and not ok:
        ok = params.edge_fraction * params.min_height_mm <= height <= params.max_height_mm + dz
    return Run(first=i, last=j, height_mm=height, mass=float(seg.sum() * dz),
               mean_p=float(seg.mean()), at_edge=at_edge, trimmed=trimmed, plausible=ok)
