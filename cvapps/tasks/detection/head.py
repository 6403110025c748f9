"""Detection heads are pluggable parts of the one detection model: a head kind is an
nn.Module registered under its ``kind`` with its typed options. The single-stage SSD head
lives here; the two-stage head (torchvision's Faster R-CNN parts) in fasterrcnn.py.

A head kind implements ``forward(feats, x, targets=None) -> raw``, ``loss(raw, targets)``,
``postprocess(raw, metas, input_hw, names, category_ids, **options)`` and
``uncertainty(raw, kind)``; the model delegates to it."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import ClassVar

import torch
from torch import nn
from torchvision.models.detection.ssdlite import _prediction_block
from torchvision.ops import Conv2dNormActivation

from ...backbones import Backbone
from ...backbones.layers import same_padding
from ...errors import ConfigError
from ...ops import ANCHORS
from ...ops.factorize import separable_from_full
from ...options import Options, opt
from ...registry import Registry
from .loss import detection_loss, detection_terms, distill_columns
from .postprocess import Detections, postprocess

DETECTION_HEADS: Registry[type["DetectionHead"]] = Registry("detection head")
_CBA = partial(Conv2dNormActivation, norm_layer=nn.BatchNorm2d, activation_layer=nn.ReLU6)


class DetectionHead(nn.Module):
    """Base of head kinds. ``Options``: the kind's typed options (parsed once, in the model)."""

    Options: ClassVar[type[Options]]
    has_eval_loss: ClassVar[bool] = True
    export_blocker: ClassVar[str | None] = None
    uncertainty_kinds: ClassVar[tuple[str, ...]] = ("least_confidence",)

    def training_step(self, feats: list[torch.Tensor], x: torch.Tensor, targets: list[dict]) -> dict:
        return self.loss(self(feats, x), targets)


def register_head(kind: str):
    return DETECTION_HEADS.decorator(kind)


@dataclass
class SSDOptions(Options):
    """Single-stage head. ``levels``: strides that predict (backbone strides, and powers of
    two beyond the last one made by extra blocks of ``extra_channels`` outputs, an int or one
    per extra level, with ``extra_mid`` squeeze channels); anchors from the ``anchors``
    generator (grid: ``anchor_base`` x stride x ``anchor_scales``; tf_ssd: ``min_scale`` ..
    ``max_scale``, ``reduce_lowest``; both ``aspect_ratios``); ``predictor`` ssdlite or a plain
    3x3 conv; ``cls_loss`` ce (softmax over a background column, 3:1 hard negatives) or focal
    (sigmoid); ``background``: whether the class output has a background column 0 (default:
    with ce); ``box_loss`` smooth_l1 or giou; ``tf_same`` / ``bn_eps``: TensorFlow's padding
    and BatchNorm epsilon in the extra blocks (converted models)."""

    what: ClassVar[str] = "detection head"
    kind: str = "ssd"
    num_classes: int = opt(1, low=1)
    levels: list = opt([8, 16, 32, 64])
    anchors: str = opt("grid", choices=("grid", "tf_ssd"))
    anchor_base: float = opt(4.0, low=0.0, low_open=True)
    anchor_scales: list = opt([1.0, 1.4142])
    aspect_ratios: list = opt([0.5, 1.0, 2.0])
    min_scale: float = opt(0.2, low=0.0, low_open=True)
    max_scale: float = opt(0.95, low=0.0, low_open=True)
    reduce_lowest: bool = True
    predictor: str = opt("ssdlite", choices=("ssdlite", "conv"))
    cls_loss: str = opt("ce", choices=("ce", "focal"))
    background: bool | None = None
    box_loss: str = opt("smooth_l1", choices=("smooth_l1", "giou"))
    neg_pos_ratio: float = opt(3, low=0.0, low_open=True)
    match_low: float = opt(0.4, low=0.0, high=1.0)
    match_high: float = opt(0.5, low=0.0, high=1.0)
    extra_channels: int | list = 256
    extra_mid: list | None = None
    tf_same: bool = False
    bn_eps: float | None = opt(None, low=0.0, low_open=True)
    conf: float = opt(0.25, low=0.0, high=1.0)
    iou: float = opt(0.45, low=0.0, high=1.0)
    max_det: int = opt(100, low=1)
    uncertainty: str = opt("least_confidence", choices=("least_confidence", "entropy"))
    uncertainty_topk: int = opt(10, low=1)

    def validate(self) -> None:
        if self.match_low > self.match_high:
            raise ConfigError(f"detection head: match_low {self.match_low} > match_high {self.match_high}")
        if not self.levels or sorted(self.levels) != list(self.levels):
            raise ConfigError(f"detection head levels {self.levels} must be increasing strides")
        if self.background is None:
            self.background = self.cls_loss == "ce"
        if self.cls_loss == "ce" and not self.background:
            raise ConfigError("detection head: cls_loss ce (softmax) needs the background column",
                              hint="use cls_loss focal for outputs without one")


