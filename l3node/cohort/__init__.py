"""``l3node cohort``: the L3 slice of every study in a researcher's list, from the PACS.

:mod:`.worklist` reads the list (or a date range); :mod:`.pacs` finds and retrieves the
studies (C-FIND + C-GET/C-MOVE, or QIDO-RS + WADO-RS); :mod:`.run` puts each through the
node's own spool, pipeline and export; :mod:`.table` writes the resumable journal and the
CSV; :mod:`.progress` draws the progress line.
"""

from .pacs import PacsError
from .run import Cohort, Options
from .table import COLUMNS, FINAL, Table
from .worklist import DateRange, Wanted, WorklistError, parse_range, read_worklist

__all__ = ["COLUMNS", "FINAL", "Cohort", "DateRange", "Options", "PacsError", "Table",
           "Wanted", "WorklistError", "parse_range", "read_worklist"]
