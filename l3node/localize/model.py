"""ResNet50 slice classifier and the model artifact (a folder: ``model.json`` + weights).

The network is torchvision's ResNet50 with a single-logit head (L3 / not L3).  ImageNet
normalisation is a fixed first step inside the network, so preprocessing still ends at [0, 1]
as the paper says, and a local ImageNet weights file (never downloaded) can initialise it.

The artifact is validated on load: format, architecture, input size and mode, the sha256 of
the weights, and the weights' keys and shapes against the network.  Any mismatch is an
:class:`ArtifactError` that names the field and both values.  ``model.json`` is written here
only (:func:`save_artifact`, :func:`record_cross_validation`), whole or not at all
(:func:`write_atomic`), and re-validated after every change.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn
from torchvision.models import resnet50

from .decision import DecisionParams
from .preprocess import CONTEXT_OFFSET_MM, InputMode, Preprocessing

FORMAT = "l3node-model"
FORMAT_VERSION = 1
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ArtifactError(ValueError):
    """A model artifact that cannot be used; the message names what is wrong."""


class L3Net(nn.Module):
    """ResNet50 → one logit per slice: positive means L3."""

    def __init__(self, mean: tuple[float, ...] = IMAGENET_MEAN,
                 std: tuple[float, ...] = IMAGENET_STD) -> None:
        super().__init__()
        self.backbone = resnet50(weights=None)
        self.backbone.fc = nn.Linear(self.backbone.fc.in_features, 1)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone((x - self.mean) / self.std).squeeze(1)

    def load_imagenet(self, path: Path) -> None:
        """Initialise the backbone from a local torchvision ResNet50 state dict (no download)."""
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        missing, unexpected = self.backbone.load_state_dict(state, strict=False)
        if unexpected or set(missing) - {"fc.weight", "fc.bias"}:
            raise ArtifactError(
                f"{path} is not a torchvision ResNet50 state dict "
                f"(missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})"
            )


@dataclass
class ModelSpec:
    """Everything in ``model.json`` except the weights themselves."""

    input_mode: InputMode = InputMode.PAPER
    context_offset_mm: float = CONTEXT_OFFSET_MM
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    decision: DecisionParams = field(default_factory=DecisionParams)
    version: str = "0.0.0"
    training: dict = field(default_factory=dict)
    architecture: str = "resnet50"
    head: str = "single-logit"

    def __post_init__(self) -> None:
        try:
            self.input_mode = InputMode(self.input_mode)
        except ValueError:
            allowed = [m.value for m in InputMode]
            raise ArtifactError(f'"input_mode" must be one of {allowed}, got '
                                f"{self.input_mode!r}") from None
        if self.architecture != "resnet50" or self.head != "single-logit":
            raise ArtifactError(
                f"only resnet50 with a single-logit head is supported, got "
                f"{self.architecture!r} / {self.head!r}"
            )
        if self.input_mode == "context" and not 0 < self.context_offset_mm <= 100:
            raise ArtifactError(
                f'"context_offset_mm" must be in (0, 100], got {self.context_offset_mm}'
            )


@dataclass
class LoadedModel:
    spec: ModelSpec
    net: L3Net | None  # None once another runtime holds the weights (localize.runtime)
    path: Path | None
    sha256: str


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``PATH.part``, then rename it onto ``path``: a reader (or a run
    interrupted mid-write) sees the old file or the new one, never half of one."""
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(text)
    tmp.replace(path)


def _write_doc(folder: Path, doc: dict) -> None:
    write_atomic(folder / "model.json", json.dumps(doc, indent=2, default=str) + "\n")


def _read_doc(folder: Path) -> dict:
    meta_path = folder / "model.json"
    if not meta_path.is_file():
        raise ArtifactError(f"{folder} is not a model artifact: no model.json")
    try:
        return json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{meta_path} is not valid JSON: {exc}") from exc


