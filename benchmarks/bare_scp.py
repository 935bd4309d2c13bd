"""The least a pynetdicom storage SCP can do: each dataset's bytes to a file, no fsync.

A reference receiver for ``make bench`` (not part of l3node): it shows the ceiling that
pynetdicom's own reactor (threads polling with 1 ms sleeps, one PDU at a time) puts on any
receiver built on it, so l3node's ingest can be read against both DCMTK and that ceiling.
With ``--waking`` it uses l3node's :class:`~l3node.reactor.WakingAE` (the DUL waits on its
socket instead of sleeping): the same receiver with only the polling changed.  With
``--fsync`` each file and its folder are flushed before the acknowledgement — the least a
receiver that keeps l3node's promise (acknowledge only what is on disk) must do, so the
node's own costs can be told from the disk's.
Run: ``python benchmarks/bare_scp.py PORT OUT_DIR [--waking] [--fsync]``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.events import Event

TRANSFER_SYNTAXES = ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"]


def main(port: int, out: Path, waking: bool = False, fsync: bool = False) -> None:
    out.mkdir(parents=True, exist_ok=True)
    count = 0

    def on_store(event: Event) -> int:
        nonlocal count
        count += 1
        path = out / f"{count:06d}.dcm"
        if not fsync:
            path.write_bytes(event.request.DataSet.getvalue())
            return 0x0000
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, event.request.DataSet.getvalue())
            os.fsync(fd)
        finally:
            os.close(fd)
        dfd = os.open(out, os.O_RDONLY)
        try:
            os.fsync(dfd)  # the new name, too
        finally:
            os.close(dfd)
        return 0x0000

    if waking:
        from l3node.reactor import WakingAE

        ae: AE = WakingAE(ae_title="BARESCP")
    else:
        ae = AE(ae_title="BARESCP")
    ae.maximum_pdu_size = 262144  # as l3node's default node.max_pdu
    for cx in AllStoragePresentationContexts:
        ae.add_supported_context(cx.abstract_syntax, TRANSFER_SYNTAXES)
    ae.start_server(("127.0.0.1", port), block=True, evt_handlers=[(evt.EVT_C_STORE, on_store)])


if __name__ == "__main__":
    main(int(sys.argv[1]), Path(sys.argv[2]), "--waking" in sys.argv[3:],
         "--fsync" in sys.argv[3:])
