"""The device of the running Ray task or actor: the GPU Ray granted it, or the CPU.

Every task and actor that may compute on a GPU asks here, so the rule lives in one place: the
grant (`ray.get_gpu_ids()`) decides, through the pure training.device.choose_device, never a GPU
that merely happens to be visible.
"""

from __future__ import annotations

import dataclasses

import ray
import torch

from selection.knn import KnnParams
from training.device import task_device


def granted_device() -> torch.device:
    return task_device(ray.get_gpu_ids())


def granted_cpus() -> int:
    """CPUs Ray granted this task or actor (at least 1): the torch threads it may use on the CPU."""
    return max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1)))


def on_granted_device(params: KnnParams) -> KnnParams:
    """`params` computing where this task may: on its granted GPU, else on the CPU."""
    return dataclasses.replace(params, device=granted_device().type)
