"""The configuration's shape: one frozen dataclass per TOML section, with every default.

Defaults live here and nowhere else: the CLI's options, the trainer's evaluation and the node
all start from these classes.  Settings with a fixed set of values are enums, and the classes
whose values depend on each other (``ModelConfig``) check themselves on construction, so a
``ModelConfig`` built from command-line options is validated exactly like one from the file.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

# PS3.5 AE: up to 16 characters of the default repertoire, no backslash or control
# characters; leading/trailing spaces are not significant, so refuse them outright.
_AE_RE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")


class ConfigError(ValueError):
    """The configuration file is wrong; the message says where and how."""


class Device(StrEnum):
    CPU = "cpu"
    CUDA = "cuda"
    AUTO = "auto"  # CUDA when there is one


class Precision(StrEnum):
    FP32 = "fp32"
    BF16 = "bf16"  # autocast; faster on CPUs with bf16 instructions
    INT8 = "int8"  # ONNX Runtime, static int8 from the model's calibration (localize.int8)


class Runtime(StrEnum):
    AUTO = "auto"  # ONNX Runtime for fp32 and int8 on the CPU, PyTorch otherwise
    TORCH = "torch"
    ONNXRUNTIME = "onnxruntime"


class DestinationKind(StrEnum):
    DIMSE = "dimse"  # C-STORE to a DICOM AE
    STOWRS = "stowrs"  # DICOMweb STOW-RS
    FOLDER = "folder"  # files in a folder (tests, air-gapped hand-over)


class OtherStorage(StrEnum):
    IGNORE = "ignore"  # accept and drop storage SOP classes other than CT
    REJECT = "reject"


class Prefer(StrEnum):
    THINNEST = "thinnest"
    THICKEST = "thickest"


def choice(enum: type[StrEnum], value: Any, key: str) -> Any:
    """``value`` as a member of ``enum``, or a :class:`ConfigError` naming ``key`` and the
    allowed values."""
    try:
        return enum(value)
    except ValueError:
        allowed = ", ".join(f'"{m.value}"' for m in enum)
        raise ConfigError(f"{key}: must be one of {allowed}, got {value!r}") from None


def default_model_dir() -> Path:
    """``$L3NODE_MODEL``, else the model shipped beside the package (``models/default``)."""
    env = os.environ.get("L3NODE_MODEL")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "models" / "default"


def check_ae_title(value: Any, key: str) -> str:
    if not isinstance(value, str) or not _AE_RE.match(value) or value != value.strip():
        raise ConfigError(
            f"{key}: an AE title is 1-16 characters (no backslash or control characters, no "
            f"leading or trailing spaces), got {value!r}"
        )
    return value


@dataclass(frozen=True)
class NodeConfig:
    """The Storage SCP: who may connect, and how much."""

    ae_title: str = "L3NODE"
    host: str = "0.0.0.0"
    port: int = 11112
    require_called_ae_title: bool = True
    allowed_calling_ae_titles: tuple[str, ...] = ()  # empty: any
    max_associations: int = 8
    max_pdu: int = 262144
    other_storage: OtherStorage = OtherStorage.IGNORE
    allowed_hosts: tuple[str, ...] = ()  # peer IP addresses allowed to connect; empty: any

    def __post_init__(self) -> None:
        object.__setattr__(self, "other_storage",
                           choice(OtherStorage, self.other_storage, "node.other_storage"))


@dataclass(frozen=True)
class PathsConfig:
    spool: Path = Path("/var/lib/l3node/spool")
    state_db: Path = Path("/var/lib/l3node/state.db")


@dataclass(frozen=True)
class SchedulerConfig:
    study_quiet_s: float = 60.0  # complete after this long without a new instance ...
    study_max_wait_s: float = 1800.0  # ... or this long after the first one
    # ... or this long after the association that delivered it was released, when no other
    # association is delivering it (the sender said it is done; see l3node.schedule).  Set it
    # to study_quiet_s to rely on the quiet period alone.
    study_settle_s: float = 3.0
    poll_s: float = 2.0
    batch_size: int = 4


@dataclass(frozen=True)
class ModelConfig:
    """The model and how it runs: the node's ``[model]``, ``l3node predict``'s options and
    ``training evaluate``'s all build this one class."""

    path: Path = field(default_factory=default_model_dir)
    device: Device = Device.CPU
    # int8: the same decisions as fp32 on every check case, network ~3× faster (model card)
    precision: Precision = Precision.INT8
    batch_size: int = 4  # ResNet50 working memory; ONNX Runtime is no faster with larger
    runtime: Runtime = Runtime.AUTO  # see l3node.localize.runtime

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))
        object.__setattr__(self, "device", choice(Device, self.device, "model.device"))
        object.__setattr__(self, "precision",
                           choice(Precision, self.precision, "model.precision"))
        object.__setattr__(self, "runtime", choice(Runtime, self.runtime, "model.runtime"))
        b = self.batch_size
        if not isinstance(b, int) or isinstance(b, bool) or not 1 <= b <= 1024:
            raise ConfigError(f"model.batch_size: must be an integer in [1, 1024], got {b!r}")
        if self.precision is Precision.INT8:
            if self.runtime is Runtime.TORCH:
                raise ConfigError('model.precision: "int8" runs on ONNX Runtime only; set '
                                  'runtime = "auto" or "onnxruntime", or precision = "fp32" '
                                  'for PyTorch (got runtime = "torch")')
            if self.device is not Device.CPU:
                raise ConfigError('model.precision: "int8" runs on the CPU only (ONNX '
                                  'Runtime); set device = "cpu", or precision = "fp32" for '
                                  f'CUDA (got device = "{self.device}")')
        if self.runtime is Runtime.ONNXRUNTIME and (self.precision is Precision.BF16
                                                    or self.device is not Device.CPU):
            raise ConfigError('model.runtime: "onnxruntime" runs fp32 or int8 on the CPU only '
                              '(precision = "fp32" or "int8", device = "cpu"); use "auto" or '
                              '"torch"')


