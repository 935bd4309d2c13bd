"""The anatomical second opinion joined to the network's answer.

The ResNet50 remains the localizer.  The classical vertebra counter
(:mod:`l3node.localize.vertebrae`) looks at the bone around the network's answer and
(``DecisionParams.anatomy``):

* ``"off"`` — is not run;
* ``"flag"`` — reports which vertebra the network's slice lies in, counted up from the sacrum
  (and down from the last rib), and flags a disagreement or transitional anatomy (the two
  counts differ), without changing the answer;
* ``"snap"`` — as ``flag``, and when the count agrees that the network's slice lies in L3,
  the answer moves to the middle of that vertebral body (the counter sees the endplates; the
  network's profile is smoothed and can sit a slice or two off centre).

With ``anatomy_fallback`` a "not found" from the network is answered by the count from the
sacrum when the counter finds one (status ``found``, source ``anatomy``, low confidence).

Every outcome is written into :class:`Opinion`, which ``l3node predict --json``, the node's
result and the Secondary Capture's banner report.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

from ..series import CTSeries
from .decision import Decision, DecisionParams, middle_index

log = logging.getLogger(__name__)

FALLBACK_CONFIDENCE = 0.3  # an answer from counting alone is worth less than an agreed one


@dataclass
class Opinion:
    """What the counter said and what was done with it."""

    mode: str  # off | flag | snap
    agreement: str = "unavailable"  # agree | disagree | unavailable | off
    source: str = "model"  # model | model+anatomy | anatomy
    model_index: int | None = None  # the network's slice, before any snap
    vertebra: str | None = None  # the network's slice counted from the sacrum, e.g. "L3"
    l3_from_sacrum: list[int] | None = None
    l3_from_ribs: list[int] | None = None
    transitional: bool = False
    note: str = ""
    seconds: float = 0.0
    count: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        out = {k: v for k, v in self.__dict__.items() if k != "count"}
        out["seconds"] = round(self.seconds, 3)
        out["bodies"] = self.count.get("bodies", [])
        return out

    def banner(self) -> str:
        """One line for the Secondary Capture and the CLI."""
        if self.mode == "off":
            return ""
        if self.source == "anatomy":
            return f"anatomy: L3 by counting from the sacrum (network found none); {self.note}"
        if self.agreement == "agree":
            moved = " (snapped to the body's middle)" if self.source == "model+anatomy" else ""
            extra = "; transitional anatomy suspected" if self.transitional else ""
            return f"anatomy agrees: L3 counting from the sacrum{moved}{extra}"
        if self.agreement == "disagree":
            return (f"anatomy DISAGREES: counting from the sacrum this slice is "
                    f"{self.vertebra or 'not L3'}; check the level")
        return f"anatomy: not counted ({self.note})" if self.note else "anatomy: not counted"


def _name_of(count, index: int) -> tuple[str | None, tuple[int, int] | None]:
    """The sacrum-count name of the body containing (or nearest to) ``index``."""
    from .vertebrae import snap

    rng = snap(index, count)
    if rng is None:
        return None, None
    for b in count.bodies:
        if (b.first, b.last) == tuple(rng):
            return b.name_from_sacrum, rng
    return None, rng


def combine(series: CTSeries, decision: Decision, params: DecisionParams) -> tuple[
        Decision, Opinion]:
    """Run the counter around the network's answer and join the two (see the module doc)."""
    import time

    from .vertebrae import count_vertebrae

    mode = params.anatomy
    op = Opinion(mode=mode, model_index=decision.index)
    if mode == "off":
        op.agreement = "off"
        return decision, op
    t0 = time.perf_counter()
    found = decision.status == "found" and decision.index is not None
    if not found and not params.anatomy_fallback:
        op.note = "the network found no L3; no fallback"
        return decision, op
    try:
        z = float(series.z_mm[decision.index]) if found else 0.0
        window = ((z - params.anatomy_below_mm, z + params.anatomy_above_mm) if found
                  else None)
        count = count_vertebrae(series, z_range_mm=window)
    except Exception as exc:  # the second opinion must never cost the first
        log.warning("vertebra counter failed: %s", type(exc).__name__)
        op.note = f"counter failed ({type(exc).__name__})"
        op.seconds = time.perf_counter() - t0
        return decision, op
    op.seconds = time.perf_counter() - t0
    op.count = count.to_json()
    op.note = count.note
    op.transitional = bool(count.transitional)
    op.l3_from_sacrum = list(count.l3_from_sacrum) if count.l3_from_sacrum else None
    op.l3_from_ribs = list(count.l3_from_ribs) if count.l3_from_ribs else None
    if not found:
        if count.l3_from_sacrum is None:
            return decision, op
        first, last = count.l3_from_sacrum
        op.source = "anatomy"
        op.agreement = "unavailable"
        out = replace(decision, status="found", index=middle_index(first, last), first=first,
                      last=last, confidence=FALLBACK_CONFIDENCE,
                      reason="the network found no L3; answered by counting from the sacrum")
        return out, op
    name, body = _name_of(count, decision.index)
    op.vertebra = name
    if count.l3_from_sacrum is None or body is None:
        op.agreement = "unavailable"
        return decision, op
    if tuple(body) == tuple(count.l3_from_sacrum):
        op.agreement = "agree"
        if mode == "snap":
            first, last = body
            mid = middle_index(first, last)
            if mid != decision.index:
                op.source = "model+anatomy"
                return replace(decision, index=mid, first=first, last=last), op
        return decision, op
    op.agreement = "disagree"
    return replace(decision, reason=(decision.reason + "; " if decision.reason else "")
                   + f"the vertebra count calls this slice {name or 'not L3'}"), op
