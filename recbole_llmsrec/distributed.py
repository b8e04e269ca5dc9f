"""Distributed runs on RecBole's own ``torch.distributed`` path.

RecBole 1.2.1 runs one process per device when its config holds ``local_rank`` (with
``world_size``, ``nproc``, ``offset``, ``ip`` and ``port``): its ``Config`` joins the process
group, its trainer wraps the model in ``DistributedDataParallel``, its dataloaders shard by a
``DistributedSampler`` and its ``evaluate`` reduces the metrics. This module holds what the
plugin adds to that path:

- :func:`init_device`: RecBole's process-group start without its hard-coded NCCL and CUDA
  devices: gloo and the CPU when no GPU is used, ``env://`` under ``torchrun``, a timeout;
- :func:`torchrun_settings`: rank and world size from ``torchrun``'s environment;
- helpers for code that must agree across ranks: :func:`is_main_process`, :func:`barrier`,
  :func:`broadcast_object`, :func:`local_rows`, :func:`global_batch`,
  :func:`gradient_for_ddp_average` and :func:`gather_shards`.

Each helper is the identity (or free) in a single process.
"""

from __future__ import annotations

import gc
import os
from datetime import timedelta
from typing import Any, Sequence

import torch
import torch.distributed as dist

# Settings of a distributed run that every derived config (teacher, evaluation modes) must keep.
DISTRIBUTED_KEYS = ("local_rank", "world_size", "nproc", "offset", "ip", "port", "dist_timeout")
DEFAULTS = {"nproc": 1, "offset": 0, "ip": "localhost", "port": "5678", "dist_timeout": 1800}
TORCHRUN_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def torchrun_settings() -> dict[str, Any] | None:
    """Rank, world size and rendezvous of a process started by ``torchrun``; None otherwise."""
    env = os.environ
    if not all(name in env for name in TORCHRUN_VARIABLES):
        return None
    local_rank, rank = int(env["LOCAL_RANK"]), int(env["RANK"])
    return {
        "local_rank": local_rank,
        "offset": rank - local_rank,
        "world_size": int(env["WORLD_SIZE"]),
        "nproc": int(env.get("LOCAL_WORLD_SIZE", 1)),
        "ip": env["MASTER_ADDR"],
        "port": env["MASTER_PORT"],
    }


def init_device(settings: dict[str, Any]) -> None:
    """The distributed branch of RecBole's ``Config._init_device``, for GPUs and CPUs.

    RecBole always starts NCCL on ``cuda:local_rank``, which fails without GPUs. Here the
    backend is NCCL on ``cuda:local_rank`` when ``gpu_id`` names GPUs and CUDA is available,
    else gloo on the CPU. Under ``torchrun`` the group starts from its environment
    (``env://``), else from ``tcp://ip:port``. Collectives give up after ``dist_timeout``
    seconds, so a rank that died cannot leave the others waiting for ever. A config built
    again in the same process (the teacher's, an evaluation mode's) reuses the group.

    Sets ``device``, ``single_spec`` and, as RecBole does, quiets every rank but the first.

    Raises:
        ValueError: a setting that cannot start the group, naming it and the fix.
    """
    for key, value in DEFAULTS.items():
        if settings.get(key) is None:
            settings[key] = value
    gpu_id = settings["gpu_id"]
    gpu_id = ",".join(map(str, gpu_id)) if isinstance(gpu_id, (tuple, list)) else str(gpu_id)
    settings["gpu_id"] = gpu_id
    gpus = [g for g in gpu_id.split(",") if g.strip()]
    if settings.get("world_size") in (None, -1):
        settings["world_size"] = settings["nproc"]
    local_rank, world_size, nproc = settings["local_rank"], settings["world_size"], settings["nproc"]
    rank = local_rank + settings["offset"]
    if not 0 <= rank < world_size:
        raise ValueError(
            f"local_rank={local_rank} + offset={settings['offset']} is rank {rank}, outside world_size={world_size}: "
            "world_size counts the processes of every machine, offset is the first rank of this machine."
        )
    if not dist.is_initialized():  # os.environ is read by CUDA only at its first use
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu_id
    use_cuda = bool(gpus) and torch.cuda.is_available()
    if use_cuda and len(gpus) < nproc:
        raise ValueError(
            f"gpu_id={gpu_id!r} names {len(gpus)} GPU(s) for nproc={nproc} processes on this machine: "
            f"list one per process, e.g. --gpu_id={','.join(map(str, range(nproc)))}."
        )
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        init_method = "env://" if torchrun_settings() else f"tcp://{settings['ip']}:{settings['port']}"
        dist.init_process_group(
            backend="nccl" if use_cuda else "gloo",
            init_method=init_method,
            rank=rank,
            world_size=world_size,
            timeout=timedelta(seconds=settings["dist_timeout"]),
        )
    settings.update(device=device, single_spec=False)
    if rank != 0:
        settings.update(state="error", show_progress=False, verbose=False)


