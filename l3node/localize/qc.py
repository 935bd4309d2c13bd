"""The QC picture a person checks first: a sagittal reformat with the L3 line, the axial
L3 slice, and the probability profile beside the reformat.

The reformat and the display window come from :mod:`l3node.views`, shared with the
Secondary Captures and the phantom figures, so the QC's reformat is made exactly as the one
sent to the PACS (and as cheaply: one slice decoded at a time).  ``window01`` is re-exported
here for the callers that import it from this module.
"""

from __future__ import annotations

from pathlib import Path

from ..series import CTSeries
from ..views import sagittal, window01
from .localizer import Result

__all__ = ["MAX_ROWS", "qc_png", "window01"]

MAX_ROWS = 400


def qc_png(series: CTSeries, result: Result, path: Path, title: str = "") -> Path:
    """Write the QC PNG of ``result`` on ``series`` to ``path`` (parents made); returns it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(series)
    z = series.z_mm
    first = series.slices[0]
    view = sagittal(series, max_rows=MAX_ROWS)
    idx, sag = view.indices, view.sagittal
    dy = first.pixel_spacing[0]
    fig = plt.figure(figsize=(12, 7))
    ax_s = fig.add_axes((0.03, 0.06, 0.3, 0.86))
    ax_p = fig.add_axes((0.34, 0.06, 0.1, 0.86), sharey=ax_s)
    ax_a = fig.add_axes((0.47, 0.06, 0.5, 0.86))
    ax_s.imshow(window01(sag), cmap="gray", aspect="auto",
                extent=(0, first.rows * dy, z[idx[-1]], z[idx[0]]))
    ax_s.set_ylabel("z (mm)")
    ax_s.set_title("sagittal (image centre)")
    if result.probs is not None:
        ax_p.plot(result.probs, z, lw=0.8, color="tab:blue", label="p(L3)")
        if result.decision is not None and result.decision.smoothed is not None:
            ax_p.plot(result.decision.smoothed, z, lw=1.2, color="tab:orange", label="smoothed")
        ax_p.set_xlim(0, 1)
        ax_p.set_title("profile")
        ax_p.tick_params(labelleft=False)
    d = result.decision
    if d is not None and d.status == "found" and d.index is not None:
        zl = z[d.index]
        for ax in (ax_s, ax_p):
            ax.axhline(zl, color="red", lw=1.2)
            ax.axhspan(z[d.last], z[d.first], color="yellow", alpha=0.15)
        ax_a.imshow(window01(series.hu([d.index])[0]), cmap="gray")
        ax_a.set_title(f"L3: slice {d.index + 1}/{n}, z = {zl:.1f} mm, "
                       f"confidence {d.confidence:.2f}")
    else:
        ax_a.text(0.5, 0.5, f"L3 not found\n{result.reason}", ha="center", va="center",
                  wrap=True)
    ax_a.axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