@dataclass(frozen=True)
class RetryConfig:
    max_attempts: int = 6
    backoff_s: float = 10.0
    backoff_max_s: float = 600.0


@dataclass(frozen=True)
class SelectionConfig:
    """Which series of a study the localizer runs on (see :mod:`l3node.select`)."""

    min_slices: int = 8
    prefer_primary: bool = True  # ORIGINAL/PRIMARY before DERIVED/SECONDARY
    prefer: Prefer = Prefer.THINNEST  # tie-break after coverage

    def __post_init__(self) -> None:
        object.__setattr__(self, "prefer", choice(Prefer, self.prefer, "selection.prefer"))


@dataclass(frozen=True)
class HousekeepingConfig:
    retention_h: float = 24.0  # delete spooled input this long after a successful export
    disk_high_water_pct: float = 90.0  # above this disk use, refuse instances (0xA700)


@dataclass(frozen=True)
class ResultsConfig:
    not_found_sc: bool = True


@dataclass(frozen=True)
class WebConfig:
    """The status page, ``/metrics`` and ``/healthz`` (l3node.web)."""

    enabled: bool = False  # the example configuration turns it on
    host: str = "127.0.0.1"  # localhost only unless the admin opens it
    port: int = 8080
    token_env: str = ""  # environment variable holding a token the page requires; "" = none


@dataclass(frozen=True)
class LoggingConfig:
    """One line per event (l3node.logs); UIDs optionally hashed."""

    level: str = "INFO"
    format: str = "text"  # text | json
    hash_uids: bool = False


@dataclass(frozen=True)
class TLSConfig:
    """DICOM TLS (see l3node.tls): the listener's, and the client side of ``tls = true``
    destinations.  Paths are PEM files."""

    enabled: bool = False  # the listener speaks TLS only (node.port; no plain port beside)
    cert: Path | None = None  # this node's certificate (chain), shown to senders and PACS
    key: Path | None = None  # its private key (unencrypted PEM; keep it 0600)
    ca: Path | None = None  # CA certificates trusted for senders and destinations
    require_client_cert: bool = True  # listener: senders need a certificate from tls.ca


class ResultObject(StrEnum):
    """What a destination may be sent of a result (``objects`` of a ``[[destinations]]``)."""

    KOS = "kos"  # the Key Object Selection (L3 found only)
    SC = "sc"  # the Secondary Captures: axial and sagittal, or the not-found one
    SR = "sr"  # the TID 1500 Measurement Report (found and not found)


@dataclass(frozen=True)
class DestinationConfig:
    name: str
    kind: DestinationKind
    ae_title: str = ""
    host: str = ""
    port: int = 0
    path: Path | None = None
    url: str = ""  # stowrs: the DICOMweb root, e.g. http://pacs:8042/dicom-web
    token_env: str = ""  # stowrs: environment variable holding a bearer token (never logged)
    tls: bool = False  # dimse: DICOM TLS with the [tls] certificates
    objects: tuple[ResultObject, ...] = tuple(ResultObject)  # the kinds sent there

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", choice(DestinationKind, self.kind,
                                                f"destination {self.name!r}: kind"))
        key = f"destination {self.name!r}: objects"
        objs = self.objects
        if isinstance(objs, str) or not isinstance(objs, list | tuple):
            raise ConfigError(f'{key}: must be a list of "kos", "sc" and "sr", got {objs!r}')
        objs = tuple(choice(ResultObject, o, key) for o in objs)
        if not objs:
            raise ConfigError(f"{key}: must name at least one of "
                              '"kos", "sc", "sr" (remove the destination to send it nothing)')
        if len(set(objs)) != len(objs):
            raise ConfigError(f"{key}: names an object twice: {[str(o) for o in objs]}")
        object.__setattr__(self, "objects", objs)


@dataclass(frozen=True)
class Config:
    node: NodeConfig = field(default_factory=NodeConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    retry: RetryConfig = field(default_factory=RetryConfig)
    results: ResultsConfig = field(default_factory=ResultsConfig)
    housekeeping: HousekeepingConfig = field(default_factory=HousekeepingConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    web: WebConfig = field(default_factory=WebConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    tls: TLSConfig = field(default_factory=TLSConfig)
    destinations: tuple[DestinationConfig, ...] = ()
    source: Path | None = None


