"""Several processes (`torchrun --nproc-per-node N -m intr_training train …`): DDP with one
process per GPU (nccl), or per CPU worker (gloo). Rank 0 writes files and reports progress;
metrics are summed over ranks. A plain `python -m intr_training` run is world size 1."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from napari_intr import environment


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


def from_environment() -> Distributed:
    """The torchrun variables, or a single process when they are absent."""
    world_size = environment.value("WORLD_SIZE")
    if world_size <= 1:
        return Distributed()
    rank = environment.value("RANK")
    if rank is None or rank >= world_size:
        raise ValueError(f"the environment variable RANK={os.environ.get('RANK')!r} does not fit WORLD_SIZE="
                         f"{world_size}; start several processes with torchrun, which sets both")
    return Distributed(rank, world_size, environment.value("LOCAL_RANK"))


def setup(device: torch.device) -> tuple[Distributed, torch.device]:
    """Join the process group of this torchrun job; each rank gets its own GPU."""
    info = from_environment()
    if not info.active:
        return info, device
    if device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    elif device.type != "cpu":
        raise ValueError(f"several processes need CUDA GPUs or the CPU, not {device.type}; "
                         "use --device cuda or --device cpu")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return info, device


def sum_over_ranks(values: torch.Tensor) -> torch.Tensor:
    """Element-wise sum of `values` over all ranks (the tensor itself without torchrun)."""
    if dist.is_available() and dist.is_initialized():
        device = "cuda" if dist.get_backend() == "nccl" else "cpu"
        values = values.to(device, copy=True)
        dist.all_reduce(values)
        values = values.cpu()
    return values


def broadcast_from_main(value):
    """Rank 0's value on every rank (a JSON-able object; the value itself without torchrun)."""
    if dist.is_available() and dist.is_initialized():
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]
    return value


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
