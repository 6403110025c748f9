"""Preprocessing. Evaluation/prediction reproduces torchvision's ImageClassification
transform exactly (antialiased resize of the short side, centre crop, normalise) with
torchvision's own tensor ops, so pretrained weights see what they were trained on.
Training augmentation uses albumentations."""

from __future__ import annotations

from dataclasses import dataclass

import albumentations as A
import cv2
import numpy as np
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

_INTERP = {"bilinear": InterpolationMode.BILINEAR, "bicubic": InterpolationMode.BICUBIC}


@dataclass(frozen=True)
class EvalTransform:
    """RGB uint8 (H, W, 3) -> ((3, S, S) float32 normalised, meta {"width", "height"})."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    input_size: int
    resize_size: int
    interpolation: str = "bilinear"

    @classmethod
    def from_config(cls, pre: dict) -> "EvalTransform":
        return cls(tuple(pre["mean"]), tuple(pre["std"]), int(pre["input_size"]),
                   int(pre.get("resize_size", pre["input_size"])), pre.get("interpolation", "bilinear"))

    def resize_crop(self, image: np.ndarray) -> torch.Tensor:
        """(H, W, 3) uint8 -> (3, S, S) uint8."""
        t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)  # (3, H, W)
        t = TF.resize(t, [self.resize_size], interpolation=_INTERP[self.interpolation], antialias=True)
        return TF.center_crop(t, [self.input_size, self.input_size])

    def normalize(self, batch_u8: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) uint8 -> float32 normalised (done once per batch, not per image)."""
        x = batch_u8.float().div_(255)
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        return x.sub_(mean).div_(std)

    def __call__(self, image: np.ndarray) -> tuple[torch.Tensor, dict]:
        h, w = image.shape[:2]
        return self.normalize(self.resize_crop(image)[None])[0], {"width": w, "height": h}


def train_augment(pre: dict, strength: str = "default") -> A.Compose:
    """albumentations pipeline: RGB uint8 (H, W, 3) -> normalised float (S, S, 3) array.
    Random resized crop + flip + mild colour jitter; normalisation matches the weights."""
    s = int(pre["input_size"])
    return A.Compose([
        A.RandomResizedCrop(size=(s, s), scale=(0.35, 1.0), interpolation=cv2.INTER_LINEAR),
        A.HorizontalFlip(p=0.5),
        A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02, p=0.5),
        A.Normalize(mean=pre["mean"], std=pre["std"], max_pixel_value=255.0),
    ])
