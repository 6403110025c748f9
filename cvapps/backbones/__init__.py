"""Backbone registry and builders. Importing this package registers every backbone."""

# importing the modules registers their backbones
from . import (blaze, efficientnet_lite, faceapi, mediapipe_hand, mobilenet_v1, segnet_basic, selfie,  # noqa: F401
               torchvision_models)
from .base import Backbone, FeatureSpec
from .registry import BACKBONES, BackboneEntry, backbones_with, build_backbone, list_backbones, register_backbone

__all__ = [
    "BACKBONES", "Backbone", "BackboneEntry", "FeatureSpec", "backbones_with", "build_backbone",
    "list_backbones", "register_backbone",
]
