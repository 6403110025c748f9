"""Detection losses: softmax CE with 3:1 hard-negative mining (SSD) or sigmoid focal loss
(RetinaNet); smooth-L1 on encoded deltas or GIoU on decoded boxes."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.ops import generalized_box_iou_loss, sigmoid_focal_loss

from ...ops import BACKGROUND, IGNORE, decode_boxes, encode_boxes, match_anchors


def detection_loss(cls: torch.Tensor, deltas: torch.Tensor, anchors: torch.Tensor, targets: list[dict],
                   h) -> dict[str, torch.Tensor]:
    """cls (B, N, K'), deltas (B, N, 4), anchors (N, 4) xyxy; targets[i]["boxes"] (G, 4) xyxy
    input pixels, ["labels"] (G,), ["iscrowd"] (G,). ``h``: the head's SSDOptions (losses,
    matching thresholds). Normalised by the number of positives."""
    cls_kind, box_kind, neg_ratio = h.cls_loss, h.box_loss, float(h.neg_pos_ratio)
    cls_losses, box_losses, n_pos = [], [], 0
    for b, t in enumerate(targets):
        matched = match_anchors(t["boxes"], anchors, h.match_low, h.match_high)
        if t["boxes"].numel():
            crowd = t["iscrowd"].bool()[matched.clamp(min=0)] & (matched >= 0)
            matched = torch.where(crowd, torch.full_like(matched, IGNORE), matched)
        pos = matched >= 0
        npos = int(pos.sum())
        n_pos += npos
        labels = torch.zeros_like(matched)  # 0 = background
        if npos:
            labels[pos] = t["labels"][matched[pos]] + 1
        valid = matched != IGNORE
        if cls_kind == "ce":
            ce = F.cross_entropy(cls[b].float(), labels, reduction="none")  # (N,)
            neg = (matched == BACKGROUND)
            k = min(int(neg.sum()), int(neg_ratio * max(npos, 1)))
            neg_ce = torch.where(neg, ce, torch.zeros_like(ce))
            hard = neg_ce.topk(k).indices if k else neg_ce.new_zeros(0, dtype=torch.long)
            cls_losses.append(ce[pos].sum() + ce[hard].sum())
        else:  # focal, on the foreground columns (a TF-style background column 0 takes no loss)
            logits = cls[b][:, 1:] if h.background else cls[b]
            onehot = torch.zeros_like(logits, dtype=torch.float32)
            if npos:
                onehot[pos, labels[pos] - 1] = 1.0
            cls_losses.append(sigmoid_focal_loss(logits[valid].float(), onehot[valid], reduction="sum"))
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
    return {"loss": cls_loss + box_loss, "cls": cls_loss.detach(), "box": box_loss.detach()}
