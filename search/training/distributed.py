"""torch.distributed helpers: one code path for a single process and for ``torchrun`` (gloo on CPU, NCCL on CUDA).

Every helper is a no-op (or the identity) when no process group is initialized, so training and search code
calls them unconditionally.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn


class DeviceError(ValueError):
    """A --device this machine cannot give (the CLIs print ValueErrors as one-line errors)."""


def init_distributed(device: str = "cpu") -> torch.device:
    """Join the process group that ``torchrun`` describes (``WORLD_SIZE`` > 1); return this rank's device.

    Without torchrun's variables this is a single process and nothing is initialized.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        raise DeviceError(f"--device {device}: torch sees no CUDA device on this machine")
    if world > 1 and not dist.is_initialized():
        if cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl" if cuda else "gloo")
    if cuda:
        return torch.device("cuda", local_rank if world > 1 else torch.cuda.current_device())
    try:
        return torch.device(device)
    except RuntimeError:  # torch's message lists every backend it knows
        raise DeviceError(f"bad --device {device!r}: use cpu or cuda") from None


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_dist() else 0


def world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def is_main() -> bool:
    """Only rank 0 writes files and prints progress."""
    return rank() == 0


def barrier() -> None:
    if is_dist():
        dist.barrier()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum over ranks, in place (counts, loss sums)."""
    if is_dist():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def average_buffers(module: nn.Module) -> None:
    """Average floating-point buffers (BN running stats) over ranks so every rank holds the same model.

    DDP keeps parameters identical but each rank updates its BN statistics on its own shard.
    """
    if not is_dist():
        return
    for buf in module.buffers():
        if buf.is_floating_point():
            dist.all_reduce(buf, op=dist.ReduceOp.SUM)
            buf.div_(world_size())


def cleanup() -> None:
    if is_dist():
        dist.destroy_process_group()


def mix_seed(*parts: int) -> int:
    """One 63-bit seed from several integers (run seed, step, stream): distinct tuples, distinct seeds; the same on
    every rank, so that ranks sample the same paths and subnets without talking."""
    s = 0x9E3779B97F4A7C15
    for p in parts:
        s = (s * 1_000_003 + p + 1) % (2**63 - 1)
    return s


def allreduce_mean_(tensors: list[torch.Tensor]) -> None:
    """Average tensors over ranks in one all-reduce (every rank passes the same list: same sampled path)."""
    if world_size() == 1 or not tensors:
        return
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    flat.div_(world_size())
    offset = 0
    for t in tensors:
        t.copy_(flat[offset : offset + t.numel()].view_as(t))
        offset += t.numel()
