"""Several task heads on one backbone pass: a model bundle for multi-task predict.

Models whose backbones have the same architecture and identical weights (heads trained on
the same frozen backbone) and the same preprocessing form one group: per frame the group
runs the backbone once and each head on its features. Other models run on their own."""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import ConfigError
from ..runtime import autocast
from ..tasks.base import Prediction, TaskModel
from ..tasks.batch import memory_format, to_batch


def same_backbone(a: TaskModel, b: TaskModel) -> bool:
    if a.config["backbone"] != b.config["backbone"] or \
            a.config.get("backbone_options") != b.config.get("backbone_options"):
        return False
    sa, sb = a.backbone.state_dict(), b.backbone.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@dataclass
class BundlePrediction(Prediction):
    """One prediction per task, in the bundle's order."""

    parts: dict[str, Prediction]

    def to_dict(self) -> dict:
        return {task: p.to_dict() for task, p in self.parts.items()}

    def point_names(self) -> list[str]:
        return next((p.point_names() for p in self.parts.values() if p.point_names()), [])

    def to_labels(self) -> dict[str, list]:
        out: dict[str, list] = {}
        for p in self.parts.values():
            for kind, items in p.to_labels().items():
                out.setdefault(kind, []).extend(items)
        return out

    def draw(self, image: np.ndarray) -> np.ndarray:
        # dense overlays first, boxes and labels on top, then what must stay readable (legends)
        parts = sorted(self.parts.values(), key=lambda p: p.draw_order)
        for p in parts:
            image = p.draw_base(image)
        for p in parts:
            image = p.draw_top(image)
        return image

    def summary(self) -> str:
        return "; ".join(f"{t}: {p.summary()}" for t, p in self.parts.items())

    def _tracked_part(self) -> str | None:
        return next((t for t, p in self.parts.items() if p.track_boxes() is not None), None)

    def track_boxes(self):
        """The first part with boxes is tracked (e.g. detection beside segmentation)."""
        t = self._tracked_part()
        return self.parts[t].track_boxes() if t is not None else None

    def with_tracks(self, keep, ids, smooth=None) -> "BundlePrediction":
        t = self._tracked_part()
        if t is None:
            return self
        return BundlePrediction({k: (p.with_tracks(keep, ids, smooth) if k == t else p) for k, p in self.parts.items()})

    def save(self, path) -> None:
        for p in self.parts.values():
            if hasattr(p, "save"):
                p.save(path)


class _BundlePre:
    """Prepares each group's input once per image (in the decode thread)."""

    def __init__(self, pres: list):
        self.pres = pres

    def prepare(self, image: np.ndarray, source: str = "", frame: int | None = None):
        done = [p.prepare(image, source, frame) for p in self.pres]
        return [d[0] for d in done], [d[1] for d in done]

    def normalize(self, x):  # pragma: no cover - groups normalise with their own preprocessor
        raise NotImplementedError


class Bundle:
    """``models``: TaskModels of whole-image tasks (one input per image: classify, detect,
    segment; top-down keypoint models crop instances and cannot share a pass)."""

    is_bundle = True

    def __init__(self, models: list[TaskModel]):
        if not models:
            raise ConfigError("a bundle needs at least one model")
        for m in models:
            if not m.whole_image:
                raise ConfigError(f"bundles take whole-image tasks; a {m.task} model crops instances first",
                                  hint=f"run `cvapps predict {m.task}` on its own")
        tasks = [m.task for m in models]
        if len(set(tasks)) != len(tasks):
            raise ConfigError(f"one model per task in a bundle, got {tasks}")
        self.models = [m.eval() for m in models]
        self.groups: list[list[int]] = []
        for i, m in enumerate(self.models):
            for g in self.groups:
                lead = self.models[g[0]]
                if lead.config["preprocessing"] == m.config["preprocessing"] and same_backbone(lead, m):
                    g.append(i)
                    break
            else:
                self.groups.append([i])
        self.task = ",".join(tasks)
        # per group: None (PyTorch) or a callable x -> [raw per model] (e.g. ONNX Runtime, set by the caller)
        self.runners: list = [None] * len(self.groups)
        # which predict options each model's postprocess takes (None: all of them)
        self._post_keys = [None if any(p.kind == p.VAR_KEYWORD for p in ps.values()) else set(ps)
                           for ps in (inspect.signature(m.postprocess).parameters for m in self.models)]

    def describe(self) -> str:
        parts = []
        for g in self.groups:
            names = "+".join(self.models[i].task for i in g)
            bb = self.models[g[0]].config["backbone"]
            parts.append(f"{names} share one {bb} backbone pass" if len(g) > 1 else f"{names} runs its own {bb} pass")
        return "; ".join(parts)

    @property
    def device(self) -> torch.device:
        return self.models[0].device

    @property
    def labels(self) -> list[str]:
        return [label for m in self.models for label in m.labels]

    def eval(self) -> "Bundle":
        return self

    def preprocessor(self) -> _BundlePre:
        return _BundlePre([self.models[g[0]].preprocessor() for g in self.groups])

    def _torch_pass(self, g: list[int], x: torch.Tensor, precision: str) -> list:
        lead = self.models[g[0]]
        with autocast(x.device, precision):
            if any(self.models[i].needs_pool_indices for i in g):
                feats, pools = lead.backbone.forward_with_pool_indices(x)
            else:
                feats, pools = lead.backbone(x), None
            return [(i, self.models[i].forward_from_features(feats, x, pools)) for i in g]

    @torch.inference_mode()
    def run_batch(self, inputs: list, metas: list, precision: str = "fp32", **post) -> list[BundlePrediction]:
        """inputs/metas: per image, a list with one entry per group."""
        preds: list[dict] = [{} for _ in inputs]
        for gi, g in enumerate(self.groups):
            lead = self.models[g[0]]
            x, _ = to_batch(lead.preprocessor(), [u[gi] for u in inputs], lead.device,
                            memory_format(self.runners[gi] if self.runners[gi] is not None else lead))
            gm = [m[gi] for m in metas]
            if self.runners[gi] is not None:
                raws = list(zip(g, self.runners[gi](x)))
            else:
                raws = self._torch_pass(g, x, precision)
            for i, raw in raws:
                m, keys = self.models[i], self._post_keys[i]
                kw = post if keys is None else {k: v for k, v in post.items() if k in keys}
                for b, p in enumerate(m.postprocess(raw, gm, **kw)):
                    preds[b][m.task] = p
        return [BundlePrediction({m.task: d[m.task] for m in self.models}) for d in preds]
