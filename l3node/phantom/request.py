"""What a caller may ask the phantom for: one study request and the choices it is checked against.

Its own module, at the bottom of the import chain, because both the study planner
(:mod:`.study`) and the DICOM writer (:mod:`.dicom`) read a request, and neither should have to
import the other to know its type.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PRESETS", "SLICE_CHOICES", "TRANSFER_SYNTAXES", "StudyRequest"]

PRESETS = ("whole-body", "chest-abdomen-pelvis", "abdomen-pelvis", "chest", "head-neck")
SLICE_CHOICES = (1.0, 1.25, 2.0, 2.5, 3.0, 5.0)
TRANSFER_SYNTAXES = ("explicit", "jpeg2000-lossless", "jpegls-lossless", "rle")


@dataclass(frozen=True)
class StudyRequest:
    """What the caller asked for; ``None`` fields are drawn at random."""

    seed: int
    index: int = 0
    preset: str = "whole-body"
    slice_mm: float | None = None
    transfer_syntax: str = "explicit"
    transitional_rate: float = 0.10
    truncated_rate: float = 0.05
    matrix: int = 512

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f'Argument "preset" must be one of {PRESETS}, got {self.preset!r}.')
        if self.transfer_syntax not in TRANSFER_SYNTAXES:
            raise ValueError(
                f'Argument "transfer_syntax" must be one of {TRANSFER_SYNTAXES}, '
                f"got {self.transfer_syntax!r}."
            )
        if self.slice_mm is not None and not 0.5 <= self.slice_mm <= 10.0:
            raise ValueError(f'Argument "slice_mm" must be in [0.5, 10], got {self.slice_mm}.')
        for name in ("transitional_rate", "truncated_rate"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f'Argument "{name}" must be in [0, 1], got {v}.')

    @property
    def study_seed(self) -> list[int]:
        return [int(self.seed), int(self.index)]
