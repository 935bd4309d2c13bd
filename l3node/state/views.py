"""What people read: ``l3node status``, the status page, ``/healthz`` and the queue gauge."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from .db import ExportState

KEY_IMAGE_KINDS = ("sc-axial", "sc-not-found")  # the object the status page shows


def study_status(db: sqlite3.Connection, limit: int | None = None,
                 study_uid: str | None = None) -> list[dict]:
    """Every study (most recent first, at most ``limit``; or only ``study_uid``) with its
    current result, timings, result objects and delivery per destination."""
    rows = db.execute(
        "SELECT s.study_instance_uid, s.state, s.instances, s.version, s.first_instance_at, "
        "s.last_instance_at, s.exported_at, r.status, r.l3_index, r.l3_sop_instance_uid, "
        "r.l3_frame_number, "
        "r.z_mm, r.confidence, r.reason, r.processing_s, r.created_at, r.files, r.objects "
        "FROM study s LEFT JOIN result r ON r.study_instance_uid = s.study_instance_uid AND "
        "r.version = s.version WHERE ? IS NULL OR s.study_instance_uid = ? "
        "ORDER BY s.last_instance_at DESC LIMIT ?",
        (study_uid, study_uid, limit or -1)).fetchall()
    keys = ("study_instance_uid", "state", "instances", "version", "first_instance_at",
            "last_instance_at", "exported_at", "result", "l3_index", "l3_sop_instance_uid",
            "l3_frame_number",
            "z_mm", "confidence", "reason", "processing_s", "result_at", "files", "objects")
    out = [dict(zip(keys, r, strict=True)) for r in rows]
    for o in out:
        o["files"] = json.loads(o["files"]) if o["files"] else []
        o["objects"] = json.loads(o["objects"]) if o["objects"] else []
        o["exports"] = {d: {"state": st, "attempts": a, "last_error": e, "sent_at": t}
                        for d, st, a, e, t in db.execute(
                            "SELECT destination, state, attempts, last_error, sent_at FROM "
                            "export WHERE study_instance_uid = ? AND version = ?",
                            (o["study_instance_uid"], o["version"]))}
    return out


def key_image(row: dict) -> Path | None:
    """The result's key image (the axial SC, or the not-found one), by its recorded kind."""
    return next((Path(o["path"]) for o in row.get("objects", [])
                 if o.get("kind") in KEY_IMAGE_KINDS), None)


def state_counts(db: sqlite3.Connection) -> dict[str, int]:
    return dict(db.execute("SELECT state, COUNT(*) FROM study GROUP BY state").fetchall())


def pending_exports(db: sqlite3.Connection) -> int:
    return db.execute("SELECT COUNT(*) FROM export WHERE state = ?",
                      (ExportState.PENDING,)).fetchone()[0]


def readable(db: sqlite3.Connection) -> bool:
    """The health check's probe: can the database be read at all."""
    try:
        db.execute("SELECT COUNT(*) FROM study").fetchone()
    except sqlite3.Error:
        return False
    return True
