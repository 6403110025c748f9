"""TaskModel: backbone + head with one contract for every task (see DESIGN.md)."""

from __future__ import annotations

from typing import Any, ClassVar, Sequence

import numpy as np
import torch
from torch import nn

from ..backbones import Backbone, build_backbone
from ..errors import ConfigError
from ..registry import Registry

TASKS: Registry[type["TaskModel"]] = Registry("task")


def register_task(name: str):
    def deco(cls):
        cls.task = name
        TASKS.register(name, cls)
        return cls

    return deco


class Prediction:
    """Base for typed predictions; coordinates are in the original image's pixels."""

    def to_dict(self) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def draw(self, image: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def summary(self) -> str:  # pragma: no cover - abstract
        """One short line for the console."""
        raise NotImplementedError


class TaskModel(nn.Module):
    """``config`` is the JSON-safe description saved in model files:
    {"task", "backbone", "head": {...}, "labels": [...], "preprocessing": {...}, "weights": name|None}.
    """

    task: ClassVar[str] = ""

    def __init__(self, config: dict, backbone: Backbone, head: nn.Module):
        super().__init__()
        self.config = config
        self.backbone = backbone
        self.head = head

    # construction -------------------------------------------------------------------
    @classmethod
    def from_config(cls, config: dict) -> "TaskModel":
        if config.get("task") != cls.task:
            raise ConfigError(f"config is for task {config.get('task')!r}, not {cls.task!r}")
        backbone = build_backbone(config["backbone"])
        return cls(config, backbone, cls.build_head(config, backbone))

    @classmethod
    def build_head(cls, config: dict, backbone: Backbone) -> nn.Module:  # pragma: no cover
        raise NotImplementedError

    @property
    def labels(self) -> list[str]:
        return list(self.config.get("labels") or [])

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def get_head(self) -> nn.Module:
        return self.head

    def reset_head(self, num_classes: int, labels: Sequence[str] | None = None) -> None:
        cfg = dict(self.config)
        cfg["head"] = {**cfg["head"], "num_outputs": num_classes}
        cfg["labels"] = list(labels) if labels is not None else [str(i) for i in range(num_classes)]
        self.config = cfg
        self.head = type(self).build_head(cfg, self.backbone).to(self.device)

    # contract -------------------------------------------------------------------------
    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x: (B, 3, H, W) normalised -> backbone features, strides increasing."""
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> Any:
        return self.forward_head(self.forward_features(x))

    def forward_head(self, feats: list[torch.Tensor]) -> Any:  # pragma: no cover
        raise NotImplementedError

    def forward_from_features(self, feats: list[torch.Tensor], x: torch.Tensor, pools=None) -> Any:
        """The raw output from backbone features computed elsewhere (a bundle's shared pass);
        ``x`` is the input those came from, ``pools`` its max-pool indices when computed."""
        return self.forward_head(feats)

    needs_pool_indices: ClassVar[bool] = False

    def infer(self, x: torch.Tensor, **post) -> Any:
        """The inference forward (predict); tasks with test-time options (flip test) override."""
        return self(x)

    def loss(self, raw: Any, targets: Any) -> dict[str, torch.Tensor]:  # pragma: no cover
        raise NotImplementedError

    def postprocess(self, raw: Any, metas: list[dict]) -> list[Prediction]:  # pragma: no cover
        raise NotImplementedError

    def uncertainty(self, raw: Any) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    # training hooks -------------------------------------------------------------------
    supports_feature_cache: ClassVar[bool] = False  # frozen-backbone feature caching
    has_eval_loss: ClassVar[bool] = True  # loss(raw, targets) works on eval-mode outputs

    def training_step(self, x: torch.Tensor, targets: Any) -> dict[str, torch.Tensor]:
        """Loss dict for one batch; two-stage models whose forward needs targets override it."""
        return self.loss(self(x), targets)

    def make_evaluator(self, ds) -> Any:  # pragma: no cover
        """An object with ``add(raw, targets)`` and ``compute() -> dict`` for this task."""
        raise NotImplementedError

    def primary_metric(self) -> tuple[str, str]:  # pragma: no cover
        """(metric key, "max" | "min") for best-model selection and early stopping."""
        raise NotImplementedError

    def preprocessor(self):
        """Callable: RGB uint8 (H, W, 3) -> ((3, S, S) float tensor, meta dict)."""
        from ..data.transforms import EvalTransform

        return EvalTransform.from_config(self.config["preprocessing"])

    @torch.inference_mode()
    def predict(self, inputs, batch_size: int = 16, **kwargs) -> list[Prediction]:
        """inputs: paths, numpy RGB arrays (H, W, 3) uint8, or a mix. Returns one
        Prediction per input, in order. Unreadable paths raise DataError."""
        from ..inference.runner import predict_arrays
        from ..data.io import read_image

        if isinstance(inputs, (str, np.ndarray)) or hasattr(inputs, "__fspath__"):
            inputs = [inputs]
        arrays = [x if isinstance(x, np.ndarray) else read_image(x) for x in inputs]
        return predict_arrays(self, arrays, batch_size=batch_size, **kwargs)
