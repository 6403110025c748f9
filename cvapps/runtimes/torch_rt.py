"""PyTorch itself: every model, every device, fp32 or bf16 autocast."""

from __future__ import annotations

import torch

from .base import Runtime, register


@register
class TorchRuntime(Runtime):
    name = "torch"
    precisions = ("fp32", "bf16")

    def runs_on(self, device: str) -> bool:
        return True

    def precisions_here(self, device: str = "cpu") -> tuple[str, ...]:
        # bf16 autocast runs everywhere (slowly without bf16 units: `cvapps benchmark` shows it)
        return self.precisions

    def build(self, model, precision, device, threads, console, calib=None):
        return model.to(torch.device(str(device)))
