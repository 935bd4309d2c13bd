"""The realism augmentation: it changes what the loss sees, stays in range, keeps channels
together, and a resumed training run continues where its checkpoint ended."""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from training.augment import AugmentParams, augment_realism, gaussian_blur
from training.data import Cache
from training.loop import TrainConfig, batch_tensor, plan_epoch, train

from ..conftest import toy_cache


def _disc_batch(n: int = 8, size: int = 64) -> torch.Tensor:
    """A bright disc (a 'vertebra') in a grey ellipse (a 'body') on black air."""
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    c = (size - 1) / 2
    body = (((xx - c) / (0.4 * size)) ** 2 + ((yy - c) / (0.3 * size)) ** 2 <= 1).float() * 0.5
    bone = (((xx - c) ** 2 + (yy - c - 5) ** 2) <= (0.08 * size) ** 2).float() * 0.5
    img = (body + bone).clamp(0, 1)
    return img.expand(n, 3, size, size).clone()


def test_augmentation_changes_every_image_and_keeps_the_range():
    x = _disc_batch()
    y = augment_realism(x, np.random.default_rng(0), AugmentParams(p=1.0))
    assert y.shape == x.shape and y.dtype == x.dtype
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
    diff = (y - x).abs().flatten(1).mean(1)
    assert (diff > 0.01).all(), diff  # every image is really different
    # no two images got the same draw
    assert len({round(float(d), 5) for d in diff}) == len(diff)
    assert torch.equal(x, _disc_batch())  # the input is left alone


def test_augmentation_applies_one_draw_to_the_three_context_channels():
    x = _disc_batch()
    y = augment_realism(x, np.random.default_rng(1), AugmentParams(p=1.0))
    # the channels were equal; geometry, kernel and intensity are shared, so only noise
    # (drawn once per image, as one scanner) could differ: they stay equal
    assert torch.allclose(y[:, 0], y[:, 1]) and torch.allclose(y[:, 1], y[:, 2])


def test_zoom_range_magnifies_and_shrinks_the_body():
    x = _disc_batch(n=64)
    only_geom = AugmentParams(p=1.0, rotate_deg=0, translate=0, shear_deg=0, flip_p=0,
                              elastic_p=0, lowres_p=0, blur_p=0, sharpen_p=0, gamma=(1, 1),
                              contrast=(1, 1), brightness=0, noise_p=0, cutout_p=0,
                              aspect=(1, 1))
    y = augment_realism(x, np.random.default_rng(2), only_geom)
    area = (y[:, 1] > 0.25).flatten(1).float().mean(1)
    a0 = float((x[0, 1] > 0.25).float().mean())
    assert float(area.max()) > 1.5 * a0  # a tight field of view: the body fills the frame
    assert float(area.min()) < 0.8 * a0  # a wide one


def test_p_zero_is_the_identity_and_blur_keeps_the_mean():
    x = _disc_batch()
    assert torch.equal(augment_realism(x, np.random.default_rng(0), AugmentParams(p=0.0)), x)
    b = gaussian_blur(x[0], 1.5)
    assert abs(float(b.mean()) - float(x[0].mean())) < 0.01
    assert float(b.std()) < float(x[0].std())


def _toy_cache() -> Cache:
    return toy_cache(n=24)


def test_training_with_augmentation_feeds_the_loss_other_pixels(monkeypatch):
    """With ``augment`` the network's input differs from the cached slices; without, not."""
    import training.loop as loop

    cache = _toy_cache()
    seen: list[torch.Tensor] = []
    real_aug = loop.augment_realism

    def spy(x, rng, a=None):
        out = real_aug(x, rng, a)
        seen.append((x.clone(), out.clone()))
        return out

    monkeypatch.setattr(loop, "augment_realism", spy)
    cfg = TrainConfig(input_mode="paper", precision="fp32", neg_per_case=None, epochs=1,
                      batch_size=16, augment=1.0)
    train(cache, [0, 1, 2], cfg)
    assert seen and all(not torch.equal(a, b) for a, b in seen)
    seen.clear()
    train(cache, [0, 1, 2], TrainConfig(**{**cfg.__dict__, "augment": 0.0}))
    assert not seen
    plan = plan_epoch(cache, [0], cfg, np.random.default_rng(0))
    x = batch_tensor(cache, plan.indices[:4], cfg)
    assert float(x.max()) <= 1.0


def test_an_interrupted_run_resumes_from_its_checkpoint(tmp_path):
    """Stopped after epoch 1, a rerun with the checkpoint trains epoch 2 only and ends with
    the weights of an uninterrupted run."""
    cache = _toy_cache()
    cfg = TrainConfig(input_mode="paper", precision="fp32", neg_per_case=None, epochs=2,
                      batch_size=24, augment=0.5)
    full, _ = train(cache, [0, 1, 2], cfg)
    ck = tmp_path / "ck.pt"

    class Stop(Exception):
        pass

    def stop_in_second(epoch, rec):
        if epoch == 2:
            raise Stop  # before epoch 2's checkpoint: the file holds epoch 1

    with contextlib.suppress(Stop):
        train(cache, [0, 1, 2], cfg, checkpoint=ck, on_epoch=stop_in_second)
    assert ck.exists()
    epochs: list[int] = []
    resumed, hist = train(cache, [0, 1, 2], cfg, checkpoint=ck,
                          on_epoch=lambda e, r: epochs.append(e))
    assert epochs == [2] and [h["epoch"] for h in hist.epochs] == [1, 2]
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values(), strict=True):
        if a.is_floating_point():
            assert torch.allclose(a, b, atol=1e-5), k
    other = TrainConfig(**{**cfg.__dict__, "lr": cfg.lr * 2})
    try:
        train(cache, [0, 1, 2], other, checkpoint=ck)
    except ValueError as exc:
        assert "another configuration" in str(exc)
    else:
        raise AssertionError("a checkpoint of another configuration was resumed")
