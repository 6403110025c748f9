"""Where and how tensors run: device and precision checks, autocast. A core module: the
task models, the Trainer and the predict loop all use it."""

from __future__ import annotations

import contextlib
import os
import platform
import re
from pathlib import Path

import torch

from .errors import ConfigError

PRECISIONS = ("fp32", "bf16")  # PyTorch's (training, autocast)
RUN_PRECISIONS = ("fp32", "bf16", "fp16", "int8")  # what some runtime runs (cvapps.runtimes says which, where)


def cores() -> int:
    """CPU cores this process may use (its affinity mask, where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def check_precision(precision: str, allowed: tuple[str, ...] = PRECISIONS) -> str:
    if precision not in allowed:
        raise ConfigError(f"--precision {precision!r} is not supported",
                          hint=" | ".join(allowed) + " (bf16: fast on CPUs with AMX/AVX-512 bf16)")
    return precision


def resolve_device(device: str | torch.device) -> torch.device:
    """'cpu', 'cuda', 'cuda:N' (or 'mps') -> a torch.device that exists on this machine."""
    text = str(device)
    if not re.fullmatch(r"cpu|cuda(:\d+)?|mps", text):
        raise ConfigError(f"--device {text!r} is not a device", hint="cpu, cuda, cuda:1, ...")
    d = torch.device(text)
    if d.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {text}: CUDA is not available on this machine",
                              hint="use --device cpu (or install a CUDA build of torch on a GPU machine)")
        if d.index is not None and d.index >= torch.cuda.device_count():
            raise ConfigError(f"--device {text}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if d.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("--device mps: Apple's MPS backend is not available here", hint="use --device cpu")
    return d


def autocast(device: torch.device, precision: str):
    """bf16 autocast where asked (fast on CPUs with AMX/AVX-512 bf16); fp32 otherwise."""
    if check_precision(precision, RUN_PRECISIONS) == "bf16":  # other runtimes' precisions are in their graphs
        return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()



ISA = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "amx_tile")


def cpu_features() -> dict:
    """The CPU's model name, and which of the ISA extensions that decide how fast a precision
    runs it has (AVX2, AVX-512, VNNI int8, bf16, AMX)."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    return {"model": name, "isa": [f for f in ISA if f in flags]}
