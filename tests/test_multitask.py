"""Multi-task training (`cvapps train-bundle`): the --task strings, the schedule (one batch of
every task per step, smaller sets repeating within the largest's epoch), each head learning
only from its own task, uncertainty weighting by hand, and a run whose bundle shares one
backbone pass, predicts and resumes exactly."""

from __future__ import annotations

import io
import json
import math
import sys

import pytest
import torch
from conftest import interrupt_at_epoch, run_cli
from detdata import make_detection_set
from rich.console import Console
from safetensors.torch import load_file
from segdata import CLASSES, make_seg_set

import cvapps
from cvapps.data.dataset import TaskDataset
from cvapps.data.loader import SeededSampler
from cvapps.errors import ConfigError
from cvapps.multitask import JointDataset, MultiTaskModel, parse_task, train_bundle

QUIET = Console(file=io.StringIO())


def test_task_strings_parse_into_data_and_options():
    assert parse_task("detect:voc.json,images=voc/,val_fraction=0.2,skip_bad=true") == (
        "detect", "voc.json", {"images": "voc/", "val_fraction": 0.2, "skip_bad": True})
    assert parse_task("segment:images=a/,masks=b/") == ("segment", None, {"images": "a/", "masks": "b/"})
    with pytest.raises(ConfigError, match="unknown task 'dettect'"):
        parse_task("dettect:x")
    with pytest.raises(ConfigError, match="'oops' is not key=value"):
        parse_task("detect:x.json,oops")


class _Indexed(TaskDataset):
    """n items: x filled with the item's index (+ 100 * tag), target its index."""

    def __init__(self, n: int, tag: int):
        super().__init__(list(range(n)))
        self.tag = tag

    def load(self, i):
        return torch.full((3, 2, 2), i + 100 * self.tag, dtype=torch.uint8), torch.tensor(i)


def test_every_step_takes_each_task_and_smaller_sets_repeat():
    """Sizes 5 and 2: an epoch is 5 items; item i pairs image i of the first with i mod 2 of the
    second; over a shuffled epoch the first task's images come once each, the second's cycle."""
    joint = JointDataset({"a": _Indexed(5, 0), "b": _Indexed(2, 1)})
    assert len(joint) == 5
    x, t = joint[(3, 11)]
    assert x.shape == (2, 3, 2, 2) and x[0].unique().tolist() == [3] and x[1].unique().tolist() == [101]
    assert int(t["tasks"]["a"]) == 3 and int(t["tasks"]["b"]) == 1
    sampler = SeededSampler(len(joint), seed=4)
    sampler.set_epoch(2)
    order = [joint[key][1]["tasks"] for key in sampler]
    assert sorted(int(o["a"]) for o in order) == [0, 1, 2, 3, 4]
    assert all(int(o["b"]) == int(o["a"]) % 2 for o in order)


def _bundle_model(weighting="equal") -> MultiTaskModel:
    torch.manual_seed(0)
    det = cvapps.create_model("detect", "mobilenet_v3_small", labels=["a", "b"], img_size=64)
    seg = cvapps.create_model("segment", "mobilenet_v3_small", labels=CLASSES, img_size=64)
    return MultiTaskModel({"detect": det, "segment": seg}, weighting)


def _grads(model, x, targets) -> dict[str, torch.Tensor]:
    model.zero_grad()
    model.training_step(x, targets)["loss"].backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("weighting", ["equal", "uncertainty", "magnitude"])
