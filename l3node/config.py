"""One validated configuration, loaded once at start and passed down (TOML).

Sections so far: ``[node]`` (the DICOM listener) and ``[paths]``.  Every value is checked here
with a message naming the key and the value, and unknown keys are errors (a typo must not
silently fall back to a default).  Defaults live in the dataclasses, nowhere else.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

# PS3.5 AE: up to 16 characters of the default repertoire, no backslash or control
# characters; leading/trailing spaces are not significant, so refuse them outright.
_AE_RE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")


class ConfigError(ValueError):
    """The configuration file is wrong; the message says where and how."""


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
    other_storage: str = "ignore"  # storage SOP classes other than CT: ignore | reject


@dataclass(frozen=True)
class PathsConfig:
    spool: Path = Path("/var/lib/l3node/spool")
    state_db: Path = Path("/var/lib/l3node/state.db")


@dataclass(frozen=True)
class Config:
    node: NodeConfig = field(default_factory=NodeConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    source: Path | None = None


def _section(cls: type, raw: dict, name: str) -> dict:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"[{name}]: unknown key(s) {unknown}; known: {sorted(known)}")
    return dict(raw)


def _int(v: Any, key: str, lo: int, hi: int) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise ConfigError(f"{key}: must be an integer in [{lo}, {hi}], got {v!r}")
    return v


def parse_config(raw: dict, base: Path | None = None) -> Config:
    """Validate a parsed TOML document; relative paths are relative to ``base``."""
    unknown = sorted(set(raw) - {"node", "paths"})
    if unknown:
        raise ConfigError(f"unknown section(s) {unknown}; known: ['node', 'paths']")
    n = _section(NodeConfig, raw.get("node", {}), "node")
    if "ae_title" in n:
        check_ae_title(n["ae_title"], "node.ae_title")
    if "port" in n:
        _int(n["port"], "node.port", 1, 65535)
    if "max_associations" in n:
        _int(n["max_associations"], "node.max_associations", 1, 64)
    if "max_pdu" in n:
        _int(n["max_pdu"], "node.max_pdu", 4096, 2**24)
    if "allowed_calling_ae_titles" in n:
        v = n["allowed_calling_ae_titles"]
        if not isinstance(v, list):
            raise ConfigError(f"node.allowed_calling_ae_titles: must be a list, got {v!r}")
        n["allowed_calling_ae_titles"] = tuple(
            check_ae_title(a, "node.allowed_calling_ae_titles") for a in v)
    if n.get("other_storage", "ignore") not in ("ignore", "reject"):
        raise ConfigError(f'node.other_storage: must be "ignore" or "reject", got '
                          f"{n['other_storage']!r}")
    if not isinstance(n.get("require_called_ae_title", True), bool):
        raise ConfigError("node.require_called_ae_title: must be true or false")
    p = _section(PathsConfig, raw.get("paths", {}), "paths")
    for key in list(p):
        if not isinstance(p[key], str) or not p[key]:
            raise ConfigError(f"paths.{key}: must be a path, got {p[key]!r}")
        path = Path(p[key])
        p[key] = path if path.is_absolute() or base is None else (base / path)
    return Config(node=NodeConfig(**n), paths=PathsConfig(**p), source=base)


def load_config(path: Path) -> Config:
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: no such configuration file") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    return parse_config(raw, base=path.parent)
