"""The last step of every mapping: the converted tensors must be exactly the model's state."""

from __future__ import annotations

import numpy as np
import torch

from ..errors import WeightsError


def complete_state(out: dict, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``out`` (name -> numpy array or tensor) checked against the model's own ``state``: every
    tensor present with the model's shape, nothing extra; BatchNorm counters taken from
    ``state``. Returns float32 tensors for ``load_state_dict(strict=True)``."""
    result = {}
    for k, v in state.items():
        if k.endswith("num_batches_tracked"):
            result[k] = v
            continue
        if k not in out:
            raise WeightsError(f"the conversion gives no tensor for {k}")
        t = out[k] if isinstance(out[k], torch.Tensor) else torch.from_numpy(np.ascontiguousarray(out[k], np.float32))
        t = t.float()
        if t.shape != v.shape:
            raise WeightsError(f"{k}: the model file's tensor is {tuple(t.shape)}, the model's {tuple(v.shape)}")
        result[k] = t
    extra = set(out) - set(state)
    if extra:
        raise WeightsError(f"the conversion made tensors the model does not have: {sorted(extra)[:3]}")
    return result


def by_position(c: dict[str, np.ndarray], state: dict[str, torch.Tensor], order: dict[str, list[str]],
                bn_eps: float = 1e-5, more: dict[str, int] | None = None) -> dict:
    """TFLite weights keyed by op position (cvapps.convert.tflite_file) onto our modules:
    ``order`` lists, per op type, our module for each op in the file's execution order. A
    conv whose next module is a BatchNorm (the file folded it) gets its bias through an
    identity BatchNorm (weight 1, mean 0, var 1 - ``bn_eps``, our BatchNorms' epsilon); PReLU
    slopes go to ``.weight``. ``more``: per op type, how many ops the file has after the listed
    ones that the caller maps another way (by name) or does not keep.
    Returns name -> array, to finish with ``complete_state``."""
    out: dict[str, np.ndarray] = {}
    for op, ours in order.items():
        n = sum(1 for k in c if k.startswith(f"{op}.") and k.endswith(".weight"))
        if n != len(ours) + (more or {}).get(op, 0):
            raise WeightsError(f"the model file has {n} {op} ops, the model {len(ours)}"
                               + (f" (+{more[op]} mapped apart)" if (more or {}).get(op) else ""))
        for i, mod in enumerate(ours):
            w, b = c[f"{op}.{i}.weight"], c.get(f"{op}.{i}.bias")
            have = tuple(state[f"{mod}.weight"].shape) if f"{mod}.weight" in state else None
            if have != w.shape:
                raise WeightsError(f"{op} op {i} has weights {w.shape}, our {mod} {have or 'none'}")
            out[f"{mod}.weight"] = w
            if b is not None:
                out.update(conv_bias(mod, b, state, bn_eps))
    return out


def conv_bias(conv: str, bias: np.ndarray, state: dict[str, torch.Tensor],
              eps: float = 1e-5) -> dict[str, np.ndarray]:
    """The tensors that give our ``conv`` the ``bias`` of a file that folded BatchNorm into
    its convs: the conv's own bias, or — when our layout has a BatchNorm right after the conv
    (``a.b.3`` after ``a.b.2``), to stay a normal fine-tunable module — an identity BatchNorm
    carrying it (weight 1, mean 0, var 1 - eps: exactly y + bias)."""
    parent, idx = conv.rsplit(".", 1)
    bn = f"{parent}.{int(idx) + 1}" if idx.isdigit() else None
    if bn is None or f"{bn}.running_var" not in state:
        return {f"{conv}.bias": bias}
    return {f"{bn}.weight": np.ones_like(bias), f"{bn}.bias": bias, f"{bn}.running_mean": np.zeros_like(bias),
            f"{bn}.running_var": np.full_like(bias, 1 - eps)}
