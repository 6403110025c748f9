"""Distributed data-parallel training with PyTorch's own DDP, launched by torchrun.

``torchrun --nproc_per_node N cvapps train ...`` sets RANK / WORLD_SIZE / LOCAL_RANK; the
Trainer then joins the process group (gloo on CPU, nccl on CUDA), shards each epoch with a
DistributedSampler, averages gradients through DDP, logs / evaluates / saves on rank 0 only
and shares rank 0's decisions (best model, early stop) with the other ranks."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from ..errors import ConfigError


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owned: bool = False  # we created the process group, so we destroy it

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def env_info() -> DistInfo:
    """What torchrun (or any launcher setting the env:// variables) asked for."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return DistInfo(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))


def setup(device: str) -> tuple[DistInfo, str]:
    """Join the process group when launched with WORLD_SIZE > 1. -> (info, device to use)."""
    info = env_info()
    if not info.enabled:
        return info, device
    cuda = device.startswith("cuda")
    if cuda:
        if not torch.cuda.is_available():
            raise ConfigError("--device cuda under torchrun, but CUDA is not available")
        device = f"cuda:{info.local_rank}"
        torch.cuda.set_device(info.local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
        info.owned = True
    return info, device


def teardown(info: DistInfo, finished: bool) -> None:
    """Destroy the group we created. Left alive, gloo's threads are torn down at interpreter
    exit and can abort a rank that finished first. After a failure there is no barrier: the
    other ranks then fail on the closed connections instead of waiting forever."""
    if not (info.enabled and info.owned and dist.is_initialized()):
        return
    if finished:
        dist.barrier()
    dist.destroy_process_group()
    info.owned = False


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def sum_all(info: DistInfo, *values: float) -> list[float]:
    """Element-wise sum of python numbers over all ranks."""
    if not info.enabled:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


def from_main(info: DistInfo, obj):
    """Rank 0's ``obj`` on every rank (picklable objects made by our own code only)."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


class StepModule(nn.Module):
    """DDP must see the forward that produces the loss: wraps training_step (or the cached-
    feature head step) as this module's forward."""

    def __init__(self, model: nn.Module, unlabelled=None, teacher: nn.Module | None = None):
        super().__init__()
        self.model, self.unlabelled = model, unlabelled
        self.__dict__["teacher"] = teacher  # not a submodule: DDP neither syncs nor expects its gradients

    def forward(self, x: torch.Tensor, targets, cached: bool = False, u: torch.Tensor | None = None,
                info=None) -> dict:
        if cached:
            return self.model.loss(self.model.forward_cached(x), targets)
        out = self.model.training_step(x, targets)
        if u is None:
            return out
        extra = self.unlabelled(self.model, u, info, self.teacher)  # semi-supervised: in the same forward
        return {**out, **extra, "loss": out["loss"] + extra.pop("loss_u")}


def wrap(model: nn.Module, info: DistInfo, device: torch.device, unlabelled=None, teacher=None) -> nn.Module:
    """The step module, DDP-wrapped under torchrun. Frozen parameters are left out by DDP
    (every trainable parameter takes part in every step, so find_unused_parameters is off).
    ``unlabelled``: a semi-supervised loss (cvapps.tasks.spec.SemiSupervised.loss) the step adds;
    ``teacher``: the mean teacher it is given."""
    step = StepModule(model, unlabelled, teacher)
    if not info.enabled:
        return step
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(step, device_ids=ids)
