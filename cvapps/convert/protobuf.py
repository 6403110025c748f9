"""The protobuf wire format, just enough to read model files (TF GraphDef, and the
messages inside them) without the framework that wrote them: varints, fields, packed
arrays. A message is read as {field number: [raw values]} (ints for varints and fixed
numbers, memoryviews for length-delimited fields); the caller knows what each field is."""

from __future__ import annotations

import struct

from ..errors import WeightsError


def varint(buf: memoryview, pos: int) -> tuple[int, int]:
    """-> (value, next position)."""
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise WeightsError("truncated protobuf (a varint runs past the end)")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 70:
            raise WeightsError("malformed protobuf varint")


def fields(buf: memoryview | bytes) -> dict[int, list]:
    """One message -> {field number: [values]}: varint / fixed64 / fixed32 as int (fixed
    numbers as their raw little-endian bytes), length-delimited as memoryview."""
    buf = memoryview(buf)
    out: dict[int, list] = {}
    pos = 0
    while pos < len(buf):
        key, pos = varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = varint(buf, pos)
        elif wire == 1:
            value, pos = bytes(buf[pos : pos + 8]), pos + 8
        elif wire == 2:
            n, pos = varint(buf, pos)
            if pos + n > len(buf):
                raise WeightsError("truncated protobuf (a field runs past the end)")
            value, pos = buf[pos : pos + n], pos + n
        elif wire == 5:
            value, pos = bytes(buf[pos : pos + 4]), pos + 4
        else:
            raise WeightsError(f"unsupported protobuf wire type {wire} (field {number})")
        out.setdefault(number, []).append(value)
    return out


def text(value) -> str:
    return bytes(value).decode("utf-8", "replace")


def packed_varints(values: list) -> list[int]:
    """A repeated integer field, packed (one length-delimited run) or not."""
    out = []
    for v in values:
        if isinstance(v, int):
            out.append(v)
        else:
            pos = 0
            while pos < len(v):
                x, pos = varint(v, pos)
                out.append(x)
    return out


def packed_floats(values: list) -> list[float]:
    """A repeated float field, packed or not."""
    out: list[float] = []
    for v in values:
        raw = bytes(v)
        out.extend(struct.unpack(f"<{len(raw) // 4}f", raw))
    return out


def signed(v: int) -> int:
    """A varint that holds a (two's complement, 64-bit) signed integer."""
    return v - (1 << 64) if v >= 1 << 63 else v