def extra_block(cin: int, cout: int, mid: int | None = None) -> nn.Sequential:
    """(B, cin, h, w) -> (B, cout, ceil(h/2), ceil(w/2)): 1x1 squeeze, 3x3/2 depthwise, 1x1
    (torchvision's ssdlite._extra_block with mid = cout / 2, written out so mid can vary: TF's
    SSD-MobileNetV2 squeezes to other widths)."""
    mid = mid or cout // 2
    return nn.Sequential(_CBA(cin, mid, 1), _CBA(mid, mid, 3, 2, groups=mid), _CBA(mid, cout, 1))


PREDICTORS = {
    # torchvision's SSDLite predictor: 3x3 depthwise + BN + ReLU6, 1x1 conv with bias
    "ssdlite": lambda cin, cout: _prediction_block(cin, cout, 3, nn.BatchNorm2d),
    # a plain 3x3 conv with bias (the original SSD / TF SSD predictor)
    "conv": lambda cin, cout: nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1)),
}


@dataclass
class DetRaw:
    """cls: (B, N, K') logits (K' = K + 1 with background column 0 for "ce", K for "focal");
    deltas: (B, N, 4) encoded boxes; anchors: (N, 4) xyxy input pixels."""

    cls: torch.Tensor
    deltas: torch.Tensor
    anchors: torch.Tensor


