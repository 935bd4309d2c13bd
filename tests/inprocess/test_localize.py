"""The localizer end to end with the shipped default model (``models/default``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from l3node.config import ModelConfig, default_model_dir
from l3node.localize.localizer import Localizer
from l3node.localize.model import load_artifact
from l3node.phantom import StudyRequest, generate_study
from l3node.select import load_series

from ..conftest import load_truth


@pytest.fixture(scope="module")
def localizer() -> Localizer:
    model_dir = default_model_dir()
    assert (model_dir / "model.json").is_file(), f"default model missing at {model_dir}"
    return Localizer(load_artifact(model_dir), ModelConfig(batch_size=16))


@pytest.fixture(scope="module")
def held_out(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Phantoms from seeds the default model never saw (it was trained on seed 1000)."""
    out = []
    for k, (preset, mm) in enumerate([("abdomen-pelvis", 5.0), ("chest-abdomen-pelvis", 3.0),
                                      ("whole-body", 5.0)]):
        d = tmp_path_factory.mktemp(f"held{k}")
        generate_study(d, StudyRequest(seed=77, index=k, preset=preset, slice_mm=mm,
                                       transitional_rate=0.0, truncated_rate=0.0), workers=2)
        out.append(d)
    return out


def test_coarse_to_fine_agrees_with_exhaustive_and_evaluates_fewer(localizer, held_out):
    for study in held_out:
        s = load_series(study)
        fine = localizer.run(s, exhaustive=False)
        full = localizer.run(s, exhaustive=True)
        assert fine.status == full.status, study
        if full.status == "found":
            assert abs(fine.index - full.index) <= 1, (study, fine.index, full.index)
        assert full.evaluated == len(s)
        assert fine.evaluated < 0.6 * len(s), (fine.evaluated, len(s))


def test_finds_l3_on_held_out_phantoms(localizer, held_out):
    errors_mm = []
    for study in held_out:
        truth = load_truth(study)
        res = localizer.run(load_series(study))
        assert res.status == "found", (study, res.reason)
        z = truth["series"]["z_positions_mm"]
        errors_mm.append(abs(z[res.index] - truth["l3"]["middle_z_mm"]))
    assert max(errors_mm) <= 15.0, errors_mm


def test_not_found_on_a_chest_only_phantom(localizer, chest_study):
    res = localizer.run(load_series(chest_study))
    assert res.status == "not_found", res.decision
    assert res.reason


def test_real_t11_t12_slices_give_not_found(localizer, shared_data):
    res = localizer.run(load_series(shared_data / "real-ct-t11-t12-jpeg2000"))
    assert res.status == "not_found", res.decision


def test_compressed_series_gives_the_same_answer(localizer, tmp_path):
    plain = generate_study(tmp_path / "plain", StudyRequest(
        seed=78, preset="abdomen-pelvis", slice_mm=5.0, transitional_rate=0.0), workers=2)
    generate_study(tmp_path / "j2k", StudyRequest(
        seed=78, preset="abdomen-pelvis", slice_mm=5.0, transitional_rate=0.0,
        transfer_syntax="jpeg2000-lossless"), workers=2)
    a = localizer.run(load_series(tmp_path / "plain"))
    b = localizer.run(load_series(tmp_path / "j2k"))
    assert plain["series"]["transfer_syntax"] == "explicit"
    assert (a.status, a.index) == (b.status, b.index)
    np.testing.assert_allclose(a.probs, b.probs, atol=1e-5)


def _predict(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "l3node", "predict", *args],
                          capture_output=True, text=True, timeout=600)


def test_predict_cli_json_and_qc_picture(held_out, tmp_path):
    study = held_out[0]
    truth = load_truth(study)
    png = tmp_path / "qc.png"
    res = _predict(str(study), "--json", "--png", str(png))
    assert res.returncode == 0, res.stdout + res.stderr
    out = json.loads(res.stdout)
    assert out["status"] == "found"
    assert out["l3"]["sop_instance_uid"] in truth["series"]["sop_instance_uids"]
    k = truth["series"]["sop_instance_uids"].index(out["l3"]["sop_instance_uid"])
    assert out["l3"]["index"] == k
    assert out["l3"]["instance_number"] == truth["series"]["instance_numbers"][k]
    assert out["slice_count"] == truth["series"]["slice_count"]
    assert set(out["timings_s"]) >= {"decode", "preprocess", "inference"}
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_predict_cli_text_and_errors(chest_study, tmp_path):
    res = _predict(str(chest_study))
    assert res.returncode == 3, res.stdout + res.stderr  # not found
    assert "status: not_found" in res.stdout and "reason:" in res.stdout
    res = _predict(str(chest_study), "--model", str(tmp_path / "nowhere"))
    assert res.returncode == 1
    assert "status: error" in res.stdout and "no model.json" in res.stdout
    empty = tmp_path / "empty"
    empty.mkdir()
    res = _predict(str(empty), "--json")
    assert res.returncode == 1
    assert json.loads(res.stdout)["reason"].startswith("no CT series")



def test_the_warm_up_runs_the_whole_path_and_changes_no_answer(localizer, held_out):
    from l3node.warmup import warm_up

    series = load_series(held_out[0])
    before = localizer.run(series)
    assert warm_up(localizer, localizer.model.spec.version) > 0
    after = localizer.run(series)
    assert np.array_equal(before.probs, after.probs) and before.index == after.index
