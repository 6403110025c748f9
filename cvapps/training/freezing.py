"""Layer freezing: requires_grad=False AND frozen norm layers kept in eval mode (running
statistics untouched) across ``model.train()`` calls and across resume.

Freezing marks modules (``_cvapps_frozen``); ``TaskModel.train`` keeps marked norm layers
in eval. Marks are plain attributes, so they survive ``copy.deepcopy`` and DDP wrapping;
checkpoints store the frozen parameter names (``frozen_state``) for resume."""

from __future__ import annotations

import re

from torch import nn

from ..errors import ConfigError
from ..tasks.base import NORMS


def _select(model: nn.Module, spec: str) -> list[tuple[str, nn.Module]]:
    """spec: "backbone" | "stage:N" (backbone stages 0..N-1) | a regex over module names."""
    if spec == "backbone":
        return [("backbone", model.backbone)]
    m = re.fullmatch(r"stage:(\d+)", spec)
    if m:
        n, stages = int(m.group(1)), model.backbone.stages()
        if not 0 <= n <= len(stages):
            raise ConfigError(f"freeze {spec!r}: backbone {model.backbone.name} has {len(stages)} stages",
                              hint=f"use stage:0 .. stage:{len(stages)}")
        return [(f"stage{i}", s) for i, s in enumerate(stages[:n])]
    try:
        rx = re.compile(spec)
    except re.error as e:
        raise ConfigError(f"freeze {spec!r} is not 'backbone', 'stage:N' or a valid regex: {e}") from None
    hits = [(n, mod) for n, mod in model.named_modules() if n and rx.search(n)]
    if not hits:
        raise ConfigError(f"freeze pattern {spec!r} matches no module", hint="e.g. 'backbone.body.layer[12]'")
    return hits


def _set(model: nn.Module, spec: str, frozen: bool) -> None:
    for _, mod in _select(model, spec):
        for p in mod.parameters():
            p.requires_grad_(not frozen)
        for sub in mod.modules():
            sub._cvapps_frozen = frozen
            if isinstance(sub, NORMS):
                sub.train(model.training and not frozen)
    frozen_names = set(getattr(model, "_cvapps_freeze_specs", []))
    (frozen_names.add if frozen else frozen_names.discard)(spec)
    model._cvapps_freeze_specs = sorted(frozen_names)


def freeze(model: nn.Module, spec: str = "backbone") -> None:
    _set(model, spec, True)


def unfreeze(model: nn.Module, spec: str = "backbone") -> None:
    _set(model, spec, False)


def frozen_state(model: nn.Module) -> list[str]:
    """Names of parameters with requires_grad=False (saved in checkpoints for resume)."""
    return [n for n, p in model.named_parameters() if not p.requires_grad]


def restore_frozen_state(model: nn.Module, names: list[str]) -> None:
    names = set(names)
    for n, mod in model.named_modules():
        own = [pn for pn, _ in mod.named_parameters(recurse=False)]
        if own and all((f"{n}.{pn}" if n else pn) in names for pn in own):
            mod._cvapps_frozen = True
    for n, p in model.named_parameters():
        p.requires_grad_(n not in names)
    model.train(model.training)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, frozen) parameter counts."""
    t = sum(p.numel() for p in model.parameters() if p.requires_grad)
    f = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    return t, f


def param_groups(model: nn.Module, lr: float, backbone_lr_ratio: float = 1.0, weight_decay: float = 1e-4) -> list[dict]:
    """Discriminative learning rates: backbone at lr*ratio, head at lr. Norm/bias params
    get no weight decay. Frozen parameters are included (AdamW skips parameters without
    gradients), so a gradual unfreeze needs no new optimizer."""
    groups: dict[tuple[bool, bool], list] = {}
    for n, p in model.named_parameters():
        key = (n.startswith("backbone."), p.ndim <= 1)
        groups.setdefault(key, []).append(p)
    return [{"params": ps, "lr": lr * (backbone_lr_ratio if is_bb else 1.0), "weight_decay": 0.0 if no_decay else weight_decay}
            for (is_bb, no_decay), ps in groups.items()]


def unfreeze_schedule(model: nn.Module, epoch: int, unfreeze_at: int | None, stage_every: int = 1) -> bool:
    """Gradual unfreeze: with the backbone frozen, from epoch ``unfreeze_at`` on, unfreeze one
    backbone stage (deepest first) every ``stage_every`` epochs. Returns True if anything changed."""
    if unfreeze_at is None or epoch < unfreeze_at:
        return False
    stages = model.backbone.stages()
    n_open = min(len(stages), 1 + (epoch - unfreeze_at) // stage_every)
    changed = False
    for s in stages[len(stages) - n_open:]:
        if any(not p.requires_grad for p in s.parameters()):
            for p in s.parameters():
                p.requires_grad_(True)
            for sub in s.modules():
                sub._cvapps_frozen = False
            changed = True
    if changed:
        model.train(model.training)
    return changed
