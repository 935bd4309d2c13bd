"""L3 truth from a CSV or from a label volume (ITK-SNAP NIfTI/NRRD, TotalSegmentator).

Each source yields :class:`~training.data.Case` objects whose ``l3_first``/``l3_last`` are
indices in the series' sorted order (superior to inferior), like the phantom's truth.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from l3node.select import load_series
from l3node.series import CTSeries

from .data import Case


def _range_from_z(series: CTSeries, z_a: float, z_b: float) -> tuple[int, int]:
    """Sorted indices of the slices whose centre lies within [min z, max z] (± 0.5 spacing)."""
    z = series.z_mm
    lo, hi = min(z_a, z_b), max(z_a, z_b)
    tol = 0.5 * series.spacing_mm
    idx = np.nonzero((z >= lo - tol) & (z <= hi + tol))[0]
    if idx.size == 0:
        raise ValueError(f"no slice of {series.series_instance_uid} lies between z = {lo:.1f} "
                         f"and {hi:.1f} mm (series spans {z.min():.1f}..{z.max():.1f} mm)")
    return int(idx.min()), int(idx.max())


def _range_from_instances(series: CTSeries, a: int, b: int) -> tuple[int, int]:
    by_num = {s.instance_number: k for k, s in enumerate(series.slices)}
    missing = [n for n in (a, b) if n not in by_num]
    if missing:
        raise ValueError(f"InstanceNumber {missing[0]} is not in series "
                         f"{series.series_instance_uid}")
    i, j = by_num[a], by_num[b]
    return min(i, j), max(i, j)


def cases_from_csv(path: Path) -> list[Case]:
    """Rows: ``series_folder,l3_first,l3_last,unit`` with unit ``z_mm`` or
    ``instance_number`` (relative folders are relative to the CSV's folder)."""
    path = Path(path)
    out = []
    with path.open(newline="") as f:
        for k, row in enumerate(csv.DictReader(f), start=2):
            try:
                folder = Path(row["series_folder"])
                unit = row.get("unit", "z_mm").strip()
                a, b = row["l3_first"], row["l3_last"]
            except KeyError as exc:
                raise ValueError(f"{path}:{k}: missing column {exc}") from exc
            if not folder.is_absolute():
                folder = path.parent / folder
            series = load_series(folder)
            if unit == "z_mm":
                first, last = _range_from_z(series, float(a), float(b))
            elif unit == "instance_number":
                first, last = _range_from_instances(series, int(a), int(b))
            else:
                raise ValueError(f'{path}:{k}: unit must be "z_mm" or "instance_number", '
                                 f"got {unit!r}")
            out.append(Case(case_id=series.series_instance_uid, folder=str(folder),
                            l3_first=first, l3_last=last, hard={}, source="csv"))
    return out


def load_label_volume(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Voxel array and a 4×4 voxel→patient (LPS, mm) affine from NIfTI or NRRD."""
    path = Path(path)
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        import nibabel as nib

        img = nib.load(str(path))
        ras = img.affine
        lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ ras
        return np.asarray(img.dataobj), lps
    if name.endswith(".nrrd"):
        import nrrd

        data, header = nrrd.read(str(path))
        dirs = np.asarray(header["space directions"], dtype=float).T
        origin = np.asarray(header["space origin"], dtype=float)
        space = str(header.get("space", "left-posterior-superior")).lower()
        aff = np.eye(4)
        aff[:3, :3], aff[:3, 3] = dirs, origin
        if space in ("right-anterior-superior", "ras"):
            aff = np.diag([-1.0, -1.0, 1.0, 1.0]) @ aff
        return data, aff
    raise ValueError(f"{path}: label volumes must be NIfTI (.nii, .nii.gz) or NRRD (.nrrd)")


def l3_z_range_from_mask(mask_path: Path, label: int | None = None,
                         body_mask: Path | None = None) -> tuple[float, float]:
    """Patient z-range (mm) of the L3 voxels: ``label`` in a multi-label volume (ITK-SNAP,
    TotalSegmentator "total": 29), or any non-zero voxel of a binary mask
    (TotalSegmentator ``vertebrae_L3``).  ``body_mask`` (non-zero = vertebral bodies) keeps
    only the body, the truth's definition of L3."""
    data, aff = load_label_volume(mask_path)
    sel = data == label if label is not None else data != 0
    if body_mask is not None:
        body, _ = load_label_volume(body_mask)
        if body.shape != data.shape:
            raise ValueError(f"{body_mask} has shape {body.shape}, {mask_path} {data.shape}")
        sel &= body != 0
    if not sel.any():
        what = f"label {label}" if label is not None else "no non-zero voxel"
        raise ValueError(f"{mask_path}: {what} found")
    ijk = np.argwhere(sel)
    z = (aff[:3, :3] @ ijk.T)[2] + aff[2, 3]
    half = 0.5 * abs(aff[2, :3]).max()
    return float(z.min() - half), float(z.max() + half)


def case_from_mask(series_folder: Path, mask_path: Path, label: int | None = None,
                   body_mask: Path | None = None) -> Case:
    series = load_series(series_folder)
    z_lo, z_hi = l3_z_range_from_mask(mask_path, label, body_mask)
    z = series.z_mm
    idx = np.nonzero((z >= z_lo) & (z <= z_hi))[0]
    if idx.size == 0:
        raise ValueError(f"the L3 of {mask_path} ({z_lo:.1f}..{z_hi:.1f} mm) lies outside "
                         f"the series ({z.min():.1f}..{z.max():.1f} mm)")
    return Case(case_id=series.series_instance_uid, folder=str(series_folder),
                l3_first=int(idx.min()), l3_last=int(idx.max()), hard={}, source="mask")
