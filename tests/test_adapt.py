"""Domain adaptation (`cvapps adapt`): AdaBN re-estimates normalisation statistics only, as
the target's exact averages; self-training fine-tunes on the model's own labels; the CLI and
the refusals."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from conftest import run_cli, write_image
from rich.console import Console
from segdata import CLASSES, make_seg_set

import cvapps
from cvapps.adapting import adabn
from cvapps.errors import ConfigError

QUIET = Console(file=io.StringIO())


def seg_model():
    torch.manual_seed(0)
    return cvapps.create_model("segment", "mobilenet_v2", kind="fcn8s", labels=CLASSES, img_size=64).eval()


def darker_images(tmp_path, n: int = 5) -> list[str]:
    """The target: the synthetic scenes at dusk (darker, bluer)."""
    rng = np.random.default_rng(1)
    out = []
    for k in range(n):
        img = (rng.integers(60, 120, (48, 64, 3)) * [0.4, 0.45, 0.7]).astype(np.uint8)
        out.append(str(write_image(tmp_path / "dusk" / f"d{k}.png", img)))
    return out


@torch.no_grad()
def test_adabn_changes_only_the_normalisation_statistics(tmp_path):
    """Every tensor but the BatchNorms' running mean / variance / count is bit-identical; the
    first BatchNorm's new mean and (unbiased) variance are those of its inputs over all target
    images, computed here by hand; predictions change."""
    m = seg_model()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    images = darker_images(tmp_path)
    pre = m.preprocessor()
    x = pre.normalize(torch.stack([pre.prepare(cvapps.data.io.read_image(p))[0] for p in images])).float()
    first = next(mod for mod in m.modules() if isinstance(mod, torch.nn.BatchNorm2d))
    seen = []
    hook = first.register_forward_hook(lambda mod, i, o: seen.append(i[0]))
    m(x)
    hook.remove()
    feat = seen[0]  # (N, C, H, W): the first BatchNorm's input on the target images
    adabn(m, images, batch_size=len(images))
    after = m.state_dict()
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    assert changed and all(k.endswith(("running_mean", "running_var", "num_batches_tracked")) for k in changed)
    assert not m.training and first.momentum == 0.1  # restored
    torch.testing.assert_close(first.running_mean, feat.mean((0, 2, 3)), atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(first.running_var, feat.var((0, 2, 3), unbiased=True), atol=1e-4, rtol=1e-3)


def test_adapt_writes_a_model_that_loads_and_scores_before_and_after(tmp_path):
    """`adapt --method adabn` on the target images: OUT/best.safetensors loads and predicts as the
    adapted model; with a labelled set both scores are in OUT/adapt.json; `both` fine-tunes the
    AdaBN model on its own labels (one epoch) and keeps both files."""
    root = make_seg_set(tmp_path / "set")
    m = seg_model()
    images = darker_images(tmp_path)
    path = cvapps.save(m, tmp_path / "day.safetensors")
    val = {"images": str(root / "val"), "masks": str(root / "valannot")}
    r = cvapps.adapt(str(path), [str(tmp_path / "dusk")], out=str(tmp_path / "a"), method="adabn", val=None,
                     val_options=val, console=QUIET)
    assert r["images"] == 5 and "before" not in r
    adapted = cvapps.load(tmp_path / "a" / "best.safetensors")
    own = adabn(seg_model(), images)
    for k, v in own.state_dict().items():
        torch.testing.assert_close(adapted.state_dict()[k], v)
    r = cvapps.adapt(str(path), images, out=str(tmp_path / "b"), method="both", val=str(root / "val"),
                     val_options={"masks": str(root / "valannot"), "images": str(root / "val")}, epochs=1,
                     batch_size=4, console=QUIET)
    assert {"before", "after_adabn", "after"} <= set(r) and 0 <= r["after"]["mIoU"] <= 1
    assert (tmp_path / "b" / "adabn.safetensors").is_file() and (tmp_path / "b" / "best.safetensors").is_file()
    assert json.loads((tmp_path / "b" / "adapt.json").read_text())["method"] == "both"


def test_adapt_refuses_what_it_cannot_adapt(tmp_path, capsys):
    images = darker_images(tmp_path, 2)
    m = seg_model()
    m.config["fixed_norms"] = True
    with pytest.raises(ConfigError, match="folded"):
        adabn(m, images)
    with pytest.raises(ConfigError, match="no BatchNorm"):
        adabn(_no_norms(), images)
    path = cvapps.save(seg_model(), tmp_path / "m.safetensors")
    code, _, err = run_cli(capsys, "adapt", tmp_path / "dusk", "--model", path, "--method", "adabm",
                           "--out", tmp_path / "o")
    assert code == 2 and "adabm" in err and "adabn" in err
    code, out, err = run_cli(capsys, "adapt", tmp_path / "dusk", "--model", path, "--out", tmp_path / "o")
    assert code == 0, err
    assert json.loads(out)["method"] == "adabn" and (tmp_path / "o" / "best.safetensors").is_file()


def _no_norms():
    m = seg_model()
    for name, mod in list(m.named_modules()):
        for child_name, child in list(mod.named_children()):
            if isinstance(child, torch.nn.BatchNorm2d):
                setattr(mod, child_name, torch.nn.Identity())
    return m
