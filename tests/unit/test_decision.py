"""The L3 decision on given probability profiles."""

from __future__ import annotations

import numpy as np
import pytest

from l3node.localize.decision import DecisionParams, decide, middle_index

P = DecisionParams(min_height_mm=20, typical_height_mm=27, max_height_mm=36,
                   smoothing_sigma_mm=3.0)


def _z(n: int, dz: float) -> np.ndarray:
    return -100.0 - dz * np.arange(n)  # superior to inferior


def _block(n: int, first: int, last: int, hi: float = 0.95, lo: float = 0.02) -> np.ndarray:
    p = np.full(n, lo)
    p[first : last + 1] = hi
    return p


@pytest.mark.parametrize("dz", [1.0, 2.5, 5.0])
def test_clean_profile_gives_the_middle_of_the_run(dz):
    n = int(300 / dz)
    first = int(120 / dz)
    last = first + int(27 / dz) - 1
    d = decide(_z(n, dz), _block(n, first, last), P)
    assert d.status == "found"
    assert abs(d.index - middle_index(first, last)) <= 1
    assert d.confidence > 0.8


def test_noisy_profile_still_finds_the_run():
    rng = np.random.default_rng(0)
    n, dz = 200, 1.25
    p = np.clip(_block(n, 90, 111) + rng.normal(0, 0.2, n), 0, 1)
    d = decide(_z(n, dz), p, P)
    assert d.status == "found"
    assert abs(d.index - middle_index(90, 111)) <= 1


def test_two_candidate_runs_pick_the_plausible_one_then_the_bigger():
    n, dz = 200, 2.0
    p = _block(n, 40, 42)  # a 6 mm spike: too short
    p[120:134] = 0.9  # 28 mm: plausible
    d = decide(_z(n, dz), p, P)
    assert d.status == "found" and d.index == middle_index(120, 133)
    q = _block(n, 40, 53, hi=0.6)  # two plausible runs: the larger mass wins ...
    q[120:134] = 0.95
    d2 = decide(_z(n, dz), q, P)
    assert d2.index == middle_index(120, 133)
    assert d2.confidence < 0.7  # ... with less confidence than a single clean run


def test_nothing_is_not_found_with_a_reason():
    d = decide(_z(100, 5.0), np.full(100, 0.05), P)
    assert d.status == "not_found" and d.index is None
    assert "no slice reaches probability 0.5" in d.reason
    spike = _block(100, 50, 50)  # one 5 mm slice: implausibly short
    d2 = decide(_z(100, 5.0), spike, DecisionParams(min_height_mm=20, typical_height_mm=27,
                                                    max_height_mm=36, smoothing_sigma_mm=0.5))
    assert d2.status == "not_found" and "L3-sized window" in d2.reason


def test_too_tall_run_gives_its_most_probable_l3_sized_window():
    n, dz = 300, 1.0
    p = _block(n, 100, 169, hi=0.6)  # 70 mm: L2-L3-L4 merged
    p[140:167] = 0.97  # the true L3
    d = decide(_z(n, dz), p, P)
    assert d.status == "found"
    assert abs(d.index - middle_index(140, 166)) <= 2


def _soft_peak(z: np.ndarray, centre: float, height: float, width_mm: float) -> np.ndarray:
    return 0.02 + height * np.exp(-0.5 * ((z - centre) / width_mm) ** 2)


def test_thick_slices_with_a_soft_peak_are_found():
    """5 mm slices, a soft profile above 0.5 over only ~10 mm (the real 5 mm case that failed
    on run height alone): the best L3-sized window finds it, at its centre."""
    z = _z(80, 5.0)
    centre = z[37]
    p = _soft_peak(z, centre, 0.62, 9.0)
    assert (p >= 0.5).sum() <= 3  # a run of <= 15 mm: the old rule said "not found"
    d = decide(z, p, P)
    assert d.status == "found"
    assert abs(d.index - 37) <= 1


def test_soft_profile_is_found_at_any_slice_thickness():
    for dz in (1.0, 2.5, 5.0):
        z = _z(int(300 / dz), dz)
        k = int(150 / dz)
        d = decide(z, _soft_peak(z, z[k], 0.7, 10.0), P)
        assert d.status == "found", dz
        assert abs(z[d.index] - z[k]) <= max(dz, 2.0), dz


def test_two_candidates_the_stronger_window_wins_with_less_confidence():
    z = _z(120, 2.5)
    one = decide(z, _soft_peak(z, z[80], 0.9, 10.0), P)
    two = decide(z, _soft_peak(z, z[30], 0.65, 10.0) + _soft_peak(z, z[80], 0.9, 10.0), P)
    assert two.status == "found" and abs(two.index - 80) <= 1
    assert len([r for r in two.runs if r.plausible]) == 2
    assert two.confidence < one.confidence


def test_a_low_flat_profile_is_not_found_even_if_one_slice_is_high():
    z = _z(100, 2.0)
    p = np.full(100, 0.1)
    p[50] = 0.99  # a lone slice: too little for an L3-sized window
    d = decide(z, p, DecisionParams(smoothing_sigma_mm=0.5))
    assert d.status == "not_found"


def test_run_cut_by_the_end_of_the_scan_is_accepted_and_flagged():
    """Two thirds of L3 (17.5 of 27 mm) at the scan's end: found, its middle is that of the
    part present; a quarter of it (7.5 mm) is not enough at an edge."""
    n, dz = 60, 2.5
    d = decide(_z(n, dz), _block(n, 53, 59), P)  # 17.5 mm at the inferior end
    assert d.status == "found" and d.last == 59
    assert abs(d.index - middle_index(53, 59)) <= 1
    assert "edge" in d.reason
    quarter = decide(_z(n, dz), _block(n, 57, 59), P)
    assert quarter.status == "not_found"


def test_heights_are_learnt_from_data():
    heights = np.array([24.0, 25.0, 26.5, 27.0, 27.5, 28.0, 30.0])
    d = DecisionParams().with_heights(heights)
    assert d.min_height_mm < 24.0 and d.max_height_mm > 30.0
    assert d.typical_height_mm == pytest.approx(27.0)
    with pytest.raises(ValueError, match="at least 3"):
        DecisionParams().with_heights(np.array([27.0]))


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="equal-length"):
        decide(_z(10, 1.0), np.zeros(9), P)
    with pytest.raises(ValueError, match="threshold"):
        DecisionParams(threshold=1.5)


def test_the_localizers_middle_slice_is_the_phantom_truths():
    """Two definitions, one in the truth and one in the code under test, must agree."""
    from l3node.phantom.study import middle_index as truth_middle

    for first in range(0, 12):
        for last in range(first, first + 15):
            assert middle_index(first, last) == truth_middle(first, last)


def test_a_few_probable_slices_at_the_scans_end_are_not_an_l3():
    """A chest scan ending at T12/L1 whose last three slices look like L3: slices beyond the
    scan count as 0 in the window, so three slices cannot make an L3-sized window."""
    z = _z(112, 1.5)
    p = np.full(112, 0.02)
    p[-3:] = 0.95
    d = decide(z, p, P)
    assert d.status == "not_found", (d.index, [(r.first, r.last, r.mean_p) for r in d.runs])
