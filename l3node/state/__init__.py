"""The node's state in SQLite — the one module that speaks SQL.

:mod:`.db` holds the schema, its migrations, the connections and the state enums;
:mod:`.instances` the receive path's rows (what the spool holds); :mod:`.studies` the
scheduler's (completion, claims, results, retention); :mod:`.exports` the delivery queue;
:mod:`.views` what ``l3node status``, the status page and the metrics read.
"""

from .db import ExportState, StudyState, open_db, open_reader, storage_full

__all__ = ["ExportState", "StudyState", "open_db", "open_reader", "storage_full"]
