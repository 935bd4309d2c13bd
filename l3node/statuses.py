"""The DIMSE statuses l3node answers and acts on, by name (PS3.4 B.2.3, PS3.7 C).

As an SCP the listener returns :class:`Status` members; as an SCU the exporter counts the
warning statuses in :data:`STORED` as stored, as PS3.4 allows.  Logs print them as
``0xA700``, the form DCMTK, Orthanc and the standard use.
"""

from __future__ import annotations

from enum import IntEnum


class Status(IntEnum):
    SUCCESS = 0x0000
    COERCION_OF_DATA_ELEMENTS = 0xB000  # warning: stored
    ELEMENTS_DISCARDED = 0xB006  # warning: stored
    DATASET_DOES_NOT_MATCH_SOP_CLASS_WARNING = 0xB007  # warning: stored
    OUT_OF_RESOURCES = 0xA700  # refused: the spool could not make the instance durable
    DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900  # error
    CANNOT_UNDERSTAND = 0xC000  # error

    def __str__(self) -> str:
        return hex4(self.value)


STORED = frozenset({Status.SUCCESS, Status.COERCION_OF_DATA_ELEMENTS,
                    Status.ELEMENTS_DISCARDED, Status.DATASET_DOES_NOT_MATCH_SOP_CLASS_WARNING})


def hex4(code: int) -> str:
    """``0xA700`` — a status as DICOM tools print it."""
    return f"0x{code & 0xFFFF:04X}"
