"""Write a CT volume held in NIfTI (values in HU) as a DICOM CT series, with l3node's own
CT writer, so labelled research volumes can go through the same loader as PACS data."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np

from l3node.phantom.dicom import SeriesInfo, ct_dataset, det_uid

from .labels import load_label_volume


def nifti_to_dicom(src: Path, out: Path, series_description: str = "converted from NIfTI",
                   transfer_syntax: str = "explicit") -> int:
    """Axial slices of an axis-aligned volume → ``out/CT#####.dcm``; returns the count.

    The in-plane axes are reordered and flipped so that columns run to the patient's left and
    rows to posterior (the canonical orientation); slice positions come from the affine.
    """
    data, aff = load_label_volume(src)  # LPS affine
    m = aff[:3, :3]
    axes = [int(np.argmax(np.abs(m[r]))) for r in range(3)]  # voxel axis along x, y, z
    if sorted(axes) != [0, 1, 2]:
        raise ValueError(f"{src}: the volume is not axis-aligned; resample it first")
    ax_x, ax_y, ax_z = axes
    vol = np.transpose(np.asarray(data, dtype=np.float32), (ax_z, ax_y, ax_x))
    steps = np.array([m[2, ax_z], m[1, ax_y], m[0, ax_x]])
    for k, step in enumerate(steps):
        if step < 0:
            vol = np.flip(vol, axis=k)
    # Voxel (z, y, x) index → patient position, after the flips.
    n_z = vol.shape[0]
    idx0 = np.zeros(3)
    for ax, step, n in zip((ax_z, ax_y, ax_x), steps, vol.shape, strict=True):
        idx0[ax] = (n - 1) if step < 0 else 0
    origin = aff[:3, :3] @ idx0 + aff[:3, 3]
    dz, dy, dx = np.abs(steps)
    key = Path(src).name
    day = dt.date(2024, 1, 1).strftime("%Y%m%d")
    info = SeriesInfo(
        study_uid=det_uid("nifti", key, "study"), series_uid=det_uid("nifti", key, "series"),
        for_uid=det_uid("nifti", key, "for"), patient_name="NIFTI^CONVERTED",
        patient_id=f"NIFTI-{det_uid('nifti', key)[-8:]}", birth_date="", study_date=day,
        study_time="120000", accession="", series_number=1, kvp=120.0, kernel="unknown",
        seed_parts=(0,), series_description=series_description, study_description=key,
        manufacturer_model="converted",
    )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for k in range(n_z):
        z = origin[2] + k * dz
        ds = ct_dataset(info, vol[k], sop=det_uid("nifti", key, "sop", k), instance=n_z - k,
                        ipp=[origin[0], origin[1], z], iop=[1, 0, 0, 0, 1, 0], spacing=(dy, dx),
                        thickness=dz, signed=True, patient_position="HFS",
                        transfer_syntax=transfer_syntax)
        ds.save_as(out / f"CT{n_z - k:05d}.dcm", enforce_file_format=True)
    return n_z
