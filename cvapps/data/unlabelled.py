"""Unlabelled images for semi-supervised training: each one as a weak view (the task's usual
training augmentation) and a strong view (the weak one, then two of ten RandAugment-style
operations at random strength and a Cutout square) — FixMatch's pair (Sohn et al. 2020).
Dense tasks (boxes, masks) get ``LetterboxedPairs``: the strong view changes colours only here;
the mean teacher moves the image and its pseudo-labels together (cvapps.tasks.meanteacher)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import albumentations as A
import torch

from .dataset import TaskDataset
from .io import read_image
from .sources import image_files
from .transforms import meta_scale


def strong_augment(geometric: bool = True) -> A.Compose:
    """Two of RandAugment's colour / geometry operations at random strength, then Cutout.
    ``geometric=False``: colour operations and blur only (the labels stay where they are), and
    up to three smaller Cutout squares (Unbiased Teacher's erasing)."""
    ops = [A.AutoContrast(p=1), A.Equalize(p=1), A.Posterize(num_bits=(4, 8), p=1),
           A.Solarize(threshold_range=(0.5, 1.0), p=1), A.Sharpen(p=1), A.ColorJitter(0.4, 0.4, 0.4, 0.1, p=1),
           A.ToGray(p=1)]
    if not geometric:
        return A.Compose([A.SomeOf(ops + [A.GaussianBlur(sigma_limit=(0.1, 2.0), p=1)], n=2),
                          A.CoarseDropout(num_holes_range=(1, 3), hole_height_range=(0.05, 0.2),
                                          hole_width_range=(0.05, 0.2), fill=127, p=0.7)])
    ops += [A.Affine(rotate=(-30, 30), p=1), A.Affine(shear=(-20, 20), p=1),
            A.Affine(translate_percent=(-0.3, 0.3), p=1)]
    return A.Compose([A.SomeOf(ops, n=2), A.CoarseDropout(num_holes_range=(1, 1), hole_height_range=(0.25, 0.5),
                                                          hole_width_range=(0.25, 0.5), fill=127, p=1)])


@dataclass
class Unlabelled:
    """The unlabelled images (a TaskDataset's ``data``)."""

    paths: list[str]
    skipped: list[str]

    def __len__(self) -> int:
        return len(self.paths)


class WeakStrongPairs(TaskDataset):
    """Items: (x (2, 3, S, S) uint8: the weak view, the strong view; a dummy target)."""

    def __init__(self, paths: list, pre, weak: A.Compose, skip_bad: bool = False):
        super().__init__(Unlabelled([str(p) for p in paths], []), skip_bad)
        self.normalizer, self.augment, self.strong = pre, weak, strong_augment()

    def reseed(self, seed: int) -> None:
        super().reseed(seed)
        self.strong.set_random_seed(seed + 1)

    def load(self, i: int):
        weak = self.augment(image=read_image(self.data.paths[i]))["image"]
        strong = self.strong(image=weak)["image"]
        pair = torch.stack([torch.from_numpy(weak), torch.from_numpy(strong)]).permute(0, 3, 1, 2)
        return pair.contiguous(), torch.zeros(())

    def normalize(self, batch_u8: torch.Tensor) -> torch.Tensor:
        b = batch_u8.shape[0]
        return self.normalizer.normalize(batch_u8.flatten(0, 1)).unflatten(0, (b, 2))


class LetterboxedPairs(WeakStrongPairs):
    """Items: (x (2, 3, H, W) uint8: the weak view — a horizontal flip half the time, then the
    model's letterbox — and its colour-only strong view; the image's extent (2,) int64 (h, w)
    in the letterboxed input: the rest is padding)."""

    def __init__(self, paths: list, letterbox, skip_bad: bool = False):
        super().__init__(paths, letterbox, A.Compose([A.HorizontalFlip(p=0.5)]), skip_bad)
        self.letterbox, self.strong = letterbox, strong_augment(geometric=False)

    def load(self, i: int):
        img = self.augment(image=read_image(self.data.paths[i]))["image"]
        x, meta = self.letterbox.prepare(img)
        weak = x.permute(1, 2, 0).numpy()
        strong = torch.from_numpy(self.strong(image=weak)["image"]).permute(2, 0, 1)
        (sx, sy), (h, w) = meta_scale(meta), self.letterbox.hw
        extent = torch.tensor([min(h, max(1, round(img.shape[0] * sy))), min(w, max(1, round(img.shape[1] * sx)))])
        return torch.stack([x, strong]).contiguous(), extent


def unlabelled_paths(sources, labelled: list) -> list[Path]:
    """The images of ``sources`` (folders, globs, lists) that are not labelled ones."""
    mine = {str(Path(p).resolve()) for p in labelled}
    return [p for p in image_files(sources) if str(Path(p).resolve()) not in mine]
