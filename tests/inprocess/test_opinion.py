"""The anatomical second opinion joined to a network answer, on a real phantom series."""

from __future__ import annotations

from dataclasses import replace

import pytest

from l3node.localize.decision import Decision, DecisionParams
from l3node.localize.opinion import combine
from l3node.select import load_series

from ..conftest import load_truth


@pytest.fixture(scope="module")
def series_truth(abdomen_study):
    return load_series(abdomen_study), load_truth(abdomen_study)


def _found(i: int) -> Decision:
    return Decision("found", index=i, first=i - 3, last=i + 3, confidence=0.9)


def test_agreeing_answer_is_snapped_to_the_middle_of_the_body(series_truth):
    series, t = series_truth
    mid, first, last = (t["l3"][k] for k in ("middle_index", "first_index", "last_index"))
    off = min(mid + 2, last)  # the network two slices off centre, still inside L3
    d, op = combine(series, _found(off), DecisionParams(anatomy="snap"))
    assert op.agreement == "agree" and op.vertebra == "L3"
    assert op.model_index == off
    assert abs(d.index - mid) <= 1  # the body's middle, as the counter sees its endplates
    assert first - 1 <= d.first and d.last <= last + 1
    assert "agrees" in op.banner()
    flag, op2 = combine(series, _found(off), DecisionParams(anatomy="flag"))
    assert flag.index == off and op2.agreement == "agree" and op2.source == "model"


def test_an_answer_in_another_vertebra_is_flagged_not_moved(series_truth):
    series, t = series_truth
    l1 = next(v for v in t["vertebrae"] if v["name_from_sacrum"] == "L1")
    i = (l1["slice_range"][0] + l1["slice_range"][1]) // 2
    d, op = combine(series, _found(i), DecisionParams(anatomy="snap"))
    assert op.agreement == "disagree" and d.index == i  # the network stays the localizer
    assert op.vertebra == "L1"
    assert "DISAGREES" in op.banner() and "L1" in d.reason


def test_off_runs_nothing_and_fallback_answers_a_not_found(series_truth):
    series, t = series_truth
    d, op = combine(series, _found(10), DecisionParams(anatomy="off"))
    assert d.index == 10 and op.agreement == "off" and op.seconds == 0
    nf = Decision("not_found", reason="no slice reaches probability 0.5")
    d, op = combine(series, nf, DecisionParams(anatomy="snap"))
    assert d.status == "not_found" and op.source == "model"
    d, op = combine(series, nf, replace(DecisionParams(anatomy="snap"), anatomy_fallback=True))
    assert d.status == "found" and op.source == "anatomy"
    assert t["l3"]["first_index"] - 1 <= d.index <= t["l3"]["last_index"] + 1
    assert d.confidence < 0.5 and "sacrum" in d.reason


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="anatomy"):
        DecisionParams(anatomy="maybe")
