"""``--workers N``: N search processes on one machine, each on its own cores or GPU.

One trial's torch threads scale poorly past a few cores on the CPU budgets (small images,
small batches), so N one-core trials side by side finish more trials per hour than one trial
on N threads, and a machine with several GPUs needs a trial per GPU.  Each worker is a fresh
process (``spawn``: no forked torch or database state) pinned to its share of the cores
(``os.sched_setaffinity``) with as many torch threads, so the workers do not fight over
caches and cores; when training runs on CUDA, worker i sees one GPU
(``CUDA_VISIBLE_DEVICES``), round-robin over the GPUs this process may use.  The workers
coordinate only through the study's storage (:mod:`training.budget`).
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import wait
from multiprocessing.synchronize import Barrier

import torch


@dataclass(frozen=True)
class Placement:
    """Where worker ``index`` runs: its cores, and its GPU (None: CPU, or all GPUs)."""

    index: int
    cores: tuple[int, ...]
    gpu: str | None = None


def core_shares(cores: Sequence[int], n: int) -> list[tuple[int, ...]]:
    """``n`` contiguous, near-equal slices of ``cores``; one core each (shared round-robin)
    when there are fewer cores than workers."""
    cores = sorted(cores)
    if n > len(cores):
        return [(cores[i % len(cores)],) for i in range(n)]
    q, r = divmod(len(cores), n)
    out, start = [], 0
    for i in range(n):
        size = q + (i < r)
        out.append(tuple(cores[start : start + size]))
        start += size
    return out


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES names them."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip()]
    return [str(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []


def placements(n: int, device: str) -> list[Placement]:
    """Each worker's cores, and its GPU when ``device`` is CUDA."""
    shares = core_shares(sorted(os.sched_getaffinity(0)), n)
    gpus = visible_gpus() if device.startswith("cuda") else []
    return [Placement(i, shares[i], gpus[i % len(gpus)] if gpus else None) for i in range(n)]


def pin(place: Placement) -> None:
    """Confine this process to its cores, with as many torch threads.  Its GPU is set in its
    environment when it starts (:func:`run_workers`): CUDA reads CUDA_VISIBLE_DEVICES once,
    and importing this module's callers may already have asked torch about CUDA."""
    os.sched_setaffinity(0, place.cores)
    torch.set_num_threads(len(place.cores))


@contextlib.contextmanager
def _gpu_env(gpu: str | None) -> Iterator[None]:
    """CUDA_VISIBLE_DEVICES set to ``gpu`` while a child is started (None: left alone)."""
    if gpu is None:
        yield
        return
    before = os.environ.get("CUDA_VISIBLE_DEVICES")
    os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    try:
        yield
    finally:
        if before is None:
            del os.environ["CUDA_VISIBLE_DEVICES"]
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = before


def _child(target: Callable[..., None], args: tuple, place: Placement,
           start: Barrier | None) -> None:
    pin(place)
    target(*args, place, start)


def _exit_on_term(signum: int, frame: object) -> None:
    sys.exit(128 + signum)


def run_workers(target: Callable[..., None], args: tuple, n: int, device: str,
                log: Callable[[str], None] = print) -> list[int | None]:
    """Run ``target(*args, placement, barrier)`` in ``n`` pinned processes; their exit codes.

    ``target`` must be a module-level function (spawn pickles it by name).  The barrier lets
    the workers start their first trial together, so that one that imported torch faster does
    not take every trial; ``target`` should wait on it with a timeout and go on when broken.
    Stopping this process (Ctrl-C, SIGTERM) stops the workers; a worker that dies alone
    leaves its trial to the heartbeat and the others.
    """
    ctx = mp.get_context("spawn")
    start = ctx.Barrier(n)
    procs = []
    main = threading.current_thread() is threading.main_thread()
    old_term = signal.signal(signal.SIGTERM, _exit_on_term) if main else None  # run `finally`
    try:
        for place in placements(n, device):
            gpu = f", GPU {place.gpu}" if place.gpu is not None else ""
            log(f"worker {place.index}: cores {','.join(map(str, place.cores))}{gpu}")
            p = ctx.Process(target=_child, args=(target, args, place, start),
                            name=f"search-worker-{place.index}")
            with _gpu_env(place.gpu):  # the child's environment from its first instruction
                p.start()
            procs.append(p)
        pending = {p.sentinel: p for p in procs}
        while pending:
            for s in wait(list(pending)):
                pending.pop(s).join()
            # one has ended: it passed the barrier, or died before it; either way nobody
            # should wait for it any more
            start.abort()
    finally:
        if main:
            signal.signal(signal.SIGTERM, old_term)
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join(30)
    for i, p in enumerate(procs):
        if p.exitcode:
            how = f"signal {-p.exitcode}" if p.exitcode < 0 else f"exit {p.exitcode}"
            log(f"worker {i} (pid {p.pid}) ended with {how}; a trial it left running is "
                f"failed by the heartbeat and re-queued for the others")
    return [p.exitcode for p in procs]
