"""Semi-supervised training (`train --unlabelled`, FixMatch for classifiers): the consistency
loss by hand, the weak / strong views, a run that uses the unlabelled images and resumes
exactly, and the refusals."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import COLOURS, colour_image, interrupt_at_epoch, write_image
from safetensors.torch import load_file

import cvapps
from cvapps.data.transforms import EvalTransform, train_augment
from cvapps.data.unlabelled import WeakStrongPairs
from cvapps.errors import ConfigError
from cvapps.tasks.classification.fixmatch import fixmatch_loss

FAST = dict(epochs=2, batch_size=3, lr=3e-3, warmup_epochs=0.5, img_size=32, seed=1, backbone="mobilenet_v3_small",
            unlabelled_ratio=2, unlabelled_threshold=0.4)


def test_fixmatch_loss_equals_the_hand_computed_value():
    """Weak logits (3, 0): p = 0.9526 >= 0.9, target class 0; (0.1, 0): p = 0.525, masked out.
    The first strong view (0, 1) costs log(1 + e); the batch mean halves it; mask rate 0.5."""
    weak = torch.tensor([[3.0, 0.0], [0.1, 0.0]])
    strong = torch.tensor([[0.0, 1.0], [5.0, 5.0]], requires_grad=True)
    lu, rate = fixmatch_loss(weak, strong, 0.9)
    assert float(lu) == pytest.approx(math.log(1 + math.e) / 2, rel=1e-6) and float(rate) == 0.5
    lu.backward()
    assert torch.all(strong.grad[1] == 0)  # the unsure image gives no gradient


def test_weak_and_strong_views_are_seeded_and_differ(tmp_path):
    paths = [write_image(tmp_path / f"u{i}.png", colour_image(c, seed=i)) for i, c in enumerate(COLOURS.values())]
    pre = {"input_size": 32, "resize_size": 36, "mean": [0.5] * 3, "std": [0.25] * 3}
    ds = WeakStrongPairs(paths, EvalTransform.from_config(pre), train_augment(pre))
    (a, _), (b, _) = ds[(0, 7)], ds[(0, 7)]
    assert a.shape == (2, 3, 32, 32) and a.dtype == torch.uint8 and torch.equal(a, b)
    assert not torch.equal(a[0], a[1])  # the strong view is another image
    x = ds.normalize(torch.stack([a, b]))
    assert x.shape == (2, 2, 3, 32, 32) and x.dtype == torch.float32


def test_semi_supervised_run_learns_from_the_pool_and_resumes_exactly(tmp_path, colour_folder, monkeypatch):
    """The pool's images join each step (mask rate and unlabelled loss logged per epoch); a
    killed run resumed gives the same weights as an uninterrupted one."""
    pool = tmp_path / "pool"
    for i, rgb in enumerate(COLOURS.values()):
        for k in range(3):
            write_image(pool / f"p{i}{k}.png", colour_image(rgb, seed=50 + 3 * i + k))
    full = tmp_path / "full"
    r = cvapps.train("classify", str(colour_folder), out=str(full), unlabelled=[str(pool)], **FAST)
    recs = [json.loads(line) for line in (full / "metrics.jsonl").read_text().splitlines()]
    assert all("mask_rate" in rec and "unlabelled_loss" in rec for rec in recs)
    assert 0 <= recs[-1]["mask_rate"] <= 1 and r["val"]["count"] == 9
    part = tmp_path / "part"
    undo = interrupt_at_epoch(monkeypatch, 1)
    with pytest.raises(KeyboardInterrupt):
        cvapps.train("classify", str(colour_folder), out=str(part), unlabelled=[str(pool)], **FAST)
    undo()
    cvapps.train("classify", str(colour_folder), out=str(part), unlabelled=[str(pool)], resume=True, **FAST)
    a, b = load_file(full / "last.safetensors"), load_file(part / "last.safetensors")
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_unlabelled_refusals(tmp_path, colour_folder):
    """A pool of only labelled images, a task without a semi-supervised loss, a multi-label
    classifier: each one clear line."""
    with pytest.raises(ConfigError, match="no images"):
        cvapps.train("classify", str(colour_folder), out=str(tmp_path / "a"), unlabelled=[str(colour_folder)], **FAST)
    with pytest.raises(ConfigError, match="built for classify, detect and segment, not pose"):
        cvapps.tasks.TASKS.get("pose").semi_supervised(None, [], None)
    m = cvapps.create_model("classify", "mobilenet_v3_small", kind="multilabel", labels=["a", "b"], img_size=32)
    with pytest.raises(ConfigError, match="single-label"):
        m.spec.semi_supervised(m, [], None)
