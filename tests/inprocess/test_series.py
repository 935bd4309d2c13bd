"""Series loading: ordering by position, each loading error, unreadable files, missing UIDs."""

from __future__ import annotations

import random
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest

from l3node.phantom import StudyRequest, generate_study
from l3node.phantom.study import plan_study
from l3node.select import load_series
from l3node.series import SeriesError

from ..conftest import load_truth


def _copy(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.glob("*.dcm"):
        shutil.copy(f, dst / f.name)
    return dst


@pytest.fixture(scope="module")
def ffs_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    seed = next(s for s in range(200) if plan_study(
        StudyRequest(seed=s, preset="chest", slice_mm=5)).patient_position == "FFS")
    out = tmp_path_factory.mktemp("ffs")
    generate_study(out, StudyRequest(seed=seed, preset="chest", slice_mm=5), workers=2)
    return out


@pytest.mark.parametrize("which", ["abdomen_study", "ffs_study"])
def test_order_is_by_position_not_names_or_instance_numbers(which, request, tmp_path):
    study: Path = request.getfixturevalue(which)
    truth = load_truth(study)
    rnd = random.Random(3)
    files = list(study.glob("*.dcm"))
    numbers = list(range(1, len(files) + 1))
    rnd.shuffle(numbers)
    for f, num in zip(files, numbers, strict=True):
        ds = pydicom.dcmread(f)
        ds.InstanceNumber = num  # scrambled: ordering must not use it
        ds.save_as(tmp_path / f"{rnd.getrandbits(40):x}.dcm")
    s = load_series(tmp_path)
    assert [x.sop_instance_uid for x in s.slices] == truth["series"]["sop_instance_uids"]
    assert list(s.z_mm) == pytest.approx(truth["series"]["z_positions_mm"])
    assert s.study_instance_uid == truth["series"]["study_instance_uid"]


def test_feet_first_pixels_come_back_in_canonical_orientation(ffs_study):
    s = load_series(ffs_study)
    ds = pydicom.dcmread(s.slices[5].path)
    raw = ds.pixel_array
    hu = s.hu([5])[0]
    np.testing.assert_array_equal(hu, (raw[:, ::-1] * float(ds.RescaleSlope)
                                       + float(ds.RescaleIntercept)).astype(np.float32))


def test_small_gap_is_handled_large_gap_is_an_error(abdomen_study, tmp_path):
    truth = load_truth(abdomen_study)
    sops = truth["series"]["sop_instance_uids"]
    by_sop = {pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID: f
              for f in abdomen_study.glob("*.dcm")}
    small = tmp_path / "small"
    small.mkdir()
    for k, sop in enumerate(sops):
        if k != 40:
            shutil.copy(by_sop[sop], small)
    assert len(load_series(small)) == len(sops) - 1
    large = tmp_path / "large"
    large.mkdir()
    for k, sop in enumerate(sops):
        if not 40 <= k < 47:  # 7 slices of 2.5 mm missing: a 20 mm hole
            shutil.copy(by_sop[sop], large)
    with pytest.raises(SeriesError, match=r"gap of 20\.0 mm"):
        load_series(large)


def _edit_all(folder: Path, fn: Callable[[int, pydicom.Dataset], None]) -> None:
    for k, f in enumerate(sorted(folder.glob("*.dcm"))):
        ds = pydicom.dcmread(f)
        fn(k, ds)
        ds.save_as(f)


def test_gantry_tilt_is_an_error(chest_study, tmp_path):
    d = _copy(chest_study, tmp_path / "tilt")

    def tilt(k: int, ds: pydicom.Dataset) -> None:
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y + 0.2 * z, z]  # ~11° stack tilt

    _edit_all(d, tilt)
    with pytest.raises(SeriesError, match="gantry tilt"):
        load_series(d)


def test_mixed_orientations_is_an_error(chest_study, tmp_path):
    d = _copy(chest_study, tmp_path / "mixed")

    def turn(k: int, ds: pydicom.Dataset) -> None:
        if k == 3:
            ds.ImageOrientationPatient = [1, 0, 0, 0, 0.9962, -0.0872]

    _edit_all(d, turn)
    with pytest.raises(SeriesError, match="mixes image orientations"):
        load_series(d)


