"""TaskModel: backbone + head with one contract for every task, the Prediction base, and
the task registry (one TaskSpec per task, registered beside its model class)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from torch import nn

from ..backbones import Backbone, build_backbone
from ..data.transforms import size_hw
from ..errors import ConfigError, WeightsError
from ..options import Options
from ..registry import Registry
from .batch import predict_inputs, stream

if TYPE_CHECKING:
    from .spec import TaskSpec

TASKS: Registry["TaskSpec"] = Registry("task")
NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.InstanceNorm2d)
MAX_INPUT_SIDE = 8192  # pixels a network input may have per side (a config asking more is refused)


def _finite_numbers(v, n: int) -> bool:
    return isinstance(v, (list, tuple)) and len(v) == n and all(
        isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v)


def register_task(name: str, spec: type):
    """Class decorator: ``@register_task("detect", DetectionSpec)`` names the model's task and
    registers its spec (what the API, CLI, active learning and export ask about the task)."""

    def deco(cls):
        cls.task = name
        cls.spec = spec(name, cls)
        TASKS.register(name, cls.spec)
        return cls

    return deco


def model_class(task: str) -> type["TaskModel"]:
    return TASKS.get(task).model


_MIXED: dict[tuple[type, type], type] = {}


def mixed_class(mixin: type, base: type) -> type:
    """``base`` (a task's model class) with ``mixin``'s behaviour in front — a single-stage model
    of a top-down task (the face detector, MultiPose) stays that task's model; one class per pair."""
    if (mixin, base) not in _MIXED:
        _MIXED[mixin, base] = type(mixin.__name__.removesuffix("Model") + base.__name__, (mixin, base), {})
    return _MIXED[mixin, base]


class Prediction:
    """Base for typed predictions; coordinates are in the original image's pixels.
    ``draw_order``: where a bundle draws this task (dense overlays first, labels last)."""

    draw_order: ClassVar[int] = 5

    def to_dict(self) -> list | dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def draw(self, image: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def summary(self) -> str:  # pragma: no cover - abstract
        """One short line for the console."""
        raise NotImplementedError

    def agreement(self, other: "Prediction") -> tuple[int, int]:  # pragma: no cover - abstract
        """(agreeing, compared): the parts of this prediction that ``other`` (the same image run
        by another runtime or precision) gives the same — top-1 answers, boxes, points, pixels.
        cvapps.runtimes checks it before it lets a faster precision be the default."""
        raise NotImplementedError

    def to_labels(self) -> dict[str, list]:  # pragma: no cover - abstract
        """This prediction as a labelling tool's editable pre-annotation: {"choices" | "boxes"
        | "polygons" | "masks" | "pointsets": items of cvapps.data.labels} (what a human checks)."""
        raise NotImplementedError

    def point_names(self) -> list[str]:
        """The names of the points of ``to_labels``'s point sets, in order (none by default)."""
        return []

    def resized(self, sx: float, sy: float) -> "Prediction":  # pragma: no cover - abstract
        """The same prediction for the image scaled by (sx, sy) (contact-sheet tiles)."""
        raise NotImplementedError

    def draw_base(self, image: np.ndarray) -> np.ndarray:
        """What lies under other tasks' drawings in a bundle (default: everything)."""
        return self.draw(image)

    def draw_top(self, image: np.ndarray) -> np.ndarray:
        """What stays on top of every task's drawing in a bundle (e.g. a legend)."""
        return image

    def track_boxes(self):
        """What video tracking can follow in this frame (cvapps.tracking.Trackable), or None."""
        return None

    def with_tracks(self, keep: np.ndarray, ids: np.ndarray, smooth=None) -> "Prediction":
        """Only the tracked objects ``keep`` (indices into track_boxes()), with their track
        ``ids``; ``smooth(values (N, ...), scales (N,))`` smooths per-object values by track."""
        return self


class TaskModel(nn.Module):
    """``config`` is the JSON-safe description saved in model files:
    {"task", "backbone", "head": {...}, "labels": [...], "preprocessing": {...}, "weights": name|None}.
    """

    task: ClassVar[str] = ""
    spec: ClassVar["TaskSpec"]
    whole_image: ClassVar[bool] = True  # one input per image (bundles); top-down tasks crop instances
    needs_pool_indices: ClassVar[bool] = False
    supports_feature_cache: ClassVar[bool] = False  # frozen-backbone feature caching
    has_eval_loss: ClassVar[bool] = True  # loss(raw, targets) works on eval-mode outputs

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
        cls.check_config(config)
        config = cls.normalize_config(config)
        cls.check_outputs(config)
        backbone = build_backbone(config["backbone"], **config.get("backbone_options", {}))
        return cls(config, backbone, cls.build_head(config, backbone))

    @classmethod
    def check_config(cls, config: dict) -> None:
        """Refuse, in one line, a config no working model has (before anything is built or
        allocated): preprocessing mean / std three finite numbers with std non-zero, input
        size one or two positive integers up to MAX_INPUT_SIDE, labels a list of strings."""
        pre = config.get("preprocessing")
        if not isinstance(pre, dict):
            raise ConfigError("the config has no preprocessing")
        for key in ("mean", "std"):
            if not _finite_numbers(pre.get(key), 3):
                raise ConfigError(f"preprocessing {key} must be three finite numbers, got {pre.get(key)!r}")
        if any(abs(v) < 1e-12 for v in pre["std"]):
            raise ConfigError(f"preprocessing std {pre['std']} holds 0: every input would divide by zero")
        size = pre.get("input_size")
        sides = size if isinstance(size, (list, tuple)) else [size]
        if not (len(sides) in (1, 2) and all(isinstance(v, int) and not isinstance(v, bool) for v in sides)
                and all(1 <= v <= MAX_INPUT_SIDE for v in sides)):
            raise ConfigError(f"input size {size!r} must be one or two integers from 1 to {MAX_INPUT_SIDE}")
        labels = config.get("labels")
        if labels is not None and not (isinstance(labels, list) and all(isinstance(x, str) for x in labels)):
            raise ConfigError(f"labels must be a list of names, got {str(labels)[:80]}")

    @classmethod
    def check_outputs(cls, config: dict) -> None:
        """Refuse a (normalised) config whose labels do not name the head's outputs (tasks
        with one output per label override this)."""

    @classmethod
    def head_options(cls, kind: str | None) -> type[Options]:
        """The typed options of head ``kind`` (None: the task's default kind)."""
        raise NotImplementedError  # pragma: no cover

    @classmethod
    def normalize_config(cls, config: dict) -> dict:
        """The config with its head options parsed and completed: the one place they are
        validated (unknown names, values outside their choices or ranges)."""
        head = config.get("head") or {}
        return {**config, "head": cls.head_options(head.get("kind")).parse(head).to_dict()}

    @classmethod
    def build_head(cls, config: dict, backbone: Backbone) -> nn.Module:  # pragma: no cover
        raise NotImplementedError

    @classmethod
    def with_input_size(cls, config: dict, size: int | list[int]) -> dict:
        """A copy of ``config`` whose preprocessing takes ``size`` (S or [H, W]) inputs."""
        pre = {**config["preprocessing"], "input_size": list(size) if isinstance(size, (list, tuple)) else int(size)}
        return {**config, "preprocessing": pre}

    @property
    def labels(self) -> list[str]:
        return list(self.config.get("labels") or [])

    @property
    def hcfg(self) -> dict:
        """The head's options (parsed and completed by ``normalize_config``)."""
        return self.config["head"]

    @property
    def input_hw(self) -> tuple[int, int]:
        """(H, W) the network takes."""
        return size_hw(self.config["preprocessing"]["input_size"])

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def export_blocker(self) -> str | None:
        """Why this model cannot be exported to ONNX / TorchScript (None: it can)."""
        return None

    def runtime_blocker(self, post: dict) -> str | None:
        """Why predicting with options ``post`` needs PyTorch rather than the model's exported
        graph (None: the graph can run them), e.g. inputs of another size than exported."""
        return self.export_blocker

    def load_pretrained(self, state: dict[str, torch.Tensor], source_labels: list[str] | None = None,
                        name: str = "weights") -> dict:
        """Start from pretrained ``state``: every backbone tensor must fit; head tensors load
        where their shapes agree (``adapt_head`` lets a task map class rows by name). Returns
        {"backbone": n, "head": n} loaded."""
        own = self.state_dict()
        bb = {k: v for k, v in state.items() if k.startswith("backbone.")}
        want = {k for k in own if k.startswith("backbone.")}
        missing, extra = sorted(want - set(bb)), sorted(set(bb) - want)
        bad = [k for k in bb if k in own and own[k].shape != bb[k].shape]
        if missing or extra or bad:
            raise WeightsError(f"{name} do not fit backbone {self.config['backbone']!r}: missing {missing[:3]}, "
                               f"unexpected {extra[:3]}, shape mismatch {bad[:3]}")
        head = self.adapt_head({k: v for k, v in state.items() if k.startswith("head.")}, source_labels)
        self.load_state_dict({**bb, **head}, strict=False)
        return {"backbone": len(bb), "head": len(head)}

    def adapt_head(self, state: dict[str, torch.Tensor], source_labels: list[str] | None) -> dict:
        """The pretrained head tensors this model can use (default: those of equal shape)."""
        own = self.state_dict()
        return {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}

    @torch.no_grad()
    def fold_batchnorm(self) -> "TaskModel":
        """Inference only, in place: every BatchNorm that follows a conv is folded into the
        conv's weights and bias (one op instead of two; ~13% faster for MobileNet detectors on
        CPU). The model can no longer be trained or saved afterwards: use it on a model
        loaded for prediction."""
        if self.training:
            raise ConfigError("fold_batchnorm is for inference: call model.eval() first")
        for mod in list(self.modules()):
            kids = list(mod.named_children())
            for (_, conv), (name, bn) in zip(kids, kids[1:]):
                if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats:
                    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
                    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
                    conv.weight = nn.Parameter(conv.weight * scale.reshape(-1, 1, 1, 1), requires_grad=False)
                    conv.bias = nn.Parameter((bias - bn.running_mean) * scale + bn.bias, requires_grad=False)
                    setattr(mod, name, nn.Identity())
        self.folded = True
        return self

    folded: bool = False
    fixed_norm_stats: bool = False  # training keeps every norm layer's statistics (--norm-stats fixed)

    def train(self, mode: bool = True) -> "TaskModel":
        """Frozen norm layers (see cvapps.training.freezing) stay in eval mode: their running
        statistics are part of what was frozen. So do all norm layers of a model whose config
        says ``fixed_norms`` (converted from a file with BatchNorm folded into the convs: its
        identity statistics must not become batch statistics; the affine parameters still
        train). A method, not a patched attribute, so copies (``copy.deepcopy``), DDP wrappers
        and reloaded models behave the same."""
        super().train(mode)
        if mode:
            fixed = bool(self.config.get("fixed_norms")) or self.fixed_norm_stats
            for m in self.modules():
                if (fixed or getattr(m, "_cvapps_frozen", False)) and isinstance(m, NORMS):
                    m.eval()
        return self

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

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, D) pooled last backbone feature (core-set selection, embeddings)."""
        return self.forward_features(x)[-1].float().mean((2, 3))

    def infer(self, x: torch.Tensor, **post) -> Any:
        """The inference forward (predict); tasks with test-time options (flip test) override."""
        return self(x)

    def loss(self, raw: Any, targets: Any) -> dict[str, torch.Tensor]:  # pragma: no cover
        raise NotImplementedError

    def postprocess(self, raw: Any, metas: list[dict], **post) -> list[Prediction]:  # pragma: no cover
        raise NotImplementedError

    def uncertainty(self, raw: Any) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    # training hooks -------------------------------------------------------------------
    def keep_classes(self, teacher: "TaskModel", columns: list[int]) -> None:
        """Train with ``teacher`` (frozen, not part of this model's state) supervising the
        classes ``columns`` from its predictions (``--keep-classes``); tasks that support it
        override this and keep the pair in ``self.__dict__["_lwf"]`` (see ``teacher``)."""
        raise ConfigError(f"--keep-classes is not available for {self.task} models")

    @property
    def teacher(self) -> "TaskModel | None":
        """The frozen model supervising training (``keep_classes``), else None. Held outside
        the module tree: not saved, not trained, not moved by ``.to()``."""
        lwf = self.__dict__.get("_lwf")
        return lwf[0] if lwf is not None else None

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
        """An object with ``prepare(image) -> (uint8 input, meta)`` (run in the decode thread)
        and ``normalize(batch_u8) -> float batch``."""
        raise NotImplementedError  # pragma: no cover

    @torch.inference_mode()
    def predict(self, inputs, batch_size: int = 16, precision: str = "fp32", **post) -> list[Prediction]:
        """inputs: paths, RGB arrays (H, W, 3) uint8 (grey (H, W), RGBA and float [0, 1]
        arrays are converted, see cvapps.data.io.as_rgb), or a mix. Returns one Prediction per
        input, in order. Unreadable paths raise DataError. ``post``: the task's options
        (e.g. ``conf`` for detection, ``top_k`` for classification)."""
        return predict_inputs(self, inputs, batch_size, precision, **post)

    def stream(self, sources, batch_size: int = 16, vid_stride: int = 1, precision: str = "fp32",
               track=False, reconnect: int = 0, **post):
        """Like ``predict`` but a generator of cvapps.tasks.batch.FrameResult (source, frame,
        prediction, image), one per image / video frame, with flat memory on long videos
        and live streams (camera indices, rtsp:// / http:// URLs; ``reconnect``: attempts
        when a stream drops). ``track``: True or a cvapps.tracking.TrackingOptions."""
        return stream(self, sources, batch_size, vid_stride, precision, track, reconnect, **post)
