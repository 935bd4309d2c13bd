"""Helpers the benchmark scripts share: cached phantoms, peers on loopback, /proc readings.

Phantoms are generated once into ``.cache/bench/phantoms`` (git-ignored) and reused, because
a 1 mm whole-body study takes longer to generate than most of the figures take to measure.
The cache key includes a hash of the phantom generator's source, so a changed generator
never benchmarks a stale study.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "bench"
STORESCU = "/usr/bin/storescu"  # DCMTK by path: pynetdicom's scripts shadow it in the venv
STORESCP = "/usr/bin/storescp"
ORTHANC = "/usr/sbin/Orthanc"


# -- phantoms ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Phantom:
    """A generated study: its folder (one .dcm per slice, plus truth.json) and its truth."""

    folder: Path
    truth: dict

    @property
    def files(self) -> list[Path]:
        return sorted(self.folder.glob("*.dcm"))

    @property
    def slice_count(self) -> int:
        return int(self.truth["series"]["slice_count"])

    @property
    def nbytes(self) -> int:
        return sum(f.stat().st_size for f in self.files)

    @property
    def l3_middle(self) -> int | None:
        return self.truth["l3"].get("middle_index")


def _generator_hash() -> str:
    """Hash of the phantom generator's source: a cached study is reused only if it matches."""
    h = hashlib.sha256()
    for f in sorted((ROOT / "l3node" / "phantom").glob("*.py")):
        h.update(f.read_bytes())
    return h.hexdigest()[:10]


def phantom(preset: str = "whole-body", slice_mm: float = 1.0, seed: int = 5,
            transfer_syntax: str = "explicit", workers: int | None = None) -> Phantom:
    """A cached phantom study, generated on first use (into a temp folder, then renamed, so
    an interrupted generation never leaves a half study that looks complete)."""
    from l3node.phantom import StudyRequest, generate_study

    key = f"{preset}-{slice_mm:g}mm-seed{seed}-{transfer_syntax}-{_generator_hash()}"
    folder = CACHE / "phantoms" / key
    if not (folder / "truth.json").is_file():
        part = folder.with_name(folder.name + ".part")
        shutil.rmtree(part, ignore_errors=True)
        t = time.perf_counter()
        generate_study(part, StudyRequest(seed=seed, preset=preset, slice_mm=slice_mm,
                                          transfer_syntax=transfer_syntax), workers=workers)
        shutil.rmtree(folder, ignore_errors=True)
        part.rename(folder)
        print(f"  generated {key} in {time.perf_counter() - t:.0f} s (cached in "
              f"{folder.relative_to(ROOT)})", file=sys.stderr)
    return Phantom(folder, json.loads((folder / "truth.json").read_text()))


def warm_page_cache(files: list[Path]) -> None:
    """Read every file once so no sender pays for the first read from disk."""
    for f in files:
        with f.open("rb") as fh:
            while fh.read(1 << 20):
                pass


# -- processes and ports ----------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 120.0,
              log: Path | None = None) -> None:
    """Wait until something accepts TCP connections on ``port``; fail if ``proc`` exits.

    The node loads its model before it listens, so an open port means it is ready."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            tail = log.read_text()[-3000:] if log and log.is_file() else ""
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}\n{tail}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port} after {timeout:.0f} s")


def stop(proc: subprocess.Popen, timeout: float = 30.0) -> None:
    """SIGTERM (the node stops cleanly on it), then SIGKILL if it does not exit."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def proc_status_kb(pid: int, field: str) -> int | None:
    """A ``kB`` field of /proc/PID/status (VmRSS, VmHWM); None once the process is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    m = re.search(rf"^{field}:\s+(\d+) kB", text, re.M)
    return int(m.group(1)) if m else None


# -- the machine ------------------------------------------------------------------------------
def _first_line(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "not found"
    lines = (out.stdout or out.stderr).strip().splitlines()
    return lines[0].strip() if lines else "?"


def _filesystem(path: Path) -> str:
    """Type and device of the filesystem holding ``path`` (fsync costs depend on it)."""
    best, desc = "", "?"
    path = path.resolve()
    for line in Path("/proc/mounts").read_text().splitlines():
        dev, mnt, kind = line.split()[:3]
        if (str(path) + "/").startswith(mnt.rstrip("/") + "/") and len(mnt) >= len(best):
            best, desc = mnt, f"{kind} on {dev} (mounted at {mnt})"
    return desc


def machine() -> dict[str, str]:
    """What the figures depend on: CPU, cores, RAM, disk, library and peer versions, load."""
    import torch

    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
    bf16 = "amx_bf16" in Path("/proc/cpuinfo").read_text() or "avx512_bf16" in \
        Path("/proc/cpuinfo").read_text()
    load = os.getloadavg()
    return {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "cpu": f"{cpu}, {os.cpu_count()} cores ({platform.machine()}"
               f"{', bf16 instructions' if bf16 else ''})",
        "ram": f"{mem_kb / 2**20:.1f} GiB",
        "disk": _filesystem(CACHE),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "torch": f"{torch.__version__}, {torch.get_num_threads()} threads, "
                 f"{'CUDA' if torch.cuda.is_available() else 'CPU only'}",
        "dcmtk": _first_line([STORESCU, "--version"]).strip("$ ").removeprefix("dcmtk: "),
        "orthanc": _first_line([ORTHANC, "--version"]).replace(ORTHANC, "Orthanc").strip(),
        "load": f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (1/5/15 min) at start",
    }
