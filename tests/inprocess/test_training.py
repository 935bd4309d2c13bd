"""The offline trainer: Table 1, what the loss sees, clipping, label sources, a tiny run."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from torch import nn

from l3node.phantom import StudyRequest, generate_study
from training.data import cases_from_phantoms
from training.labels import case_from_mask, cases_from_csv, l3_z_range_from_mask
from training.loop import TrainConfig, augment_batch, batch_tensor, clip_gradients, plan_epoch
from training.search import TABLE_1, suggest

from ..conftest import load_truth, toy_cache


# --- Table 1 -----------------------------------------------------------------------------
@pytest.mark.parametrize("search", ["hyper", "hyper+imbalance"])
def test_search_space_matches_the_papers_table_1(search):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: (suggest(t, search), 0.0)[1], n_trials=3)
    dists = study.trials[0].distributions
    flt, integer, cat = (optuna.distributions.FloatDistribution,
                         optuna.distributions.IntDistribution,
                         optuna.distributions.CategoricalDistribution)
    want = {
        "l2_regularization": flt(1e-5, 1e-2, log=True),
        "initial_learning_rate": flt(1e-5, 1e-2, log=True),
        "minibatch_size": integer(16, 64, step=16),
        "gradient_threshold": integer(1, 6, step=1),
        "gradient_threshold_method": cat(["l2norm", "global-l2norm"]),
        "over_sampling_rate": flt(0.0, 0.25),
        "class_weight": flt(0.0, 1.0),
    }
    n = 5 if search == "hyper" else 7
    assert list(dists) == [name for name, _, _ in TABLE_1[:n]]
    for name in dists:
        assert dists[name] == want[name], name
    for t in study.trials:
        assert t.params["minibatch_size"] in (16, 32, 48, 64)


# --- what the loss sees -------------------------------------------------------------------
_toy_cache = toy_cache


def test_class_weight_changes_the_weight_of_l3_in_the_loss():
    cache = _toy_cache()
    rng = np.random.default_rng(1)
    equal = plan_epoch(cache, [0, 1, 2], TrainConfig(class_weight=1.0, neg_per_case=None), rng)
    balanced = plan_epoch(cache, [0, 1, 2], TrainConfig(class_weight=0.0, neg_per_case=None),
                          rng)
    assert equal.pos_weight == 1.0
    assert balanced.pos_weight == pytest.approx(26 / 4)  # negatives : positives per case
    logits, y = torch.zeros(4), torch.tensor([1.0, 0.0, 0.0, 0.0])
    loss = [nn.functional.binary_cross_entropy_with_logits(logits, y, pos_weight=torch.tensor(w))
            for w in (equal.pos_weight, balanced.pos_weight)]
    assert loss[1] > loss[0]


def test_over_sampling_adds_augmented_l3_slices():
    cache = _toy_cache()
    rng = np.random.default_rng(2)
    none = plan_epoch(cache, [0, 1, 2], TrainConfig(oversample=0.0, neg_per_case=None), rng)
    some = plan_epoch(cache, [0, 1, 2], TrainConfig(oversample=0.25, neg_per_case=None), rng)
    assert not none.augment.any()
    base = len(none.indices)
    assert len(some.indices) == base + round(0.25 * base)
    assert some.augment.sum() == round(0.25 * base)
    assert (some.labels[some.augment] == 1).all()
    assert set(cache.labels[some.indices[some.augment]]) == {1}  # copies of L3 slices
    cfg = TrainConfig(input_mode="paper")
    x = batch_tensor(cache, some.indices[some.augment][:8], cfg)
    y = augment_batch(x, np.random.default_rng(3))
    changed = [not torch.equal(a, b) for a, b in zip(x, y, strict=True)]
    assert all(changed)


def test_gradient_threshold_methods_clip_differently():
    def fresh() -> nn.Module:
        torch.manual_seed(0)
        m = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 1))
        (m(torch.randn(4, 8) * 100).sum() * 100).backward()
        return m

    thr = 1.0
    g = fresh()
    clip_gradients(g, TrainConfig(grad_threshold=thr, grad_method="global-l2norm"))
    total = torch.sqrt(sum((p.grad**2).sum() for p in g.parameters()))
    assert total == pytest.approx(thr, rel=1e-3)
    e = fresh()
    clip_gradients(e, TrainConfig(grad_threshold=thr, grad_method="l2norm"))
    norms = [float(p.grad.norm()) for p in e.parameters()]
    assert max(norms) <= thr + 1e-4
    assert sum(n**2 for n in norms) ** 0.5 > 1.5 * thr  # each clipped alone, not together
    with pytest.raises(ValueError, match="grad_method"):
        TrainConfig(grad_method="max")


# --- label sources --------------------------------------------------------------------------
def test_truth_json_csv_and_masks_yield_the_same_l3_range(abdomen_study, tmp_path):
    truth = load_truth(abdomen_study)
    first, last = truth["l3"]["first_index"], truth["l3"]["last_index"]
    (case,) = cases_from_phantoms(abdomen_study)
    assert (case.l3_first, case.l3_last) == (first, last)
    z = truth["series"]["z_positions_mm"]
    nums = truth["series"]["instance_numbers"]
    path = tmp_path / "labels.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["series_folder", "l3_first", "l3_last", "unit"])
        w.writerow([str(abdomen_study), z[first], z[last], "z_mm"])
        w.writerow([str(abdomen_study), nums[first], nums[last], "instance_number"])
    for c in cases_from_csv(path):
        assert (c.l3_first, c.l3_last) == (first, last)
    # A label volume on a 2 mm grid whose L3 voxels cover exactly those slices' z.
    import nibabel as nib
    import nrrd

    lo, hi = z[last], z[first]
    zs = np.arange(lo - 40, hi + 40, 2.0)
    vol = np.zeros((8, 8, len(zs)), dtype=np.uint8)
    vol[2:6, 2:6, (zs >= lo - 1) & (zs <= hi + 1)] = 29  # TotalSegmentator's L3 label
    ras = np.diag([1.0, 1.0, 2.0, 1.0])
    ras[2, 3] = zs[0]
    nib.save(nib.Nifti1Image(vol, ras), tmp_path / "seg.nii.gz")
    c = case_from_mask(abdomen_study, tmp_path / "seg.nii.gz", label=29)
    assert (c.l3_first, c.l3_last) == (first, last)
    nrrd.write(str(tmp_path / "seg.nrrd"), vol, {
        "space": "left-posterior-superior", "space directions": np.diag([1.0, 1.0, 2.0]),
        "space origin": np.array([0.0, 0.0, zs[0]])})
    c2 = case_from_mask(abdomen_study, tmp_path / "seg.nrrd", label=29)
    assert (c2.l3_first, c2.l3_last) == (first, last)
    with pytest.raises(ValueError, match="label 30 found"):
        case_from_mask(abdomen_study, tmp_path / "seg.nii.gz", label=30)


def test_totalsegmentator_labels_of_the_real_scan(shared_data):
    """README: L3 ∩ body spans slices k = 69..79 of the 3 mm grid."""
    import nibabel as nib

    abd = shared_data / "real-ct-abdomen-nifti"
    aff = nib.load(abd / "totalseg.nii.gz").affine
    lo, hi = l3_z_range_from_mask(abd / "totalseg.nii.gz", label=29,
                                  body_mask=abd / "totalseg_vertebrae_body.nii.gz")
    z69 = (aff @ [0, 0, 69, 1])[2]
    z79 = (aff @ [0, 0, 79, 1])[2]
    assert lo == pytest.approx(min(z69, z79) - 1.5, abs=0.01)
    assert hi == pytest.approx(max(z69, z79) + 1.5, abs=0.01)
    whole_lo, whole_hi = l3_z_range_from_mask(abd / "totalseg.nii.gz", label=29)
    assert whole_lo <= lo and whole_hi >= hi  # posterior elements reach further


# --- a tiny study, end to end, and its resumption -------------------------------------------
@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tiny-set")
    for k in range(6):
        generate_study(root / f"case-{k}", StudyRequest(
            seed=500, index=k, preset="abdomen-pelvis" if k != 5 else "chest", slice_mm=5.0,
            transitional_rate=0.0), workers=2)
    return root


def _search(data: Path, run: Path, cache: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "training", "search", "--data", str(data), "--run", str(run),
           "--cache", str(cache), "--budget", "tiny", "--search", "hyper+imbalance",
           "--input-mode", "context", "--device", "cpu", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_tiny_search_writes_report_and_a_model_predict_loads_then_resumes(tiny_set, tmp_path):
    run, cache = tmp_path / "run", tmp_path / "cache"
    res = _search(tiny_set, run, cache, "--augment", "0.9")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    for name in ("report.md", "metrics.json", "fig3-training.png", "fig4-position.png",
                 "optuna.db", "model/model.json", "model/weights.pt"):
        assert (run / name).is_file(), name
    report = (run / "report.md").read_text()
    assert "Table 2" in report and "proposed (hyper+imbalance)" in report
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["folds"] == 2 and metrics["trials"] == 2 and metrics["augment"] == 0.9
    model = json.loads((run / "model" / "model.json").read_text())
    assert model["input_mode"] == "context" and model["input_size"] == 64
    assert model["training"]["cv"]["cases_with_l3"] == 5
    pred = subprocess.run([sys.executable, "-m", "l3node", "predict",
                           str(tiny_set / "case-0"), "--model", str(run / "model"), "--json",
                           "--precision", "fp32"],  # int8 needs `calibrate` first
                          capture_output=True, text=True, timeout=300)
    assert pred.returncode in (0, 3), pred.stdout + pred.stderr
    assert json.loads(pred.stdout)["status"] in ("found", "not_found")
    # Interrupt: a trial left running (as by a killed process), then resume to 3 trials.
    storage = f"sqlite:///{run / 'optuna.db'}"
    study = optuna.load_study(study_name="hyper+imbalance-context", storage=storage)
    study.ask()
    res = _search(tiny_set, run, cache, "--trials", "3", "--augment", "0.9")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "resuming study hyper+imbalance-context: 2 trials done, 1 to go" in res.stdout
    assert "was interrupted; marked failed" in res.stdout
    states = [t.state for t in optuna.load_study(study_name="hyper+imbalance-context",
                                                 storage=storage).trials]
    done = [s for s in states if s in (optuna.trial.TrialState.COMPLETE,
                                       optuna.trial.TrialState.PRUNED)]
    assert len(done) == 3
    assert optuna.trial.TrialState.FAIL in states


@pytest.mark.slow
def test_cv_of_a_fixed_configuration_writes_a_report_and_records_it_in_the_model(
        tiny_set, tmp_path):
    """``cv`` on the tiny set (2 folds, 1 epoch): a report per input mode, and with
    ``--record-in`` the model's ``model.json`` carries the same summary while its weights
    still load (sha256 checked)."""
    from l3node.localize.model import L3Net, ModelSpec, load_artifact, save_artifact

    model = save_artifact(tmp_path / "model", L3Net(), ModelSpec(input_mode="context"),
                          half=True)
    weights_before = (model / "weights.pt").read_bytes()
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"epochs": 1, "batch_size": 16, "neg_per_case": 4}))
    run = tmp_path / "run"
    res = subprocess.run(
        [sys.executable, "-m", "training", "cv", "--data", str(tiny_set), "--run", str(run),
         "--cache", str(tmp_path / "cache"), "--config", str(config), "--folds", "2",
         "--input-mode", "context", "paper", "--device", "cpu", "--record-in", str(model)],
        capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    report = (run / "report.md").read_text()
    assert "fixed config, context input" in report and "fixed config, paper input" in report
    assert "Design variables (fixed, no search)" in report
    metrics = json.loads((run / "metrics.json").read_text())
    recorded = json.loads((model / "model.json").read_text())["training"]["cross_validation"]
    assert recorded["model_input_mode"] == "context" and recorded["folds"] == 2
    assert [r["input_mode"] for r in recorded["results"]] == ["context", "paper"]
    for rec, full in zip(recorded["results"], metrics["results"], strict=True):
        assert rec["all"] == full["all"]
        assert rec["all"]["cases"] == 6 and rec["all"]["no_l3_cases"] == 1
    assert (model / "weights.pt").read_bytes() == weights_before
    assert load_artifact(model).spec.input_mode == "context"


def test_real_nifti_converts_to_a_series_whose_l3_the_labels_locate(tmp_path, shared_data):
    """The real abdomen scan as DICOM, with TotalSegmentator's L3 ∩ body (k = 69..79)."""
    from l3node.select import load_series
    from training.nifti import nifti_to_dicom

    abd = shared_data / "real-ct-abdomen-nifti"
    n = nifti_to_dicom(abd / "example_ct.nii.gz", tmp_path / "dcm")
    assert n == 112
    s = load_series(tmp_path / "dcm")
    assert len(s) == 112 and s.spacing_mm == pytest.approx(3.0)
    case = case_from_mask(tmp_path / "dcm", abd / "totalseg.nii.gz", label=29,
                          body_mask=abd / "totalseg_vertebrae_body.nii.gz")
    # k counts from inferior; sorted order runs superior to inferior
    assert (case.l3_first, case.l3_last) == (111 - 79, 111 - 69)
    assert (case.l3_first + case.l3_last) // 2 == 111 - 74
    hu = s.hu([111 - 74])[0]
    assert hu.shape == (101, 122)
    assert hu.max() > 400 and hu.min() < -900  # bone and air: HU survived the round trip


