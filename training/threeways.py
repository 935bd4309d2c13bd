"""Model alone, anatomy alone and combined: the three answers one run gives, for reports.

The localizer's result holds the network's own slice (``opinion.model_index``, before any
snap) and the combined answer (``result.index``).  Anatomy alone is the classical vertebra
count over the whole series, not only around the network's answer, so it is measured on its
own: the middle of the body it names L3 counting up from the sacrum.
"""

from __future__ import annotations

from l3node.localize.decision import middle_index
from l3node.localize.localizer import Result
from l3node.series import CTSeries


def three_ways(series: CTSeries, res: Result) -> dict:
    """``{"model": i|None, "anatomy": i|None, "combined": i|None}`` plus the count's note."""
    from l3node.localize.vertebrae import count_vertebrae

    model = res.opinion.model_index if res.opinion is not None else res.index
    if res.status != "found" and res.opinion is not None and res.opinion.source == "anatomy":
        model = None
    count = count_vertebrae(series)
    anat = (middle_index(*count.l3_from_sacrum) if count.l3_from_sacrum is not None
            else None)
    return {"model": model, "anatomy": anat,
            "combined": res.index if res.status == "found" else None,
            "anatomy_note": count.note, "agreement": res.opinion.agreement
            if res.opinion is not None else None}
