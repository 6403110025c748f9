"""Knowledge distillation (classification): the loss by hand, and a student that learns a
fixed teacher's predictions from unlabelled images; self-training rounds."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
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
    with pytest.raises(cvapps.ConfigError, match="is a classify model, not a segment model"):
        cvapps.distill("segment", str(teacher), [str(colour_folder / "train")])  # the wrong teacher, in one line


def test_self_training_adds_only_confident_pseudo_labels(tmp_path, colour_folder, monkeypatch):
    """Round 0 on 2 labelled images per class; round 1 adds exactly the pool images the round-0
    model labels with at least the threshold's confidence; curve and records written."""
    import csv

    train = sorted((colour_folder / "train").rglob("*.png"))
    labelled = [p for p in train if p.stem[-1] in "01"]
    # paths relative to the CSV (as users write them): the rounds' own CSVs live elsewhere
    (tmp_path / "labelled.csv").write_text("path,label\n" + "".join(f"{p.relative_to(tmp_path)},{p.parent.name}\n"
                                                                   for p in labelled))
    fast = dict(backbone="resnet18", img_size=32, epochs=8, batch_size=6, lr=3e-3, warmup_epochs=0.5, seed=1,
                augment=False)
    pool = [p for p in train if p not in labelled]
    # the round-0 model, trained alone first (seeded: self_train's round 0 is the same model), sets a
    # threshold between its pool scores, so the filter keeps some images and drops others
    cvapps.train("classify", train=str(tmp_path / "labelled.csv"), val=str(colour_folder / "val"),
                 out=str(tmp_path / "alone"), **fast)
    scores = [pred.topk[0][2] for pred in cvapps.load(tmp_path / "alone" / "best.safetensors").predict(pool)]
    threshold = float(np.median(scores))
    monkeypatch.chdir(tmp_path)  # a relative CSV with relative paths, as from a shell in its folder
    r = cvapps.self_train("classify", "labelled.csv", [str(colour_folder / "train")],
                          val=str(colour_folder / "val"), rounds=1, threshold=threshold, out=str(tmp_path / "st"), **fast)
    assert [x["round"] for x in r["rounds"]] == [0, 1] and r["pool"] == len(pool)
    first = cvapps.load(tmp_path / "st" / "round0" / "best.safetensors")
    again = [pred.topk[0][2] for pred in first.predict(pool)]
    np.testing.assert_allclose(again, scores, atol=1e-6)
    confident = [p for p, s in zip(pool, again) if s >= threshold]
    assert 0 < len(confident) < len(pool), again  # the threshold keeps some and drops some
    assert r["rounds"][1]["pseudo"] == len(confident)
    with open(tmp_path / "st" / "round1" / "train.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(labelled) + len(confident)
    assert {Path(row["path"]) for row in rows[len(labelled):]} == set(confident)
    assert (tmp_path / "st" / "self_training.png").is_file() and (tmp_path / "st" / "self_training.jsonl").is_file()
    with pytest.raises(cvapps.ConfigError, match=r"--threshold must be in \(0, 1\]"):
        cvapps.self_train("classify", "labelled.csv", [str(colour_folder)], val=str(colour_folder), threshold=0)
