"""Keypoint machinery shared by facial landmarks and pose: top-down affine crops,
Gaussian heatmap targets, heatmap decoding and flips. Points are (x, y) pixels."""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F


def crop_affine(box: np.ndarray, out_hw: tuple[int, int], margin: float = 1.25, angle: float = 0.0) -> np.ndarray:
    """The (2, 3) matrix mapping image pixels into an ``out_hw`` crop of ``box`` (xyxy).

    The box is grown to the crop's aspect ratio around its centre (never squashed), then
    by ``margin``; the mapping is a scale + translation, so distances scale uniformly, and
    with ``angle`` (radians, the instance's roll in the image) also a rotation about the
    box centre that makes the instance upright in the crop."""
    x1, y1, x2, y2 = (float(v) for v in box)
    h_out, w_out = out_hw
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    w, h = max(x2 - x1, 1e-3), max(y2 - y1, 1e-3)
    aspect = w_out / h_out
    if w > aspect * h:
        h = w / aspect
    else:
        w = h * aspect
    s = w_out / (w * margin)  # output pixels per image pixel
    c, n = s * np.cos(-angle), s * np.sin(-angle)
    # pixel centres: image point (cx, cy) lands on the crop's centre (w_out/2, h_out/2)
    return np.array([[c, -n, w_out / 2 - c * cx + n * cy], [n, c, h_out / 2 - n * cx - c * cy]], np.float64)


def invert_affine(m: np.ndarray) -> np.ndarray:
    """(2, 3) -> (2, 3) inverse of an affine map."""
    full = np.vstack([m, [0, 0, 1]])
    return np.linalg.inv(full)[:2]


def apply_affine(points: np.ndarray | torch.Tensor, m) -> np.ndarray | torch.Tensor:
    """points (..., 2) mapped by m (2, 3) (numpy or torch, same type out)."""
    if isinstance(points, torch.Tensor):
        m = torch.as_tensor(m, dtype=points.dtype, device=points.device)
        return points @ m[:, :2].T + m[:, 2]
    return points @ np.asarray(m)[:, :2].T + np.asarray(m)[:, 2]


def gaussian_heatmaps(points: torch.Tensor, weights: torch.Tensor, hw: tuple[int, int], stride: float,
                      sigma: float) -> torch.Tensor:
    """points (B, K, 2) input pixels, weights (B, K) -> targets (B, K, h, w) in [0, 1],
    peak 1 at each point (sub-pixel centre), zero for weight-0 points."""
    h, w = hw
    ys = torch.arange(h, device=points.device, dtype=torch.float32)
    xs = torch.arange(w, device=points.device, dtype=torch.float32)
    # heatmap cell j covers input pixels [j*stride, (j+1)*stride): its centre is (j + 0.5) * stride
    cx = points[..., 0] / stride - 0.5  # (B, K)
    cy = points[..., 1] / stride - 0.5
    gx = torch.exp(-((xs[None, None] - cx[..., None]) ** 2) / (2 * sigma**2))  # (B, K, w)
    gy = torch.exp(-((ys[None, None] - cy[..., None]) ** 2) / (2 * sigma**2))  # (B, K, h)
    return gy[..., :, None] * gx[..., None, :] * (weights > 0)[..., None, None]


def decode_heatmaps(hm: torch.Tensor, stride: float) -> tuple[torch.Tensor, torch.Tensor]:
    """hm (B, K, h, w) -> (points (B, K, 2) input pixels, scores (B, K) peak values).

    Argmax, then sub-pixel refinement: a second-order (Taylor) step on the log heatmap
    around the peak, which is exact for a Gaussian peak and falls back to no shift at edges."""
    b, k, h, w = hm.shape
    flat = hm.float().reshape(b, k, -1)  # (B, K, h*w)
    scores, idx = flat.max(-1)
    px, py = (idx % w).float(), torch.div(idx, w, rounding_mode="floor").float()
    logh = hm.float().clamp_min(1e-10).log()
    padded = F.pad(logh, (1, 1, 1, 1), mode="replicate")  # (B, K, h+2, w+2)
    ix, iy = px.long() + 1, py.long() + 1

    def at(dy: int, dx: int) -> torch.Tensor:
        lin = ((iy + dy) * (w + 2) + (ix + dx)).reshape(b, k, 1)
        return padded.reshape(b, k, -1).gather(-1, lin)[..., 0]

    c = at(0, 0)
    dx = 0.5 * (at(0, 1) - at(0, -1))
    dy = 0.5 * (at(1, 0) - at(-1, 0))
    dxx = at(0, 1) - 2 * c + at(0, -1)
    dyy = at(1, 0) - 2 * c + at(-1, 0)
    ox = torch.where(dxx < -1e-6, -dx / dxx.clamp(max=-1e-6), torch.zeros_like(dx)).clamp(-0.5, 0.5)
    oy = torch.where(dyy < -1e-6, -dy / dyy.clamp(max=-1e-6), torch.zeros_like(dy)).clamp(-0.5, 0.5)
    pts = torch.stack([(px + ox + 0.5) * stride, (py + oy + 0.5) * stride], -1)
    return pts, scores


