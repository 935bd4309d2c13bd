"""Deterministic UIDs: the same parts always give the same UID.

A name-based UUID (RFC 4122 version 5) under the ``2.25`` root (PS3.5 B.2).  Results derive
their UIDs from (input study, series, model version), so re-sending a result never creates a
duplicate in the PACS.  (pydicom's ``generate_uid(prefix=None, entropy_srcs=...)`` ignores
the entropy and is random, so it cannot serve here.)
"""

from __future__ import annotations

import uuid

_NAMESPACE = uuid.UUID("6f1c1a52-3b7e-4a53-9a0e-6c3d5e1b2a10")


def derived_uid(*parts: object) -> str:
    return f"2.25.{uuid.uuid5(_NAMESPACE, '/'.join(map(str, parts))).int}"