def test_non_axial_is_an_error(chest_study, tmp_path):
    d = _copy(chest_study, tmp_path / "coronal")

    def coronal(k: int, ds: pydicom.Dataset) -> None:
        ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
        ds.ImagePositionPatient = [0, float(k), 0]

    _edit_all(d, coronal)
    with pytest.raises(SeriesError, match="not axial"):
        load_series(d)


def test_duplicate_positions_is_an_error(chest_study, tmp_path):
    d = _copy(chest_study, tmp_path / "dup")
    f = sorted(d.glob("*.dcm"))[4]
    ds = pydicom.dcmread(f)
    ds.SOPInstanceUID = ds.SOPInstanceUID + ".1"
    ds.save_as(d / "copy.dcm")
    with pytest.raises(SeriesError, match="same position"):
        load_series(d)


def test_too_few_slices_is_an_error(chest_study, tmp_path):
    d = tmp_path / "few"
    d.mkdir()
    for f in sorted(chest_study.glob("*.dcm"))[:5]:
        shutil.copy(f, d)
    with pytest.raises(SeriesError, match="5 slices; at least 8"):
        load_series(d)


def test_no_ct_series_is_an_error(chest_study, tmp_path):
    d = tmp_path / "mr"
    d.mkdir()
    for f in sorted(chest_study.glob("*.dcm"))[:10]:
        ds = pydicom.dcmread(f)
        ds.Modality = "MR"
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
        ds.save_as(d / f.name)
    with pytest.raises(SeriesError, match="no CT series"):
        load_series(d)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SeriesError, match="no CT series"):
        load_series(empty)


def test_unreadable_files_are_skipped_and_named(chest_study, tmp_path):
    d = _copy(chest_study, tmp_path / "junk")
    (d / "junk.dcm").write_bytes(b"not dicom at all" * 10)
    good = sorted(d.glob("CT*.dcm"))[0].read_bytes()
    (d / "truncated.dcm").write_bytes(good[:200])
    s = load_series(d)
    assert len(s) == len(list(chest_study.glob("*.dcm")))
    named = {p.name for p, _ in s.skipped}
    assert {"junk.dcm", "truncated.dcm"} <= named


def test_real_slices_with_blank_uids_load(shared_data):
    s = load_series(shared_data / "real-ct-t11-t12-jpeg2000")
    assert len(s) == 20
    assert s.series_instance_uid.startswith("(no SeriesInstanceUID")
    assert all(x.sop_instance_uid for x in s.slices)  # taken from the file meta
    assert s.spacing_mm == pytest.approx(2.0)
    hu = s.hu([0, 19])
    assert hu.shape == (2, 512, 512)
    assert -1100 < hu.min() < -900 and hu.max() > 500  # air and bone: real HU


@pytest.mark.parametrize(
    ("tool", "args", "syntax"),
    [
        ("/usr/bin/dcmcjpeg", ["+e1"], "1.2.840.10008.1.2.4.70"),  # JPEG lossless SV1
        ("/usr/bin/dcmconv", ["+td"], "1.2.840.10008.1.2.1.99"),  # deflated explicit VR LE
    ],
)
def test_jpeg_lossless_and_deflated_series_decode_to_the_same_hu(chest_study, tmp_path, tool,
                                                                 args, syntax):
    import subprocess

    out = tmp_path / "conv"
    out.mkdir()
    for f in sorted(chest_study.glob("*.dcm")):
        res = subprocess.run([tool, *args, str(f), str(out / f.name)], capture_output=True,
                             text=True, timeout=60)
        assert res.returncode == 0, res.stderr
    a, b = load_series(chest_study), load_series(out)
    assert pydicom.dcmread(b.slices[0].path).file_meta.TransferSyntaxUID == syntax
    np.testing.assert_array_equal(a.hu(range(0, len(a), 5)), b.hu(range(0, len(b), 5)))