def flip_points(points: torch.Tensor | np.ndarray, width: float, perm: list[int]):
    """points (..., K, 2) in an image of ``width`` pixels -> mirrored, left/right swapped."""
    out = points[..., perm, :].clone() if isinstance(points, torch.Tensor) else points[..., perm, :].copy()
    out[..., 0] = width - out[..., 0]
    return out


def flip_heatmaps(hm: torch.Tensor, perm: list[int]) -> torch.Tensor:
    """hm (B, K, h, w) of a mirrored input -> heatmaps for the original (swap + mirror)."""
    return hm[:, perm].flip(-1)


def box_from_points(points: np.ndarray, visible: np.ndarray | None = None) -> np.ndarray:
    """points (K, 2) -> tight xyxy box of the (visible) points."""
    p = points if visible is None or not visible.any() else points[visible]
    return np.array([p[:, 0].min(), p[:, 1].min(), p[:, 0].max(), p[:, 1].max()], np.float64)


def warp(image: np.ndarray, m: np.ndarray, out_hw: tuple[int, int], replicate: bool = False,
         by_index: bool = False) -> np.ndarray:
    """Resample ``image`` through m (2, 3). Point coordinates put pixel centres at +0.5
    (pixel i spans [i, i+1)); OpenCV's matrix works on pixel indices, hence the shift —
    unless ``by_index``: m taken as OpenCV takes it, pixel indices to indices (corner pixel
    centres to corner pixel centres, MediaPipe's crops; the content lands (I - A) (0.5, 0.5)
    off the centre convention). Outside the image: black, or with ``replicate`` the nearest
    edge pixel."""
    a, t = m[:, :2], m[:, 2]
    m_idx = m if by_index else np.concatenate([a, (t + a @ [0.5, 0.5] - 0.5)[:, None]], 1)
    return cv2.warpAffine(image, m_idx, (int(out_hw[1]), int(out_hw[0])), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE if replicate else cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))


MOVENET_DIST_BIAS = 1.8  # cells added to the distances in MoveNet's two weightings


