"""MediaPipe's hand landmark model (hand21.mediapipe): the mapping on a folded TFLite file the
test writes (ops in the original's order, four dense heads); the pipeline on palms is in
test_palms.py."""

from __future__ import annotations

import torch
from test_classifiers import FoldedTflite

import cvapps
from cvapps.convert import MAPPINGS, READERS
from cvapps.weights import get_spec


@torch.no_grad()
def test_a_folded_hand_landmark_file_converts_to_the_same_model(tmp_path):
    """BatchNorm folded into every conv, convs / depthwise convs in execution order, then the
    dense heads in the file's order (handedness, presence, points, world points): the mapping
    gives a model with the same points, presence and handedness; the world head is dropped."""
    spec = get_spec("hand21.mediapipe")
    torch.manual_seed(0)
    cls = cvapps.tasks.model_class("pose")
    src = cls.from_config({**spec.config, "fixed_norms": False}).eval()
    for m in src.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2), m.running_var.uniform_(0.5, 1.5)
            m.weight.uniform_(0.5, 1.5), m.bias.uniform_(-0.2, 0.2)
    head = src.head["main"]
    FoldedTflite(src.backbone.body, [head.handedness, head.presence, head.points, torch.nn.Linear(1152, 63)]).write(
        tmp_path / "hand.tflite")
    dst = cls.from_config(spec.config).eval()
    dst.load_state_dict(MAPPINGS.get("mediapipe_hand")(READERS.get("tflite")(tmp_path / "hand.tflite"),
                                                       dst.state_dict(), dst.config), strict=True)
    x = torch.rand(2, 3, 224, 224)
    a, b = src.head["main"](src.backbone(x)[-1]), dst.head["main"](dst.backbone(x)[-1])
    for u, v in zip(a, b):
        torch.testing.assert_close(v, u, atol=2e-4, rtol=1e-4)
