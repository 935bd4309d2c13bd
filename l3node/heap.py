"""Keep the node's memory from growing study after study (glibc's malloc).

glibc raises its mmap threshold each time a large mmap'd block is freed, up to 32 MiB.  After
the first study, then, the localizer's multi-megabyte arrays (decoded slices, preprocessing
batches, the network's activations) come from the heap instead of mmap, and once freed they
stay in the process as fragments between live blocks.  Measured in one process localizing
and composing the 1 mm whole-body benchmark study three times (batch 4): peak RSS
1.40-1.57 GiB, rising from study to study, with the dynamic threshold; with it fixed at
16 MiB, 1.07-1.11 GiB (ONNX Runtime) and 1.03-1.08 GiB (PyTorch), no creep.  The price is
page faults on the blocks above the threshold, mapped afresh each time: at 16 MiB ~0.3 s per
1 mm study on the main thread (7.3-7.6 vs 6.8-7.3 s with ONNX Runtime, 9.5-10.1 vs 9.2-9.8 s
with PyTorch).  The node processes on a scheduler thread, whose arena also returns freed top
memory at once: there PyTorch took 11.4-11.8 s against 10.1 s (benchmarks/RESULTS.md).
At 8 MiB the memory is the same but PyTorch's 12.8 MB activations (batch 4) are mapped on
every pass: +1.8 s with PyTorch, +0.5 s with ONNX Runtime; at glibc's 128 KiB default every
decoded slice is a fresh mapping (+1.5 s).

``mallopt(M_MMAP_THRESHOLD, n)`` fixes the threshold and stops its adjustment; blocks above
it are mmap'd and go back to the system when freed.  An administrator's own glibc tunables
(``MALLOC_*_`` environment variables, ``GLIBC_TUNABLES``) win: nothing is changed then.
"""

from __future__ import annotations

import ctypes
import os
import platform

M_MMAP_THRESHOLD = -3  # <malloc.h>
DEFAULT_MMAP_THRESHOLD = 16 << 20
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
