"""FixMatch (Sohn et al. 2020), the classifier's semi-supervised loss (``train(...,
unlabelled=DIR)``): the model's prediction on an unlabelled image's weak view
(cvapps.data.unlabelled), when its top probability is at least ``threshold`` (0.95), is the
hard target of its strong view: L_u = mean over the unlabelled batch of
1[max p_weak >= threshold] * CE(strong logits, argmax p_weak), no gradient through the target.
The step's loss is L_labelled + ``weight`` * L_u with ``ratio`` (7) unlabelled images per
labelled one; both views go through the model inside the labelled batch's step (DDP sees one
forward; BatchNorm sees all three)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def fixmatch_loss(logits_weak: torch.Tensor, logits_strong: torch.Tensor, threshold: float) -> tuple:
    """(B, C), (B, C) -> (L_u, mask rate): the strong view's cross-entropy to the weak view's
    argmax where its top probability >= ``threshold``, averaged over the whole batch."""
    p = logits_weak.detach().float().softmax(1)
    conf, target = p.max(1)
    mask = (conf >= threshold).float()
    ce = F.cross_entropy(logits_strong.float(), target, reduction="none")
    return (ce * mask).mean(), mask.mean()


class FixMatch:
    """The loss a SemiSupervised step adds: u (B, 2, 3, S, S) normalised weak / strong views."""

    def __init__(self, threshold: float = 0.95, weight: float = 1.0):
        self.threshold, self.weight = threshold, weight

    def __call__(self, model, u: torch.Tensor, info=None, teacher=None) -> dict[str, torch.Tensor]:
        logits = model(u.flatten(0, 1)).logits.unflatten(0, (u.shape[0], 2))
        lu, rate = fixmatch_loss(logits[:, 0], logits[:, 1], self.threshold)
        return {"loss_u": self.weight * lu, "unlabelled_loss": lu.detach(), "mask_rate": rate.detach()}
