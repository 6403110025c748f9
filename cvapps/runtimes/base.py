"""What every runtime provides: the ``Runtime`` entry of the registry, and ``GraphModel``, a
model compiled for a runtime other than PyTorch that the predict pipeline, the stream loop,
select, serve, benchmark and the helper models of a pipeline run like a TaskModel.

A GraphModel runs the network (``__call__``: (B, 3, H, W) float32 -> the task's Raw outputs);
everything around it — preprocessing, postprocessing, drawing, the task's inference logic —
comes from a TaskModel rebuilt from the graph's config (its weights are never used)."""

from __future__ import annotations

import importlib
import importlib.util
import json
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from ..errors import ConfigError, DataError
from ..exporting import META_CONFIG, META_NMS, META_OUTPUTS, META_RAW
from ..registry import Registry
from ..tasks import model_class
from ..tasks.batch import predict_inputs

class Runtime:
    """One way of running a model. Subclasses set the class attributes and override the
    methods their runtime supports; ``register`` puts an instance into RUNTIMES."""

    name: ClassVar[str] = ""
    package: ClassVar[str | None] = None  # the import that must exist (None: always there)
    extra: ClassVar[str] = ""  # the pip extra that installs it
    precisions: ClassVar[tuple[str, ...]] = ("fp32",)
    suffixes: ClassVar[tuple[str, ...]] = ()  # model files it owns (".onnx", ".xml"): "auto" loads them on it
    reads: ClassVar[tuple[str, ...]] = ()  # other runtimes' files it also runs when named
    formats: ClassVar[tuple[str, ...]] = ()  # `export --format` names of the files it writes (``write``)
    write_precisions: ClassVar[tuple[str, ...]] = ("fp32",)  # `export --precision` of those files
    auto_rank: ClassVar[int] = 0  # among equals, "auto" prefers the higher (a faster default runtime)

    def missing(self) -> str | None:
        """Why this runtime cannot run here (package not installed), or None."""
        if self.package and importlib.util.find_spec(self.package) is None:
            return f"the {self.name} runtime needs the [{self.extra}] extra (pip install 'cvapps[{self.extra}]')"
        return None

    def precisions_here(self, device: str = "cpu") -> tuple[str, ...]:
        """The precisions this runtime runs on this machine's ``device``."""
        return self.precisions

    def runs_on(self, device: str) -> bool:
        return str(device) == "cpu"

    def check(self, device: str, precision: str) -> None:
        """One line when this runtime cannot run ``precision`` on ``device`` here."""
        reason = self.missing()
        if reason:
            raise ConfigError(reason)
        if not self.runs_on(device):
            raise ConfigError(f"--backend {self.name} does not run on --device {device}")
        have = self.precisions_here(device)
        if precision not in have:
            raise ConfigError(f"--backend {self.name} runs --precision {' | '.join(have)} on this machine, "
                              f"not {precision}")

    def build(self, model, precision: str, device: str, threads: int | None, console, calib=None):
        """``model`` (a TaskModel, batch norm folded) ready to run here at ``precision``."""
        raise NotImplementedError  # pragma: no cover

    def write(self, model, out: Path, dynamic_batch: bool = False, img_size=None, nms=None,
              precision: str = "fp32") -> Path:
        """``model`` as this runtime's own file format at ``out`` (``precision`` one of ``write_precisions``)."""
        raise NotImplementedError  # pragma: no cover

    def load(self, path: Path, device: str, threads: int | None, precision: str = "fp32"):
        """A model file of one of ``suffixes`` as a GraphModel."""
        raise ConfigError(f"the {self.name} runtime loads no model files")  # pragma: no cover


RUNTIMES: Registry = Registry("runtime")


def register(cls: type[Runtime]) -> type[Runtime]:
    """Class decorator: one instance of ``cls`` under ``cls.name`` (a second name is a loud error)."""
    RUNTIMES.register(cls.name, cls())
    return cls