def save_artifact(folder: Path, net: L3Net, spec: ModelSpec, half: bool = False) -> Path:
    """Write ``weights.pt`` (fp16 if ``half``) and ``model.json`` into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: (v.half() if half and v.is_floating_point() else v).cpu().contiguous()
             for k, v in net.state_dict().items()}
    weights = folder / "weights.pt"
    torch.save(state, weights)
    doc = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "architecture": spec.architecture,
        "head": spec.head,
        "input_size": spec.preprocessing.size,
        "input_mode": spec.input_mode,
        "context_offset_mm": spec.context_offset_mm,
        "preprocessing": spec.preprocessing.to_json(),
        "decision": asdict(spec.decision),
        "training": spec.training,
        "version": spec.version,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "weights": {"file": weights.name, "sha256": _sha256(weights),
                    "dtype": "float16" if half else "float32"},
    }
    _write_doc(folder, doc)
    return folder


def record_cross_validation(folder: Path, report: str, summary: dict) -> LoadedModel:
    """Put a cross-validation run's summary into ``model.json`` (``training.
    cross_validation``), so the artifact a node deploys says what error its configuration
    reached on unseen cases and which input mode won; the weights are not touched, and the
    artifact is validated again (format, weights' sha256) before it is returned."""
    folder = Path(folder)
    doc = _read_doc(folder)
    doc.setdefault("training", {})["cross_validation"] = {
        "report": report, "model_input_mode": doc.get("input_mode"), **summary}
    _write_doc(folder, doc)
    return load_artifact(folder)


def load_artifact(folder: Path, device: str = "cpu") -> LoadedModel:
    """Load and validate a model artifact; raises :class:`ArtifactError` on any mismatch."""
    folder = Path(folder)
    meta_path = folder / "model.json"
    doc = _read_doc(folder)
    if doc.get("format") != FORMAT:
        raise ArtifactError(f'{meta_path}: "format" must be {FORMAT!r}, got {doc.get("format")!r}')
    if doc.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(
            f'{meta_path}: "format_version" {doc.get("format_version")!r} is not supported '
            f"(this l3node reads {FORMAT_VERSION})"
        )
    try:
        pre = Preprocessing.from_json(doc["preprocessing"])
        dec = DecisionParams.from_json(doc["decision"])
        spec = ModelSpec(
            input_mode=doc["input_mode"], context_offset_mm=float(doc["context_offset_mm"]),
            preprocessing=pre, decision=dec, version=str(doc["version"]),
            training=doc.get("training", {}), architecture=doc["architecture"],
            head=doc["head"],
        )
        wmeta = doc["weights"]
    except KeyError as exc:
        raise ArtifactError(f"{meta_path} lacks the field {exc}") from exc
    except (TypeError, ValueError) as exc:
        raise ArtifactError(f"{meta_path}: {exc}") from exc
    if int(doc.get("input_size", -1)) != pre.size:
        raise ArtifactError(
            f'{meta_path}: "input_size" {doc.get("input_size")} differs from the '
            f"preprocessing size {pre.size}"
        )
    weights = folder / str(wmeta.get("file", ""))
    if not weights.is_file():
        raise ArtifactError(f"{folder}: weights file {weights.name!r} is missing")
    digest = _sha256(weights)
    if digest != wmeta.get("sha256"):
        raise ArtifactError(
            f"{weights}: sha256 {digest[:12]}… does not match model.json "
            f"({str(wmeta.get('sha256'))[:12]}…); the weights were changed or corrupted"
        )
    state = torch.load(weights, map_location="cpu", weights_only=True)
    net = L3Net()
    expected = net.state_dict()
    bad = [k for k in expected if k not in state or state[k].shape != expected[k].shape]
    extra = [k for k in state if k not in expected]
    if bad or extra:
        raise ArtifactError(
            f"{weights} does not fit a ResNet50 single-logit network "
            f"(mismatched {bad[:3]}, unexpected {extra[:3]})"
        )
    net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    net.eval().to(device)
    return LoadedModel(spec=spec, net=net, path=folder, sha256=digest)
