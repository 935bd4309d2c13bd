"""Model artifact: round trip, fp16, and clear errors on every mismatch."""

from __future__ import annotations

import json

import pytest
import torch

from l3node.localize.model import ArtifactError, L3Net, ModelSpec, load_artifact, save_artifact


@pytest.fixture(scope="module")
def net() -> L3Net:
    torch.manual_seed(0)
    return L3Net().eval()


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.rand(2, 3, 224, 224)


def test_round_trip_gives_the_same_logits(tmp_path, net, x):
    save_artifact(tmp_path, net, ModelSpec(input_mode="context", version="t1"))
    m = load_artifact(tmp_path)
    assert m.spec.input_mode == "context" and m.spec.version == "t1"
    with torch.inference_mode():
        torch.testing.assert_close(m.net(x), net(x))
    doc = json.loads((tmp_path / "model.json").read_text())
    for key in ("architecture", "input_size", "preprocessing", "decision", "training",
                "version", "weights"):
        assert key in doc
    assert doc["weights"]["sha256"] == m.sha256


def test_half_precision_weights_are_smaller_and_close(tmp_path, net, x):
    save_artifact(tmp_path / "f32", net, ModelSpec())
    save_artifact(tmp_path / "f16", net, ModelSpec(), half=True)
    small = (tmp_path / "f16" / "weights.pt").stat().st_size
    big = (tmp_path / "f32" / "weights.pt").stat().st_size
    assert small < 0.6 * big
    m = load_artifact(tmp_path / "f16")
    with torch.inference_mode():
        torch.testing.assert_close(m.net(x), net(x), atol=0.05, rtol=0.05)


def test_changed_weights_fail_the_checksum(tmp_path, net):
    save_artifact(tmp_path, net, ModelSpec())
    w = tmp_path / "weights.pt"
    data = bytearray(w.read_bytes())
    data[-100] ^= 0xFF
    w.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="sha256"):
        load_artifact(tmp_path)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("input_mode", "stereo", "input_mode"),
        ("architecture", "vgg16", "only resnet50"),
        ("format_version", 99, "format_version"),
        ("input_size", 256, "input_size"),
    ],
)
def test_mismatched_fields_are_named(tmp_path, net, field, value, message):
    save_artifact(tmp_path, net, ModelSpec())
    doc = json.loads((tmp_path / "model.json").read_text())
    doc[field] = value
    (tmp_path / "model.json").write_text(json.dumps(doc))
    with pytest.raises(ArtifactError, match=message):
        load_artifact(tmp_path)


def test_missing_pieces(tmp_path, net):
    with pytest.raises(ArtifactError, match=r"no model\.json"):
        load_artifact(tmp_path)
    save_artifact(tmp_path, net, ModelSpec())
    (tmp_path / "weights.pt").unlink()
    with pytest.raises(ArtifactError, match="missing"):
        load_artifact(tmp_path)


def test_weights_of_another_network_are_refused(tmp_path, net):
    save_artifact(tmp_path, net, ModelSpec())
    state = torch.load(tmp_path / "weights.pt", weights_only=True)
    state["backbone.fc.weight"] = torch.zeros(2, 2048)  # a two-class head
    torch.save(state, tmp_path / "weights.pt")
    doc = json.loads((tmp_path / "model.json").read_text())
    import hashlib

    doc["weights"]["sha256"] = hashlib.sha256((tmp_path / "weights.pt").read_bytes()).hexdigest()
    (tmp_path / "model.json").write_text(json.dumps(doc))
    with pytest.raises(ArtifactError, match="does not fit"):
        load_artifact(tmp_path)
