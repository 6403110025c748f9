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
