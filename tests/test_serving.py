"""`cvapps serve`: a real uvicorn server on 127.0.0.1 driven by a real HTTP client (urllib)."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import cvapps
from conftest import write_image

uvicorn = pytest.importorskip("uvicorn")
from cvapps.serving import ServeOptions, make_app  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(models: list, **options):
    """A uvicorn server for ``models`` on a free loopback port; yields its base URL."""
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(make_app(models, ServeOptions(port=port, **options)), host="127.0.0.1",
                                        port=port, log_level="warning"))
    t = threading.Thread(target=srv.run, daemon=True)
    t.start()
    for _ in range(200):
        if srv.started:
            break
        time.sleep(0.05)
    assert srv.started
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    t.join(10)
    assert not t.is_alive()  # stopped gracefully


@pytest.fixture
def server(tmp_path, tiny_model):
    """A server for a classifier file and a detector file; yields (base URL, files)."""
    import torch

    torch.manual_seed(0)
    det = cvapps.create_model("detect", "mobilenet_v2", labels=["a", "b"], img_size=128)
    files = {"tiny": cvapps.save(tiny_model, tmp_path / "tiny.safetensors"),
             "det": cvapps.save(det, tmp_path / "det.safetensors")}
    with serving([str(files["tiny"]), str(files["det"])], max_bytes=200_000, max_batch=4, batch_wait_ms=300) as base:
        yield base, files


def call(url: str, data: bytes | None = None, headers: dict | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=data, headers=headers or {}, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def multipart(field: str, filename: str, payload: bytes) -> tuple[bytes, dict]:
    boundary = "cvapps-test-boundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + payload + f"\r\n--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def test_server_predicts_like_the_model_and_refuses_bad_input_with_4xx(server, tmp_path):
    base, files = server
    assert call(base + "/health") == (200, {"status": "ok", "models": 2, "pending": 0})
    code, models = call(base + "/models")
    assert code == 200 and [(m["name"], m["task"]) for m in models] == [("tiny", "classify"), ("det", "detect")]
    assert [(m["backend"], m["precision"]) for m in models] == [("onnxruntime", "fp32")] * 2  # (CVAPPS_PRECISION)
    rng = np.random.default_rng(0)
    imgs = [write_image(tmp_path / f"i{i}.png", rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)) for i in range(6)]
    ref = cvapps.load(files["tiny"])
    want = [p.to_dict() for p in ref.predict([str(p) for p in imgs])]

    # raw bytes, six at once (batched together on the server), equal the model's own predictions
    with ThreadPoolExecutor(6) as pool:
        got = list(pool.map(lambda p: call(base + "/predict", p.read_bytes()), imgs))
    tiny = call(base + "/models")[1][0]
    assert tiny["requests"] == 6 and 2 <= tiny["batches"] < 6  # at most 4 per batch; some shared one
    for (code, rec), w in zip(got, want):
        assert code == 200 and rec["task"] == "classify" and (rec["width"], rec["height"]) == (64, 48)
        assert [p["label"] for p in rec["predictions"]] == [p["label"] for p in w]
        np.testing.assert_allclose([p["score"] for p in rec["predictions"]], [p["score"] for p in w], atol=1e-4)
    # a multipart upload to the second model
    body, headers = multipart("image", "i0.png", imgs[0].read_bytes())
    code, rec = call(base + "/predict?model=det", body, headers)
    assert code == 200 and rec["task"] == "detect" and rec["source"] == "i0.png"

    # user errors: 4xx with a one-line reason, and the server keeps serving
    for data, url, status, words in ((b"not an image", "/predict", 400, "decod"),
                                     (b"", "/predict", 400, "empty body"),
                                     (b"x" * 300_000, "/predict", 413, "over the limit"),
                                     (imgs[0].read_bytes(), "/predict?model=nope", 404, "no model 'nope'")):
        code, rec = call(base + url, data)
        assert code == status and words in rec["error"] and "\n" not in rec["error"], (url, rec)
    assert call(base + "/predict", imgs[1].read_bytes())[0] == 200
    assert call(base + "/health")[1]["pending"] == 0


def test_serve_takes_a_runtime_and_precision_and_refuses_one_this_machine_lacks(tmp_path, tiny_model):
    path = str(cvapps.save(tiny_model, tmp_path / "m.safetensors"))
    with pytest.raises(cvapps.ConfigError, match="--precision fp16 runs on no installed runtime here"):
        make_app([path], ServeOptions(precision="fp16"))
    make_app([path], ServeOptions(backend="torch", precision="bf16"))  # PyTorch's autocast


def test_serve_refuses_an_empty_model_list_and_name_clashes(tmp_path, tiny_model):
    with pytest.raises(cvapps.ConfigError, match="nothing to serve"):
        make_app([])
    a = cvapps.save(tiny_model, tmp_path / "a" / "m.safetensors")
    b = cvapps.save(tiny_model, tmp_path / "b" / "m.safetensors")
    with pytest.raises(cvapps.ConfigError, match="both be served as 'm'"):
        make_app([str(a), str(b)])


def test_served_face_detector_gives_the_faces_predict_gives(tmp_path, face_detector, facemesh_model):
    """The server predicts as `cvapps predict` does, the face check included."""
    img = write_image(tmp_path / "g.png", np.random.default_rng(1).integers(0, 255, (120, 160, 3), np.uint8))
    want = next(iter(cvapps.predict(None, [img], task="landmarks", stream=True, scales="1"))).prediction
    bare = face_detector.predict(img)[0]
    assert len(want) < len(bare)  # the check drops faces of the fixture detector (random weights)
    with serving(["retinaface.face5"], backend="torch") as base:
        code, rec = call(base + "/predict", img.read_bytes())
    assert code == 200 and len(rec["predictions"]) == len(want)
    np.testing.assert_allclose(np.reshape([p["bbox"] for p in rec["predictions"]], (-1, 4)),
                               np.reshape([p["bbox"] for p in want.to_dict()], (-1, 4)), atol=0.01)
