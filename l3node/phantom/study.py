"""Generate phantom CT studies: one series of single-slice CT Image Storage files + truth.json.

Slices are rendered and written in parallel, slab by slab, so a 1 mm whole-body series never
needs more than a few slices in memory.  Everything is a function of ``(seed, study index)``:
the same seed gives the same files, UIDs included.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .anatomy import GENERATOR_VERSION, draw_patient
from .dicom import SeriesInfo, write_slice
from .patient import Patient
from .render import Acquisition, Grid, Style, render_slice
from .request import PRESETS, SLICE_CHOICES, TRANSFER_SYNTAXES, StudyRequest
from .scene import Scene, build_scene

# The request and its choices live in .request (the DICOM writer reads them too); they stay
# importable from here, where callers have always found them.
__all__ = [
    "PRESETS",
    "SLICE_CHOICES",
    "TRANSFER_SYNTAXES",
    "Plan",
    "StudyRequest",
    "generate_study",
    "make_truth",
    "middle_index",
    "plan_study",
    "scene_ref_y",
    "slice_range",
]


@dataclass
class Plan:
    """Everything decided before the first pixel: patient, scan range, grid, acquisition."""

    request: StudyRequest
    patient: Patient
    z_positions: list[float]  # sorted superior -> inferior
    grid: Grid
    acq: Acquisition
    patient_position: str  # HFS | FFS
    signed: bool
    truncated: str  # "" | "bottom" | "top"
    series: SeriesInfo
    scene_seed: int
    hu: dict[str, float]
    style: Style


def plan_study(req: StudyRequest) -> Plan:
    rng = np.random.default_rng(req.study_seed)
    p = draw_patient(rng, seed=req.seed, transitional_rate=req.transitional_rate)
    scene_rng_seed = int(rng.integers(2**31))
    lm = p.landmarks
    l3 = p.l3
    u = rng.uniform
    if req.preset == "whole-body":
        top, bottom = lm["vertex"] + u(0, 15), lm["sole"] - u(0, 10)
    elif req.preset == "chest-abdomen-pelvis":
        top, bottom = lm["lung_apex"] + u(10, 40), lm["symphysis"] - u(10, 45)
    elif req.preset == "abdomen-pelvis":
        top, bottom = lm["right_dome"] + u(0, 40), lm["symphysis"] - u(10, 45)
    elif req.preset == "chest":
        top = lm["lung_apex"] + u(10, 40)
        bottom = u(p.vertebra("L2").z_hi + 3.0, p.vertebra("L1").z_hi)
    else:
        top, bottom = lm["vertex"] + u(0, 15), u(p.by_name("T4").z_mid, p.by_name("T2").z_hi)
    truncated = ""
    # Hard case: a scan that ends inside L3 (an upper-abdomen scan stopping short, or a pelvis
    # scan starting inside it).  Whole-body scans keep their name's promise.
    if req.preset in ("chest-abdomen-pelvis", "abdomen-pelvis") and (
        rng.random() < req.truncated_rate
    ):
        cut = l3.z_lo + u(0.3, 0.7) * (l3.z_hi - l3.z_lo)
        truncated = "bottom" if rng.random() < 0.5 else "top"
        if truncated == "bottom":
            bottom = cut
        else:
            top = cut
    thickness = float(req.slice_mm if req.slice_mm is not None else rng.choice(SLICE_CHOICES))
    n = int(np.floor((top - bottom) / thickness)) + 1
    top = round(top, 2)
    z_positions = [round(top - k * thickness, 3) for k in range(n)]

    # Field of view fitted to the widest trunk in range (arms may fall outside, as in life).
    scene = build_scene(p, np.random.default_rng(scene_rng_seed))
    width = _body_width(scene, z_positions)
    # Appearance comes from its own stream, so the anatomy of a seed stays what it was.
    srng = np.random.default_rng([*req.study_seed, 99])
    style = Style.draw(srng)
    u(1.02, 1.2)  # the former field-of-view draw, kept so later draws are unchanged
    # Field of view from tight (the body cut by the frame) to wide.
    fov = float(srng.choice([srng.uniform(0.82, 1.0), srng.uniform(1.0, 1.25),
                             srng.uniform(1.25, 1.6)], p=[0.3, 0.45, 0.25]))
    scale = 512 / req.matrix  # spacing limits are those of a 512² reconstruction
    spacing = float(np.clip(fov * width / req.matrix, 0.45 * scale, 1.0 * scale))
    spacing = round(spacing, 4)
    ref = scene_ref_y(scene, p)
    x0 = -0.5 * (req.matrix - 1) * spacing + u(-8, 8)
    y0 = ref - 0.5 * (req.matrix - 1) * spacing + u(-10, 10)
    grid = Grid(rows=req.matrix, cols=req.matrix, spacing=spacing, x0=round(x0, 3), y0=round(y0, 3))
    signed = bool(rng.random() < 0.5)
    acq = Acquisition(
        thickness=thickness,
        noise_sd=float(np.exp(u(np.log(4), np.log(60)))),
        noise_corr_px=float(u(0.6, 2.2)),
        blur_px=float(u(0.3, 1.6)),
        fov_circle=bool(rng.random() < 0.6),
        padding_hu=-3024.0 if signed and rng.random() < 0.5 else -1024.0,
        reference_width=330.0,
    )
    position = "FFS" if rng.random() < 0.2 else "HFS"
    series = SeriesInfo.draw(rng, req, p, thickness, position)
    return Plan(
        req,
        p,
        z_positions,
        grid,
        acq,
        position,
        signed,
        truncated,
        series,
        scene_rng_seed,
        scene.hu,
        style,
    )


def _body_width(scene: Scene, zs: list[float]) -> float:
    outer = scene.outer
    z0, z1 = min(zs), max(zs)
    mask = (outer.zs >= z0) & (outer.zs <= z1)
    a = outer.a[mask] if mask.any() else np.array([outer.at(0.5 * (z0 + z1))[2]])
    return float(2.0 * max(a.max(), 90.0))


def scene_ref_y(scene: Scene, p: Patient) -> float:
    """Centre of the FOV in y: the trunk centre at L3."""
    return scene.outer.at(p.l3.z_mid)[1]


# -- workers ------------------------------------------------------------------------------
_WORKER: dict = {}


def _init_worker(plan: Plan) -> None:
    _WORKER["plan"] = plan
    _WORKER["scene"] = build_scene(plan.patient, np.random.default_rng(plan.scene_seed))


def _render_chunk(args: tuple[Path, list[int]]) -> list[tuple[int, str, int]]:
    out_dir, indices = args
    plan: Plan = _WORKER["plan"]
    scene: Scene = _WORKER["scene"]
    done = []
    for i in indices:
        z = plan.z_positions[i]
        rng = np.random.default_rng([*plan.request.study_seed, 7, i])
        width = _width_at(scene, z)
        hu = render_slice(scene, z, plan.grid, plan.acq, width, rng, plan.style)
        sop, inst = write_slice(
            out_dir,
            plan.series,
            hu,
            index=i,
            count=len(plan.z_positions),
            z=z,
            origin=(plan.grid.x0, plan.grid.y0),
            spacing=plan.grid.spacing,
            thickness=plan.acq.thickness,
            signed=plan.signed,
            patient_position=plan.patient_position,
            transfer_syntax=plan.request.transfer_syntax,
        )
        done.append((i, sop, inst))
    return done


def _width_at(scene: Scene, z: float) -> float:
    return 2.0 * max(scene.outer.at(z)[2], 60.0)


def generate_study(out_dir: Path, req: StudyRequest, workers: int | None = None) -> dict:
    """Write one study's series into ``out_dir`` and return its truth (also saved)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plan = plan_study(req)
    n = len(plan.z_positions)
    workers = max(1, min(workers or os.cpu_count() or 1, 8, n))
    chunk = max(1, min(32, n // (workers * 4) or 1))
    jobs = [(out_dir, list(range(k, min(k + chunk, n)))) for k in range(0, n, chunk)]
    results: list[tuple[int, str, int]] = []
    if workers == 1:
        _init_worker(plan)
        for job in jobs:
            results.extend(_render_chunk(job))
    else:
        import multiprocessing as mp

        # forkserver: workers fork from a clean server process, not from a caller whose
        # threads (a node, torch, a web server in the same process) may hold locks.
        ctx = mp.get_context("forkserver")
        with ProcessPoolExecutor(
            workers, mp_context=ctx, initializer=_init_worker, initargs=(plan,)
        ) as ex:
            for part in ex.map(_render_chunk, jobs):
                results.extend(part)
    results.sort()
    truth = make_truth(plan, [r[1] for r in results], [r[2] for r in results])
    (out_dir / "truth.json").write_text(json.dumps(truth, indent=1))
    return truth


def middle_index(first: int, last: int) -> int:
    """The truth's middle L3 slice of the body's slices ``first..last`` (sorted superior to
    inferior): ``floor((first + last) / 2)``, the upper of two on a tie.

    Defined here, by the phantom, and not imported from the localizer, so the truth can
    disagree with the code under test (a test compares the two definitions)."""
    return (first + last) // 2


def slice_range(zs: np.ndarray, z_lo: float, z_hi: float) -> tuple[int, int] | None:
    """First and last sorted index whose slice centre lies in [z_lo, z_hi], or None."""
    idx = np.nonzero((zs >= z_lo) & (zs <= z_hi))[0]
    if idx.size == 0:
        return None
    return int(idx.min()), int(idx.max())


def make_truth(plan: Plan, sops: list[str], instance_numbers: list[int]) -> dict:
    p = plan.patient
    zs = np.asarray(plan.z_positions)
    verts = []
    for v in p.vertebrae:
        rng_ = slice_range(zs, v.z_lo, v.z_hi)
        verts.append(
            {
                "name": v.name,
                "name_from_sacrum": v.name_from_sacrum,
                "region": v.region,
                "z_range_mm": [v.z_lo, v.z_hi],
                "slice_range": list(rng_) if rng_ else None,
                "center_xy_mm": [v.cx, v.cy],
                "width_mm": v.width,
                "depth_mm": v.depth,
                "ribs": v.ribs,
            }
        )
    l3 = p.l3
    r = slice_range(zs, l3.z_lo, l3.z_hi)
    l3_truth: dict = {
        "present": r is not None,
        "vertebra_name_from_c1": l3.name,
        "z_range_mm": [l3.z_lo, l3.z_hi],
        "truncated": bool(plan.truncated),
    }
    if r is not None:
        mid = middle_index(*r)
        l3_truth.update(
            {
                "first_index": r[0],
                "last_index": r[1],
                "middle_index": mid,
                "middle_sop_instance_uid": sops[mid],
                "middle_instance_number": instance_numbers[mid],
                "middle_z_mm": float(zs[mid]),
            }
        )
    last_rib = max(i for i, v in enumerate(p.vertebrae) if v.ribs)
    from_rib = p.vertebrae[last_rib + 3] if last_rib + 3 < len(p.vertebrae) else None
    hard = {
        "transitional": p.variant != "none",
        "variant": p.variant,
        "l3_truncated": bool(plan.truncated),
        "truncated_side": plan.truncated or None,
        "no_l3": r is None,
        "metal_implant": p.metal_hip != "none",
        "feet_first": plan.patient_position == "FFS",
    }
    return {
        "generator": "l3node.phantom",
        "generator_version": GENERATOR_VERSION,
        "request": asdict(plan.request),
        "slice_order": "sorted superior to inferior (index 0 is the most superior slice)",
        "l3_definition": "third presacral vertebra counted upward from the sacrum; its body's "
        "slices are those whose centre z lies within the body's endplates at "
        "the body centre; the middle slice is floor((first + last) / 2)",
        "series": {
            "study_instance_uid": plan.series.study_uid,
            "series_instance_uid": plan.series.series_uid,
            "frame_of_reference_uid": plan.series.for_uid,
            "slice_count": len(zs),
            "slice_thickness_mm": plan.acq.thickness,
            "pixel_spacing_mm": plan.grid.spacing,
            "rows": plan.grid.rows,
            "columns": plan.grid.cols,
            "patient_position": plan.patient_position,
            "transfer_syntax": plan.request.transfer_syntax,
            "z_top_mm": float(zs[0]),
            "z_bottom_mm": float(zs[-1]),
            "sop_instance_uids": sops,
            "instance_numbers": instance_numbers,
            "z_positions_mm": [float(z) for z in zs],
        },
        "l3": l3_truth,
        "l3_from_last_rib": from_rib.name if from_rib else None,
        "counts": {
            "lumbar": p.lumbar_count,
            "thoracic": 12,
            "rib_pairs": p.rib_pairs,
            "cervical": 7,
        },
        "hard_case": hard,
        "landmarks_mm": dict(p.landmarks),
        "vertebrae": verts,
        "acquisition": asdict(plan.acq),
        "style": asdict(plan.style),
        "grid": asdict(plan.grid),
        "pixel_signed": plan.signed,
        "patient": {k: v for k, v in p.to_json().items() if k not in ("vertebrae", "landmarks")},
        "scene_seed": plan.scene_seed,
        "tissue_hu": {k: round(v, 1) for k, v in plan.hu.items()},
    }
