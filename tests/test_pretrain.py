"""Self-supervised pretraining (`cvapps pretrain`): each method trains (its loss falls), the
backbone file is what `train --weights FILE` and create_model take, a killed run resumes
exactly, and bad input is refused in one line."""

from __future__ import annotations

import io
import json

import pytest
import torch
from conftest import COLOURS, colour_image, run_cli, write_image
from rich.console import Console
from safetensors.torch import load_file

import cvapps
from cvapps.errors import ConfigError

pytest.importorskip("lightly")
QUIET = Console(file=io.StringIO())
FAST = dict(backbone="mobilenet_v3_small", img_size=32, batch_size=8, lr=2e-3, console=QUIET)


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    root = tmp_path_factory.mktemp("ssl")
    for i, rgb in enumerate(COLOURS.values()):
        for k in range(6):
            img = colour_image(rgb, seed=10 * i + k)
            img[k * 6 : k * 6 + 12, k * 8 : k * 8 + 16] = 255 - img[k * 6 : k * 6 + 12, k * 8 : k * 8 + 16]  # a patch
            write_image(root / f"{i}_{k}.png", img)
    return root


@pytest.mark.parametrize("method", ["simclr", "byol", "dino"])
def test_each_method_lowers_its_loss_and_writes_a_backbone(tmp_path, pool, method):
    r = cvapps.pretrain([str(pool)], method=method, epochs=6, out=str(tmp_path / method), **FAST)
    recs = [json.loads(line) for line in (tmp_path / method / "metrics.jsonl").read_text().splitlines()]
    assert r["epochs_run"] == 6 and recs[-1]["loss"] < recs[0]["loss"]
    state = load_file(r["backbone_file"])
    assert state and all(k.startswith("backbone.") for k in state)


def test_the_backbone_file_is_train_weights_for_every_task(tmp_path, pool, colour_folder):
    """create_model / train take OUT/backbone.safetensors as --weights: the backbone tensors
    are the file's, the normalisation its; a file of another kind is refused by name."""
    r = cvapps.pretrain([str(pool)], method="simclr", epochs=1, out=str(tmp_path / "p"), **FAST)
    state = load_file(r["backbone_file"])
    for task, args in (("classify", {"labels": list(COLOURS)}), ("segment", {"labels": ["a", "b"]}),
                       ("detect", {"labels": ["a"]})):
        m = cvapps.create_model(task, weights=r["backbone_file"], img_size=64, **args)
        own = m.state_dict()
        assert m.config["backbone"] == "mobilenet_v3_small"
        assert all(torch.equal(own[k], v) for k, v in state.items() if k in own), task
    out = cvapps.train("classify", str(colour_folder), weights=r["backbone_file"], epochs=1, batch_size=6,
                       img_size=32, out=str(tmp_path / "t"), console=QUIET)
    assert out["val"]["count"] == 9
    model_file = cvapps.save(cvapps.create_model("classify", "mobilenet_v3_small", labels=["a"]), tmp_path / "m.safetensors")
    with pytest.raises(ConfigError, match="not a backbone weights file"):
        cvapps.create_model("classify", weights=str(model_file))


def test_a_killed_pretraining_resumes_exactly(tmp_path, pool, monkeypatch):
    full = cvapps.pretrain([str(pool)], method="byol", epochs=3, out=str(tmp_path / "full"), **FAST)
    from cvapps import pretraining

    calls = {"n": 0}
    real = pretraining.seed_everything

    def stop(seed):  # the third epoch's seeding: as if killed then
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        real(seed)

    monkeypatch.setattr(pretraining, "seed_everything", stop)
    with pytest.raises(KeyboardInterrupt):
        cvapps.pretrain([str(pool)], method="byol", epochs=3, out=str(tmp_path / "part"), **FAST)
    monkeypatch.setattr(pretraining, "seed_everything", real)
    assert len((tmp_path / "part" / "metrics.jsonl").read_text().splitlines()) == 2
    part = cvapps.pretrain([str(pool)], method="byol", epochs=3, out=str(tmp_path / "part"), resume=True, **FAST)
    a, b = load_file(full["backbone_file"]), load_file(part["backbone_file"])
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_pretrain_refusals(tmp_path, pool, capsys):
    with pytest.raises(ConfigError, match="not one of simclr, byol, dino"):
        cvapps.pretrain([str(pool)], method="moco", out=str(tmp_path / "x"), **FAST)
    cvapps.pretrain([str(pool)], method="simclr", epochs=1, out=str(tmp_path / "y"), **FAST)
    code, _, err = run_cli(capsys, "pretrain", "--data", pool, "--out", tmp_path / "y", "--backbone",
                           "mobilenet_v3_small", "--img-size", "32", "--epochs", "1")
    assert code == 2 and "already holds a pretrained backbone" in err


@torch.no_grad()
def test_the_momentum_target_is_the_online_networks_exponential_average():
    """BYOL's target after one update: m x target + (1 - m) x online, m from the cosine schedule
    (0.99 at the first step, 1 at the last); SimCLR has no target."""
    from cvapps.pretraining import SelfSupervised

    torch.manual_seed(0)
    bb = cvapps.create_model("classify", "mobilenet_v3_small", labels=["_"], img_size=32).backbone
    m = SelfSupervised(bb, "byol", epochs=2)
    for p in m.backbone.parameters():
        p.add_(torch.randn_like(p) * 0.01)  # the online network moved away from the target
    target = {k: v.clone() for k, v in m.target_backbone.state_dict().items()}
    online = {k: v.clone() for k, v in m.backbone.state_dict().items()}
    m.momentum_update(0, 10)
    k = next(n for n, p in m.target_backbone.named_parameters() if p.dim() == 4)
    torch.testing.assert_close(m.target_backbone.state_dict()[k], 0.99 * target[k] + 0.01 * online[k])
    m.momentum_update(10, 10)  # m = 1: the target stays
    torch.testing.assert_close(m.target_backbone.state_dict()[k], 0.99 * target[k] + 0.01 * online[k])
    assert not hasattr(SelfSupervised(bb, "simclr", 2), "target_backbone")
