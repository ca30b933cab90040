"""One deliberate torch thread count for the whole app.

Left alone, torch starts one OpenMP thread per logical CPU and lets them spin between
parallel regions.  Beside a GUI thread and a video-capture thread that oversubscribes the
cores: on a 2-core machine a run with ``OMP_NUM_THREADS=1`` was 7x faster than the default
in one measurement (spinning threads fight for the cores the others need).

The policy: the user's explicit choice (``--threads N``, else ``$OMP_NUM_THREADS``) wins;
otherwise the physical cores this process may run on, minus the cores reserved for threads
that must stay responsive (``reserve``: the window keeps one for its GUI and capture
threads, the command line none), never fewer than 1.

And OpenMP's threads *sleep* while they wait for work (``OMP_WAIT_POLICY=PASSIVE``, set by
``import cnnvis_gui`` before torch loads OpenMP; :func:`openmp_waiting` says which policy runs).
Measured by ``benchmarks/bench_threads.py`` on the shared 2-core machine (load average 11-21):
2 spinning threads ran an export image 20x and an optimize step 8-50x slower than 1 thread,
2 sleeping threads 1.2-1.4x and 3.7-3.9x *faster* than 1 thread.  A spinning thread burns its
time slice waiting at every parallel region for a sibling the scheduler has put aside; a sleeping
one gives the core back.  So the command line keeps every physical core, with sleeping threads.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from .bounds import MAX_THREADS, bounded_int

__all__ = ["ThreadPolicy", "physical_cores", "choose_threads", "apply_threads", "current_policy", "openmp_waiting"]


@dataclass(frozen=True)
class ThreadPolicy:
    """The torch intra-op thread count chosen, and why (shown by ``cnnvis info`` and the status bar)."""

    threads: int
    reason: str

    def describe(self) -> str:
        return f"{self.threads} torch thread{'s' if self.threads != 1 else ''} ({self.reason})"


def _allowed_cpus() -> set:
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return set(range(os.cpu_count() or 1))


def physical_cores(sysfs: str = "/sys/devices/system/cpu") -> int:
    """Physical cores among the CPUs this process may run on (hyper-threads counted once).

    Read from Linux's CPU topology under ``sysfs``; where it cannot be read, every CPU counts.
    """
    cpus = _allowed_cpus()
    cores = set()
    for c in cpus:
        base = f"{sysfs}/cpu{c}/topology/"
        try:
            with open(base + "core_id") as f:
                core = f.read().strip()
            with open(base + "physical_package_id") as f:
                pkg = f.read().strip()
        except OSError:
            return max(1, len(cpus))        # no topology to read: count every CPU
        cores.add((pkg, core))
    return max(1, len(cores) or len(cpus))


def choose_threads(requested: int | None = None, reserve: int = 0, env=None) -> ThreadPolicy:
    """The intra-op thread count for this process.

    Parameters
    ----------
    requested : the user's ``--threads`` (None or 0: choose).
    reserve : cores kept free for threads that are not torch's (the window's GUI and capture).
        At most ``physical - 1`` is reserved: torch always gets one thread.
    env : the environment to read ``OMP_NUM_THREADS`` from (default ``os.environ``).
    """
    if requested is not None and int(requested) > 0:
        return ThreadPolicy(bounded_int(requested, "the torch thread count (--threads)", 1, MAX_THREADS,
                                        "more threads than cores only slow torch down"), "--threads")
    env = os.environ if env is None else env
    omp = str(env.get("OMP_NUM_THREADS", "")).strip()
    if omp.isdigit() and int(omp) > 0:
        if int(omp) > MAX_THREADS:
            return ThreadPolicy(MAX_THREADS, f"OMP_NUM_THREADS={omp[:12]} capped at {MAX_THREADS}")
        return ThreadPolicy(int(omp), "OMP_NUM_THREADS")
    cores = physical_cores()
    keep = max(0, min(int(reserve), cores - 1))
    n = cores - keep
    why = f"{cores} physical core{'s' if cores != 1 else ''}"
    if keep:
        why += f", {keep} kept for the window"
    return ThreadPolicy(n, why)


_applied: ThreadPolicy | None = None


def openmp_waiting(env=None) -> str:
    """How OpenMP's threads wait between parallel regions in this process, in words (``cnnvis info``).

    Read from ``OMP_WAIT_POLICY`` as OpenMP read it when torch loaded it (``import cnnvis_gui``
    sets ``PASSIVE`` when it comes first and the user set nothing).
    """
    v = str((os.environ if env is None else env).get("OMP_WAIT_POLICY", "")).strip()
    if not v:
        return ("OpenMP threads spin a while before they sleep (OpenMP's own policy: torch came before "
                "cnnvis_gui, or CNNVIS_OPENMP_WAIT=default)")
    if v.upper() == "PASSIVE":
        return "OpenMP threads sleep while they wait (OMP_WAIT_POLICY=PASSIVE)"
    return f"OpenMP threads wait as OMP_WAIT_POLICY={v} says"


def apply_threads(requested: int | None = None, reserve: int = 0) -> ThreadPolicy:
    """Choose the thread count (:func:`choose_threads`) and set it in torch; returns the policy."""
    global _applied
    import torch
    policy = choose_threads(requested, reserve)
    torch.set_num_threads(policy.threads)
    _applied = policy
    return policy


def current_policy() -> ThreadPolicy:
    """The policy applied in this process, or torch's own count when none was."""
    if _applied is not None:
        import torch
        if torch.get_num_threads() == _applied.threads:
            return _applied
    import torch
    return ThreadPolicy(torch.get_num_threads(), "torch default")


#: how much less CPU priority (nice) the window's render thread takes than its GUI thread
WORKER_NICE = 3


def lower_this_thread(nice: int = WORKER_NICE) -> bool:
    """Run the calling thread ``nice`` levels below the rest of the process (Linux); True if done.

    The window's render thread calls it: when the cores are shared (other jobs, a video
    decoder), the scheduler then lets the GUI thread run first, so a frame being computed
    does not hold the window's own thread back.  On an idle machine it costs nothing (the
    GUI thread is mostly asleep).  Measured with ResNet-18 live beside other jobs (load
    average 10 on 2 cores): longest GUI stall 63-95 ms at +0, 44-47 ms at +5 (processed fps
    down 10-35 % there), +2..+3 in between at no fps cost.
    """
    import threading
    if nice <= 0 or not hasattr(os, "setpriority"):
        return False
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + int(nice))
    except (OSError, AttributeError):
        return False
    return True
