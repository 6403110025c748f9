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


OPTIONS = ("taps", "tf_same", "bn_eps")


def build_backbone(name: str, **options) -> Backbone:
    """Build a registered backbone with random weights; ``options`` (taps, tf_same, bn_eps; see
    Backbone.configure) adapt it to pretrained models made elsewhere. Unknown options raise."""
    entry = BACKBONES.get(name)
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ConfigError(f"unknown backbone options {unknown}", hint=f"known: {', '.join(OPTIONS)}")
    backbone = entry.builder()
    backbone.pool_indices = entry.pool_indices
    if any(options.values()):
        backbone.configure(**options)
    return backbone


def list_backbones() -> list[str]:
    return BACKBONES.names()


def backbones_with(capability: str) -> list[str]:
    return [n for n in BACKBONES.names() if BACKBONES.get(n).capabilities().get(capability)]
