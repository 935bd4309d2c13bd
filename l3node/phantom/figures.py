"""Pictures of a generated phantom: sagittal and coronal reformats with the vertebra levels
marked, and axial slices at L1, L3 and L5 — what ``docs/phantom.md`` shows.

The series is read as the node reads it (:func:`l3node.select.load_series`: superior
first, the order of ``truth.json``) and reformatted by :func:`l3node.views.reformat`, one slice
decoded at a time, keeping only the reformat lines and the three axial slices: a 1 mm
whole-body series needs a few MB.  Run: ``python -m l3node.phantom.figures STUDY_DIR OUT_DIR``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from ..select import load_series
from ..views import reformat, window01


def make_figures(study: Path, out: Path, stem: str = "phantom") -> list[Path]:
    """Write ``STEM-reformats.png`` (sagittal and coronal through L3's centre, levels marked)
    and ``STEM-axial.png`` (the middle slices of L1, L3 and L5) into ``out``; returns them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    truth = json.loads((study / "truth.json").read_text())
    s = truth["series"]
    series = load_series(study, s.get("series_instance_uid"))
    if [sl.sop_instance_uid for sl in series.slices] != list(s["sop_instance_uids"]):
        raise ValueError(f"{study}: the series' slices are not those of truth.json (in order)")
    grid = truth["grid"]
    l3 = next(v for v in truth["vertebrae"] if v["name_from_sacrum"] == "L3")
    cx, cy = l3["center_xy_mm"]
    col = round((cx - grid["x0"]) / grid["spacing"])
    row = round((cy - grid["y0"]) / grid["spacing"])
    wanted = {}
    for name in ("L1", "L3", "L5"):
        v = next(v for v in truth["vertebrae"] if v["name_from_sacrum"] == name)
        if v["slice_range"]:
            wanted[(v["slice_range"][0] + v["slice_range"][1]) // 2] = name
    view = reformat(series, column=col, row=row, axial=wanted)
    sag, cor = view.sagittal, view.coronal
    axials = {wanted[i]: a for i, a in view.axial.items()}
    zs = np.asarray(s["z_positions_mm"])
    extent_sag = [grid["y0"], grid["y0"] + grid["spacing"] * grid["rows"], zs[-1], zs[0]]
    extent_cor = [grid["x0"], grid["x0"] + grid["spacing"] * grid["cols"], zs[-1], zs[0]]
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    height = max(6.0, (zs[0] - zs[-1]) / 120.0)
    fig, axs = plt.subplots(1, 2, figsize=(12, height))
    for ax, img, ext, title in (
        (axs[0], sag, extent_sag, "sagittal (y →)"),
        (axs[1], cor, extent_cor, "coronal (x →)"),
    ):
        ax.imshow(window01(img), cmap="gray", extent=ext, aspect="equal")
        ax.set_title(title)
        for v in truth["vertebrae"]:
            zlo, zhi = v["z_range_mm"]
            if zhi < zs[-1] or zlo > zs[0]:
                continue
            colr = "yellow" if v["name_from_sacrum"] == "L3" else "cyan"
            ax.axhline(zhi, color=colr, lw=0.4, alpha=0.6)
            ax.text(
                ext[1] - 5,
                0.5 * (zlo + zhi),
                v["name_from_sacrum"],
                color=colr,
                fontsize=6,
                ha="right",
                va="center",
            )
        if truth["l3"]["present"]:
            ax.axhline(truth["l3"]["middle_z_mm"], color="red", lw=1.0)
        ax.set_xlabel("mm")
    axs[0].set_ylabel("z (mm)")
    fig.tight_layout()
    p = out / f"{stem}-reformats.png"
    fig.savefig(p, dpi=90)
    plt.close(fig)
    paths.append(p)
    if axials:
        fig, axs = plt.subplots(1, len(axials), figsize=(5 * len(axials), 5))
        axs = np.atleast_1d(axs)
        for ax, name in zip(axs, ("L1", "L3", "L5"), strict=False):
            if name in axials:
                ax.imshow(window01(axials[name]), cmap="gray")
                ax.set_title(f"axial, middle of {name}")
            ax.axis("off")
        fig.tight_layout()
        p = out / f"{stem}-axial.png"
        fig.savefig(p, dpi=80)
        plt.close(fig)
        paths.append(p)
    return paths


if __name__ == "__main__":
    for path in make_figures(
        Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else "phantom"
    ):
        print(path)
