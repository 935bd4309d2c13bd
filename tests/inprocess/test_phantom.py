"""The phantom generator: anatomy at plausible levels, truth consistent with pixels,
valid DICOM, determinism, presets without L3, lossless compression."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest

from l3node.phantom import StudyRequest, generate_study
from l3node.phantom.anatomy import draw_patient
from l3node.phantom.study import plan_study

from ..conftest import load_truth

SEEDS = range(300)


def _patients(rate: float = 0.1):
    for seed in SEEDS:
        yield draw_patient(np.random.default_rng([seed, 0]), seed, transitional_rate=rate)


# --- anatomy at plausible levels ----------------------------------------------------------
def test_iliac_crest_between_l4_and_l5_bodies():
    for p in _patients():
        crest = p.landmarks["iliac_crest"]
        assert p.vertebra("L5").z_mid <= crest <= p.vertebra("L4").z_mid, p.seed


def test_kidney_lower_poles_within_l2_to_l4():
    for p in _patients():
        lo, hi = p.vertebra("L4").z_lo, p.vertebra("L2").z_hi
        for side in ("left", "right"):
            pole = p.landmarks[f"{side}_kidney_lower"]
            assert lo <= pole <= hi, (p.seed, side, pole, lo, hi)
        # the right kidney sits lower than the left
        assert p.landmarks["right_kidney_upper"] < p.landmarks["left_kidney_upper"]


def test_ribs_only_on_thoracic_vertebrae_unless_a_lumbar_rib():
    for p in _patients(rate=0.5):
        ribbed = [v for v in p.vertebrae if v.ribs]
        assert len(ribbed) == p.rib_pairs, p.seed
        for v in ribbed:
            if p.variant == "13-ribs" and v.name == "L1":
                continue
            assert v.region == "thoracic", (p.seed, v.name)


def test_aortic_bifurcation_and_liver_tip_levels():
    for p in _patients():
        bif = p.landmarks["aortic_bifurcation"]
        assert p.z_s1_top <= bif <= p.vertebra("L3").z_hi
        tip = p.landmarks["liver_tip"]
        assert p.vertebra("L3").z_lo <= tip <= p.vertebra("L1").z_hi


def test_spine_is_ordered_and_vertebrae_grow_downward():
    for p in _patients():
        zs = [v.z_mid for v in p.vertebrae]
        assert zs == sorted(zs, reverse=True)
        for upper, lower in zip(p.vertebrae, p.vertebrae[1:], strict=False):
            if upper.name == "C1":  # the atlas rests on the axis: a joint, no disc
                assert lower.z_hi <= upper.z_lo
            else:
                assert lower.z_hi < upper.z_lo  # a disc between every other pair
        lum = [v for v in p.vertebrae if v.region == "lumbar"]
        assert lum[-1].width > lum[0].width


@pytest.mark.parametrize(
    ("variant", "lumbar", "l3_name"),
    [("sacralisation", 4, "L2"), ("lumbarisation", 6, "L4"), ("none", 5, "L3")],
)
def test_transitional_anatomy_counts_l3_from_the_sacrum(variant, lumbar, l3_name):
    found = False
    for p in _patients(rate=0.6):
        if p.variant != variant:
            continue
        found = True
        assert p.lumbar_count == lumbar
        assert p.l3.name == l3_name
        lum = [v for v in p.vertebrae if v.region == "lumbar"]
        assert lum[-3] is p.l3  # third mobile vertebra above the sacrum
    assert found, f"no {variant} patient among the seeds"


# --- truth consistent with the pixels ------------------------------------------------------
def _hu_at(ds: pydicom.Dataset, x: float, y: float, half: int = 2) -> float:
    """Mean HU in a small window around patient point (x, y), via IPP/IOP."""
    ipp = np.array(ds.ImagePositionPatient, dtype=float)
    iop = np.array(ds.ImageOrientationPatient, dtype=float)
    sp = np.array(ds.PixelSpacing, dtype=float)  # row spacing, column spacing
    d = np.array([x, y, ipp[2]]) - ipp
    col = round(float(d @ iop[:3]) / sp[1])
    row = round(float(d @ iop[3:]) / sp[0])
    arr = ds.pixel_array.astype(float) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    return float(arr[row - half : row + half + 1, col - half : col + half + 1].mean())


def _by_sop(folder: Path) -> dict[str, Path]:
    return {
        pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID: f for f in folder.glob("*.dcm")
    }


def test_l3_truth_slices_show_bone_and_the_disc_above_shows_disc(abdomen_study):
    truth = load_truth(abdomen_study)
    files = _by_sop(abdomen_study)
    sops = truth["series"]["sop_instance_uids"]
    zs = np.array(truth["series"]["z_positions_mm"])
    hu = truth["tissue_hu"]
    verts = {v["name_from_sacrum"]: v for v in truth["vertebrae"]}
    l3, l2 = verts["L3"], verts["L2"]
    cx, cy = l3["center_xy_mm"]
    # Every L3 slice, body centre: cancellous bone.
    first, last = l3["slice_range"]
    assert truth["l3"]["middle_index"] == (first + last) // 2
    # The appearance randomisation adds zero-mean fields per tissue (truth["style"]): a 5×5
    # mean keeps the low-frequency bone field (up to ~3 SD) and some of the fine texture.
    region_bone = 7
    style = truth["style"]
    tol = 60.0 + 3.0 * style["field_hu"][region_bone] + style["texture_hu"][region_bone]
    inner = []
    for i in range(first, last + 1):
        # slices touching an endplate pick up dense cortex; judge the inner ones
        if abs(zs[i] - l3["z_range_mm"][0]) < 2.5 or abs(zs[i] - l3["z_range_mm"][1]) < 2.5:
            continue
        value = _hu_at(pydicom.dcmread(files[sops[i]]), cx, cy)
        assert abs(value - hu["cancellous"]) < tol, (i, value, hu["cancellous"], tol)
        inner.append(value)
    # ... and on average over the body's slices the cancellous value of the truth
    assert abs(float(np.mean(inner)) - hu["cancellous"]) < 60 + 1.5 * style["field_hu"][
        region_bone], (inner, hu["cancellous"])
    # The L2-L3 disc: the slice nearest its middle shows disc, not bone.
    disc_mid = 0.5 * (l3["z_range_mm"][1] + l2["z_range_mm"][0])
    i = int(np.argmin(np.abs(zs - disc_mid)))
    dcx = 0.5 * (cx + l2["center_xy_mm"][0])
    dcy = 0.5 * (cy + l2["center_xy_mm"][1])
    value = _hu_at(pydicom.dcmread(files[sops[i]]), dcx, dcy)
    region_organ = 6  # the disc is drawn as an ORGAN-region solid
    tol_disc = 40.0 + 3.0 * style["field_hu"][region_organ] + style["texture_hu"][region_organ]
    assert abs(value - hu["disc"]) < tol_disc, (value, hu["disc"], tol_disc)
    # The slice the truth names as L3's middle is the file with that UID and z.
    ds = pydicom.dcmread(files[truth["l3"]["middle_sop_instance_uid"]], stop_before_pixels=True)
    assert float(ds.ImagePositionPatient[2]) == pytest.approx(truth["l3"]["middle_z_mm"])
    assert int(ds.InstanceNumber) == truth["l3"]["middle_instance_number"]


def test_series_geometry_matches_truth(abdomen_study):
    truth = load_truth(abdomen_study)
    s = truth["series"]
    files = _by_sop(abdomen_study)
    assert len(files) == s["slice_count"]
    for sop, z, inst in zip(
        s["sop_instance_uids"], s["z_positions_mm"], s["instance_numbers"], strict=True
    ):
        ds = pydicom.dcmread(files[sop], stop_before_pixels=True)
        assert float(ds.ImagePositionPatient[2]) == pytest.approx(z, abs=1e-3)
        assert int(ds.InstanceNumber) == inst
        assert float(ds.SliceThickness) == s["slice_thickness_mm"]
        assert ds.ImageType[:2] == ["ORIGINAL", "PRIMARY"]
    assert s["z_positions_mm"] == sorted(s["z_positions_mm"], reverse=True)


def test_feet_first_series_mirrors_orientation_and_numbering(tmp_path):
    seed = next(
        s
        for s in range(200)
        if plan_study(StudyRequest(seed=s, preset="chest", slice_mm=5)).patient_position == "FFS"
    )
    truth = generate_study(tmp_path, StudyRequest(seed=seed, preset="chest", slice_mm=5), workers=2)
    s = truth["series"]
    assert s["patient_position"] == "FFS"
    assert s["instance_numbers"][0] == s["slice_count"]  # most superior slice scanned last
    ds = pydicom.dcmread(next(tmp_path.glob("*.dcm")), stop_before_pixels=True)
    assert [float(v) for v in ds.ImageOrientationPatient] == [-1, 0, 0, 0, 1, 0]
    assert ds.PatientPosition == "FFS"


# --- DICOM validity -------------------------------------------------------------------------
def test_dciodvfy_reports_no_errors(abdomen_study):
    dciodvfy = shutil.which("dciodvfy")
    assert dciodvfy, "dciodvfy (Debian package dicom3tools) is required: run `make peers`"
    files = sorted(abdomen_study.glob("*.dcm"))
    for f in (files[0], files[len(files) // 2], files[-1]):
        res = subprocess.run([dciodvfy, str(f)], capture_output=True, text=True, timeout=60)
        out = res.stdout + res.stderr
        assert "Error" not in out, out
        assert "CTImage" in out, out


# --- determinism ----------------------------------------------------------------------------
def _digest(folder: Path) -> dict[str, str]:
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(folder.iterdir())}


def test_same_seed_same_files_other_seed_other_uids(tmp_path, chest_study):
    req = StudyRequest(seed=4, preset="chest", slice_mm=5.0)
    again = tmp_path / "again"
    generate_study(again, req, workers=1)  # a different worker count must not matter
    assert _digest(again) == _digest(chest_study)
    other = generate_study(
        tmp_path / "other", StudyRequest(seed=5, preset="chest", slice_mm=5.0), workers=2
    )
    first = load_truth(chest_study)
    assert other["series"]["study_instance_uid"] != first["series"]["study_instance_uid"]
    assert not set(other["series"]["sop_instance_uids"]) & set(first["series"]["sop_instance_uids"])


# --- presets --------------------------------------------------------------------------------
def test_chest_preset_has_no_l3(chest_study):
    truth = load_truth(chest_study)
    assert truth["l3"]["present"] is False
    assert truth["hard_case"]["no_l3"] is True
    l3 = next(v for v in truth["vertebrae"] if v["name_from_sacrum"] == "L3")
    assert l3["slice_range"] is None
    assert truth["series"]["z_bottom_mm"] > l3["z_range_mm"][1]


def test_head_neck_preset_has_no_l3_and_covers_the_head(tmp_path):
    truth = generate_study(
        tmp_path, StudyRequest(seed=2, preset="head-neck", slice_mm=5.0), workers=2
    )
    assert truth["l3"]["present"] is False
    assert truth["series"]["z_top_mm"] >= truth["landmarks_mm"]["vertex"]
    c1 = next(v for v in truth["vertebrae"] if v["name"] == "C1")
    assert c1["slice_range"] is not None


def test_scan_ending_inside_l3_is_flagged(tmp_path):
    truth = generate_study(
        tmp_path,
        StudyRequest(seed=8, preset="abdomen-pelvis", slice_mm=5.0, truncated_rate=1.0),
        workers=2,
    )
    l3, n = truth["l3"], truth["series"]["slice_count"]
    assert truth["hard_case"]["l3_truncated"] is True
    assert l3["present"] is True
    assert l3["first_index"] == 0 or l3["last_index"] == n - 1
    lo, hi = l3["z_range_mm"]
    assert not (truth["series"]["z_bottom_mm"] < lo and truth["series"]["z_top_mm"] > hi)


# --- compression ----------------------------------------------------------------------------
@pytest.mark.parametrize("syntax", ["jpeg2000-lossless", "jpegls-lossless", "rle"])
def test_compressed_output_decodes_to_the_same_pixels(tmp_path, chest_study, syntax):
    truth = generate_study(
        tmp_path,
        StudyRequest(seed=4, preset="chest", slice_mm=5.0, transfer_syntax=syntax),
        workers=2,
    )
    plain = _by_sop(chest_study)
    packed = _by_sop(tmp_path)
    assert set(plain) == set(packed)
    for sop in truth["series"]["sop_instance_uids"][::7]:
        a, b = pydicom.dcmread(plain[sop]), pydicom.dcmread(packed[sop])
        assert b.file_meta.TransferSyntaxUID.is_compressed
        np.testing.assert_array_equal(a.pixel_array, b.pixel_array)


# --- CLI ------------------------------------------------------------------------------------
def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "l3node", *args], capture_output=True, text=True, timeout=300
    )


def test_cli_lists_phantom_and_writes_studies(tmp_path):
    assert "phantom" in _cli("--help").stdout
    res = _cli(
        "phantom",
        "--out",
        str(tmp_path),
        "--count",
        "2",
        "--preset",
        "chest",
        "--slice-mm",
        "5",
        "--seed",
        "3",
        "--json",
    )
    assert res.returncode == 0, res.stderr
    lines = [json.loads(line) for line in res.stdout.splitlines()]
    assert len(lines) == 2
    for k, line in enumerate(lines):
        folder = tmp_path / f"study-{k:03d}"
        assert Path(line["folder"]) == folder
        assert len(list(folder.glob("*.dcm"))) == line["series"]["slice_count"]
        assert (folder / "truth.json").is_file()
    assert lines[0]["series"]["study_instance_uid"] != lines[1]["series"]["study_instance_uid"]


def test_cli_rejects_bad_arguments_with_a_message(tmp_path):
    res = _cli("phantom", "--out", str(tmp_path), "--slice-mm", "50")
    assert res.returncode == 2
    assert "slice_mm" in res.stderr and "50" in res.stderr
    res = _cli("phantom", "--out", str(tmp_path), "--preset", "knee")
    assert res.returncode == 2
