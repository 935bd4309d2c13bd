"""A phantom training set: ``python -m training make-phantom-set``.

The mix of body regions and slice thicknesses mimics a clinical archive, so a network
trained on it meets series that end above L3 (chest) as well as thin and thick abdomens.
Each case is one folder; ``truth.json`` is written last, so a rerun after an interruption
skips the finished cases and regenerates the rest.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

PRESETS = ["abdomen-pelvis", "chest-abdomen-pelvis", "whole-body", "chest"]
PRESET_WEIGHTS = [0.4, 0.35, 0.1, 0.15]
THICKNESS_MM = [1.25, 2.0, 2.5, 3.0, 5.0]
THICKNESS_WEIGHTS = [0.1, 0.15, 0.25, 0.2, 0.3]


def make_phantom_set(out: Path, count: int, seed: int = 1000, workers: int | None = None,
                     transitional_rate: float = 0.10, truncated_rate: float = 0.05,
                     matrix: int = 512) -> None:
    """Generate ``count`` studies under ``out/case-NNNN``, printing one line per case."""
    from l3node.phantom import StudyRequest, generate_study

    rng = np.random.default_rng(seed)
    for k in range(count):
        preset = str(rng.choice(PRESETS, p=PRESET_WEIGHTS))
        mm = float(rng.choice(THICKNESS_MM, p=THICKNESS_WEIGHTS))
        if preset == "whole-body":
            mm = max(mm, 3.0)  # keep the set small: whole-body at 3-5 mm
        if (out / f"case-{k:04d}" / "truth.json").is_file():
            continue  # written by an earlier, interrupted run (truth.json comes last)
        t = time.perf_counter()
        truth = generate_study(
            out / f"case-{k:04d}",
            StudyRequest(seed=seed, index=k, preset=preset, slice_mm=mm,
                         transitional_rate=transitional_rate,
                         truncated_rate=truncated_rate, matrix=matrix),
            workers=workers,
        )
        print(f"case {k + 1}/{count}: {preset} {mm:g} mm, "
              f"{truth['series']['slice_count']} slices, L3 "
              f"{'present' if truth['l3']['present'] else 'absent'} "
              f"({time.perf_counter() - t:.1f} s)", flush=True)