def test_each_head_learns_only_from_its_own_task(weighting):
    """Two batches with the same detection images and boxes but other segmentation images and
    masks: the detection head's gradients are identical, the segmentation head's and the
    shared backbone's are not."""
    model = _bundle_model(weighting).train()
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 2, 3, 64, 64, generator=g)
    det = [{"boxes": torch.tensor([[4.0, 4.0, 30.0, 40.0]]), "labels": torch.tensor([1]),
            "iscrowd": torch.tensor([False])}] * 2
    masks = torch.randint(0, 3, (2, 64, 64), generator=g)
    first = _grads(model, x, [{"tasks": {"detect": det[i], "segment": {"mask": masks[i]}}} for i in range(2)])
    x2 = x.clone()
    x2[:, 1] = torch.rand(2, 3, 64, 64, generator=g)
    second = _grads(model, x2, [{"tasks": {"detect": det[i], "segment": {"mask": 2 - masks[i]}}} for i in range(2)])
    det_head = [n for n in first if n.startswith("parts.detect.head.")]
    seg_head = [n for n in first if n.startswith("parts.segment.head.")]
    assert det_head and seg_head and not any(n.startswith("parts.") and ".backbone." in n for n in first)
    for n in det_head:
        assert torch.equal(first[n], second[n]), n
    assert any(not torch.equal(first[n], second[n]) for n in seg_head)
    assert any(not torch.equal(first[n], second[n]) for n in first if n.startswith("backbone."))
    if weighting == "uncertainty":
        assert first["log_vars"].shape == (2,)


def test_uncertainty_weighting_equals_the_hand_computed_loss(monkeypatch):
    """Task losses 2 and 3, log variances 0.5 and -0.2: exp(-0.5) 2 + 0.5 + exp(0.2) 3 - 0.2;
    fixed weights; magnitude scaling: each loss over its running mean (decay 0.9)."""
    model = _bundle_model("uncertainty")
    for task, value in (("detect", 2.0), ("segment", 3.0)):
        monkeypatch.setattr(model.parts[task], "training_step",
                            lambda x, t, v=value: {"loss": torch.tensor(v, requires_grad=True)})
    with torch.no_grad():
        model.log_vars.copy_(torch.tensor([0.5, -0.2]))
    out = model.training_step(torch.zeros(1, 2, 3, 8, 8), [{"tasks": {"detect": {}, "segment": {"mask": torch.zeros(
        8, 8)}}}])
    want = math.exp(-0.5) * 2 + 0.5 + math.exp(0.2) * 3 - 0.2
    assert float(out["loss"].detach()) == pytest.approx(want, rel=1e-6)
    assert model.task_weights() == pytest.approx([math.exp(-0.5), math.exp(0.2)], rel=1e-6)
    fixed = MultiTaskModel({"detect": model.parts["detect"], "segment": model.parts["segment"]}, "0.5,2")
    assert float(fixed.training_step(torch.zeros(1, 2, 3, 8, 8), [{"tasks": {"detect": {}, "segment": {
        "mask": torch.zeros(8, 8)}}}])["loss"].detach()) == pytest.approx(0.5 * 2 + 2 * 3)
    scaled = MultiTaskModel({"detect": model.parts["detect"], "segment": model.parts["segment"]}, "magnitude")
    batch = (torch.zeros(1, 2, 3, 8, 8), [{"tasks": {"detect": {}, "segment": {"mask": torch.zeros(8, 8)}}}])
    assert float(scaled.training_step(*batch)["loss"].detach()) == pytest.approx(2.0)  # 2 / 2 + 3 / 3
    monkeypatch.setattr(model.parts["detect"], "training_step", lambda x, t: {"loss": torch.tensor(4.0)})
    # the running mean of the detection loss: 0.9 * 2 + 0.1 * 4 = 2.2
    assert float(scaled.training_step(*batch)["loss"].detach()) == pytest.approx(4 / 2.2 + 1.0, rel=1e-6)
    assert scaled.task_weights() == pytest.approx([1 / 2.2, 1 / 3], rel=1e-6)
    with pytest.raises(ConfigError, match="3 weights for 2 tasks"):
        MultiTaskModel({"detect": model.parts["detect"], "segment": model.parts["segment"]}, "1,1,1")


