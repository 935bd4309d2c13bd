"""The decision parameters a trained artifact ships, learned from its training truth.

The localizer's decision checks the run of L3 slices it finds against the height an L3 body
has; that range is learned from the training cases' complete L3s (a scan ending inside L3
would teach a body too short), and the artifact carries it, so the node needs no constant.
A context model's coarse pass also steps by its context offset (:func:`context_steps`).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from l3node.localize.decision import DecisionParams

from .data import Cache, Case

MIN_CASES = 3  # fewer complete L3s than this say too little: keep the defaults


def l3_heights_mm(cases: list[Case], cache: Cache) -> np.ndarray:
    """Cranio-caudal height (mm) of each case's complete L3 body: slices × spacing."""
    return np.array([(c.l3_last - c.l3_first + 1) * cache.spacing_mm[i]
                     for i, c in enumerate(cases)
                     if c.l3_first is not None and not c.hard.get("l3_truncated")])


def learned_decision(cases: list[Case], cache: Cache) -> DecisionParams:
    """Decision parameters with the L3 height range learned from the cases' truth (complete
    L3s only); the defaults when fewer than three cases have one."""
    heights = l3_heights_mm(cases, cache)
    return (DecisionParams().with_heights(heights) if len(heights) >= MIN_CASES
            else DecisionParams())


def context_steps(decision: DecisionParams, offset_mm: float) -> DecisionParams:
    """A context model's decision: the coarse step and the refine margin equal its offset, so
    a coarse slice's ±Δ context neighbours are coarse slices too and each is preprocessed
    once (docs/localizer.md, "Coarse to fine")."""
    return replace(decision, coarse_step_mm=offset_mm, refine_margin_mm=offset_mm)
