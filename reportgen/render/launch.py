"""Renders started by a launcher (`accelerate launch`, `torchrun`): each process is one shard.

A launcher starts WORLD_SIZE processes and tells each its RANK and LOCAL_RANK (and where to meet: MASTER_ADDR,
MASTER_PORT). Process RANK renders shard RANK+1 of WORLD_SIZE on its own device (cuda:LOCAL_RANK where there
are GPUs); only rank 0 prints progress, and at the end the processes exchange their results through
torch.distributed (gloo, which works on CPUs and GPUs alike), so rank 0 prints one summary of all shards.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from reportgen.errors import ReportgenError
from reportgen.render.shards import Shard

# Shards finish at different times; the first waits at the final exchange for the last.
GATHER_TIMEOUT = timedelta(days=7)


@dataclass(frozen=True)
class Launch:
    """This process's place among the launcher's processes."""

    rank: int
    world: int
    local_rank: int

    @property
    def main(self) -> bool:
        """Whether this is the process that prints."""
        return self.rank == 0

    @property
    def shard(self) -> Shard:
        """The shard this process renders."""
        return Shard(self.rank + 1, self.world)


def from_environment(environ: dict[str, str] | None = None) -> Launch | None:
    """The launch this process belongs to, from the launcher's variables; None without a launcher (or one of
    one process). ReportgenError if the variables contradict each other."""
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" not in env:
        return None
    try:
        world, rank = int(env["WORLD_SIZE"]), int(env.get("RANK", "0"))
        local_rank = int(env.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise ReportgenError(f"the launcher's WORLD_SIZE, RANK or LOCAL_RANK is not a number "
                             f"({env.get('WORLD_SIZE')!r}, {env.get('RANK')!r}, {env.get('LOCAL_RANK')!r})") from None
    if world <= 1:
        return None
    if not 0 <= rank < world or local_rank < 0:
        raise ReportgenError(f"the launcher's RANK {rank} (LOCAL_RANK {local_rank}) does not fit WORLD_SIZE {world}")
    return Launch(rank, world, local_rank)


def launch_device(launch: Launch, device: str | None) -> str | None:
    """One device per process: `cuda` (or no --device on a machine with GPUs) becomes cuda:LOCAL_RANK."""
    if device == "cuda" or (device is None and _has_cuda()):
        return f"cuda:{launch.local_rank}"
    return device


def _has_cuda() -> bool:
    from reportgen.models.loading import gpu_driver_present

    if not gpu_driver_present():
        return False
    import torch

    return bool(torch.cuda.is_available())


def gather(launch: Launch, result: dict[str, Any]) -> list[dict[str, Any]]:
    """Every process's `result`, in rank order, on every process (a collective: each process must call it)."""
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo", timeout=GATHER_TIMEOUT, rank=launch.rank, world_size=launch.world)
    try:
        results: list[Any] = [None] * launch.world
        dist.all_gather_object(results, result)
    finally:
        dist.destroy_process_group()
    return [r for r in results if isinstance(r, dict)]
