"""From per-slice L3 probabilities to one L3 slice (or a reasoned "not found").

The profile along z is smoothed (Gaussian, sigma in mm) and scanned with a window of the
typical L3 body height learnt from the training data (in mm, from the artifact): the best
L3-sized window wins, rather than a contiguous run above 0.5.  Thick slices and soft profiles
(a 5 mm series whose peak stays above 0.5 for only two slices) are then judged by the same
measure as 1 mm series; a single-slice spike is too little mass for a whole window.  A window
may hang over the scan's first or last slice (the scan ends inside L3).

**The reported slice is the middle of the body within the window**: around the window's
peak, the slices above half the peak; ``(first + last) // 2`` in sorted order (superior to
inferior; the upper of two on a tie).
Confidence is the window's mean probability times its share of the mass of all accepted
candidate windows, so a clean single peak scores near its mean and two rivals halve it.
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
    # ... and only around coarse slices reaching this fraction of the best coarse slice: a
    # model that is unsure in the neck or at the hips must not cost a refinement there.
    refine_relative: float = 0.5
    # Refinement evaluates slices this far apart at most (thin series: every 2nd slice of
    # 1 mm; the profile is smoothed over 3 mm, so the skipped ones are interpolated).
    refine_step_mm: float = 2.0
    # A typical-height window counts as L3 when its mean smoothed probability reaches this
    # (and its peak reaches ``threshold``).
    window_threshold: float = 0.35
    # A window whose body touches the scan's first or last slice needs this mean: at least
    # half an L3's worth of certain slices.  Chest scans commonly end at L1-L2, where the
    # network already sees "almost L3"; scans ending inside L3 are rare.
    edge_window_threshold: float = 0.5
    # The anatomical second opinion (l3node.localize.opinion): off | flag | snap; with the
    # fallback, a "not found" is answered by counting from the sacrum.
    anatomy: str = "flag"
    anatomy_fallback: bool = False
    # The counter looks this far above and below the answer: far enough below for the sacrum
    # when the answer is as high as L1, far enough above for the last ribs from L3.
    anatomy_above_mm: float = 130.0
    anatomy_below_mm: float = 230.0

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f'"threshold" must be in (0, 1), got {self.threshold}')
        if self.anatomy not in ("off", "flag", "snap"):
            raise ValueError(f'"anatomy" must be off, flag or snap, got {self.anatomy!r}')
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
    """Pick the L3 body from a probability profile over slices sorted superior to inferior.

    The smoothed profile is scanned with a window of the typical L3 height (in mm, so 1 mm and
    5 mm series are judged alike); at the scan's ends the window may hang over the edge as
    long as ``edge_fraction`` of the minimum height lies inside.  Candidates are the windows
    that are local maxima of the windowed mean (slices beyond the scan count as 0), at least
    a typical height apart.  A candidate
    counts when its mean reaches ``window_threshold`` and its peak ``threshold``: a soft,
    low peak over a 5 mm series (a contiguous run above 0.5 of only 10 mm) is still found,
    while a single-slice spike or a flat low profile is not.  The best candidate (largest
    mean) wins; the reported slice is the middle of its window clipped to the scan.
    """
    z = np.asarray(z_mm, dtype=float)
    p = np.asarray(probs, dtype=float)
    if z.shape != p.shape or z.ndim != 1 or len(z) == 0:
        raise ValueError(f"z and probabilities must be equal-length 1-D arrays, got "
                         f"{z.shape} and {p.shape}")
    if np.isnan(p).any():
        raise ValueError("probabilities contain NaN")
    dz = _spacing(z)
    sigma = params.smoothing_sigma_mm / dz
    s = gaussian_filter1d(p, sigma, mode="nearest") if sigma >= 0.3 else p.copy()
    if s.max() < params.threshold:
        return Decision("not_found", reason=f"no slice reaches probability {params.threshold:g} "
                        f"(highest {s.max():.2f})", smoothed=s)
    cands = _windows(s, dz, params)
    good = [r for r in cands if r.plausible]
    if not good:
        best_mean = max((r.mean_p for r in cands), default=0.0)
        return Decision("not_found", runs=cands, smoothed=s, reason=(
            f"no L3-sized window ({params.typical_height_mm:g} mm) has a mean probability of "
            f"{params.window_threshold:g} with a peak of {params.threshold:g} (best mean "
            f"{best_mean:.2f})"))
    best = max(good, key=lambda r: r.mean_p)
    total = sum(r.mass for r in good)
    conf = best.mean_p * (best.mass / total if total > 0 else 0.0)
    return Decision("found", index=middle_index(best.first, best.last), first=best.first,
                    last=best.last, confidence=round(float(conf), 4), runs=cands, smoothed=s,
                    reason="window at the scan's edge" if best.at_edge else "")


def _windows(s: np.ndarray, dz: float, params: DecisionParams) -> list[Run]:
    """Candidate L3 windows: local maxima of the windowed mean, a typical height apart."""
    n = len(s)
    w = max(1, round(params.typical_height_mm / dz))
    need = max(1, round(params.edge_fraction * params.min_height_mm / dz))
    # Beyond the scan the profile counts as 0: a window hanging over the edge must earn its
    # mean from the slices it has (a scan ending inside L3 keeps most of the body's mass; a
    # few probable slices at the end of a chest scan do not make an L3).
    inside = np.concatenate([np.zeros(w - 1), np.ones(n), np.zeros(w - 1)])
    padded = np.concatenate([np.zeros(w - 1), s, np.zeros(w - 1)])
    starts = np.arange(-(w - 1), n)  # window k covers starts[k] .. starts[k] + w - 1
    csum = np.concatenate([[0.0], np.cumsum(padded)])
    ccnt = np.concatenate([[0.0], np.cumsum(inside)])
    total = csum[w:] - csum[:-w]
    count = ccnt[w:] - ccnt[:-w]
    ok = count >= min(need, n)
    mean = np.where(ok, total / w, -1.0)
    order = np.argsort(-mean, kind="stable")
    taken: list[int] = []
    runs: list[Run] = []
    for k in order:
        if mean[k] < 0 or len(runs) >= 5:
            break
        if any(abs(int(k) - t) < w for t in taken):
            continue
        taken.append(int(k))
        first = max(0, int(starts[k]))
        last = min(n - 1, int(starts[k]) + w - 1)
        seg = s[first : last + 1]
        # The body within the window: around its peak, the slices above half the peak (a
        # scan ending inside L3 reports the middle of the part it has, as the truth does).
        top = first + int(np.argmax(seg))
        half = 0.5 * s[top]
        first_c, last_c = top, top
        while first_c > first and s[first_c - 1] >= half:
            first_c -= 1
        while last_c < last and s[last_c + 1] >= half:
            last_c += 1
        first, last = first_c, last_c
        at_edge = first == 0 or last == n - 1
        bar = params.edge_window_threshold if at_edge else params.window_threshold
        runs.append(Run(first=first, last=last, height_mm=(last - first + 1) * dz,
                        mass=float(seg.sum() * dz), mean_p=float(mean[k]), at_edge=at_edge,
                        trimmed=False, plausible=bool(mean[k] >= bar
                                                      and seg.max() >= params.threshold)))
    return runs
