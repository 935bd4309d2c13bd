"""Synthetic whole-body CT phantoms with known vertebra levels (``l3node phantom``)."""

from .request import PRESETS, SLICE_CHOICES, TRANSFER_SYNTAXES, StudyRequest
from .study import generate_study

__all__ = ["PRESETS", "SLICE_CHOICES", "TRANSFER_SYNTAXES", "StudyRequest", "generate_study"]
