"""Detection losses: softmax CE with 3:1 hard-negative mining (SSD) or sigmoid focal loss
(RetinaNet); smooth-L1 on encoded deltas or GIoU on decoded boxes."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.ops import generalized_box_iou_loss, sigmoid_focal_loss

from ...ops import BACKGROUND, IGNORE, decode_boxes, encode_boxes, match_anchors


def detection_loss(cls: torch.Tensor, deltas: torch.Tensor, anchors: torch.Tensor, targets: list[dict],
                   h) -> dict[str, torch.Tensor]:
    """The loss dict of ``detection_terms`` (see there)."""
    return detection_terms(cls, deltas, anchors, targets, h)[0]


def detection_terms(cls: torch.Tensor, deltas: torch.Tensor, anchors: torch.Tensor, targets: list[dict],
                    h, ignore_columns: torch.Tensor | None = None) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """cls (B, N, K'), deltas (B, N, 4), anchors (N, 4) xyxy; targets[i]["boxes"] (G, 4) xyxy
    input pixels, ["labels"] (G,), ["iscrowd"] (G,), optionally ["soft"] (G, K) a teacher's
    class probabilities per box (distillation: the class target of the anchors matched to a
    box — ce: the distribution over the classes, focal: the per-class scores — instead of its
    one-hot label). ``h``: the head's SSDOptions (losses,
    matching thresholds). Normalised by the number of positives. ``ignore_columns``: focal
    only, foreground columns that take no loss from the labels (--keep-classes). -> (losses,
    positives (B, N) bool: anchors matched to a labelled box)."""
    cls_kind, box_kind, neg_ratio = h.cls_loss, h.box_loss, float(h.neg_pos_ratio)
    cls_losses, box_losses, n_pos = [], [], 0
    positives = torch.zeros(cls.shape[:2], dtype=torch.bool, device=cls.device)
    for b, t in enumerate(targets):
        matched = match_anchors(t["boxes"], anchors, h.match_low, h.match_high)
        if t["boxes"].numel():
            crowd = t["iscrowd"].bool()[matched.clamp(min=0)] & (matched >= 0)
            matched = torch.where(crowd, torch.full_like(matched, IGNORE), matched)
        pos = matched >= 0
        positives[b] = pos
        npos = int(pos.sum())
        n_pos += npos
        labels = torch.zeros_like(matched)  # 0 = background
        if npos:
            labels[pos] = t["labels"][matched[pos]] + 1
        valid = matched != IGNORE
        soft = t.get("soft")
        if cls_kind == "ce":
            ce = F.cross_entropy(cls[b].float(), labels, reduction="none")  # (N,)
            neg = (matched == BACKGROUND)
            k = min(int(neg.sum()), int(neg_ratio * max(npos, 1)))
            neg_ce = torch.where(neg, ce, torch.zeros_like(ce))
            hard = neg_ce.topk(k).indices if k else neg_ce.new_zeros(0, dtype=torch.long)
            pos_ce = ce[pos].sum()
            if soft is not None and npos:  # (P, K + 1) targets: the teacher's class distribution, no background
                q = soft[matched[pos]].float().clamp(min=0)
                q = F.pad(q / q.sum(1, keepdim=True).clamp(min=1e-8), (1, 0))
                pos_ce = F.cross_entropy(cls[b][pos].float(), q, reduction="sum")
            cls_losses.append(pos_ce + ce[hard].sum())
        else:  # focal, on the foreground columns (a TF-style background column 0 takes no loss)
            logits = cls[b][:, 1:] if h.background else cls[b]
            onehot = torch.zeros_like(logits, dtype=torch.float32)
            if npos:
                onehot[pos, labels[pos] - 1] = 1.0
                if soft is not None:
                    onehot[pos] = soft[matched[pos]].float()
            focal = sigmoid_focal_loss(logits[valid].float(), onehot[valid], reduction="none")
            if ignore_columns is not None:
                focal[:, ignore_columns] = 0
            cls_losses.append(focal.sum())
        if npos:
            gt = t["boxes"][matched[pos]]
            if box_kind == "smooth_l1":
                box_losses.append(F.smooth_l1_loss(deltas[b][pos].float(), encode_boxes(gt, anchors[pos]),
                                                   beta=1.0 / 9, reduction="sum"))
            else:  # giou
                pred = decode_boxes(deltas[b][pos].float(), anchors[pos])
                box_losses.append(generalized_box_iou_loss(pred, gt, reduction="sum"))
    norm = max(n_pos, 1)
    cls_loss = torch.stack(cls_losses).sum() / norm
    box_loss = torch.stack(box_losses).sum() / norm if box_losses else deltas.sum() * 0.0
    return {"loss": cls_loss + box_loss, "cls": cls_loss.detach(), "box": box_loss.detach()}, positives


def distill_columns(cls: torch.Tensor, deltas: torch.Tensor, t_cls: torch.Tensor, t_deltas: torch.Tensor,
                    columns: torch.Tensor, positives: torch.Tensor, confident: float = 0.5) -> dict[str, torch.Tensor]:
    """The student learns a frozen teacher's sigmoid scores for the foreground ``columns``
    and its boxes where it is confident. cls / t_cls (B, N, K) foreground logits (the
    teacher's first columns are the student's), deltas / t_deltas (B, N, 4), positives (B, N)
    anchors matched to labelled boxes. kd_cls: summed Bernoulli KL(teacher || student) over
    the columns, 0 when they agree; kd_box: smooth-L1 to the teacher's deltas on anchors
    where a column's teacher score exceeds ``confident`` and no labelled box was matched.
    Both are normalised by the labelled positives + the teacher-confident anchors."""
    s = cls[..., columns].float()
    t = t_cls[..., columns].float().sigmoid()
    kl = F.binary_cross_entropy_with_logits(s, t, reduction="none") - \
        F.binary_cross_entropy(t, t, reduction="none")  # cross-entropy minus the teacher's entropy
    teach = (t.max(-1).values > confident) & ~positives  # (B, N)
    norm = max(int(positives.sum()) + int(teach.sum()), 1)
    box = F.smooth_l1_loss(deltas[teach].float(), t_deltas[teach].float(), beta=1.0 / 9, reduction="sum") \
        if teach.any() else deltas.sum() * 0.0
    return {"kd_cls": kl.sum() / norm, "kd_box": box / norm}
