"""Run-length codes of the labelling tools' masks.

Label Studio's brush masks ("rle" of a ``brushlabels`` result) are the @thi-ng/rle-pack bit
stream of the mask as a flat RGBA image (H x W x 4 bytes; the mask in every channel, 255
inside): a 32-bit value count, a 5-bit word size - 1, four 4-bit run-length sizes - 1, then
groups — a bit (1: a run of one repeated word, 0: literal words), 2 bits choosing the
run-length size, the length - 1, and the word(s). ``encode_brush`` writes the groups
label-studio-sdk's converter writes (word size 8, run sizes 3, 4, 8, 16); ``decode_brush``
reads any stream the format allows.

CVAT's masks ("rle" of a ``<mask>``) are run lengths over the mask's box, row by row,
alternating and starting with background."""

from __future__ import annotations

import numpy as np

_SIZES = (3, 4, 8, 16)


def encode_brush(mask: np.ndarray) -> list[int]:
    """(H, W) bool -> Label Studio's brush RLE (a list of byte values)."""
    flat = np.repeat(np.where(mask.reshape(-1), 255, 0).astype(np.int64), 4)
    n = len(flat)
    ends = np.append(np.flatnonzero(flat[1:] != flat[:-1]), n - 1) if n else np.zeros(0, np.int64)
    lengths = np.diff(np.append(-1, ends))
    values = flat[ends] if n else ends
    fields: list[tuple[int, int]] = [(n, 32), (7, 5)] + [(s - 1, 4) for s in _SIZES]
    for length, value in zip(lengths.tolist(), values.tolist()):
        if length == 1:  # a literal group of one word
            fields += [(0, 1), (0, 2), (0, 3), (value, 8)]
            continue
        while length > 1 << 16:
            fields += [(1, 1), (3, 2), ((1 << 16) - 1, 16), (value, 8)]
            length -= 1 << 16
        size = next(i for i, s in enumerate(_SIZES) if length <= 1 << s)
        fields += [(1, 1), (size, 2), (length - 1, _SIZES[size]), (value, 8)]
    vals = np.array([f[0] for f in fields], np.int64)
    widths = np.array([f[1] for f in fields], np.int64)
    owner = np.repeat(np.arange(len(fields)), widths)
    starts = np.cumsum(widths) - widths
    shift = widths[owner] - 1 - (np.arange(len(owner)) - starts[owner])
    bits = ((vals[owner] >> shift) & 1).astype(np.uint8)
    bits = np.append(bits, np.zeros(8 - len(bits) % 8, np.uint8))  # (a whole zero byte when aligned, as the SDK)
    return np.packbits(bits).tolist()


class _Bits:
    def __init__(self, data: bytes):
        self.bits, self.pos = np.unpackbits(np.frombuffer(data, np.uint8)), 0
        self.weights = {}

    def read(self, n: int) -> int:
        if self.pos + n > len(self.bits):
            raise ValueError("the RLE ends early")
        w = self.weights.get(n)
        if w is None:
            w = self.weights[n] = 1 << np.arange(n - 1, -1, -1, dtype=np.int64)
        v = int(self.bits[self.pos : self.pos + n] @ w)
        self.pos += n
        return v

    def words(self, count: int, size: int) -> np.ndarray:
        end = self.pos + count * size
        if end > len(self.bits):
            raise ValueError("the RLE ends early")
        chunk = self.bits[self.pos : end].reshape(count, size).astype(np.int64)
        self.pos = end
        return chunk @ (1 << np.arange(size - 1, -1, -1, dtype=np.int64))


def decode_brush(rle, height: int, width: int) -> np.ndarray:
    """Label Studio's brush RLE -> (H, W) bool (the alpha channel > 0). ValueError when the
    stream is broken or does not hold H x W x 4 values."""
    try:
        data = bytes(int(v) for v in rle)
    except (TypeError, ValueError):
        raise ValueError("the RLE is not a list of byte values (0-255)") from None
    s = _Bits(data)
    num = s.read(32)
    if num != height * width * 4:
        raise ValueError(f"the RLE holds {num} values, a {width}x{height} RGBA mask has {height * width * 4}")
    word = s.read(5) + 1
    sizes = [s.read(4) + 1 for _ in range(4)]
    out = np.zeros(num, np.int64)
    i = 0
    while i < num:
        repeat = s.read(1)
        j = min(num, i + 1 + s.read(sizes[s.read(2)]))
        if repeat:
            out[i:j] = s.read(word)
        else:
            out[i:j] = s.words(j - i, word)
        i = j
    return out.reshape(height, width, 4)[..., 3] > 0


def encode_cvat(mask: np.ndarray) -> tuple[list[int], tuple[int, int, int, int]]:
    """(H, W) bool with at least one pixel set -> (run lengths, (left, top, width, height))
    over the mask's box, as CVAT's ``<mask>`` writes them."""
    ys, xs = np.nonzero(mask)
    left, top, right, bottom = int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())
    flat = mask[top : bottom + 1, left : right + 1].reshape(-1).astype(np.int8)
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [len(flat)]])
    runs = np.diff(bounds).tolist()
    if flat[0]:  # runs start with background
        runs = [0] + runs
    return runs, (left, top, right - left + 1, bottom - top + 1)


def decode_cvat(runs: list[int], box: tuple[int, int, int, int], height: int, width: int) -> np.ndarray:
    """CVAT's run lengths over ``box`` (left, top, width, height) -> (H, W) bool. ValueError
    when the runs do not fill the box or the box leaves the image."""
    left, top, bw, bh = box
    if left < 0 or top < 0 or bw <= 0 or bh <= 0 or left + bw > width or top + bh > height:
        raise ValueError(f"its box (left {left}, top {top}, {bw}x{bh}) leaves the {width}x{height} image")
    runs = np.asarray(runs, np.int64)
    if (runs < 0).any() or runs.sum() != bw * bh:
        raise ValueError(f"its run lengths add up to {int(runs.sum())}, its {bw}x{bh} box has {bw * bh} pixels")
    flat = np.repeat(np.arange(len(runs)) % 2 == 1, runs)
    out = np.zeros((height, width), bool)
    out[top : top + bh, left : left + bw] = flat.reshape(bh, bw)
    return out
