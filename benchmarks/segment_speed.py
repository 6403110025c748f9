"""Segmentation throughput at 480x360: cvapps FCN-32s / FCN-8s (MobileNetV2) and SegNet
(VGG16-BN) vs torchvision lraspp_mobilenet_v3_large (random weights), same input, same run,
model forward only (batch 1), fp32 and bf16. Prints one JSON object."""

from __future__ import annotations

import json

import torch
from _common import per_second
from torchvision.models.segmentation import lraspp_mobilenet_v3_large

import cvapps


def fps(model, x, precision: str, reps: int = 8) -> float:
    return round(per_second(model, x, reps, precision), 2)


def main() -> None:
    torch.manual_seed(0)
    x = torch.randn(1, 3, 360, 480).contiguous(memory_format=torch.channels_last)
    labels = [str(i) for i in range(11)]
    models = {
        "fcn32s_mobilenet_v2": cvapps.create_model("segment", "mobilenet_v2", labels=labels, kind="fcn32s"),
        "fcn8s_mobilenet_v2": cvapps.create_model("segment", "mobilenet_v2", labels=labels, kind="fcn8s"),
        "segnet_vgg16_bn": cvapps.create_model("segment", "vgg16_bn", labels=labels, kind="segnet"),
        "segnet_basic": cvapps.create_model("segment", "segnet_basic", labels=labels, kind="segnet"),
        "torchvision_lraspp_mobilenet_v3_large": lraspp_mobilenet_v3_large(weights=None, weights_backbone=None,
                                                                           num_classes=11),
    }
    res = {}
    for name, m in models.items():
        m.eval()
        res[name] = {p: fps(m, x, p) for p in ("fp32", "bf16")}
    base = res["torchvision_lraspp_mobilenet_v3_large"]["fp32"]
    for name in res:
        res[name]["ratio_fp32_vs_lraspp"] = round(res[name]["fp32"] / base, 3)
    print(json.dumps({"input": [360, 480], "batch": 1, **res}))


if __name__ == "__main__":
    main()
