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
        # contiguous here, in a decode thread: the main thread's batch stacking is then a plain copy
        return TF.center_crop(t, [self.input_size, self.input_size]).contiguous()

    def normalize(self, batch_u8: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) uint8 -> float32 normalised (done once per batch, not per image)."""
        return normalize_u8(batch_u8, self.mean, self.std)

    def prepare(self, image: np.ndarray, source: str = "", frame: int | None = None) -> tuple[torch.Tensor, dict]:
        """(H, W, 3) uint8 -> ((3, S, S) uint8, meta); runs in the decode thread."""
        return self.resize_crop(image), {"width": image.shape[1], "height": image.shape[0]}

    def __call__(self, image: np.ndarray) -> tuple[torch.Tensor, dict]:
        u8, meta = self.prepare(image)
        return self.normalize(u8[None])[0], meta


def normalize_u8(batch_u8: torch.Tensor, mean, std) -> torch.Tensor:
    """(B, 3, H, W) uint8 -> float32 (x / 255 - mean) / std, per channel."""
    x = batch_u8.float().div_(255)
    return x.sub_(torch.tensor(mean, device=x.device).view(1, 3, 1, 1)).div_(
        torch.tensor(std, device=x.device).view(1, 3, 1, 1))


def size_hw(size) -> tuple[int, int]:
    """A config's ``input_size``, S (square) or [H, W] -> (H, W)."""
    return (int(size[0]), int(size[1])) if isinstance(size, (list, tuple)) else (int(size), int(size))


RESIZE_MODES = ("letterbox", "stretch")


def meta_scale(meta: dict) -> tuple[float, float]:
    """(sx, sy): input pixels per original pixel, from a prepared image's meta."""
    return tuple(meta["scale_xy"]) if "scale_xy" in meta else (meta.get("scale", 1.0),) * 2


@dataclass(frozen=True)
class Letterbox:
    """Fit the image to the input size, ``input_size`` S (square) or [H, W]: ``letterbox``
    keeps the aspect and pads right/bottom with grey; ``stretch`` resizes to exactly the
    input size with bilinear interpolation (what TF-trained detectors saw: letterboxing them
    costs AP). (H0, W0, 3) uint8 -> ((3, H, W) uint8, meta {"width", "height", "scale_xy"
    (sx, sy), "scale" (letterbox)}). A point in input pixels maps back as (x / sx, y / sy)."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    input_size: int | tuple[int, int]
    fill: int = 114
    mode: str = "letterbox"

    @classmethod
    def from_config(cls, pre: dict) -> "Letterbox":
        size = pre["input_size"]
        mode = pre.get("resize", "letterbox")
        return cls(tuple(pre["mean"]), tuple(pre["std"]), tuple(size) if isinstance(size, (list, tuple)) else int(size),
                   fill=int(pre.get("fill", 114)), mode=mode if mode in RESIZE_MODES else "letterbox")

    @property
    def hw(self) -> tuple[int, int]:
        return size_hw(self.input_size)

    def prepare(self, image: np.ndarray, source: str = "", frame: int | None = None) -> tuple[torch.Tensor, dict]:
        h, w = image.shape[:2]
        th, tw = self.hw
        if self.mode == "stretch":
            out = cv2.resize(image, (tw, th), interpolation=cv2.INTER_LINEAR)
            return torch.from_numpy(np.ascontiguousarray(out.transpose(2, 0, 1))), \
                {"width": w, "height": h, "scale_xy": self.scale_xy(w, h)}  # (3, H, W)
        s = self.scale_xy(w, h)[0]
        nw, nh = min(tw, max(1, round(w * s))), min(th, max(1, round(h * s)))
        out = np.full((th, tw, 3), self.fill, np.uint8)
        out[:nh, :nw] = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
        return torch.from_numpy(np.ascontiguousarray(out.transpose(2, 0, 1))), {"width": w, "height": h, "scale": s,
                                                                                "scale_xy": (s, s)}

    def scale_xy(self, w: int, h: int) -> tuple[float, float]:
        """(sx, sy) input pixels per original pixel of a w x h image (the meta's "scale_xy")."""
        th, tw = self.hw
        if self.mode == "stretch":
            return tw / w, th / h
        s = min(th / h, tw / w)
        return s, s

    def normalize(self, batch_u8: torch.Tensor) -> torch.Tensor:
        return normalize_u8(batch_u8, self.mean, self.std)


def colour_shift(hue: float, saturation: float, p: float) -> A.ColorJitter:
    """Random hue (fraction of the circle) and saturation (factor 1 +- s) change. ColorJitter,
    not HueSaturationValue: the latter's saturation / value shift costs ~5 ms per 500x375
    image on one core, 8x this, and was half of a detection sample's loading time."""
    return A.ColorJitter(brightness=0, contrast=0, saturation=saturation, hue=hue, p=p)


def detection_augment() -> A.Compose:
    """Box-aware training augmentation (before the letterbox): flips, colour, scale/crop.
    Boxes are clipped; boxes left smaller than 4x4 px or < 25% visible are dropped."""
    return A.Compose([
        A.HorizontalFlip(p=0.5),
        A.RandomBrightnessContrast(p=0.5),
        colour_shift(hue=0.04, saturation=0.2, p=0.5),
        A.Affine(scale=(0.75, 1.25), translate_percent=(-0.1, 0.1), p=0.5, border_mode=cv2.BORDER_CONSTANT,
                 fill=114),
    ], bbox_params=A.BboxParams(format="pascal_voc", label_fields=["labels", "crowd"], min_area=16,
                                min_visibility=0.25, clip=True))


def train_augment(pre: dict) -> A.Compose:
    """albumentations pipeline: RGB uint8 (H, W, 3) -> (S, S, 3) uint8 (normalised later,
    per batch, like the evaluation path). Random resized crop + flip + mild colour jitter."""
    s = int(pre["input_size"])
    return A.Compose([
        A.RandomResizedCrop(size=(s, s), scale=(0.35, 1.0), interpolation=cv2.INTER_LINEAR),
        A.HorizontalFlip(p=0.5),
        A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02, p=0.5),
    ])
