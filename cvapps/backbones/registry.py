"""Backbone registry: ``@register_backbone(name, ...)`` with queryable capabilities."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..errors import ConfigError
from ..registry import Registry
from .base import Backbone


@dataclass(frozen=True)
class BackboneEntry:
    name: str
    builder: Callable[[], Backbone]
    pool_indices: bool = False  # exposes max-pool indices (SegNet encoders)

    def capabilities(self) -> dict:
        return {"pool_indices": self.pool_indices}


BACKBONES: Registry[BackboneEntry] = Registry("backbone")


def register_backbone(name: str, *, pool_indices: bool = False):
    def deco(fn: Callable[[], Backbone]):
        BACKBONES.register(name, BackboneEntry(name, fn, pool_indices))
        return fn

    return deco


def build_backbone(name: str, **kwargs) -> Backbone:
    """Build a registered backbone with random weights. No kwargs are accepted yet:
    unknown ones raise instead of being ignored."""
    entry = BACKBONES.get(name)
    if kwargs:
        raise ConfigError(f"backbone {name!r} takes no options, got {sorted(kwargs)}")
    backbone = entry.builder()
    backbone.pool_indices = entry.pool_indices
    return backbone


def list_backbones() -> list[str]:
    return BACKBONES.names()


def backbones_with(capability: str) -> list[str]:
    return [n for n in BACKBONES.names() if BACKBONES.get(n).capabilities().get(capability)]
