"""The configuration: every key checked once, with a message naming the key and the value;
the settings with a fixed set of values are enums, one default each."""

from __future__ import annotations

from pathlib import Path

import pytest

from l3node.config import (
    ConfigError,
    DestinationConfig,
    DestinationKind,
    Device,
    ModelConfig,
    NodeConfig,
    OtherStorage,
    Precision,
    Runtime,
    SelectionConfig,
    default_model_dir,
    parse_config,
)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"node": {"ae_title": "WAY-TOO-LONG-AE-TITLE"}}, "node.ae_title"),
        ({"node": {"ae_title": " L3"}}, "leading or trailing spaces"),
        ({"node": {"port": 70000}}, "node.port"),
        ({"node": {"other_storage": "store"}}, "node.other_storage"),
        ({"node": {"ae_titel": "X"}}, "unknown key"),
        ({"nodes": {}}, "unknown section"),
        ({"scheduler": {"study_settle_s": -1}}, "scheduler.study_settle_s"),
        ({"scheduler": {"study_settle_s": "3"}}, "scheduler.study_settle_s"),
    ],
)
def test_config_errors_name_the_key_and_value(raw, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(raw)


def test_more_config_errors():
    with pytest.raises(ConfigError, match="not an IP address"):
        parse_config({"node": {"allowed_hosts": ["pacs.example"]}})
    with pytest.raises(ConfigError, match="disk_high_water_pct"):
        parse_config({"housekeeping": {"disk_high_water_pct": 150}})
    with pytest.raises(ConfigError, match="stowrs destination needs an http"):
        parse_config({"destinations": [{"name": "w", "kind": "stowrs", "url": "ftp://x"}]})
    with pytest.raises(ConfigError, match="used twice"):
        parse_config({"destinations": [{"name": "a", "kind": "folder", "path": "/x"},
                                       {"name": "a", "kind": "folder", "path": "/y"}]})


def test_config_validates_web_and_logging():
    cfg = parse_config({"web": {"enabled": True, "port": 9090}, "logging": {"format": "json"}})
    assert cfg.web.host == "127.0.0.1" and cfg.web.port == 9090 and cfg.logging.format == "json"
    for raw, msg in [({"web": {"host": "localhost"}}, "web.host: must be an IP address"),
                     ({"web": {"token_env": "not a var"}}, "web.token_env"),
                     ({"web": {"port": 0}}, "web.port"),
                     ({"logging": {"format": "xml"}}, "logging.format"),
                     ({"logging": {"level": "LOUD"}}, "logging.level"),
                     ({"logging": {"hash_uid": True}}, "unknown key")]:
        with pytest.raises(ConfigError, match=msg):
            parse_config(raw)


def test_config_checks_the_runtime():
    torch = {"runtime": "torch", "precision": "fp32"}
    assert parse_config({"model": torch}).model.runtime == "torch"
    assert parse_config({}).model.precision == "int8"  # the shipped default (model card)
    with pytest.raises(ConfigError, match=r'"int8" runs on ONNX Runtime only'):
        parse_config({"model": {"runtime": "torch"}})
    assert parse_config({}).model.runtime == "auto"
    with pytest.raises(ConfigError, match=r"model\.runtime"):
        parse_config({"model": {"runtime": "tvm"}})
    with pytest.raises(ConfigError, match="fp32 or int8 on the CPU only"):
        parse_config({"model": {"runtime": "onnxruntime", "precision": "bf16"}})


def test_settings_are_enums_however_they_are_built():
    """From the file, from the CLI's options or from code: the same validated values."""
    cfg = parse_config({"model": {"device": "auto", "precision": "bf16"},
                        "node": {"other_storage": "reject"},
                        "destinations": [{"name": "a", "kind": "folder", "path": "/x"}]})
    assert cfg.model.device is Device.AUTO and cfg.model.precision is Precision.BF16
    assert cfg.node.other_storage is OtherStorage.REJECT
    assert cfg.destinations[0].kind is DestinationKind.FOLDER
    assert ModelConfig(runtime="torch", precision="fp32").runtime is Runtime.TORCH
    assert NodeConfig(other_storage="ignore").other_storage is OtherStorage.IGNORE
    assert DestinationConfig(name="p", kind="dimse").kind is DestinationKind.DIMSE
    with pytest.raises(ConfigError, match=r"model\.device"):
        ModelConfig(device="tpu")
    with pytest.raises(ConfigError, match=r"model\.batch_size"):
        ModelConfig(batch_size=0)
    with pytest.raises(ConfigError, match=r"selection\.prefer"):
        SelectionConfig(prefer="newest")
    with pytest.raises(ConfigError, match="kind"):
        parse_config({"destinations": [{"name": "a", "kind": "ftp"}]})


def test_one_default_per_setting():
    """The model path defaults to the shipped model (or $L3NODE_MODEL) wherever it is read."""
    assert parse_config({}).model.path == ModelConfig().path == default_model_dir()
    assert (Path(default_model_dir()) / "model.json").is_file()
    assert parse_config({}).model.batch_size == ModelConfig().batch_size
