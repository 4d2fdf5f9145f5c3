"""torchrun support: process-group setup from environment variables, rank helpers.

Under ``torchrun --nproc_per_node=N script.py`` the environment carries ``WORLD_SIZE``,
``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``. :func:`setup` initialises the
default process group from them when ``WORLD_SIZE > 1`` (``nccl`` when the trainer's device is
CUDA, ``gloo`` on CPU) and returns a :class:`DistInfo`; with one process it does nothing, so the
same script runs unchanged with ``python script.py``.

    >>> info = DistInfo()          # a single process
    >>> info.enabled, info.is_main
    (False, True)
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import ConfigError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in a distributed run.

    Attributes:
        world_size: number of processes (1 without torchrun).
        rank: global rank of this process.
        local_rank: rank on this machine (selects ``cuda:<local_rank>``).
        initialized_here: whether :func:`setup` created the process group (then
            :func:`teardown` destroys it).
    """

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    initialized_here: bool = False

    @property
    def enabled(self) -> bool:
        """True with more than one process."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on rank 0, the only rank that writes checkpoints and logs."""
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ConfigError(
            f"environment variable {name}={raw!r} is not an integer; torchrun sets it for you."
        ) from exc


def setup(device_type: str) -> DistInfo:
    """Initialise the default process group from torchrun's environment when ``WORLD_SIZE > 1``.

    Args:
        device_type: ``"cuda"`` (backend ``nccl``) or ``"cpu"`` (backend ``gloo``).

    Returns:
        DistInfo: world size and ranks (``world_size == 1`` without torchrun).
    """
    if dist.is_available() and dist.is_initialized():
        return DistInfo(
            world_size=dist.get_world_size(),
            rank=dist.get_rank(),
            local_rank=_env_int("LOCAL_RANK", 0),
            initialized_here=False,
        )
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return DistInfo()
    if not dist.is_available():
        raise ConfigError(
            f"WORLD_SIZE={world} but this torch build has no torch.distributed; run with one "
            "process or install a torch build with distributed support."
        )
    backend = "nccl" if device_type == "cuda" else "gloo"
    local_rank = _env_int("LOCAL_RANK", 0)
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend, init_method="env://")
    info = DistInfo(
        world_size=dist.get_world_size(),
        rank=dist.get_rank(),
        local_rank=local_rank,
        initialized_here=True,
    )
    logger.info("process group %s: rank %d of %d", backend, info.rank, info.world_size)
    return info


def teardown(info: DistInfo) -> None:
    """Destroy the process group if :func:`setup` created it, after every rank got there (a
    rank that tears down while another still has collectives in flight can abort it)."""
    if info.initialized_here and dist.is_initialized():
        if info.enabled:
            dist.barrier()
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    """Wait for every rank (no-op with one process)."""
    if info.enabled and dist.is_initialized():
        dist.barrier()


def gather_tensor(info: DistInfo, tensor: torch.Tensor) -> list[torch.Tensor]:
    """All ranks' copies of a same-shaped tensor (``[tensor]`` with one process)."""
    if not info.enabled:
        return [tensor]
    t = tensor.contiguous()
    if dist.get_backend() == "nccl":
        t = t.to(torch.device("cuda", torch.cuda.current_device()))
    out = [torch.empty_like(t) for _ in range(info.world_size)]
    dist.all_gather(out, t)
    return [o.cpu() for o in out]


__all__ = ["DistInfo", "barrier", "gather_tensor", "setup", "teardown"]
