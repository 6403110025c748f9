"""The local link between Flower's processes and cvapps's: Flower (its own virtual environment,
see cvapps.federated.flower) asks, cvapps (torch, the data, the Trainer) answers.

One request per connection over a ``multiprocessing.connection`` socket with an authentication
key: a JSON header, then the model's arrays as an ``.npz`` (read with ``allow_pickle=False``:
nothing on this link is unpickled). Standard library and NumPy only — the Flower side imports
this file by path, without the cvapps package."""

from __future__ import annotations

import io
import json
from multiprocessing.connection import Client

import numpy as np

ENV_ADDRESS, ENV_KEY = "CVAPPS_FED_ADDRESS", "CVAPPS_FED_KEY"


def pack(header: dict, arrays: list[np.ndarray] | None = None) -> bytes:
    """``header`` (JSON) + ``arrays`` (kept in order) -> one message."""
    buf = io.BytesIO()
    if arrays:
        np.savez(buf, *arrays)
    head = json.dumps(header).encode()
    return len(head).to_bytes(8, "big") + head + buf.getvalue()


def unpack(message: bytes) -> tuple[dict, list[np.ndarray]]:
    n = int.from_bytes(message[:8], "big")
    header = json.loads(message[8:8 + n])
    body = message[8 + n:]
    if not body:
        return header, []
    with np.load(io.BytesIO(body), allow_pickle=False) as z:
        return header, [z[f"arr_{i}"] for i in range(len(z.files))]


def ask(address: str, key: str, header: dict, arrays: list[np.ndarray] | None = None) -> tuple[dict, list]:
    """Send one request to the cvapps process at ``address`` and wait for its answer; an
    answer with ``error`` raises (the Flower side then reports the round as failed)."""
    with Client(address, family="AF_UNIX", authkey=bytes.fromhex(key)) as conn:
        conn.send_bytes(pack(header, arrays))
        answer, out = unpack(conn.recv_bytes())
    if "error" in answer:
        raise RuntimeError(f"cvapps: {answer['error']}")
    return answer, out
