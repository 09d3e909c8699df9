"""How many CPU threads torch computes with, and how its OpenMP threads wait.

On a 2-core machine with one other busy process per core, resnet50 INTR's all-class decode
(C = 200, 800×1200 px) took 7.1 s with torch's defaults at 2 threads: OpenMP's idle threads spin
at every barrier, holding the core that the descheduled thread needs, so each of the decoder's
many small operations waited a scheduler tick. With OMP_WAIT_POLICY=PASSIVE (idle threads
sleep) the same decode took 0.37 s, and 0.67 s with 1 thread (benchmarks/RESULTS.md, issue 24).
The wait policy is read by the OpenMP runtime when torch loads it, so `passive_openmp_waiting`
runs on importing napari_intr (before torch, in napari and in the `intr` command); the thread
count is set when a model is loaded for inference (`use_inference_threads`).

Cores: those this process may run on (its CPU affinity) and, in a container, its CPU quota
(cgroup v2 cpu.max, v1 cpu.cfs_quota_us), not the machine's `os.cpu_count()`.
"""
from __future__ import annotations

import math
import os
import sys
from pathlib import Path

# GNU OpenMP (torch's wheels) and Intel OpenMP (some conda builds) name the policy differently;
# each runtime ignores the other's variable. A value the user set is kept.
OPENMP_WAITING = {"OMP_WAIT_POLICY": "PASSIVE", "KMP_BLOCKTIME": "0"}
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
CGROUP_V2 = Path("/sys/fs/cgroup/cpu.max")
CGROUP_V1 = (Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"), Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us"))


def passive_openmp_waiting(environment=os.environ) -> None:
    """Idle OpenMP threads sleep instead of spinning (see the module's docstring). Effective only
    before torch is first imported; child processes inherit it through the environment."""
    for name, value in OPENMP_WAITING.items():
        environment.setdefault(name, value)


def cgroup_cpu_limit() -> float | None:
    """The CPU quota of this process's cgroup in cores (e.g. 1.5), or None when unlimited or unknown."""
    try:
        quota, period = CGROUP_V2.read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota, period = (int(path.read_text().strip()) for path in CGROUP_V1)
        return quota / period if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


def available_cores() -> int:
    """Cores this process may use: its affinity, capped by the cgroup quota (rounded up), at least 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS and Windows have no affinity call
        cores = os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    if limit is not None:
        cores = min(cores, math.ceil(limit))
    return max(1, cores)


def child_threads() -> int:
    """Threads for a child process working beside this one (training, a shard): cores - 1, at least 1."""
    return max(1, available_cores() - 1)


def inference_threads(leave_for_gui: bool = False) -> int:
    """Intra-op threads for inference: every available core, or all but one when a GUI's event
    loop (napari's) runs in this process, so that the viewer stays responsive."""
    return child_threads() if leave_for_gui else available_cores()


def use_inference_threads(leave_for_gui: bool = False, environment=os.environ) -> int | None:
    """Set torch's intra-op threads to `inference_threads` (and inter-op threads to match, when
    torch still allows it). A thread count the user set (OMP_NUM_THREADS, MKL_NUM_THREADS) wins:
    then nothing changes and None is returned; else the count set."""
    if any(environment.get(name) for name in THREAD_VARIABLES):
        return None
    import torch
    threads = inference_threads(leave_for_gui)
    torch.set_num_threads(threads)
    try:  # allowed once, before any inter-op work has started
        torch.set_num_interop_threads(threads)
    except RuntimeError:
        pass
    return threads


# In napari, jobs (explain, batch, regions, compare, edit, atlas) compute on worker threads of
# the GUI's own process. Linux gives each thread its own nice value: a worker `WORKER_NICE`
# steps below the GUI thread yields the core to it whenever the GUI thread has work (painting,
# showing a result), instead of sharing the core equally (issue 24: benchmarks/RESULTS.md).
# Threads the worker starts (OpenMP's, a polled helper) inherit its value.
WORKER_NICE = 5


def lower_thread_priority(steps: int | None = None) -> bool:
    """Set the calling thread's nice value `steps` (default WORKER_NICE) above the process's own,
    once (a reused pool thread is not lowered twice). Linux only (elsewhere nice is per process):
    returns whether the thread now runs below the process's priority."""
    steps = WORKER_NICE if steps is None else steps
    if not sys.platform.startswith("linux") or steps <= 0:
        return False
    import threading
    thread = threading.get_native_id()
    try:
        wanted = min(19, os.getpriority(os.PRIO_PROCESS, os.getpid()) + steps)
        if os.getpriority(os.PRIO_PROCESS, thread) != wanted:
            os.setpriority(os.PRIO_PROCESS, thread, wanted)
    except OSError:  # not permitted (seccomp, an odd container): the thread runs as it was
        return False
    return True