def test_half_check_compares_float16_rounded_weights_with_the_full_ones():
    """The fp16-storage check really rounds (probabilities move a little) and reports how
    many decisions move; the same network compared with itself moves nothing."""
    from l3node.localize.decision import DecisionParams
    from l3node.localize.model import L3Net
    from training.search import half_check

    torch.manual_seed(0)
    cache = _toy_cache()
    net = L3Net().eval()
    cfg = TrainConfig(input_mode="paper", precision="fp32", neg_per_case=None)
    hc = half_check(net, cache, [0, 1, 2], cfg, DecisionParams())
    assert hc["cases"] == 3 and 0 <= hc["decisions_changed"] <= 3
    assert 0 < hc["max_abs_dprob"] < 0.05
    # weights and BN statistics already representable in fp16: nothing moves
    net.load_state_dict({k: v.half().float() if v.is_floating_point() else v
                         for k, v in net.state_dict().items()})
    hc = half_check(net, cache, [0, 1, 2], cfg, DecisionParams())
    assert hc["max_abs_dprob"] == 0 and hc["decisions_changed"] == 0


def test_cross_validation_resumes_from_finished_folds(tmp_path):
    """A cv run of hours keeps each finished fold: a rerun reads them back (same records, no
    training), a lost fold alone is trained again, another configuration starts afresh."""
    from l3node.localize.decision import DecisionParams
    from training.search import cross_validate

    cache = _toy_cache(n_cases=3)
    cfg = TrainConfig(input_mode="paper", precision="fp32", neg_per_case=None, epochs=1,
                      batch_size=16, seed=0)
    folds = [[0], [1], [2]]

    def run(c: TrainConfig) -> tuple[dict, list[str]]:
        lines: list[str] = []
        out = cross_validate(cache, folds, c, DecisionParams(), log=lines.append,
                             checkpoint=tmp_path / "folds")
        return out, lines

    first, lines = run(cfg)
    assert sum("epoch 1" in s for s in lines) == 3
    assert len(list((tmp_path / "folds").glob("fold*.json"))) == 3
    again, lines = run(cfg)
    assert sum("read from" in s for s in lines) == 3 and not any("epoch" in s for s in lines)
    assert again["cases"] == json.loads(json.dumps(first["cases"], default=lambda v: v.item()))
    assert again["slice_counts"] == first["slice_counts"]
    next((tmp_path / "folds").glob("fold2-*.json")).unlink()
    _, lines = run(cfg)
    assert sum("read from" in s for s in lines) == 2 and sum("epoch 1" in s for s in lines) == 1
    _, lines = run(TrainConfig(**{**cfg.__dict__, "l2": cfg.l2 * 2}))
    assert sum("epoch 1" in s for s in lines) == 3
