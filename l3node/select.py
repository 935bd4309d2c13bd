"""Series selection: which CT series of a study the localizer runs on, and why not the others.

One ranking for every entry point — the node, ``l3node predict``, the trainer's data and
``training evaluate`` — so "the production path" picks the same series everywhere.  Candidates
must load as an axial CT series (:mod:`l3node.series` checks geometry) with at least
``selection.min_slices`` slices; then ORIGINAL/PRIMARY beats derived (``prefer_primary``), the
widest z coverage (to 1 cm) wins, and the thinnest (or thickest) slices break ties.  A
multi-frame CT instance (Enhanced, Legacy Converted Enhanced) is ranked as the series of its
frames: every frame counts as a slice, for ``min_slices`` as for coverage and thickness.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .config import SelectionConfig
from .series import CTSeries, SeriesError, build_series, scan_folder


@dataclass
class Selection:
    """The chosen series (``None`` when none is usable) and why every other one was not.

    ``skipped`` maps a series (or "(N file(s))" for files that were no CT image) to the
    reason; ``bad_files`` lists those files one by one.
    """

    series: CTSeries | None
    skipped: dict[str, str]
    bad_files: list[tuple[Path, str]] = field(default_factory=list)

    def why_none(self) -> str:
        return "; ".join(f"{k}: {v}" for k, v in self.skipped.items())


def _rank(rules: SelectionConfig):
    sign = -1.0 if rules.prefer == "thinnest" else 1.0

    def rank(s: CTSeries) -> tuple:
        primary = ("ORIGINAL" in s.image_type or not s.image_type) if rules.prefer_primary \
            else True
        cover = round(float(s.z_mm.max() - s.z_mm.min()) / 10.0)
        return (primary, cover, sign * s.slice_thickness_mm)

    return rank


def select_series(folder: Path, rules: SelectionConfig | None = None,
                  series_uid: str | None = None) -> Selection:
    """The best candidate CT series in ``folder`` (or the one named by ``series_uid``)."""
    rules = rules or SelectionConfig()
    groups, bad_files = scan_folder(Path(folder))
    skipped: dict[str, str] = {}
    for why, count in Counter(w for _, w in bad_files).items():
        skipped[f"({count} file(s))"] = why
    ok: list[CTSeries] = []
    for key, cand in groups.items():
        if series_uid is not None and key != series_uid:
            continue
        if cand.localizer:
            skipped[key] = "localizer/scout images"
            continue
        if len(cand.headers) < rules.min_slices:  # before its geometry: the first reason
            frames = any(h[0].frame is not None for h in cand.headers)
            skipped[key] = (f"series {key} has {len(cand.headers)} slices"
                            + (" (frames of a multi-frame image)" if frames else "")
                            + f"; at least {rules.min_slices} are needed "
                            "(selection.min_slices)")
            continue
        try:
            ok.append(build_series(key, cand, bad_files))
        except SeriesError as exc:
            skipped[key] = str(exc)
    if not ok:
        return Selection(None, skipped, bad_files)
    ok.sort(key=_rank(rules), reverse=True)
    for s in ok[1:]:
        skipped[s.series_instance_uid] = (
            f"not the best candidate ({len(s)} slices, {s.slice_thickness_mm:g} mm, "
            f"{s.z_mm.max() - s.z_mm.min():.0f} mm coverage)")
    return Selection(ok[0], skipped, bad_files)


def load_series(folder: Path, series_uid: str | None = None,
                rules: SelectionConfig | None = None) -> CTSeries:
    """The selected series of ``folder``, or :class:`SeriesError` saying why there is none.

    For callers that want a series or an error (``predict``, the trainer, benchmarks); the
    node keeps the whole :class:`Selection` to record what it skipped.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise SeriesError(f"{folder} is not a folder")
    sel = select_series(folder, rules, series_uid)
    if sel.series is not None:
        return sel.series
    problems = {k: v for k, v in sel.skipped.items() if not k.startswith("(")}
    if not problems:
        why = Counter(w for _, w in sel.bad_files).most_common(3)  # say why, not only how many
        detail = (f"; {len(sel.bad_files)} files skipped: " + "; ".join(
            f"{w} ({n})" for w, n in why)) if sel.bad_files else ""
        raise SeriesError(f"no CT series in {folder}{detail}")
    raise SeriesError("no usable axial CT series: " + "; ".join(
        v if v.startswith("series ") else f"{k}: {v}" for k, v in problems.items()))
