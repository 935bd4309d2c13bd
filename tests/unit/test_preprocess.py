"""Preprocessing against a hand computation of the paper's steps."""

from __future__ import annotations

import numpy as np
import pytest

from l3node.localize.preprocess import Preprocessing, preprocess, stretch_limits


def _reference_stretchlim(img01: np.ndarray, low: float, high: float, bins: int) -> tuple:
    """MATLAB stretchlim, written out plainly: 256-bin histogram, first bins past tol."""
    counts = [0] * bins
    for v in img01.ravel():
        counts[int(np.floor(v * (bins - 1) + 0.5))] += 1
    total, acc = sum(counts), 0
    ilow = ihigh = None
    for k, c in enumerate(counts):
        acc += c
        if ilow is None and acc / total > low:
            ilow = k
        if ihigh is None and acc / total >= high:
            ihigh = k
    if ilow == ihigh:
        return 0.0, 1.0
    return ilow / (bins - 1), ihigh / (bins - 1)


def _hand_slice(rng: np.random.Generator) -> np.ndarray:
    hu = np.full((64, 64), -1000.0)  # air, below the window
    hu[8:56, 8:56] = -100  # fat
    hu[16:48, 16:48] = 50  # muscle
    hu[28:36, 28:36] = 700  # bone
    hu[30:32, 30:32] = 2500  # metal, above the window
    return hu + rng.normal(0, 15, hu.shape)


def test_matches_a_hand_computed_slice_without_resizing():
    rng = np.random.default_rng(0)
    hu = _hand_slice(rng)
    p = Preprocessing(size=64)  # same size: the resize is the identity
    got = preprocess(hu[None], p)[0]
    w = (np.clip(hu, -200, 1500) + 200) / 1700
    lo, hi = _reference_stretchlim(w, 0.01, 0.99, 256)
    want = np.clip((w - lo) / (hi - lo), 0, 1)
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert got.min() == 0.0 and got.max() == 1.0


def test_batch_equals_one_by_one_and_limits_are_per_image():
    rng = np.random.default_rng(1)
    batch = np.stack([_hand_slice(rng), _hand_slice(rng) * 0.5 - 100])
    p = Preprocessing(size=64)
    together = preprocess(batch, p)
    for k in range(2):
        np.testing.assert_allclose(together[k], preprocess(batch[k], p)[0], atol=1e-6)
    lo, hi = stretch_limits((np.clip(batch, -200, 1500) + 200) / 1700, p)
    assert lo[0] != lo[1] or hi[0] != hi[1]


def test_flat_image_keeps_the_unit_range_like_matlab():
    p = Preprocessing(size=32)
    lo, hi = stretch_limits(np.full((1, 32, 32), 0.3, dtype=np.float32), p)
    assert (lo[0], hi[0]) == (0.0, 1.0)


def test_resize_is_anti_aliased_and_in_unit_range():
    p = Preprocessing()
    checker = np.indices((512, 512)).sum(axis=0) % 2 * 1700.0 - 200.0  # -200 / 1500
    out = preprocess(checker[None], p)[0]
    assert out.shape == (224, 224)
    assert out.min() >= 0.0 and out.max() <= 1.0
    # anti-aliasing averages the one-pixel checkerboard to mid-grey instead of aliasing it
    assert abs(float(out[20:200, 20:200].mean()) - 0.5) < 0.05
    assert float(out[20:200, 20:200].std()) < 0.1


@pytest.mark.parametrize("field", ["hu_min", "stretch_low"])
def test_parameters_come_from_the_artifact(field):
    rng = np.random.default_rng(2)
    hu = _hand_slice(rng)
    base = preprocess(hu[None], Preprocessing(size=64))
    other = Preprocessing(size=64, **{field: {"hu_min": -500.0, "stretch_low": 0.6}[field]})
    assert not np.allclose(preprocess(hu[None], other), base)
    with pytest.raises(ValueError, match="unknown preprocessing parameters"):
        Preprocessing.from_json({"hu_min": -200, "gamma": 2})
