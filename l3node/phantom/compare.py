"""Phantoms beside a real scan, same window, same levels: the picture in ``docs/phantom.md``.

Realism is judged by eye before it is judged by a network: each row is one series, with a
sagittal reformat through the spine and axial slices at L3's middle and 35 mm above and below
it (about one vertebra), all in one soft-tissue window and at one physical scale (mm), so
texture, shape and field of view can be compared directly.

Run: ``python -m l3node.phantom.compare OUT.png REAL_DIR:L3_INDEX PHANTOM_DIR [...]`` — a
phantom's L3 middle comes from its ``truth.json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from ..localize.qc import window01
from ..select import load_series

OFFSETS_MM = (35.0, 0.0, -35.0)  # above, at and below L3's middle
HALF_WIDTH_MM = 220.0  # every axial panel shows ±this around the image centre


def _l3_index(folder: Path, given: str | None) -> int:
    if given is not None:
        return int(given)
    return int(json.loads((folder / "truth.json").read_text())["l3"]["middle_index"])


def compare(out: Path, rows: list[tuple[str, Path, int]]) -> Path:
    """One row per (label, series folder, L3 middle index)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), 4, figsize=(16, 4 * len(rows)), squeeze=False)
    for r, (label, folder, l3) in enumerate(rows):
        s = load_series(folder)
        z = s.z_mm
        ps = s.slices[0].pixel_spacing
        ax = axes[r, 0]
        # sagittal through the column of the L3 slice's spine (brightest bone near mid-line)
        mid = s.hu([l3])[0]
        cols = mid.shape[1]
        band = mid[:, cols // 3 : 2 * cols // 3]
        c = cols // 3 + int(np.argmax((band > 200).sum(axis=0)))
        step = max(1, len(s) // 300)
        idx = list(range(0, len(s), step))
        sag = np.stack([s.hu([i])[0][:, c] for i in idx])
        ax.imshow(window01(sag), cmap="gray", aspect="auto",
                  extent=(0, sag.shape[1] * ps[0], z[idx[-1]], z[idx[0]]))
        ax.axhline(z[l3], color="yellow", lw=0.8)
        ax.set_title(f"{label}: sagittal", fontsize=9)
        for k, off in enumerate(OFFSETS_MM, start=1):
            i = int(np.argmin(np.abs(z - (z[l3] + off))))
            img = s.hu([i])[0]
            h, w = img.shape
            ax = axes[r, k]
            ax.imshow(window01(img), cmap="gray",
                      extent=(-w / 2 * ps[1], w / 2 * ps[1], h / 2 * ps[0], -h / 2 * ps[0]))
            ax.set_xlim(-HALF_WIDTH_MM, HALF_WIDTH_MM)
            ax.set_ylim(HALF_WIDTH_MM * 0.75, -HALF_WIDTH_MM * 0.75)
            where = "L3 middle" if off == 0 else f"L3 {off:+.0f} mm"
            ax.set_title(f"{label}: {where} (slice {i})", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle("window −250…450 HU; axial panels at one scale (±220 mm)")
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=70)
    plt.close(fig)
    return out


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__)
        return 2
    rows = []
    for spec in argv[1:]:
        path, _, given = spec.partition(":")
        folder = Path(path)
        rows.append((folder.name, folder, _l3_index(folder, given or None)))
    print(compare(Path(argv[0]), rows))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
