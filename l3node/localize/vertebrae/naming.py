"""Name the bodies twice — from the sacrum up and from the last rib down — and compare.

Both counts check themselves and decline with a note rather than guess (:func:`_irregular`):
a wrong confident L3 is worse than none.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from .constants import HEIGHT_RANGE, VERTEBRA_PERIOD_MM
from .result import Body, VertebraCount


def _irregular(chain: list[Body]) -> str:
    """Why the spacing of consecutive bodies ``chain`` is not a spine's, or "" when it is:
    centre-to-centre distances (body + disc) within ``VERTEBRA_PERIOD_MM`` and within
    ``HEIGHT_RANGE`` of their median.  A missed disc makes one "body" about twice as long; a
    false disc two short ones; either shifts every name counted across it."""
    whole = [b for b in chain if not b.partial]
    if len(whole) < 3:
        return "too few whole bodies to check their spacing"
    lo, hi = VERTEBRA_PERIOD_MM
    for what, v in (("spacing", np.abs(np.diff([b.z_mm for b in whole]))),
                    ("heights", np.array([b.height_mm for b in whole]))):
        med = float(np.median(v))
        if (v.min() < lo or v.max() > hi or v.min() < HEIGHT_RANGE[0] * med
                or v.max() > HEIGHT_RANGE[1] * med):
            return f"irregular body {what} (" + ", ".join(f"{x:.0f}" for x in v) + " mm)"
    return ""


def _name(bodies: list[Body], idx: np.ndarray) -> VertebraCount:
    """Find the sacrum and the last rib-bearing body; name L3 both ways and compare."""
    notes: list[str] = []
    # Sacrum: found by :func:`_sacrum_top` and marked by :func:`_bodies`.
    sac = next((k for k, b in enumerate(bodies) if b.sacral), None)
    # Ribs: runs of rib-flagged bodies; the run touching the sacrum is the iliac wing.
    flagged = [b.ribs and not b.sacral for b in bodies]
    runs: list[tuple[int, int]] = []
    for k, f in enumerate(flagged):
        if f and (not runs or runs[-1][1] != k - 1):
            runs.append((k, k))
        elif f:
            runs[-1] = (runs[-1][0], k)
    if sac is not None and runs and runs[-1][1] == sac - 1:
        runs.pop()
    last_rib = None
    if runs and runs[-1][1] + 1 < len(bodies) and not flagged[runs[-1][1] + 1]:
        last_rib = runs[-1][1]
    l3s = None
    if sac is None:
        notes.append("sacrum not in the field of view (or not recognised): no count from the "
                     "sacrum")
    elif sac < 3:
        notes.append(f"only {sac} bodies above the sacrum in range: L3 is above the range")
    else:
        # L3 is named by the discs below it and the one above: L3, L4 and L5 must be whole
        # bodies of a spine's proportions (what lies above L3 does not change its name).
        why = _irregular(bodies[sac - 3:sac])
        if why:
            notes.append(f"no count from the sacrum: {why} above it (a disc missed or a body "
                         "split), so the count cannot be trusted")
        else:
            l3s = sac - 3
            if bodies[l3s].partial:
                notes.append("L3 (from the sacrum) is cut by the range: its extent is partial")
    l3r = None
    lumbar = None
    if last_rib is None:
        notes.append("last rib-bearing vertebra not in the field of view (or not recognised): "
                     "no count from the ribs")
    else:
        end = sac if sac is not None else len(bodies)
        why = ""
        if last_rib + 3 >= end:
            why = "fewer than three bodies below the last rib in range"
        elif runs[-1][1] - runs[-1][0] < 1:
            why = "only one rib-bearing body above the lumbar spine"
        elif sac is not None and not 4 <= sac - last_rib - 1 <= 6:
            why = (f"{sac - last_rib - 1} bodies between the last rib and the sacrum is not "
                   "anatomy (ribs or discs misread)")
        else:
            why = _irregular(bodies[max(0, last_rib - 1):min(end, last_rib + 5)])
        if why:
            notes.append(f"rib count unsure ({why}): no count from the ribs")
            last_rib = None
        else:
            l3r = last_rib + 3
            lumbar = sac - last_rib - 1 if sac is not None else None
    # Names counted from the sacrum (L5 up) and from the last rib (T12 down).
    sac_names = ["L5", "L4", "L3", "L2", "L1", "T12", "T11", "T10", "T9", "T8"]
    named = []
    for k, b in enumerate(bodies):
        ns = sac_names[sac - 1 - k] if sac is not None and 0 <= sac - 1 - k < len(sac_names) \
            else None
        nr = None
        if last_rib is not None and not b.sacral:
            off = k - last_rib
            if off > 0:
                nr = f"L{off}"
            elif 12 + off >= 1:
                nr = f"T{12 + off}"
        named.append(replace(b, name_from_sacrum="S" if b.sacral else ns, name_from_ribs=nr))

    def rng(k: int | None) -> tuple[int, int] | None:
        return (named[k].first, named[k].last) if k is not None else None

    agree = None if l3s is None or l3r is None else l3s == l3r
    transitional = agree is False
    if agree:
        notes.insert(0, "sacrum and rib counts agree on L3")
    elif transitional:
        notes.insert(0, f"transitional anatomy: {lumbar} lumbar-type bodies between the last "
                     "rib and the sacrum; the counts from the sacrum and from the ribs name "
                     "different bodies L3")
    return VertebraCount(bodies=named, l3_from_sacrum=rng(l3s), l3_from_ribs=rng(l3r),
                         agree=agree, transitional=transitional, lumbar_count=lumbar,
                         sacrum_found=sac is not None, ribs_found=last_rib is not None,
                         note="; ".join(notes), sampled=[int(i) for i in idx])
