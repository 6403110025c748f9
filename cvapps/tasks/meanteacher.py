"""Mean teacher for dense tasks (``train detect|segment ... --unlabelled DIR``), after Unbiased
Teacher (Liu et al. 2021): an EMA of the student (the trainer's ``--ema`` average, decay 0.99
unless given; reset to the student when the unlabelled images join after the labelled-only
burn-in, ``--unlabelled-warmup``) labels each unlabelled image's weak view — detections scored
>= the threshold are boxes, those between half of it and it are ignored (crowd); pixels whose
top probability reaches it are labels, the rest ignored. The student learns them with its
task's own loss on the strong view: colour / blur / cutout (cvapps.data.unlabelled), then a
random flip, zoom and shift applied here to the image *and* the pseudo-labels (box / mask
aware). The step's loss is L_labelled + ``weight`` * L_unlabelled."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

SCALE = (0.8, 1.25)  # the strong view's zoom range (about the image centre)
SHIFT = 0.1  # its shift, a fraction of the side
MIN_VISIBLE = 0.25  # a pseudo-box left less visible than this by the warp is ignored (crowd)
TEACHER_DECAY = 0.99  # the EMA decay per step when --ema is not given


def random_affine(n: int, hw: tuple[int, int]) -> torch.Tensor:
    """(n, 2, 2): per image and axis (x, y) [gain, offset] mapping input pixels x' = g x + o:
    zoom s in SCALE about the centre, a horizontal flip half the time (g = -s), a shift of
    +-SHIFT of the side. Drawn from torch's global generator, which the trainer seeds per
    epoch (exact resume)."""
    h, w = hw
    s = torch.empty(n).uniform_(*SCALE)
    g = torch.stack([torch.where(torch.rand(n) < 0.5, -s, s), s], 1)  # (n, 2)
    size = torch.tensor([float(w), float(h)])
    shift = torch.empty(n, 2).uniform_(-SHIFT, SHIFT) * size
    return torch.stack([g, size / 2 - g * size / 2 + shift], 2)


def warp_images(x: torch.Tensor, aff: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """x (B, C, H, W), aff (B, 2, 2) -> the warped (B, C, H, W); outside the source: 0 (the
    mean colour of a normalised image)."""
    h, w = x.shape[-2:]
    aff = aff.to(x.device, torch.float32)
    g, o = aff[..., 0], aff[..., 1]
    size = torch.tensor([float(w), float(h)], device=x.device)
    theta = torch.zeros(x.shape[0], 2, 3, device=x.device)
    theta[:, 0, 0], theta[:, 1, 1] = 1 / g[:, 0], 1 / g[:, 1]
    theta[:, :, 2] = (1 - 2 * o / size) / g - 1  # the source's normalised coordinate of each output one
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x.float(), grid, mode=mode, padding_mode="zeros", align_corners=False).to(x.dtype)


def warp_boxes(boxes: torch.Tensor, aff: torch.Tensor, hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """boxes (N, 4) xyxy input pixels, aff (2, 2) -> (the warped boxes clipped to the image,
    kept (N,) bool: at least 1 px wide and high, visible (N,) fraction of each box left in view)."""
    g, o = aff[:, 0].to(boxes), aff[:, 1].to(boxes)
    x = boxes[:, [0, 2]] * g[0] + o[0]
    y = boxes[:, [1, 3]] * g[1] + o[1]
    full = torch.stack([x.min(1).values, y.min(1).values, x.max(1).values, y.max(1).values], 1)
    h, w = hw
    clipped = torch.stack([full[:, 0].clamp(0, w), full[:, 1].clamp(0, h), full[:, 2].clamp(0, w),
                           full[:, 3].clamp(0, h)], 1)
    area = lambda b: (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])  # noqa: E731
    kept = ((clipped[:, 2] - clipped[:, 0]) >= 1) & ((clipped[:, 3] - clipped[:, 1]) >= 1)
    return clipped, kept, area(clipped) / area(full).clamp(min=1e-6)


def warp_labels(mask: torch.Tensor, aff: torch.Tensor, ignore: int) -> torch.Tensor:
    """mask (B, H, W) integer labels -> warped with nearest sampling; pixels from outside the
    source are ``ignore``."""
    shifted = (mask.long() + 1).float()[:, None]  # 0 marks "outside"
    out = warp_images(shifted, aff, mode="nearest")[:, 0].round().long() - 1
    return torch.where(out < 0, torch.full_like(out, ignore), out)


class MeanTeacher:
    """The loss a SemiSupervised step adds for a dense task. ``pseudo(teacher, weak (B, 3, H,
    W), info) -> (targets, log value)``: the teacher's labels in the task's target format;
    ``warp(targets, aff, hw) -> targets``: the same labels on the warped view. u (B, 2, 3, H, W)
    normalised weak / strong views; info: what the unlabelled dataset gives per image."""

    def __init__(self, pseudo: Callable, warp: Callable, weight: float = 1.0, log: str = "mask_rate"):
        self.pseudo, self.warp, self.weight, self.log = pseudo, warp, weight, log

    def __call__(self, model, u: torch.Tensor, info=None, teacher=None) -> dict[str, torch.Tensor]:
        if teacher is None:
            raise RuntimeError("a mean-teacher loss needs the trainer's EMA teacher")  # pragma: no cover
        weak, strong = u[:, 0], u[:, 1]
        was = teacher.training
        teacher.eval()
        with torch.no_grad():
            targets, value = self.pseudo(teacher, weak, info)
        teacher.train(was)
        hw = tuple(strong.shape[-2:])
        aff = random_affine(strong.shape[0], hw)
        out = model.training_step(warp_images(strong, aff), self.warp(targets, aff, hw))
        loss = out["loss"]
        return {"loss_u": self.weight * loss, "unlabelled_loss": loss.detach(),
                self.log: torch.as_tensor(float(value))}