def _grid(h: int, w: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    ys = torch.arange(h, device=device, dtype=torch.float32)
    xs = torch.arange(w, device=device, dtype=torch.float32)
    return ys[:, None].expand(h, w), xs[None, :].expand(h, w)


def movenet_centre_weights(h: int, w: int, device=None) -> torch.Tensor:
    """(h, w) 1 / (distance to the map's centre cell (h//2, w//2) + 1.8): prefers the person
    in the middle of the crop."""
    gy, gx = _grid(h, w, device)
    return 1 / (((gy - h // 2) ** 2 + (gx - w // 2) ** 2).sqrt() + MOVENET_DIST_BIAS)


def _at(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """t (B, C, h, w), idx (B, N) flat cell indices -> (B, C, N) values there."""
    return t.flatten(2).gather(2, idx[:, None, :].expand(-1, t.shape[1], -1))


def decode_movenet(centre: torch.Tensor, regress: torch.Tensor, heatmap: torch.Tensor,
           offset: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """MoveNet's decoding of the head's raw maps (B, 1 | 2K | K | 2K, h, w) -> points (B, K, 2)
    x, y in map cells (continuous), scores (B, K) heatmap probabilities, heatmaps (B, K, h, w)
    probabilities."""
    b, k, h, w = heatmap.shape
    hm = heatmap.float().sigmoid()
    c = centre.float().sigmoid()[:, 0] * movenet_centre_weights(h, w, centre.device)  # (B, h, w)
    ci = c.flatten(1).argmax(1)  # (B,)
    cy, cx = (ci // w).float(), (ci % w).float()
    reg = _at(regress.float(), ci[:, None])[..., 0].view(b, k, 2)  # (B, K, (dy, dx))
    ry, rx = cy[:, None] + reg[..., 0], cx[:, None] + reg[..., 1]  # (B, K)
    gy, gx = _grid(h, w, heatmap.device)
    dist = ((gy - ry[..., None, None]) ** 2 + (gx - rx[..., None, None]) ** 2).sqrt()  # (B, K, h, w)
    ki = (hm / (dist + MOVENET_DIST_BIAS)).flatten(2).argmax(2)  # (B, K)
    ky, kx = (ki // w).float(), (ki % w).float()
    off = offset.float().flatten(2).view(b, k, 2, h * w).gather(3, ki[:, :, None, None].expand(-1, -1, 2, 1))[..., 0]
    points = torch.stack([kx + off[..., 1], ky + off[..., 0]], -1)  # (B, K, (x, y))
    scores = hm.flatten(2).gather(2, ki[..., None])[..., 0]
    return points, scores, hm


def decode_multipose(centre: torch.Tensor, regress: torch.Tensor, heatmap: torch.Tensor, offset: torch.Tensor,
                     box_scale: torch.Tensor, box_offset: torch.Tensor, people: int = 6, kpt_threshold: float = 0.127,
                     spread: float = 0.3) -> tuple[torch.Tensor, ...]:
    """MoveNet MultiPose's in-graph decoding, in torch: raw maps (B, 1 | 2K | K | 2K | 2 | 2,
    h, w) -> points (B, P, K, 2) x, y in map cells, keypoint scores (B, P, K), boxes (B, P, 4)
    xyxy cells, person scores (B, P), for the ``people`` strongest centres.

    Centres: the peaks (equal to their 5x5 neighbourhood's max) of the centre map, top
    ``people``. Each person's box: centre + box offset, +- half the box scale (h, w), clipped
    to the map; its keypoints regressed from the centre; keypoint k is the argmax over the
    map of heatmap_k x exp(-d^2 / (spread x min(h, w))) (d: distance to the regressed point),
    inside the person's box, moved by the offset there; its score is that product's max over
    people at that cell. Person score: centre score x the mean of its keypoint scores above
    ``kpt_threshold``."""
    b, k, h, w = heatmap.shape
    c = centre.float().sigmoid()[:, 0]  # (B, h, w)
    peak = (c - F.max_pool2d(c[:, None], 5, 1, 2)[:, 0]).abs() < 1e-6
    cscore, ci = (c * peak).flatten(1).topk(people, dim=1)  # (B, P)
    cy, cx = (ci // w).float(), (ci % w).float()
    size = _at(box_scale.float(), ci).clamp_min(0)  # (B, 2, P): (h, w)
    boff = _at(box_offset.float(), ci)
    by, bx = cy + boff[:, 0], cx + boff[:, 1]
    boxes = torch.stack([(bx - size[:, 1] / 2).clamp(0, w), (by - size[:, 0] / 2).clamp(0, h),
                         (bx + size[:, 1] / 2).clamp(0, w), (by + size[:, 0] / 2).clamp(0, h)], -1)  # (B, P, 4)
    reg = _at(regress.float(), ci).view(b, k, 2, people)  # (B, K, (dy, dx), P)
    ry, rx = cy[:, None] + reg[:, :, 0], cx[:, None] + reg[:, :, 1]  # (B, K, P)
    gy, gx = _grid(h, w, heatmap.device)
    d2 = (gy - ry[..., None, None]) ** 2 + (gx - rx[..., None, None]) ** 2  # (B, K, P, h, w)
    inside = ((gy >= boxes[..., 1, None, None]) & (gy < boxes[..., 3, None, None]) &
              (gx >= boxes[..., 0, None, None]) & (gx < boxes[..., 2, None, None]))  # (B, P, h, w)
    hm = heatmap.float().sigmoid()
    m = hm[:, :, None] * torch.exp(-d2 / (spread * min(h, w))) * inside[:, None].float()  # (B, K, P, h, w)
    best = m.amax(2).flatten(2)  # (B, K, h*w): the strongest person's value at each cell
    ki = m.flatten(3).argmax(3)  # (B, K, P)
    ky, kx = (ki // w).float(), (ki % w).float()
    kscore = best.gather(2, ki)  # (B, K, P)
    off = offset.float().flatten(2).view(b, k, 2, h * w)
    oy = off[:, :, 0].gather(2, ki)
    ox = off[:, :, 1].gather(2, ki)
    points = torch.stack([kx + ox, ky + oy], -1).permute(0, 2, 1, 3)  # (B, P, K, 2)
    kscore = kscore.permute(0, 2, 1)  # (B, P, K)
    valid = (kscore > kpt_threshold).float()
    pscore = cscore * (kscore * valid).sum(-1) / valid.sum(-1).clamp_min(1)
    return points, kscore, boxes, pscore