def is_distributed() -> bool:
    """Whether this process is one rank of a started process group."""
    return dist.is_available() and dist.is_initialized()


def rank_and_world() -> tuple[int, int]:
    """``(rank, world size)``; ``(0, 1)`` in a single process."""
    return (dist.get_rank(), dist.get_world_size()) if is_distributed() else (0, 1)


def is_main_process() -> bool:
    """Whether this process writes files and logs: rank 0, or a single process."""
    return rank_and_world()[0] == 0


def barrier() -> None:
    """Wait for every rank (nothing in a single process)."""
    if is_distributed():
        dist.barrier()


def broadcast_object(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (picklable objects; unchanged in a single process)."""
    if not is_distributed():
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def local_rows(batch_size: int) -> slice:
    """This rank's rows of a global batch of ``batch_size``: near-equal contiguous parts, rank order."""
    rank, world = rank_and_world()
    return slice(batch_size * rank // world, batch_size * (rank + 1) // world)


def _all_gather_padded(local: torch.Tensor, sizes: Sequence[int]) -> list[torch.Tensor]:
    """Every rank's ``local`` (``sizes[r]`` rows each), gathered without gradient."""
    padded = local.detach().new_zeros((max(sizes), *local.shape[1:]))
    padded[: len(local)] = local.detach()
    gathered = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(gathered, padded)
    return [part[:size] for part, size in zip(gathered, sizes)]


def global_batch(local: torch.Tensor, batch_size: int) -> torch.Tensor:
    """The whole batch ``[batch_size, ...]`` from each rank's :func:`local_rows` part.

    Other ranks' rows arrive without gradient; this rank's rows keep theirs. A loss of the
    whole batch then has the same value on every rank and its gradient reaches this rank's
    rows only (see :func:`gradient_for_ddp_average`).
    """
    if not is_distributed():
        return local
    rank, world = rank_and_world()
    sizes = [batch_size * (r + 1) // world - batch_size * r // world for r in range(world)]
    parts = _all_gather_padded(local, sizes)
    parts[rank] = local
    return torch.cat(parts)


def gradient_for_ddp_average(loss: torch.Tensor) -> torch.Tensor:
    """``loss`` with its gradient multiplied by the world size, its value unchanged.

    Each rank back-propagates a whole-batch loss into its own rows only
    (:func:`global_batch`); DDP then averages the ranks' gradients. Scaling by the world size
    makes that average the gradient of the whole-batch loss, as in a single process.
    """
    world = rank_and_world()[1]
    if world == 1:
        return loss
    return loss * world - loss.detach() * (world - 1)


def gather_shards(local: torch.Tensor, sizes: Sequence[int]) -> torch.Tensor:
    """Every rank's ``local`` rows (``sizes[r]`` on rank ``r``), concatenated in rank order, on every rank."""
    if not is_distributed():
        return local
    return torch.cat(_all_gather_padded(local, sizes))


def all_gather_objects(value: Any) -> list[Any]:
    """Every rank's ``value`` in rank order (``[value]`` in a single process)."""
    if not is_distributed():
        return [value]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def end_process_group(*trainers: Any) -> None:
    """Leave the process group once every rank is done, after freeing the trainers' DDP wrappers.

    A DDP reducer freed after the group is gone waits for ever for its peers (gloo), so the
    wrappers go first, while every rank is still connected.
    """
    barrier()
    for trainer in trainers:
        trainer.distributed_model = None
    gc.collect()
    barrier()
    dist.destroy_process_group()
