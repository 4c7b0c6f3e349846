"""Where this process runs: its device, and its place in a torchrun job (rank, world size)."""
from __future__ import annotations

import os

import torch
import torch.distributed as dist


def init_distributed() -> tuple[int, int, int, bool]:
    """(rank, world size, local rank, whether we started the process group) from torchrun's environment."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0, False
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    started = not dist.is_initialized()
    if started:
        if torch.cuda.is_available():   # NCCL's barriers and collectives use the current device: this process's GPU
            torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size(), local_rank, started


def default_device(device: str | torch.device | None = None) -> torch.device:
    """`device` when given; else this process's GPU (cuda:LOCAL_RANK under torchrun) if CUDA is available; else CPU."""
    if device:
        return torch.device(device)
    return torch.device(f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if torch.cuda.is_available() else "cpu")


COMPILE_BACKEND = "inductor"   # torch.compile's default; the tests use "aot_eager" (same graphs, no C++ build)


def compile_backbone(module: torch.nn.Module, enabled: bool = True):
    """`torch.compile` of a backbone's forward, or the module itself when not `enabled`.

    Only the call is compiled: the weights stay those of `module` (no `_orig_mod.` prefix in a state dict), so
    checkpoints written from a compiled run load into an eager one and back. The Mamba-2 scan compiles without a
    graph break (its recomputing backward becomes `torch.utils.checkpoint` under compile, see models/ssd.py).
    """
    if not enabled:
        return module
    return torch.compile(module, backend=COMPILE_BACKEND)
