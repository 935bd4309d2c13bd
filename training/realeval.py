"""The production path on every real CT we have: ``python -m training evaluate-real``.

Phantom figures say nothing about patients, and real labelled CT is scarce, so every model
change is checked on each real case in ``shared/data`` (``--data``): NIfTI volumes are
converted with the project's own converter (:func:`training.nifti.nifti_to_dicom`), DICOM
folders are read as they are, and each series goes through :class:`Localizer` exactly as in
``l3node predict`` (coarse to fine).  Per case it reports the status, the chosen slice
against the L3 body range, the error in slices and mm, the highest probability, the
per-slice AUC where labels exist (from a second, exhaustive pass, so every slice has a
probability) and a QC picture.

Cases are found by their files, so a new folder laid out like the shared ones is picked up:

* a folder of DICOM files: one series; no labels;
* a folder with a CT NIfTI: the CT; labels from ``totalseg.nii.gz`` (TotalSegmentator "total",
  L3 = 29, bodies from ``totalseg_vertebrae_body.nii.gz``) or a VerSe mask ``*seg-vert*``
  (L3 = 22, bodies from ``*seg-subreg*`` labels 49/50).

What a case without labels should give is read from :data:`EXPECTED` (the shared folders'
README says which contain no L3); others are reported with their truth "unknown".
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from scipy.stats import rankdata

from .labels import load_label_volume

# Folder name → what the shared data's README says about a case without L3 labels.
EXPECTED = {
    "real-ct-t11-t12-jpeg2000": "no L3 (T11–T12 only)",
    "real-ct-chest-crop-nifti": "no L3 (chest crop)",
}
# Crops that are not whole scans: reported, but not counted as a localisation case.
CROPS = {"real-ct-l3-vertebra-crop": "a crop of L2–L4 with no abdomen around it"}
MASK_WORDS = ("seg", "msk", "mask")


@dataclass
class RealCase:
    """One real series and its truth (sorted indices, superior first), if labelled."""

    name: str
    series_dir: Path
    source: str  # dicom | nifti
    l3_first: int | None = None
    l3_last: int | None = None
    labels: str = ""  # where the truth came from
    expected: str = ""  # "L3" | "no L3 (...)" | "unknown"
    crop: str = ""


@dataclass
class RealResult:
    name: str
    expected: str
    status: str
    index: int | None
    l3_body: list[int] | None
    inside_l3: bool | None
    error_slices: int | None
    error_mm: float | None
    highest_p: float
    auc: float | None
    confidence: float
    slices: int
    spacing_mm: float
    evaluated: int
    seconds: float
    passed: bool | None  # None: no verdict (unknown truth, or a crop)
    reason: str = ""
    png: str = ""
    anatomy: dict = field(default_factory=dict)


def slice_auc(probs: np.ndarray, labels: np.ndarray) -> float | None:
    """Area under the ROC curve of per-slice probabilities against 0/1 labels (Mann–Whitney
    U / n₁n₀, ties counted half); None when one class is absent."""
    p = np.asarray(probs, dtype=float)
    y = np.asarray(labels).astype(bool)
    n1, n0 = int(y.sum()), int((~y).sum())
    if n1 == 0 or n0 == 0:
        return None
    r = rankdata(p)
    return float((r[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def score(z_mm: np.ndarray, status: str, index: int | None, first: int | None,
          last: int | None, expected: str) -> dict:
    """Verdict fields of one case: inside the L3 body, error to its middle slice in slices
    and mm, and pass/fail (found inside the body; or "not found" where there is no L3)."""
    out: dict = {"inside_l3": None, "error_slices": None, "error_mm": None, "passed": None}
    if first is not None and last is not None:
        mid = (first + last) // 2
        found = status == "found" and index is not None
        out["inside_l3"] = bool(found and first <= index <= last)
        if found:
            out["error_slices"] = int(index - mid)
            out["error_mm"] = round(float(abs(z_mm[index] - z_mm[mid])), 2)
        out["passed"] = out["inside_l3"]
    elif expected.startswith("no L3"):
        out["passed"] = status == "not_found"
    return out


def _is_mask(p: Path) -> bool:
    n = p.name.lower()
    return n.startswith("totalseg") or any(w in n for w in MASK_WORDS)


def _range_in_series(series, z_lo: float, z_hi: float) -> tuple[int, int] | None:
    from l3node.phantom.study import slice_range

    return slice_range(series.z_mm, z_lo, z_hi)


def _labelled_range(series, folder: Path) -> tuple[tuple[int, int] | None, str]:
    """L3 body range from the label files beside a NIfTI CT, and which files gave it."""
    from .labels import l3_z_range_from_mask

    ts, body = folder / "totalseg.nii.gz", folder / "totalseg_vertebrae_body.nii.gz"
    if ts.is_file():
        lo, hi = l3_z_range_from_mask(ts, 29, body if body.is_file() else None)
        return _range_in_series(series, lo, hi), ts.name
    vert = sorted(folder.glob("*seg-vert*"))
    if vert:
        sub = sorted(folder.glob("*seg-subreg*"))
        data, aff = load_label_volume(vert[0])
        sel = data == 22
        if sub:
            s, _ = load_label_volume(sub[0])
            sel &= np.isin(s, (49, 50))
        if not sel.any():
            return None, vert[0].name
        ijk = np.argwhere(sel)
        z = (aff[:3, :3] @ ijk.T)[2] + aff[2, 3]
        half = 0.5 * abs(aff[2, :3]).max()
        return _range_in_series(series, z.min() - half, z.max() + half), vert[0].name
    return None, ""


def discover(data: Path, work: Path) -> list[RealCase]:
    """Every real case under ``data``; NIfTI volumes are converted into ``work`` once."""
    from l3node.select import load_series

    from .nifti import nifti_to_dicom

    cases = []
    for folder in sorted(p for p in Path(data).iterdir() if p.is_dir()):
        files = [f for f in folder.iterdir() if f.is_file()]
        niftis = [f for f in files if f.name.endswith((".nii", ".nii.gz"))]
        cts = [f for f in niftis if not _is_mask(f)]
        if cts:
            out = Path(work) / folder.name
            done = Path(work) / f"{folder.name}.done"
            if not done.is_file():
                nifti_to_dicom(cts[0], out, series_description=f"real: {folder.name}")
                done.write_text(cts[0].name)
            case = RealCase(folder.name, out, "nifti")
            series = load_series(out)
            rng, src = _labelled_range(series, folder)
            if rng is not None:
                case.l3_first, case.l3_last, case.labels = rng[0], rng[1], src
        elif files and not niftis:
            case = RealCase(folder.name, folder, "dicom")
        else:
            continue
        case.expected = ("L3" if case.l3_first is not None
                         else EXPECTED.get(folder.name, "unknown"))
        case.crop = CROPS.get(folder.name, "")
        cases.append(case)
    return cases


def evaluate_case(loc, case: RealCase, png_dir: Path | None) -> RealResult:
    """Run the localizer (coarse to fine, as the node does), then an exhaustive pass for the
    per-slice AUC; the QC picture shows the production run."""
    from l3node.select import load_series

    series = load_series(case.series_dir)
    res = loc.run(series)
    z = series.z_mm
    body = ([case.l3_first, case.l3_last] if case.l3_first is not None else None)
    auc = None
    if body is not None:
        full = loc.run(series, exhaustive=True)
        lab = np.zeros(len(series), dtype=bool)
        lab[case.l3_first : case.l3_last + 1] = True
        auc = slice_auc(full.probs, lab)
    verdict = score(z, res.status, res.index, case.l3_first, case.l3_last, case.expected)
    if case.crop:
        verdict["passed"] = None
    png = ""
    if png_dir is not None:
        from l3node.localize.qc import qc_png

        png_dir.mkdir(parents=True, exist_ok=True)
        png = str(qc_png(series, res, png_dir / f"{case.name}.png",
                         title=f"{case.name} — truth {case.expected}"
                         + (f" (L3 body {body[0]}..{body[1]})" if body else "")))
    anatomy = res.opinion.to_json() if res.opinion is not None else {}
    return RealResult(
        name=case.name, expected=case.expected, status=res.status, index=res.index,
        l3_body=body, inside_l3=verdict["inside_l3"], error_slices=verdict["error_slices"],
        error_mm=verdict["error_mm"], highest_p=round(float(np.max(res.probs)), 3),
        auc=None if auc is None else round(auc, 3),
        confidence=res.decision.confidence if res.decision else 0.0, slices=len(series),
        spacing_mm=round(series.spacing_mm, 3), evaluated=res.evaluated,
        seconds=round(res.timings.total_s, 2), passed=verdict["passed"], reason=res.reason,
        png=png, anatomy=anatomy)


def table(results: list[RealResult]) -> str:
    """The Markdown table for the model card."""
    head = ("| case | truth | status | slice (L3 body) | error slices / mm | highest p | "
            "slice AUC | verdict |\n|---|---|---|---|---|---|---|---|")
    rows = []
    for r in results:
        body = f"{r.l3_body[0]}..{r.l3_body[1]}" if r.l3_body else "–"
        sl = f"{r.index if r.index is not None else '–'} ({body})"
        err = (f"{r.error_slices:+d} / {r.error_mm:.1f}" if r.error_slices is not None
               else "–")
        verdict = {True: "pass", False: "**fail**", None: "–"}[r.passed]
        rows.append(f"| {r.name} | {r.expected} | {r.status} | {sl} | {err} | "
                    f"{r.highest_p:.2f} | {r.auc if r.auc is not None else '–'} | {verdict} |")
    return "\n".join([head, *rows])


def run(args) -> int:
    """``evaluate-real``: print one line per case, the table, and write ``real-eval.json``."""
    from l3node.cli_predict import model_config
    from l3node.localize.localizer import Localizer

    loc = Localizer.open(model_config(args, args.model))
    work = Path(args.work)
    cases = discover(Path(args.data), work / "dicom")
    if not cases:
        raise SystemExit(f"no real cases under {args.data}")
    results = []
    for case in cases:
        r = evaluate_case(loc, case, work / "qc")
        results.append(r)
        print(json.dumps({k: v for k, v in asdict(r).items() if k != "anatomy"}), flush=True)
    text = table(results)
    print(text)
    summary = {"model": str(args.model), "version": loc.model.spec.version,
               "passed": sum(r.passed is True for r in results),
               "failed": sum(r.passed is False for r in results),
               "cases": [asdict(r) for r in results], "table": text}
    out = Path(args.out) if args.out else work / "real-eval.json"
    out.write_text(json.dumps(summary, indent=1))
    print(f"{summary['passed']} passed, {summary['failed']} failed (of {len(results)} real "
          f"cases; written to {out})")
    return 0 if summary["failed"] == 0 else 4
