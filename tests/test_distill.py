"""Knowledge distillation (classification): the loss by hand, and a student that learns a
fixed teacher's predictions from unlabelled images."""

from __future__ import annotations

import math

import pytest
import torch

import cvapps
from cvapps.tasks.classification.loss import classification_loss, distillation_loss


def test_distillation_loss_equals_the_hand_computed_value():
    s, t = torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 2.0]])
    T = 2.0
    ps = [math.exp(1) / (math.exp(1) + 1), 1 / (math.exp(1) + 1)]  # softmax(s / T)
    pt = ps[::-1]  # softmax(t / T)
    kl = sum(p * math.log(p / q) for p, q in zip(pt, ps))
    out = distillation_loss(s, t, torch.tensor([-1]), T, 0.5)
    assert float(out["loss"]) == pytest.approx(kl * T * T, rel=1e-6)  # no label: the KL term alone
    ce = -math.log(math.exp(2) / (math.exp(2) + 1))  # label 0
    out = distillation_loss(s, t, torch.tensor([0]), T, 0.25)
    assert float(out["loss"]) == pytest.approx(0.75 * kl * T * T + 0.25 * ce, rel=1e-6)
    # the task loss takes (logits, label) rows as distillation targets
    targets = torch.tensor([[0.0, 2.0, 0.0]])
    assert float(classification_loss(s, targets, {"kind": "multiclass", "kd_temperature": T, "kd_alpha": 0.25})
                 ["loss"]) == pytest.approx(0.75 * kl * T * T + 0.25 * ce, rel=1e-6)


def test_student_learns_a_fixed_teachers_predictions(tmp_path, colour_folder):
    """A teacher trained on the colour images; a student with another backbone and input size
    distilled on the same images without their labels agrees with it on the validation set."""
    fast = dict(epochs=6, batch_size=6, lr=3e-3, warmup_epochs=0.5, seed=1, augment=False)
    cvapps.train("classify", str(colour_folder), out=str(tmp_path / "teacher"), img_size=32, backbone="resnet18",
                 **fast)
    teacher = tmp_path / "teacher" / "best.safetensors"
    r = cvapps.distill("classify", str(teacher), [str(colour_folder / "train")],
                                  val=str(colour_folder / "val"), backbone="resnet18", img_size=48,
                                  out=str(tmp_path / "student"), epochs=8, batch_size=6, lr=3e-3, seed=1)
    student = cvapps.load(tmp_path / "student" / "best.safetensors")
    assert student.labels == cvapps.load(teacher).labels and student.config["backbone"] == "resnet18"
    assert r["teacher_val"]["top1"] == 1.0  # a teacher worth learning from
    val = sorted((colour_folder / "val").rglob("*.png"))
    agree = [a.topk[0][0] == b.topk[0][0] for a, b in zip(cvapps.load(teacher).predict(val), student.predict(val))]
    assert sum(agree) / len(agree) >= 0.8, agree
    with pytest.raises(cvapps.ConfigError, match="built for classify so far"):
        cvapps.distill("detect", str(teacher), [str(colour_folder / "train")])
