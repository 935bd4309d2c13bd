"""A model artifact on labelled held-out series: ``python -m training evaluate``.

Cross-validation scores the network on the trainer's cache; this runs what the node runs
(DICOM → :class:`~l3node.localize.localizer.Localizer`, coarse to fine, with the anatomical
second opinion), so a figure quoted for a model is the production path's.  ``three_ways``
also scores the model alone, the vertebra count alone and the two combined.
"""

from __future__ import annotations

import json
from pathlib import Path

from l3node.localize.localizer import Localizer
from l3node.select import load_series

from .data import Case
from .report import case_errors, error_metrics, hard_case_metrics
from .threeways import three_ways

WAYS = ("model", "anatomy", "combined")


def _way_metrics(name: str, records: list[dict]) -> dict:
    return error_metrics([{"status": "found" if r["ways"][name] is not None else "not_found",
                           **r[f"{name}_errors"]} for r in records])


def evaluate_heldout(loc: Localizer, cases: list[Case], model: Path, ways: bool = False,
                     out: Path | None = None) -> dict:
    """Localize every case, printing one JSON line each, then the summary (all, ordinary and
    hard cases; per way with ``ways``); the full results go to ``out`` when given."""
    records = []
    for c in cases:
        s = load_series(Path(c.folder))
        res = loc.run(s)
        rec = {"case_id": c.case_id, "folder": c.folder, "status": res.status,
               "index": res.index, "hard": c.hard, "evaluated": res.evaluated,
               "slices": len(s), "seconds": round(res.timings.total_s, 2)}
        rec.update(case_errors(s.z_mm, res.index, c.l3_first, c.l3_last))
        if ways:
            rec["ways"] = three_ways(s, res)
            for name in WAYS:
                rec[f"{name}_errors"] = case_errors(s.z_mm, rec["ways"][name], c.l3_first,
                                                    c.l3_last)
        records.append(rec)
        print(json.dumps(rec), flush=True)
    ordinary = [r for r in records if not (r["hard"].get("transitional")
                                           or r["hard"].get("l3_truncated"))]
    result = {"model": str(model), "all": error_metrics(records),
              "ordinary": error_metrics(ordinary), "hard": hard_case_metrics(records),
              "cases": records}
    if ways:
        trans = [r for r in records if r["hard"].get("transitional")]
        result["three_ways"] = {name: {"all": _way_metrics(name, records),
                                       "transitional": _way_metrics(name, trans)}
                                for name in WAYS}
    if out:
        out.write_text(json.dumps(result, indent=1))
    print(json.dumps({k: result[k] for k in ("all", "ordinary", "hard", "three_ways")
                      if k in result}, indent=1))
    return result
