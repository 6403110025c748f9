"""Backbone registry and builders. Importing this package registers every backbone."""

from . import blaze, efficientnet_lite, faceapi, mobilenet_v1, segnet_basic, selfie, torchvision_models  # noqa: F401,E501  (registration side effects)
from .base import Backbone, FeatureSpec
from .registry import BACKBONES, BackboneEntry, backbones_with, build_backbone, list_backbones, register_backbone

__all__ = [
    "BACKBONES", "Backbone", "BackboneEntry", "FeatureSpec", "backbones_with", "build_backbone",
    "list_backbones", "register_backbone",
]
