"""Keep the node's memory from growing study after study (glibc's malloc).

glibc raises its mmap threshold each time a large mmap'd block is freed, up to 32 MiB.  After
the first study, then, the localizer's multi-megabyte arrays (decoded slices, preprocessing
batches, the network's activations) come from the heap instead of mmap, and once freed they
stay in the process as fragments between live blocks.  Measured in one process localizing
and composing the 1 mm whole-body benchmark study three times (ONNX Runtime, batch 4): peak
RSS 1.40-1.57 GiB, rising from study to study, with the dynamic threshold; 1.05-1.07 GiB
with it fixed at 8 MiB.  The price is page faults on the blocks above 8 MiB, mmap'd afresh
each time: ~0.5 s (6 %) more per 1 mm study, interleaved runs 7.3 s vs 7.8 s.  Fixed at the
128 KiB default it costs ~1.5 s (every decoded slice is then a fresh mmap); raising the trim
threshold as well gained nothing.

``mallopt(M_MMAP_THRESHOLD, n)`` fixes the threshold and stops its adjustment; blocks above
it are mmap'd and go back to the system when freed.  An administrator's own glibc tunables
(``MALLOC_*_`` environment variables, ``GLIBC_TUNABLES``) win: nothing is changed then.
"""

from __future__ import annotations

import ctypes
import os
import platform

M_MMAP_THRESHOLD = -3  # <malloc.h>
DEFAULT_MMAP_THRESHOLD = 8 << 20
_ADMIN_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_",
                   "MALLOC_MMAP_MAX_", "GLIBC_TUNABLES")


def fix_mmap_threshold(nbytes: int = DEFAULT_MMAP_THRESHOLD) -> bool:
    """Fix glibc's mmap threshold at ``nbytes``; False where it was not changed (not glibc,
    or the administrator set malloc tunables in the environment)."""
    if any(k in os.environ for k in _ADMIN_SETTINGS):
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return mallopt(M_MMAP_THRESHOLD, int(nbytes)) == 1
