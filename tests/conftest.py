"""Shared fixtures: phantom studies generated once per test session."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from l3node.phantom import StudyRequest, generate_study


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
def chest_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _study(tmp_path_factory, "chest", seed=4, preset="chest", slice_mm=5.0)


def load_truth(folder: Path) -> dict:
    return json.loads((folder / "truth.json").read_text())
