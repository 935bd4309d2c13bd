"""One validated configuration, loaded once at start and passed down (TOML).

:mod:`.schema` holds the sections as dataclasses with their defaults, :mod:`.load` reads a
file into them.
"""

from .load import load_config, parse_config
from .schema import (
    Config,
    ConfigError,
    DestinationConfig,
    DestinationKind,
    Device,
    HousekeepingConfig,
    LoggingConfig,
    ModelConfig,
    NodeConfig,
    OtherStorage,
    PathsConfig,
    Precision,
    Prefer,
    ResultObject,
    ResultsConfig,
    RetryConfig,
    Runtime,
    SchedulerConfig,
    SelectionConfig,
    TLSConfig,
    WebConfig,
    check_ae_title,
    default_model_dir,
)

__all__ = [
    "Config", "ConfigError", "DestinationConfig", "DestinationKind", "Device",
    "HousekeepingConfig", "LoggingConfig", "ModelConfig", "NodeConfig", "OtherStorage",
    "PathsConfig", "Precision", "Prefer", "ResultObject", "ResultsConfig", "RetryConfig", "Runtime",
    "SchedulerConfig", "SelectionConfig", "TLSConfig", "WebConfig", "check_ae_title",
    "default_model_dir", "load_config", "parse_config",
]
