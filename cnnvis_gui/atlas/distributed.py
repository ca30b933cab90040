"""The top-k scan on ``torch.distributed``: ranks started by ``torchrun`` each scan one slice.

    torchrun --nproc_per_node N -m cnnvis_gui atlas [model options] --images FOLDER --layer L --out DIR

torchrun starts N processes (``--nnodes``/``--rdzv-endpoint`` for several machines, as for any
torchrun job) and gives each ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``.  Every rank lists the
folder itself (same listing, same order), scans slice RANK of WORLD_SIZE
(:func:`~cnnvis_gui.atlas.scan.shard_range`: whole batches) on its own device (``cuda:LOCAL_RANK``
when CUDA is there, else the CPU), and sends its per-unit top-k to rank 0, which merges them
exactly (:func:`~cnnvis_gui.atlas.merge.merge_parts`), computes the crops and writes the atlas.
The process group is ``nccl`` for CUDA models and ``gloo`` otherwise.

Before scanning, the ranks compare what the result depends on (model weights, spec, layers, k,
folder, listing, batch size): a rank that loaded other weights (e.g. a randomly initialized model
without a fixed seed) or sees another folder stops the run with a message naming the rank and the
difference.  A rank that raises exits non-zero; torchrun's agent then stops the others (no rank
waits forever in a collective), and the collectives also time out (``timeout_s``).

Standard: PyTorch's ``torch.distributed`` collectives (``all_gather_object`` / ``gather_object``,
unpickled with ``weights_only=True``: plain types and tensors only) and ``torchrun``'s environment.
"""
from __future__ import annotations

import inspect
import os
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from ..core import CnnvisError
from .merge import AtlasPart, first_difference

__all__ = ["World", "PeerLost", "world_from_env", "rank_device", "backend_for", "process_group", "agree",
           "gather_parts", "all_gather", "gather", "DEFAULT_TIMEOUT_S"]

#: how long a rank waits in a collective for the others (the slowest rank's extra scan time)
DEFAULT_TIMEOUT_S = 3600.0


class PeerLost(CnnvisError):
    """Another rank went away during a collective (it failed, or torchrun stopped it)."""


@contextmanager
def _collective(world, step: str):
    """Turn a backend's error in a collective (peer closed, timeout) into :class:`PeerLost`."""
    try:
        yield
    except CnnvisError:
        raise
    except RuntimeError as e:   # gloo/nccl: "Connection closed by peer", timeouts, DistBackendError
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise PeerLost(f"{world}: lost the other ranks while {step}: one of them failed (see its message), was "
                       f"stopped, or took longer than --dist-timeout ({first[:200]})") from e


@dataclass(frozen=True)
class World:
    """This process's place in a torchrun job."""

    rank: int
    size: int
    local_rank: int

    @property
    def main(self) -> bool:
        return self.rank == 0

    def __str__(self) -> str:
        return f"rank {self.rank} of {self.size}"


def world_from_env(environ=None) -> World | None:
    """The torchrun job this process belongs to (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``), or None.

    None without torchrun, and for a job of one process: then a scan runs exactly as a
    plain one-process scan.
    """
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" not in env or "RANK" not in env:
        return None
    try:
        size, rank = int(env["WORLD_SIZE"]), int(env["RANK"])
        local = int(env.get("LOCAL_RANK", rank))
    except ValueError:
        raise CnnvisError(f"cannot read torchrun's RANK={env.get('RANK')!r} / WORLD_SIZE={env.get('WORLD_SIZE')!r} "
                          f"/ LOCAL_RANK={env.get('LOCAL_RANK')!r}.") from None
    if size <= 1:
        return None
    if not 0 <= rank < size:
        raise CnnvisError(f"RANK={rank} is outside WORLD_SIZE={size}.")
    return World(rank, size, local)


def rank_device(world: World, requested: str) -> str:
    """The ``--device`` this rank loads its model on.

    ``auto`` or ``cuda`` with CUDA present: ``cuda:LOCAL_RANK`` (and that device becomes the
    current one, as NCCL wants); ``cpu`` stays on the CPU.
    """
    requested = requested or "auto"
    if requested in ("auto", "cuda") and torch.cuda.is_available():
        n = torch.cuda.device_count()
        if world.local_rank >= n:
            raise CnnvisError(f"{world}: LOCAL_RANK {world.local_rank} but this machine has {n} CUDA device"
                              f"{'s' if n != 1 else ''}; start at most {n} processes per node "
                              f"(torchrun --nproc_per_node {n}).")
        torch.cuda.set_device(world.local_rank)
        return f"cuda:{world.local_rank}"
    return "cpu" if requested == "auto" else requested


def backend_for(device) -> str:
    """``nccl`` for a CUDA device, ``gloo`` otherwise."""
    return "nccl" if torch.device(device).type == "cuda" and dist.is_nccl_available() else "gloo"


@contextmanager
def process_group(world: World, backend: str, timeout_s: float = DEFAULT_TIMEOUT_S):
    """``init_process_group`` from torchrun's environment; destroyed on exit (also after an error)."""
    if not dist.is_available():
        raise CnnvisError("this torch build has no torch.distributed; run without torchrun, or use --shard I/N.")
    kw = {}
    if backend == "nccl" and "device_id" in inspect.signature(dist.init_process_group).parameters:
        kw["device_id"] = torch.device("cuda", torch.cuda.current_device())
    with _collective(world, "starting the process group"):
        dist.init_process_group(backend, timeout=timedelta(seconds=float(timeout_s)), rank=world.rank,
                                world_size=world.size, **kw)
    try:
        yield
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _weights_only(fn) -> dict:
    """``weights_only=True`` where this torch's object collectives take it (torch >= 2.6)."""
    return {"weights_only": True} if "weights_only" in inspect.signature(fn).parameters else {}


def agree(world: World, meta: dict, same=None) -> None:
    """Raise on every rank when the ranks' scans differ (weights, spec, layers, k, folder, listing...).

    ``meta`` is each rank's :class:`~cnnvis_gui.atlas.merge.AtlasPart` meta before scanning;
    ``same`` the (key, words) pairs to compare (default: a top-k scan's).
    """
    metas = all_gather(world, meta, "comparing the ranks' scans")
    for r in range(1, world.size):
        diff = first_difference(metas[0], metas[r], *(() if same is None else (same,)))
        if diff is not None:
            raise CnnvisError(f"rank 0 and rank {r} of {world.size} would scan different things: {diff}. Every "
                              f"rank must load the same model and weights and see the same folder.")


def all_gather(world: World, payload, step: str) -> list:
    """Every rank's ``payload`` (plain types and CPU tensors) on every rank, in rank order."""
    out = [None] * world.size
    with _collective(world, step):
        dist.all_gather_object(out, payload, **_weights_only(dist.all_gather_object))
    return out


def gather(world: World, payload, step: str) -> list | None:
    """Every rank's ``payload`` on rank 0, in rank order; None on the other ranks."""
    out = [None] * world.size if world.main else None
    with _collective(world, step):
        dist.gather_object(payload, out, dst=0, **_weights_only(dist.gather_object))
    return out


def gather_parts(world: World, part: AtlasPart) -> list | None:
    """Every rank's part on rank 0 (in rank order); None on the other ranks."""
    out = gather(world, dict(part.to_payload(), label=f"rank {world.rank}"), "gathering the ranks' top-k")
    if not world.main:
        return None
    return [AtlasPart.from_payload(p) for p in out]
