"""Which device a task computes on: the GPU it reserved, or the CPU.

A process sees every GPU of its node (Ray only narrows CUDA_VISIBLE_DEVICES for tasks that
reserved one), so `torch.cuda.is_available()` says nothing about whether a GPU is ours to use:
picking CUDA because it is visible would run on a card another task reserved. The caller passes
the GPUs it was granted (`ray.get_gpu_ids()` in a Ray task or actor); no Ray import here, so the
same code runs on a machine without Ray.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence

import torch


def choose_device(gpu_ids: Sequence[int | str], *, cuda_available: bool, where: str = "this node") -> str:
    """`cuda` when GPUs were granted (`gpu_ids` non-empty), else `cpu`, whatever CUDA may be visible:
    the whole decision, pure, so a test can check it for grants no machine of its own could make."""
    if not gpu_ids:
        return "cpu"
    if not cuda_available:
        # A GPU reserved but unusable (a CPU build of torch, a broken driver) would silently run on
        # the CPU while holding the card: say so instead.
        raise RuntimeError(
            f"GPUs {list(gpu_ids)} were reserved on {where}, but torch {torch.__version__} sees no CUDA "
            "device: install the CUDA build of torch there"
        )
    return "cuda"


def task_device(gpu_ids: Sequence[int | str]) -> torch.device:
    """choose_device on this process: `cuda` is the first granted GPU (Ray maps CUDA_VISIBLE_DEVICES
    to the granted ones, so it is index 0)."""
    name = choose_device(gpu_ids, cuda_available=torch.cuda.is_available(), where=socket.gethostname())
    return torch.device("cuda", 0) if name == "cuda" else torch.device("cpu")


def device_name(spec: str) -> torch.device:
    """A device from a setting (`cpu` or `cuda`, e.g. a command-line flag) for code run outside Ray:
    `cuda` must be usable, never chosen silently."""
    if spec not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {spec!r}")
    return task_device([0] if spec == "cuda" else [])
