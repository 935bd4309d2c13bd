"""Read and validate the TOML configuration, once, at start.

Sections: ``[node]`` (the DICOM listener), ``[paths]``, ``[scheduler]``, ``[model]``,
``[retry]``, ``[results]``, ``[housekeeping]``, ``[selection]``, ``[web]`` (status page),
``[logging]``, ``[tls]`` (DICOM TLS) and ``[[destinations]]``.  Every value is checked here
(or by its dataclass, where values depend on each other) with a message naming the key and
the value, and unknown keys are errors: a typo must not silently fall back to a default.
"""

from __future__ import annotations

import ipaddress
import math
import re
import tomllib
import typing
from dataclasses import fields
from pathlib import Path
from types import UnionType
from typing import Any

from .schema import (
    Config,
    ConfigError,
    DestinationConfig,
    DestinationKind,
    HousekeepingConfig,
    LoggingConfig,
    ModelConfig,
    NodeConfig,
    OtherStorage,
    PathsConfig,
    Prefer,
    ResultsConfig,
    RetryConfig,
    SchedulerConfig,
    SelectionConfig,
    TLSConfig,
    WebConfig,
    check_ae_title,
    choice,
)


def _show(v: Any) -> str:
    """A value for a message: its repr, cut short (a fuzzed value can be megabytes)."""
    r = repr(v)
    return r if len(r) <= 80 else r[:77] + "..."


