"""New classes without forgetting for a classifier: `cvapps train classify --weights
mobilenet_v2.imagenet1k --keep-classes --negatives PHOTOS`.

The ImageNet MobileNetV2 learns hymenoptera's `ants` and `bees` (new rows: ImageNet's own
classes are `ant` and `bee`). Negatives, as a user would collect them: the first 50 of the 100
voc-detection photos (sorted by name), every 4th CamVid training frame and the face / COCO
photos under keypoints/; the other 50 VOC photos are held out. Models, same recipe (backbone
frozen, head trained):
- original: the ImageNet classifier as it is;
- plain: fine-tuned on ants and bees (a 2-class model; the reference for the new classes);
- keep_classes: ImageNet's 1000 + ants and bees, with the negatives.
Reported: hymenoptera val top-1 (for keep_classes the argmax over all 1002 classes must be the
right one of the two); on the 50 held-out photos, the share called ants or bees and the share
whose top-1 is still the original's ImageNet class (overall argmax, and over the 1000 old
classes alone). Prints one JSON object (also used by distill.py --case forgetting_classify).

    python benchmarks/keep_classes_classify.py [--epochs 5]
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
from pathlib import Path

import torch
from rich.console import Console

sys.path.insert(0, str(Path(__file__).parent))
from _common import data_root, require  # noqa: E402

import cvapps  # noqa: E402
from cvapps.api import map_images  # noqa: E402

WEIGHTS = "mobilenet_v2.imagenet1k"


@torch.no_grad()
def logits(model, paths: list[Path]) -> torch.Tensor:
    """(N, C) logits of ``model`` on the images, through its own eval preprocessing."""
    return map_images(model, paths, lambda x: model(x).logits.float(), "logits", console=Console(file=io.StringIO()))


def run(epochs: int = 5) -> dict:
    root = data_root()
    hym = require(root / "hymenoptera", "hymenoptera")
    voc = sorted((require(root / "voc-detection", "voc-detection") / "images").glob("*.jpg"))
    negatives, held = voc[:50], voc[50:]
    negatives += sorted((root / "camvid" / "train").glob("*.jpg"))[::4] + sorted((root / "keypoints").rglob("*.jpg"))
    val = sorted((hym / "val").rglob("*.jpg"))
    truth = torch.tensor([["ants", "bees"].index(p.parent.name) for p in val])
    original = cvapps.load(WEIGHTS).eval()
    orig_held = logits(original, held).argmax(1)
    recipe = dict(weights=WEIGHTS, freeze="backbone", epochs=epochs, batch_size=32, lr=2e-3, overwrite=True,
                  console=Console(file=io.StringIO()))
    out = {"new_classes": ["ants", "bees"], "negatives": len(negatives), "held_out_photos": len(held),
           "val_images": len(val), "epochs": epochs}
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        (d / "negatives.txt").write_text("".join(f"{p}\n" for p in negatives))
        cvapps.train("classify", str(hym), out=str(d / "plain"), **recipe)
        cvapps.train("classify", str(hym), out=str(d / "kept"), keep_classes=True,
                     negatives=str(d / "negatives.txt"), **recipe)
        plain = cvapps.load(str(d / "plain" / "last.safetensors")).eval()
        kept = cvapps.load(str(d / "kept" / "last.safetensors")).eval()
    new = [kept.labels.index("ants"), kept.labels.index("bees")]
    lp, lk = logits(plain, val), logits(kept, val)
    called = lk.argmax(1)
    out["plain"] = {"val_top1": round(float((lp.argmax(1) == torch.tensor(
        [plain.labels.index(n) for n in ("ants", "bees")])[truth]).float().mean()), 4)}
    held_k = logits(kept, held)
    top = held_k.argmax(1)
    out["keep_classes"] = {
        "val_top1": round(float((called == torch.tensor(new)[truth]).float().mean()), 4),
        "held_out_called_ants_or_bees": round(float(torch.isin(top, torch.tensor(new)).float().mean()), 4),
        "held_out_same_top1_as_original": round(float((top == orig_held).float().mean()), 4),
        "held_out_same_top1_over_old_classes": round(float((held_k[:, :1000].argmax(1) == orig_held)
                                                           .float().mean()), 4),
    }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--epochs", type=int, default=5)
    print(json.dumps(run(ap.parse_args().epochs)))


if __name__ == "__main__":
    main()
