"""A full k x k convolution approximated by a depthwise-separable block (Jaderberg et al. 2014,
"Speeding up convolutional neural networks with low rank expansions"): per input channel the
best rank-1 factorisation (SVD) of its (outputs x taps) kernel slice."""

from __future__ import annotations

import torch


@torch.no_grad()
def separable_from_full(weight: torch.Tensor, bias: torch.Tensor, high: float = 6.0) -> dict[str, torch.Tensor]:
    """weight (O, C, k, k), bias (O,) of a conv whose input lies in [0, ``high``] (after a
    ReLU6) -> the tensors of depthwise k x k (no bias) -> per-channel affine (a BatchNorm at
    identity statistics) -> ReLU6 -> 1x1 conv (with bias) computing the per-channel rank-1
    approximation: "depthwise" (C, 1, k, k), "scale" (C,), "shift" (C,), "pointwise" (O, C, 1, 1),
    "bias" (O,); "error": the relative Frobenius error of the factorisation. The depthwise kernel
    is scaled so its output on [0, high] inputs spans at most [0, high] after the shift: the ReLU6
    between the two convs then changes nothing and the block equals the factorised conv."""
    o, c, kh, kw = weight.shape
    m = weight.float().permute(1, 0, 2, 3).reshape(c, o, kh * kw)  # (C, O, taps)
    u, s, v = torch.linalg.svd(m, full_matrices=False)
    left = u[:, :, 0] * s[:, :1].sqrt()  # (C, O)
    right = v[:, 0, :] * s[:, :1].sqrt()  # (C, taps)
    alpha = 1.0 / right.abs().sum(1).clamp(min=1e-12)  # output range width <= high
    dw = right * alpha[:, None]
    shift = -high * dw.clamp(max=0).sum(1)  # the lowest reachable output -> 0
    pw = (left / alpha[:, None]).t()  # (O, C)
    err = (m - left[:, :, None] * right[:, None, :]).norm() / m.norm().clamp(min=1e-12)
    return {"depthwise": dw.reshape(c, 1, kh, kw), "scale": torch.ones(c), "shift": shift,
            "pointwise": pw.reshape(o, c, 1, 1), "bias": bias.float() - pw @ shift, "error": err}
