"""Strict construction of parameter dataclasses from a model artifact's JSON."""

from __future__ import annotations

from typing import Any, TypeVar

T = TypeVar("T")


def from_json_strict(cls: type[T], d: dict[str, Any], what: str) -> T:
    """``cls(**d)``, refusing keys the dataclass does not know (a newer or foreign artifact)."""
    unknown = set(d) - set(cls.__dataclass_fields__)  # type: ignore[attr-defined]
    if unknown:
        raise ValueError(f"unknown {what} parameters {sorted(unknown)}")
    return cls(**d)
