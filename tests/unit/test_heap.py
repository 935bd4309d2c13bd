"""The node fixes glibc's mmap threshold so that freed multi-megabyte arrays leave the process
(``l3node/heap.py``); measured in a fresh interpreter, since the setting is per process."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from l3node.heap import fix_mmap_threshold

# Free one 16 MiB block (glibc then raises its threshold to 16 MiB), allocate 100 blocks of
# 2 MiB, keep every tenth: the rest can only leave the process if they were mmap'd.
PROBE = r"""
import sys
import numpy as np
from l3node.heap import fix_mmap_threshold
if sys.argv[1] == "fixed":
    assert fix_mmap_threshold(1 << 20)
def rss_mib():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
big = np.ones(16 << 20, np.uint8)
del big
before = rss_mib()
blocks = [np.ones(2 << 20, np.uint8) for _ in range(100)]
kept = blocks[::10]
del blocks
print(rss_mib() - before)
"""


def _retained_mib(mode: str) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env.pop("GLIBC_TUNABLES", None)
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True,
                         env=env, timeout=120, check=True)
    return float(out.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_a_fixed_mmap_threshold_returns_freed_blocks_to_the_system():
    default, fixed = _retained_mib("default"), _retained_mib("fixed")
    # 10 blocks of 2 MiB are still alive in both cases: ~20 MiB
    assert fixed < 40, fixed
    assert default > fixed + 100, (default, fixed)


def test_an_administrators_malloc_setting_wins(monkeypatch):
    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")
    assert fix_mmap_threshold() is True  # not a threshold setting: ours still applies
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "131072")
    assert fix_mmap_threshold() is False