def _section(cls: type, raw: Any, name: str, own_checks: tuple[str, ...] = ()) -> dict:
    """The section as a dict: a table, no unknown key, and each value of its field's type.

    Why the types here, for every key: the checks below look at values (ranges, choices)
    and assume their type; a value of another type (``node = 1``, ``port = "x"``,
    ``model.path = 5``, a list where a name goes) raised TypeError — a traceback from
    ``l3node serve`` — or, where nothing looked at it (``retry.backoff_s = "10"``,
    ``web.host = 5``), was accepted and failed later, at start or at the first study (found
    by tests/peers/test_reliability_fuzz.py).  ``own_checks``: keys checked, with their
    own messages, by the caller."""
    if not isinstance(raw, dict):
        raise ConfigError(f"[{name}]: must be a table (a [{name}] section of keys), got "
                          f"{_show(raw)}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"[{name}]: unknown key(s) {unknown}; known: {sorted(known)}")
    hints = typing.get_type_hints(cls)
    for key, value in raw.items():
        if key not in own_checks:
            _check_type(value, hints[key], f"{name}.{key}")
    return dict(raw)


def _check_type(v: Any, hint: Any, key: str) -> None:
    """Refuse ``v`` unless it is what a field of type ``hint`` takes from TOML (enums are
    left to :func:`~l3node.config.schema.choice`, which names the allowed values)."""
    if typing.get_origin(hint) in (typing.Union, UnionType):  # X | None: the X
        hint = next(h for h in typing.get_args(hint) if h is not type(None))
    if hint is bool:
        ok, what = isinstance(v, bool), "true or false"
    elif hint is int:
        ok, what = isinstance(v, int) and not isinstance(v, bool), "an integer"
    elif hint is float:
        ok = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
        what = "a (finite) number"
    elif hint is str:
        ok, what = isinstance(v, str), "a string"
    elif hint is Path:
        ok, what = isinstance(v, str) and v != "" and "\0" not in v, "a path"
    elif typing.get_origin(hint) is tuple and typing.get_args(hint)[0] is str:
        ok, what = isinstance(v, list) and all(isinstance(x, str) for x in v), \
            "a list of strings"
    else:
        return
    if not ok:
        raise ConfigError(f"{key}: must be {what}, got {_show(v)}")


def _int(v: Any, key: str, lo: int, hi: int) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise ConfigError(f"{key}: must be an integer in [{lo}, {hi}], got {v!r}")
    return v


def parse_config(raw: dict, base: Path | None = None) -> Config:
    """Validate a parsed TOML document; relative paths are relative to ``base``."""
    sections = ["node", "paths", "scheduler", "model", "retry", "results", "housekeeping",
                "selection", "web", "logging", "tls", "destinations"]
    unknown = sorted(set(raw) - set(sections))
    if unknown:
        raise ConfigError(f"unknown section(s) {unknown}; known: {sections}")
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
    if "allowed_hosts" in n:
        v = n["allowed_hosts"]
        if not isinstance(v, list) or not all(isinstance(a, str) for a in v):
            raise ConfigError(f"node.allowed_hosts: must be a list of IP addresses, got {v!r}")
        for a in v:
            try:
                ipaddress.ip_address(a)
            except ValueError as exc:
                raise ConfigError(f"node.allowed_hosts: {a!r} is not an IP address") from exc
        n["allowed_hosts"] = tuple(v)
    if "other_storage" in n:
        n["other_storage"] = choice(OtherStorage, n["other_storage"], "node.other_storage")
    if not isinstance(n.get("require_called_ae_title", True), bool):
        raise ConfigError("node.require_called_ae_title: must be true or false")
    p = _section(PathsConfig, raw.get("paths", {}), "paths")
    for key in list(p):
        path = Path(p[key])
        p[key] = path if path.is_absolute() or base is None else (base / path)
    sch = _section(SchedulerConfig, raw.get("scheduler", {}), "scheduler")
    for key in ("study_quiet_s", "study_max_wait_s", "poll_s"):
        if key in sch and (not isinstance(sch[key], int | float) or sch[key] <= 0):
            raise ConfigError(f"scheduler.{key}: must be a positive number, got {sch[key]!r}")
    settle = sch.get("study_settle_s", SchedulerConfig.study_settle_s)
    if not isinstance(settle, int | float) or isinstance(settle, bool) or settle < 0:
        raise ConfigError(f"scheduler.study_settle_s: must be a number >= 0, got {settle!r}")
    if "batch_size" in sch:
        _int(sch["batch_size"], "scheduler.batch_size", 1, 64)
    m = _section(ModelConfig, raw.get("model", {}), "model")
    if "path" in m:
        mp = Path(m["path"])
        m["path"] = mp if mp.is_absolute() or base is None else base / mp
    model = ModelConfig(**m)  # checks device, precision, runtime and their combination
    r = _section(RetryConfig, raw.get("retry", {}), "retry")
    if "max_attempts" in r:
        _int(r["max_attempts"], "retry.max_attempts", 1, 1000)
    res = _section(ResultsConfig, raw.get("results", {}), "results")
    sel = _section(SelectionConfig, raw.get("selection", {}), "selection")
    if "min_slices" in sel:
        _int(sel["min_slices"], "selection.min_slices", 2, 100000)
    if "prefer" in sel:
        sel["prefer"] = choice(Prefer, sel["prefer"], "selection.prefer")
    hk = _section(HousekeepingConfig, raw.get("housekeeping", {}), "housekeeping")
    if "retention_h" in hk and (not isinstance(hk["retention_h"], int | float)
                                or hk["retention_h"] < 0):
        raise ConfigError(f"housekeeping.retention_h: must be >= 0 hours, got "
                          f"{hk['retention_h']!r}")
    hw = hk.get("disk_high_water_pct", 90.0)
    if not isinstance(hw, int | float) or not 0 < hw <= 100:
        raise ConfigError(f"housekeeping.disk_high_water_pct: must be in (0, 100], got {hw!r}")
    web = _parse_web(raw.get("web", {}))
    lg = _section(LoggingConfig, raw.get("logging", {}), "logging")
    if lg.get("level", "INFO") not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(f"logging.level: must be DEBUG, INFO, WARNING or ERROR, got "
                          f"{lg['level']!r}")
    if lg.get("format", "text") not in ("text", "json"):
        raise ConfigError(f'logging.format: must be "text" or "json", got {lg["format"]!r}')
    if not isinstance(lg.get("hash_uids", False), bool):
        raise ConfigError("logging.hash_uids: must be true or false")
    tls = _parse_tls(raw.get("tls", {}), base)
    dests = []
    names = set()
    raw_dests = raw.get("destinations", [])
    if not isinstance(raw_dests, list):
        raise ConfigError(f"destinations: must be an array of tables ([[destinations]] "
                          f"sections), got {_show(raw_dests)}")
    for k, d in enumerate(raw_dests):
        where = f"destinations[{k}]"
        d = _section(DestinationConfig, d, where, own_checks=("objects",))
        if not d.get("name"):
            raise ConfigError(f"{where}: needs a name")
        if d["name"] in names:
            raise ConfigError(f"{where}: the name {d['name']!r} is used twice")
        names.add(d["name"])
        kind = d["kind"] = choice(DestinationKind, d.get("kind"), f"{where}.kind")
        if kind is DestinationKind.DIMSE:
            for key in ("ae_title", "host", "port"):
                if key not in d:
                    raise ConfigError(f"{where} ({d['name']}): a dimse destination needs {key}")
            check_ae_title(d["ae_title"], f"{where}.ae_title")
            _int(d["port"], f"{where}.port", 1, 65535)
        elif kind is DestinationKind.STOWRS:
            url = d.get("url", "")
            if not isinstance(url, str) or not re.match(r"^https?://", url):
                raise ConfigError(f"{where}.url: a stowrs destination needs an http(s) URL, "
                                  f"got {url!r}")
        else:
            if "path" not in d:
                raise ConfigError(f"{where} ({d['name']}): a folder destination needs path")
            fp = Path(d["path"])
            d["path"] = fp if fp.is_absolute() or base is None else base / fp
        if not isinstance(d.get("tls", False), bool):
            raise ConfigError(f"{where}.tls: must be true or false, got {d['tls']!r}")
        if d.get("tls") and kind is not DestinationKind.DIMSE:
            raise ConfigError(f"{where}.tls: DICOM TLS is for dimse destinations (a stowrs "
                              f"destination uses an https:// URL)")
        dests.append(DestinationConfig(**d))
    return Config(node=NodeConfig(**n), paths=PathsConfig(**p),
                  scheduler=SchedulerConfig(**sch), model=model,
                  retry=RetryConfig(**r), results=ResultsConfig(**res),
                  housekeeping=HousekeepingConfig(**hk), selection=SelectionConfig(**sel),
                  web=web, logging=LoggingConfig(**lg), tls=tls,
                  destinations=tuple(dests), source=base)


def _parse_tls(raw: dict, base: Path | None) -> TLSConfig:
    t = _section(TLSConfig, raw, "tls", own_checks=("enabled", "require_client_cert", "cert",
                                                   "key", "ca"))
    for key in ("enabled", "require_client_cert"):
        if key in t and not isinstance(t[key], bool):
            raise ConfigError(f"tls.{key}: must be true or false, got {t[key]!r}")
    for key in ("cert", "key", "ca"):
        if key in t:
            if not isinstance(t[key], str) or not t[key]:
                raise ConfigError(f"tls.{key}: must be the path of a PEM file, got {t[key]!r}")
            tp = Path(t[key])
            t[key] = tp if tp.is_absolute() or base is None else base / tp
            if not t[key].is_file():
                raise ConfigError(f"tls.{key}: no such file {t[key]}")
    if ("cert" in t) != ("key" in t):
        raise ConfigError("tls.cert and tls.key: give both (a certificate and its private "
                          "key) or neither")
    if t.get("enabled") and "cert" not in t:
        raise ConfigError("tls.enabled = true: the listener needs tls.cert and tls.key")
    if t.get("enabled") and t.get("require_client_cert", True) and "ca" not in t:
        raise ConfigError("tls.require_client_cert = true: needs tls.ca, the CA that signs "
                          "the senders' certificates (or require_client_cert = false)")
    return TLSConfig(**t)


def _parse_web(raw: dict) -> WebConfig:
    w = _section(WebConfig, raw, "web")
    if not isinstance(w.get("enabled", False), bool):
        raise ConfigError("web.enabled: must be true or false")
    if "port" in w:
        _int(w["port"], "web.port", 1, 65535)
    if "host" in w:
        try:
            ipaddress.ip_address(w["host"])
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"web.host: must be an IP address to bind (127.0.0.1 for this "
                              f"machine only, 0.0.0.0 for every interface), got "
                              f"{w['host']!r}") from exc
    tok = w.get("token_env", "")
    if not isinstance(tok, str) or (tok and not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", tok)):
        raise ConfigError(f"web.token_env: must name an environment variable, got {tok!r}")
    return WebConfig(**w)


def load_config(path: Path) -> Config:
    """Read and validate ``path``; every failure is a :class:`ConfigError` naming the file or
    the key (the CLI prints it as one line: a traceback tells an administrator nothing)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: no such configuration file") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (TOML is UTF-8): byte {exc.start} "
                          f"is 0x{exc.object[exc.start]:02X}") from exc
    except OSError as exc:  # a folder, no permission, an I/O error
        raise ConfigError(f"{path}: cannot read the configuration: "
                          f"{exc.strerror or exc}") from exc
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    except RecursionError as exc:  # tomllib recurses into nested arrays and inline tables
        raise ConfigError(f"{path}: not valid TOML here: arrays or tables nested too "
                          f"deeply") from exc
    return parse_config(raw, base=path.parent)