@pytest.fixture(scope="module")
def two_sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("bundle")
    make_detection_set(root / "det")
    make_seg_set(root / "seg")
    d, s = root / "det", root / "seg"
    return root, [f"detect:{d}/coco.json,images={d}/images,val={d}/coco.json,val_images={d}/images",
                  f"segment:images={s}/train,masks={s}/trainannot,val_images={s}/val,val_masks={s}/valannot,"
                  f"classes={'|'.join(CLASSES)}"]


def test_cli_bundle_shares_one_pass_predicts_and_resumes_exactly(two_sets, capsys, monkeypatch):
    root, tasks = two_sets
    args = ["train-bundle", "--backbone", "mobilenet_v3_small", "--img-size", "64", "--epochs", "2",
            "--batch-size", "2", "--seed", "3"]
    for t in tasks:
        args += ["--task", t]
    code, out, err = run_cli(capsys, *args, "--out", root / "full")
    assert code == 0, err
    summary = json.loads(out)
    assert {"detect_AP50", "segment_mIoU", "score"} <= set(summary)
    recs = [json.loads(line) for line in (root / "full" / "metrics.jsonl").read_text().splitlines()]
    assert all("detect_weight" in r and "segment_weight" in r for r in recs)
    bundle = cvapps.load_bundle([root / "full" / "best" / "detect.safetensors",
                                 root / "full" / "best" / "segment.safetensors"])
    assert bundle.describe() == "detect+segment share one mobilenet_v3_small backbone pass"
    cvapps.predict_bundle(bundle, [str(root / "seg" / "val" / "s0.png")], save_json=str(root / "b.jsonl"),
                          console=QUIET)
    (line,) = (root / "b.jsonl").read_text().splitlines()
    assert set(json.loads(line)["predictions"]) == {"detect", "segment"}
    undo = interrupt_at_epoch(monkeypatch, 1)
    assert run_cli(capsys, *args, "--out", root / "part")[0] == 130  # interrupted in epoch 2
    undo()
    code, _, err = run_cli(capsys, *args, "--out", root / "part", "--resume")
    assert code == 0, err
    for task in ("detect", "segment"):
        a = load_file(root / "full" / "last" / f"{task}.safetensors")
        b = load_file(root / "part" / "last" / f"{task}.safetensors")
        for k in a:
            assert torch.equal(a[k], b[k]), (task, k)


def test_bundle_refusals(two_sets, tmp_path):
    _, tasks = two_sets
    with pytest.raises(ConfigError, match="two or more different tasks"):
        train_bundle([tasks[0], tasks[0]], out=str(tmp_path / "x"), console=QUIET)
    with pytest.raises(ConfigError, match="whole-image tasks"):
        train_bundle([tasks[0], "pose:none.json"], out=str(tmp_path / "y"), console=QUIET)


DDP_SCRIPT = """
import sys, cvapps
r = cvapps.train_bundle(sys.argv[1:3], backbone="mobilenet_v3_small", img_size=64, epochs=2, batch_size=4,
                        out=sys.argv[3], workers=0)
open(sys.argv[3] + f"-rank{r['rank']}.txt", "w").write(f"{r['rank']} {r['world_size']}")
"""


def test_bundle_trains_under_torchrun(two_sets, tmp_path):
    """Two gloo processes: every parameter (both heads, the backbone, the log variances) takes
    part in each step, so DDP runs without unused-parameter detection; rank 0 alone writes."""
    from test_distributed import _run

    _, tasks = two_sets
    script = tmp_path / "bundle.py"
    script.write_text(DDP_SCRIPT)
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
          *tasks, str(tmp_path / "ddp")], tmp_path)
    # each rank says who it was in a file (the ranks' prints interleave on the shared pipe)
    assert [(tmp_path / f"ddp-rank{r}.txt").read_text() for r in (0, 1)] == ["0 2", "1 2"]
    recs = [json.loads(line) for line in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert len(recs) == 2 and recs[0]["train_loss"] != recs[1]["train_loss"]
    assert sorted(p.name for p in (tmp_path / "ddp" / "best").iterdir()) == ["detect.safetensors",
                                                                            "segment.safetensors"]