@register_head("ssd")
class SSDHead(DetectionHead):
    """features (strides increasing) -> DetRaw. N = sum over levels of h_l * w_l * A_l."""

    Options = SSDOptions
    uncertainty_kinds = ("least_confidence", "entropy")

    def __init__(self, backbone: Backbone, h: SSDOptions):
        super().__init__()
        self.h = h
        by_stride = {f.stride: (i, f.channels) for i, f in enumerate(backbone.feature_info)}
        top = backbone.feature_info[-1]
        self.sources: list[int] = []
        chans: list[int] = []
        for s in h.levels:
            if s in by_stride:
                self.sources.append(by_stride[s][0])
                chans.append(by_stride[s][1])
            elif s <= top.stride:
                raise ConfigError(f"detection level stride {s} is not a feature stride of {backbone.name}",
                                  hint=f"strides: {[f.stride for f in backbone.feature_info]}")
        self.extras = nn.ModuleList()
        cin, stride = top.channels, top.stride
        n_extra = sum(1 for x in h.levels if x > top.stride)
        outs = h.extra_channels if isinstance(h.extra_channels, list) else [h.extra_channels] * n_extra
        mids = h.extra_mid or [None] * len(outs)
        if len(outs) != n_extra or len(mids) != n_extra:
            raise ConfigError(f"detection head: {n_extra} extra levels, but {len(outs)} extra_channels / "
                              f"{len(mids)} extra_mid")
        for s in (x for x in h.levels if x > top.stride):
            while stride < s:
                k = len(self.extras)
                if k >= n_extra:
                    raise ConfigError(f"detection levels {h.levels} must double from the backbone's last stride")
                self.extras.append(extra_block(cin, outs[k], mids[k]))
                cin, stride = outs[k], stride * 2
            chans.append(cin)
        if max(h.levels) > top.stride and stride != max(h.levels):
            raise ConfigError(f"detection levels {h.levels} must be powers of two of the backbone strides")
        if h.tf_same:
            same_padding(self.extras)
        if h.bn_eps is not None:
            for m in self.extras.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.eps = h.bn_eps
        self.anchor_gen = ANCHORS.get(h.anchors).from_options(h)
        self.A = self.anchor_gen.per_level(len(chans))
        self.K = h.num_classes + (1 if h.background else 0)
        make = PREDICTORS[h.predictor]
        self.cls = nn.ModuleList(make(c, a * self.K) for c, a in zip(chans, self.A))
        self.reg = nn.ModuleList(make(c, a * 4) for c, a in zip(chans, self.A))
        for m in self.cls:  # background-leaning start: stable early training (RetinaNet prior)
            nn.init.constant_(m[-1].bias, -2.0)
        self._anchor_cache: dict = {}

    def anchors(self, sizes: list[tuple[int, int]], input_hw: tuple[int, int], device) -> torch.Tensor:
        key = (tuple(sizes), tuple(input_hw), str(device))
        if key not in self._anchor_cache:
            self._anchor_cache = {key: self.anchor_gen(sizes, self.h.levels, input_hw, device)}
        return self._anchor_cache[key]

    def forward(self, feats: list[torch.Tensor], x: torch.Tensor, targets=None) -> DetRaw:
        maps = [feats[i] for i in self.sources]
        f = feats[-1]
        for block in self.extras:
            f = block(f)
            maps.append(f)
        cls, reg, sizes = [], [], []
        for m, c, r, a in zip(maps, self.cls, self.reg, self.A):
            b, _, hh, ww = m.shape
            sizes.append((hh, ww))
            cls.append(c(m).permute(0, 2, 3, 1).reshape(b, hh * ww * a, self.K))  # (B, hwA, K)
            reg.append(r(m).permute(0, 2, 3, 1).reshape(b, hh * ww * a, 4))  # (B, hwA, 4)
        cls_t, reg_t = torch.cat(cls, 1), torch.cat(reg, 1)
        return DetRaw(cls_t, reg_t, self.anchors(sizes, tuple(x.shape[-2:]), cls_t.device))

    def loss(self, raw: DetRaw, targets: list[dict]) -> dict[str, torch.Tensor]:
        return detection_loss(raw.cls, raw.deltas, raw.anchors, targets, self.h)

    def lwf_loss(self, raw: DetRaw, teacher: DetRaw, targets: list[dict], columns: torch.Tensor) -> dict:
        """The label loss without the foreground ``columns`` + their distillation from the
        teacher's raw output (see cvapps.tasks.detection.loss.distill_columns)."""
        bg = 1 if self.h.background else 0
        out, positives = detection_terms(raw.cls, raw.deltas, raw.anchors, targets, self.h, ignore_columns=columns)
        kd = distill_columns(raw.cls[..., bg:], raw.deltas, teacher.cls[..., bg:], teacher.deltas, columns, positives)
        return {**out, **kd, "loss": out["loss"] + kd["kd_cls"] + kd["kd_box"]}

    def class_rows(self, src: dict, own: dict, mapping: dict[int, int], n_src: int) -> dict:
        """Class predictor tensors that start from a pretrained head's rows: ``mapping`` takes
        this model's class index to the source's; the background column and the box
        predictors carry over when the layouts (anchors per level, background) agree."""
        bg = 1 if self.h.background else 0
        out = {}
        for level, a in enumerate(self.A):
            for part in ("weight", "bias"):
                key = f"head.cls.{level}.{len(self.cls[level]) - 1}.{part}"
                if key not in src or key not in own:
                    continue
                s, o = src[key], own[key].clone()
                k_src = s.shape[0] // a
                if k_src * a != s.shape[0] or k_src not in (n_src, n_src + bg) or s.shape[1:] != o.shape[1:]:
                    continue  # another anchor layout: keep the fresh head
                src_bg = k_src - n_src
                for anchor in range(a):
                    if bg and src_bg:
                        o[anchor * self.K] = s[anchor * k_src]
                    for mine, theirs in mapping.items():
                        o[anchor * self.K + bg + mine] = s[anchor * k_src + src_bg + theirs]
                out[key] = o
        return out

    def separable_rows(self, src: dict, mapping: dict[int, int], n_src: int) -> dict:
        """SSDLite predictors that start from a pretrained head's plain 3x3 conv predictors
        (the COCO detector's), each factorised into depthwise + 1x1 (cvapps.ops.factorize;
        the BatchNorm between them set to that affine at identity statistics). Class rows by
        ``mapping`` (this model's class -> the source's; unmapped classes start at zero
        weights and the fresh bias); box rows all. Needs the same anchors per level."""
        if self.h.predictor != "ssdlite":
            return {}
        bg, out = 1 if self.h.background else 0, {}
        for part, preds, k in (("cls", self.cls, self.K), ("reg", self.reg, 4)):
            for level, a in enumerate(self.A):
                w, b = src.get(f"head.{part}.{level}.0.weight"), src.get(f"head.{part}.{level}.0.bias")
                dw, bn, pw = preds[level][0][0], preds[level][0][1], preds[level][1]
                if w is None or b is None or w.dim() != 4 or w.shape[1] != dw.weight.shape[0] or w.shape[0] % a:
                    continue
                k_src = w.shape[0] // a
                if part == "cls" and k_src not in (n_src, n_src + bg):
                    continue
                if part == "cls":  # own row -> source row, per anchor
                    src_bg = k_src - n_src
                    per = ({0: 0} if bg and src_bg else {}) | {bg + i: src_bg + j for i, j in mapping.items()}
                elif k_src == 4:
                    per = {i: i for i in range(4)}
                else:
                    continue
                rows = {an * k + r: an * k_src + q for an in range(a) for r, q in per.items()}
                f = separable_from_full(w[list(rows.values())], b[list(rows.values())])
                weight, bias = torch.zeros_like(pw.weight), pw.bias.detach().clone()
                weight[list(rows)], bias[list(rows)] = f["pointwise"], f["bias"]
                pre = f"head.{part}.{level}"
                out.update({f"{pre}.0.0.weight": f["depthwise"], f"{pre}.0.1.weight": f["scale"],
                            f"{pre}.0.1.bias": f["shift"], f"{pre}.0.1.running_mean": torch.zeros_like(f["shift"]),
                            f"{pre}.0.1.running_var": torch.full_like(f["shift"], 1.0 - bn.eps),
                            f"{pre}.1.weight": weight, f"{pre}.1.bias": bias})
        return out

    def probs(self, raw: DetRaw) -> torch.Tensor:
        """(B, N, K) foreground class probabilities (softmax without background, or sigmoid)."""
        if self.h.cls_loss == "ce":
            return raw.cls.float().softmax(-1)[..., 1:]
        p = raw.cls.float().sigmoid()
        return p[..., 1:] if self.h.background else p

    def postprocess(self, raw: DetRaw, metas: list[dict], input_hw, names, category_ids, conf=None, iou=None,
                    max_det=None, classes=None) -> list[Detections]:
        h = self.h
        return postprocess(self.probs(raw), raw.deltas, raw.anchors, metas, input_hw, names, category_ids,
                           h.conf if conf is None else conf, h.iou if iou is None else iou,
                           h.max_det if max_det is None else max_det, classes)

    def uncertainty(self, raw: DetRaw, kind: str | None = None) -> torch.Tensor:
        """(B,) score from the ``uncertainty_topk`` most confident anchors: the mean of
        1 - max class probability ("least_confidence") or of the class entropy ("entropy")."""
        probs = raw.cls.float().softmax(-1) if self.h.cls_loss == "ce" else raw.cls.float().sigmoid()
        fg = probs[..., 1:] if self.h.background else probs
        conf = fg.max(-1).values  # (B, N)
        top = conf.topk(min(self.h.uncertainty_topk, conf.shape[1]), dim=1).indices
        if (kind or self.h.uncertainty) == "entropy":
            p = probs / probs.sum(-1, keepdim=True)
            ent = -(p * p.clamp_min(1e-12).log()).sum(-1)  # (B, N)
            return ent.gather(1, top).mean(1)
        return (1 - conf.gather(1, top)).mean(1)
