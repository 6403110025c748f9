"""``cvapps pretrain``: a backbone learnt from unlabelled images (self-supervised), written as a
backbone weights file (OUT/backbone.safetensors) that ``train --weights FILE`` and
``create_model(weights=FILE)`` take for every task, like a named ImageNet backbone.

The methods' losses, heads, momentum updates and view augmentations are lightly's (MIT):
- ``simclr`` (Chen et al. 2020): two views of each image; the pooled backbone features through
  a 2-layer projection head; NT-Xent (temperature 0.5) pulls an image's views together and
  pushes the batch's other images away.
- ``byol`` (Grill et al. 2020): an online network (backbone, projector, predictor) predicts a
  momentum target's projection of the other view (negative cosine similarity, both ways); the
  target is the online network's exponential average (momentum 0.99 -> 1, cosine). No
  negatives: small batches work.
- ``dino`` (Caron et al. 2021): a student matches a momentum teacher's sharpened, centred
  distribution over 2048 prototypes (DINO head, teacher temperature warmed up 0.04 -> 0.07);
  the two global views only (no local crops: their smaller inputs would need a second pass).

The views are each method's own (lightly.transforms: random resized crop, flip, colour jitter,
grey, blur, solarisation), normalised with the starting weights' statistics (ImageNet's
without weights). ``weights``: start from pretrained weights (in-domain continued
pretraining). Progress per epoch; OUT/checkpoint.pt resumes exactly (each sample's views are
seeded by epoch and index; --resume); runs under torchrun (DDP) like ``train``."""

from __future__ import annotations

import copy
import json
import math
import time
from pathlib import Path

import torch
from PIL import Image
from rich.console import Console
from safetensors.torch import save_file
from torch import nn

from .data.dataset import TaskDataset
from .data.io import atomic_write, read_image
from .data.loader import make_loader
from .data.sources import image_files
from .data.unlabelled import Unlabelled
from .errors import ConfigError
from .loading import create_model
from .progress import Phase
from .runs import RunLock
from .training import distributed
from .training.checkpoint import load_checkpoint, save_checkpoint
from .training.trainer import seed_everything
from .weights import BACKBONE_FILE_KEY

METHODS = ("simclr", "byol", "dino")


def _lightly():
    try:
        import lightly  # noqa: F401
    except ImportError:
        raise ConfigError("cvapps pretrain needs lightly", hint="pip install 'cvapps[ssl]' and then "
                          "pip install --no-deps lightly==1.6.0 (as `make` does: its CLI's hydra pin clashes "
                          "with label-studio's)") from None


class Views(TaskDataset):
    """Items: (views (V, 3, S, S) float32 normalised, 0): the method's augmented views of one
    image, seeded per sample (the global RNGs are left alone)."""

    def __init__(self, paths: list[str], transform, skip_bad: bool = False):
        super().__init__(Unlabelled(list(paths), []), skip_bad)
        self.transform, self.seed = transform, 0

    def reseed(self, seed: int) -> None:
        self.seed = seed

    def load(self, i: int):
        img = Image.fromarray(read_image(self.data.paths[i]))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            views = self.transform(img)
        return torch.stack(list(views)[:2]), torch.zeros(())