class GraphModel:
    """A compiled graph with a cvapps config, run through the predict pipeline. Subclasses set
    ``backend`` and implement ``run`` (arrays in, arrays out)."""

    backend: ClassVar[str] = ""
    memory_format = torch.contiguous_format  # what the graph reads (NCHW): batches made so need no copy
    # evaluated by its metrics alone: a loss may need raw outputs predict does not (MoveNet's maps)
    has_eval_loss = False
    precision = "fp32"

    def __init__(self, meta: dict[str, str], path: Path | None, fixed_batch: int | None = None):
        """``meta``: the graph file's cvapps metadata (config, output names, Raw type)."""
        if META_NMS in meta:
            raise DataError("this graph ends in NMS (final boxes, for other runtimes); cvapps predicts with the "
                            "raw-output export", path=str(path), hint="export again without --nms for cvapps")
        if META_CONFIG not in meta:
            raise DataError("model file has no cvapps metadata", path=str(path),
                            hint="export it with `cvapps export --format onnx`")
        config, names, raw_type = json.loads(meta[META_CONFIG]), json.loads(meta[META_OUTPUTS]), meta[META_RAW]
        self.config, self.names, self.path, self.fixed_batch = config, names, path, fixed_batch
        module, _, cls = raw_type.rpartition(".")
        if not module.startswith("cvapps."):
            raise DataError(f"unexpected raw type {raw_type!r}", path=str(path))
        self.raw_type = getattr(importlib.import_module(module), cls)
        self.task_model = model_class(config["task"]).from_config(config).eval()

    # what the pipeline reads of a model: the task model's, named here (no attribute falls through)
    task = property(lambda self: self.task_model.task)
    spec = property(lambda self: self.task_model.spec)
    labels = property(lambda self: self.task_model.labels)
    schema = property(lambda self: self.task_model.schema)
    hcfg = property(lambda self: self.task_model.hcfg)
    head = property(lambda self: self.task_model.head)
    kind = property(lambda self: self.task_model.kind)
    perm = property(lambda self: self.task_model.perm)
    is_bundle = False
    finds_instances = property(lambda self: getattr(self.task_model, "finds_instances", False))
    export_blocker = property(lambda self: self.task_model.export_blocker)

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def eval(self) -> "GraphModel":
        return self

    def runtime_blocker(self, post: dict) -> str | None:
        return self.task_model.runtime_blocker(post)

    def uncertainty(self, raw, *args, **kw):
        return self.task_model.uncertainty(raw, *args, **kw)

    def primary_metric(self):
        return self.task_model.primary_metric()

    def make_evaluator(self, ds):
        return self.task_model.make_evaluator(ds)

    def run_arrays(self, x: np.ndarray) -> list[np.ndarray]:
        """x (B, 3, H, W) float32 -> the raw output arrays, in ``names`` order."""
        raise NotImplementedError  # pragma: no cover

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        """``run_arrays``, in chunks of the graph's batch when it has a fixed one."""
        if self.fixed_batch is None or x.shape[0] == self.fixed_batch:
            return self.run_arrays(x)
        n, b = x.shape[0], self.fixed_batch
        parts = []
        for i in range(0, n, b):
            chunk = x[i : i + b]
            pad = b - len(chunk)
            if pad:
                chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), chunk.dtype)])
            parts.append(self.run_arrays(chunk))
        return [parts[0][j] if name == "anchors" else np.concatenate([p[j] for p in parts])[:n]
                for j, name in enumerate(self.names)]

    def __call__(self, x: torch.Tensor):
        arrays = self.run(x.detach().float().contiguous().cpu().numpy())
        return self.raw_type(**{n: torch.from_numpy(np.ascontiguousarray(a)) for n, a in zip(self.names, arrays)})

    def infer(self, x: torch.Tensor, **post):
        # the task's own inference logic (e.g. keypoint flip test), with self(x) running the graph
        return type(self.task_model).infer(self, x, **post)

    def preprocessor(self, *args, **kwargs):
        return self.task_model.preprocessor(*args, **kwargs)

    def predict(self, inputs, batch_size: int = 16, precision: str = "fp32", **post) -> list:
        """TaskModel.predict on this runtime (box sources call it for their boxes)."""
        return predict_inputs(self, inputs, batch_size, precision, **post)

    def postprocess(self, raw, metas, **post):
        return self.task_model.postprocess(raw, metas, **post)

    def describe(self) -> str:
        return f"{self.backend} {self.precision}"
