"""Pictures of a CT series for people: display windows and orthogonal reformats.

Three pictures are made from the same series — the Secondary Captures of
:mod:`l3node.compose`, the QC PNG of :mod:`l3node.localize.qc` and the phantom figures of
:mod:`l3node.phantom.figures` — and they used to carry three copies of the reformat and of the
windowing.  Two of those copies kept every decoded slice alive until the stack was built
(a list of column *views* pins each 512 × 512 slice: ~400 MB for a 1 mm series), a bug fixed
once in compose only.  Here is the one copy: :func:`reformat` decodes one slice at a time and
copies out only the lines it needs, so a whole-body series costs a few MB.

The windows are for display only.  The network's input windowing
(:func:`l3node.localize.preprocess.window`) is the model's contract and deliberately not
shared with these.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from .series import CTSeries

# --------------------------------------------------------------------------------------------
# windows


@dataclass(frozen=True)
class Window:
    """A display window, HU ``lo`` (black) to ``hi`` (white).

    Radiologists name windows by centre and width (:meth:`centred`); plots are easier to read
    with their bounds, so both spellings make the same object."""

    lo: float
    hi: float

    def __post_init__(self) -> None:
        if not (np.isfinite(self.lo) and np.isfinite(self.hi)) or self.hi <= self.lo:
            raise ValueError(f"a window needs finite lo < hi, got lo={self.lo}, hi={self.hi}")

    @classmethod
    def centred(cls, center: float, width: float) -> Window:
        """The window of ``width`` HU around ``center`` (DICOM's WindowCenter/WindowWidth)."""
        return cls(center - width / 2, center + width / 2)

    @property
    def width(self) -> float:
        return self.hi - self.lo

    @property
    def center(self) -> float:
        return (self.lo + self.hi) / 2


SOFT_TISSUE = Window.centred(40.0, 400.0)  # the axial key image: muscle, fat, organs
BONE = Window.centred(400.0, 1800.0)  # the sagittal SC: count the vertebrae
WIDE = Window(-250.0, 450.0)  # QC and phantom figures: soft tissue with the bone still grey


def window01(hu: np.ndarray, window: Window = WIDE) -> np.ndarray:
    """HU to [0, 1] (float, the input's precision) for plotting with matplotlib."""
    return np.clip((hu - window.lo) / window.width, 0.0, 1.0)


def window8(hu: np.ndarray, window: Window = SOFT_TISSUE) -> np.ndarray:
    """HU to 8-bit grey (rounded, not truncated) for a Secondary Capture's pixels."""
    return (window01(hu, window) * 255.0 + 0.5).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# reformats


@dataclass
class Reformat:
    """Orthogonal lines of a series, one row per sampled slice (superior first).

    ``sagittal[k]`` is image column ``column`` of slice ``indices[k]`` (running anterior to
    posterior), ``coronal[k]`` image row ``row`` (patient right to left); ``axial`` holds the
    whole slices asked for by index.  Images are float32 HU in the canonical orientation of
    :meth:`CTSeries.hu`."""

    indices: list[int]
    step: int  # slices per row
    column: int | None
    row: int | None
    sagittal: np.ndarray | None
    coronal: np.ndarray | None
    axial: dict[int, np.ndarray] = field(default_factory=dict)
    z_mm: np.ndarray = field(default_factory=lambda: np.zeros(0))  # per row
    slice_spacing_mm: float = 0.0  # between rows: the series' spacing × step
    pixel_spacing: tuple[float, float] = (1.0, 1.0)  # in-plane (row, column) spacing, mm


def sample_step(n: int, max_rows: int | None) -> int:
    """Every how many slices a reformat of at most ``max_rows`` rows takes one."""
    if max_rows is None or n <= 0:
        return 1
    if max_rows < 1:
        raise ValueError(f'Argument "max_rows" must be at least 1, got {max_rows}.')
    return max(1, int(np.ceil(n / max_rows)))


def reformat(series: CTSeries, *, column: int | None = None, row: int | None = None,
             max_rows: int | None = None, axial: Iterable[int] = ()) -> Reformat:
    """Sagittal (image ``column``) and/or coronal (image ``row``) reformats in one pass.

    Only every :func:`sample_step`-th slice is decoded when ``max_rows`` caps the height; the
    whole ``axial`` slices wanted are kept as well (decoded separately if not sampled).  Each
    decoded slice is dropped as soon as its lines are copied out."""
    n = len(series)
    if n == 0:
        raise ValueError("cannot reformat a series without slices")
    first = series.slices[0]
    if column is not None and not 0 <= column < first.columns:
        raise ValueError(f'Argument "column" must be in [0, {first.columns}), got {column}.')
    if row is not None and not 0 <= row < first.rows:
        raise ValueError(f'Argument "row" must be in [0, {first.rows}), got {row}.')
    wanted = sorted({int(i) for i in axial})
    if wanted and (wanted[0] < 0 or wanted[-1] >= n):
        raise ValueError(f'Argument "axial" must hold slice indices in [0, {n}), got {wanted}.')
    step = sample_step(n, max_rows)
    idx = list(range(0, n, step))
    # Filled one slice at a time: a list of line *views* would keep every decoded slice alive.
    sag = np.empty((len(idx), first.rows), dtype=np.float32) if column is not None else None
    cor = np.empty((len(idx), first.columns), dtype=np.float32) if row is not None else None
    kept: dict[int, np.ndarray] = {}
    for k, i in enumerate(idx):
        a = series.hu([i])[0]
        if sag is not None:
            sag[k] = a[:, column]
        if cor is not None:
            cor[k] = a[row, :]
        if i in wanted:
            kept[i] = a
    for i in wanted:
        if i not in kept:
            kept[i] = series.hu([i])[0]
    return Reformat(indices=idx, step=step, column=column, row=row, sagittal=sag, coronal=cor,
                    axial={i: kept[i] for i in wanted}, z_mm=series.z_mm[idx],
                    slice_spacing_mm=series.spacing_mm * step,
                    pixel_spacing=first.pixel_spacing)


def sagittal(series: CTSeries, column: int | None = None,
             max_rows: int | None = None) -> Reformat:
    """The sagittal reformat through image ``column`` (default: the image centre, where the
    spine of a centred patient runs); ``.sagittal`` is the picture."""
    if len(series) == 0:
        raise ValueError("cannot reformat a series without slices")
    col = series.slices[0].columns // 2 if column is None else column
    return reformat(series, column=col, max_rows=max_rows)


def coronal(series: CTSeries, row: int | None = None,
            max_rows: int | None = None) -> Reformat:
    """The coronal reformat through image ``row`` (default: the image centre);
    ``.coronal`` is the picture."""
    if len(series) == 0:
        raise ValueError("cannot reformat a series without slices")
    r = series.slices[0].rows // 2 if row is None else row
    return reformat(series, row=r, max_rows=max_rows)