class SelfSupervised(nn.Module):
    """backbone + the method's heads (and momentum copies); forward(views (B, 2, 3, S, S)) ->
    loss; ``momentum_update(step, total)`` after each optimiser step."""

    def __init__(self, backbone: nn.Module, method: str, epochs: int):
        super().__init__()
        from lightly.loss import DINOLoss, NegativeCosineSimilarity, NTXentLoss
        from lightly.models.modules import (BYOLPredictionHead, BYOLProjectionHead, DINOProjectionHead,
                                            SimCLRProjectionHead)

        self.backbone, self.method = backbone, method
        c = backbone.feature_info[-1].channels
        if method == "simclr":
            self.head, self.criterion = SimCLRProjectionHead(c, 512, 128), NTXentLoss(temperature=0.5)
        elif method == "byol":
            self.head = nn.Sequential(BYOLProjectionHead(c, 1024, 256))
            self.predictor, self.criterion = BYOLPredictionHead(256, 1024, 256), NegativeCosineSimilarity()
        else:
            self.head = DINOProjectionHead(c, 512, 64, 2048, freeze_last_layer=1)
            self.criterion = DINOLoss(output_dim=2048, warmup_teacher_temp_epochs=max(1, epochs // 3))
        if method in ("byol", "dino"):
            self.target_backbone = copy.deepcopy(backbone)
            if method == "dino":  # its weight-normed last layer cannot be deep-copied: a twin, same tensors
                self.target_head = DINOProjectionHead(c, 512, 64, 2048, freeze_last_layer=1)
                self.target_head.load_state_dict(self.head.state_dict())
            else:
                self.target_head = copy.deepcopy(self.head)
            for p in [*self.target_backbone.parameters(), *self.target_head.parameters()]:
                p.requires_grad_(False)
        self.epoch = 0

    def embed(self, x: torch.Tensor, target: bool = False) -> torch.Tensor:
        bb, head = (self.target_backbone, self.target_head) if target else (self.backbone, self.head)
        return head(bb(x)[-1].mean((2, 3)))

    def forward(self, views: torch.Tensor) -> torch.Tensor:
        a, b = views[:, 0], views[:, 1]
        if self.method == "simclr":
            return self.criterion(self.embed(a), self.embed(b))
        if self.method == "byol":
            pa, pb = self.predictor(self.embed(a)), self.predictor(self.embed(b))
            with torch.no_grad():
                ta, tb = self.embed(a, True), self.embed(b, True)
            return 0.5 * (self.criterion(pa, tb) + self.criterion(pb, ta))
        with torch.no_grad():
            teacher = [self.embed(a, True), self.embed(b, True)]
        return self.criterion(teacher, [self.embed(a), self.embed(b)], epoch=self.epoch)

    @torch.no_grad()
    def momentum_update(self, step: int, total: int) -> None:
        if self.method == "simclr":
            return
        from lightly.models.utils import update_momentum
        from lightly.utils.scheduler import cosine_schedule

        m = cosine_schedule(step, total, 0.99 if self.method == "byol" else 0.996, 1.0)
        update_momentum(self.backbone, self.target_backbone, m)
        update_momentum(self.head, self.target_head, m)


def transform_for(method: str, size: int, mean, std):
    from lightly.transforms import BYOLTransform, DINOTransform, SimCLRTransform
    from lightly.transforms.byol_transform import BYOLView1Transform, BYOLView2Transform

    norm = {"mean": list(mean), "std": list(std)}
    if method == "simclr":
        return SimCLRTransform(input_size=size, normalize=norm)
    if method == "byol":
        return BYOLTransform(BYOLView1Transform(input_size=size, normalize=norm),
                             BYOLView2Transform(input_size=size, normalize=norm))
    return DINOTransform(global_crop_size=size, n_local_views=0, normalize=norm)


def pretrain(data, *, backbone: str = "mobilenet_v2", method: str = "simclr", weights: str | None = None,
             img_size: int = 96, epochs: int = 20, batch_size: int = 64, lr: float | None = None,
             weight_decay: float = 1e-4, out: str = "runs/pretrain", resume: bool = False, overwrite: bool = False,
             seed: int = 0, workers: int | None = None, device: str = "cpu", skip_bad: bool = False,
             console: Console | None = None) -> dict:
    """Learn ``backbone`` (a name; ``weights`` to start from) from the images of ``data``
    (folders, globs, lists) by ``method``; writes OUT/backbone.safetensors (the backbone file
    ``train --weights`` takes), OUT/checkpoint.pt, OUT/metrics.jsonl. ``lr``: AdamW's
    (default 1e-3 x batch / 256, at least 1e-4). Returns {"backbone_file", "epochs_run", "loss", ...}."""
    _lightly()
    console = console or Console(stderr=True, markup=False)
    if method not in METHODS:
        raise ConfigError(f"--method {method!r} is not one of {', '.join(METHODS)}")
    paths = [str(p) for p in image_files(data)]
    if len(paths) < 2:
        raise ConfigError(f"pretraining needs images: {len(paths)} found", path=str(data))
    info, device = distributed.setup(device)
    if batch_size % info.world:
        raise ConfigError(f"--batch-size {batch_size} must divide by the {info.world} processes")
    out_dir = Path(out)
    lock = RunLock(out_dir, "pretraining run") if info.main else None
    if lock is not None:
        lock.acquire()
    finished = False
    try:
        if (out_dir / "backbone.safetensors").exists() and not (resume or overwrite):
            raise ConfigError(f"{out_dir} already holds a pretrained backbone", path=str(out_dir),
                              hint="pass --resume to continue it, --overwrite to replace it, or another --out")
        seed_everything(seed)
        base = create_model("classify", backbone, weights, labels=["_"], img_size=img_size)
        mean, std = base.config["preprocessing"]["mean"], base.config["preprocessing"]["std"]
        module = SelfSupervised(base.backbone, method, epochs).to(device)
        ds = Views(paths, transform_for(method, img_size, mean, std), skip_bad)
        loader = make_loader(ds, batch_size // info.world, True, seed * 1000, info.rank, info.world, workers,
                             torch.device(device))
        lr = lr or max(1e-4, 1e-3 * batch_size / 256)
        opt = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=lr, weight_decay=weight_decay)
        steps = max(1, len(loader))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(1.0, s / (epochs * steps)))))
        records, start = [], 0
        if resume:
            state = load_checkpoint(out_dir / "checkpoint.pt")
            if state.get("method") != method or state.get("backbone") != backbone:
                raise ConfigError(f"the checkpoint is {state.get('method')} on {state.get('backbone')}, this run "
                                  f"{method} on {backbone}", path=str(out_dir / "checkpoint.pt"))
            module.load_state_dict(state["module"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            start, records = state["epoch"] + 1, [json.loads(r) for r in state["records"]]
            console.print(f"resumed from {out_dir / 'checkpoint.pt'} at epoch {start}")
        console.print(f"pretraining {backbone} by {method} on {len(paths)} images, {img_size} px, batch {batch_size}",
                      highlight=False, markup=False)
        step_fn = nn.parallel.DistributedDataParallel(module) if info.enabled else module
        out_dir.mkdir(parents=True, exist_ok=True)
        for epoch in range(start, epochs):
            seed_everything(seed * 1000 + epoch)
            loader.sampler.set_epoch(epoch)
            module.train()
            module.epoch = epoch
            t0, total, n = time.time(), 0.0, 0
            with Phase(console if info.main else Console(quiet=True), f"epoch {epoch + 1}/{epochs}", len(ds)) as bar:
                for k, (views, _) in enumerate(loader):
                    loss = step_fn(views.to(device))
                    if not torch.isfinite(loss):
                        raise ConfigError(f"the {method} loss became {loss.item()} at epoch {epoch + 1}",
                                          hint="lower --lr")
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    if method == "dino":  # DINO keeps its last layer still for the first epoch
                        module.head.cancel_last_layer_gradients(epoch)
                    opt.step()
                    sched.step()
                    module.momentum_update(epoch * steps + k, epochs * steps)
                    total, n = total + loss.item() * len(views), n + len(views)
                    bar.advance(len(views))
            total, n = distributed.sum_all(info, total, n)
            records.append({"epoch": epoch + 1, "loss": total / max(1, n), "lr": sched.get_last_lr()[0],
                            "train_time_s": round(time.time() - t0, 2)})
            console.print(f"epoch {epoch + 1}: loss={records[-1]['loss']:.4f}", highlight=False, markup=False)
            if info.main:
                save_backbone(module.backbone, backbone, mean, std, method, out_dir / "backbone.safetensors")
                (out_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
                save_checkpoint(out_dir / "checkpoint.pt", module=module.state_dict(), optimizer=opt.state_dict(),
                                scheduler=sched.state_dict(), epoch=epoch, method=method, backbone=backbone,
                                records=[json.dumps(r) for r in records])
            distributed.barrier(info)
        finished = True
        return {"backbone_file": str(out_dir / "backbone.safetensors"), "method": method, "backbone": backbone,
                "images": len(paths), "epochs_run": len(records), "loss": records[-1]["loss"] if records else None,
                "out_dir": str(out_dir), "rank": info.rank}
    finally:
        if lock is not None:
            lock.release()
        distributed.teardown(info, finished)


def save_backbone(backbone: nn.Module, name: str, mean, std, method: str, path: Path) -> Path:
    """A backbone weights file: the backbone's tensors under ``backbone.`` (as in a task model)
    and what ``train --weights FILE`` needs to use it (cvapps.weights.file_spec)."""
    tensors = {f"backbone.{k}": v.detach().cpu().contiguous().clone() for k, v in backbone.state_dict().items()}
    meta = {BACKBONE_FILE_KEY: json.dumps({"backbone": name, "mean": list(mean), "std": list(std),
                                           "made_by": f"cvapps pretrain --method {method}"})}
    atomic_write(Path(path), lambda tmp: save_file(tensors, str(tmp), metadata=meta))
    return Path(path)
