"""The one conftest of the three tiers of tests.

- ``unit/``: pure functions and small objects — no phantom study, no network, seconds.
- ``inprocess/``: real components in this process — phantom studies, the model, the series
  reader, compose (checked with dciodvfy), the trainer.
- ``peers/``: the node with real peers on loopback — DCMTK, Orthanc, Chromium, systemd.

Fixtures: phantom studies generated once per session, a throw-away Orthanc, and the shared
real CT (skipped, with the reason, where ``../shared/data`` is absent).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from l3node.phantom import StudyRequest, generate_study

from .support import SHARED, Orthanc

if TYPE_CHECKING:
    from training.data import Cache


def _study(tmp_path_factory: pytest.TempPathFactory, name: str, **kw) -> Path:
    folder = tmp_path_factory.mktemp(name)
    generate_study(folder, StudyRequest(**kw), workers=2)
    return folder


@pytest.fixture(scope="session")
def abdomen_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2.5 mm abdomen-pelvis phantom (about 160 slices)."""
    return _study(
        tmp_path_factory,
        "abd",
        seed=21,
        preset="abdomen-pelvis",
        slice_mm=2.5,
        transitional_rate=0.0,
        truncated_rate=0.0,
    )


@pytest.fixture(scope="session")
def small_abdomen_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 10 mm, 128² abdomen-pelvis phantom (a few dozen slices): compose, the SR and the
    multi-frame twins; the default model finds its L3.  Read only: tests write elsewhere."""
    folder = tmp_path_factory.mktemp("small-abd")
    generate_study(folder, StudyRequest(seed=21, preset="abdomen-pelvis", slice_mm=10.0,
                                        matrix=128, transitional_rate=0.0,
                                        truncated_rate=0.0), workers=1)
    return folder


@pytest.fixture(scope="session")
def chest_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _study(tmp_path_factory, "chest", seed=4, preset="chest", slice_mm=5.0)


@pytest.fixture
def orthanc(tmp_path: Path):
    """A real Orthanc on loopback ports, stopped after the test."""
    o = Orthanc(tmp_path / "orthanc")
    yield o
    o.stop()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real CT beside the repository; the test is skipped, saying why, without it."""
    if not SHARED.is_dir():
        pytest.skip(f"the real CT is not at {SHARED} (../shared/data beside the repository)")
    return SHARED


def load_truth(folder: Path) -> dict:
    return json.loads((folder / "truth.json").read_text())


def toy_cache(n_cases: int = 3, n: int = 30, size: int = 32) -> Cache:
    """Random uint8 slices, 3 cases of ``n`` slices with L3 at 10..13 (5 mm apart)."""
    import numpy as np

    from training.data import Cache, Case

    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (n_cases * n, size, size), dtype=np.uint8)
    labels = np.zeros(n_cases * n, dtype=np.uint8)
    z = np.concatenate([-5.0 * np.arange(n) for _ in range(n_cases)])
    cases = []
    for c in range(n_cases):
        labels[c * n + 10 : c * n + 14] = 1
        cases.append(Case(f"c{c}", "", 10, 13, {}, "toy"))
    return Cache(images, np.arange(n_cases + 1) * n, z, labels, cases, np.full(n_cases, 5.0))
