"""`cvapps serve --label-studio`: the Label Studio ML-backend protocol over real HTTP on
127.0.0.1 — task images served by the test behind a token, as Label Studio serves them —
with the project's own control names, one-line errors, and training on webhooks that swaps
the model under a new model_version while /predict keeps answering."""

from __future__ import annotations

import base64
import http.server
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("starlette")
uvicorn = pytest.importorskip("uvicorn")

from cvapps.integrations import ml_backend  # noqa: E402
from cvapps.serving import ServeOptions  # noqa: E402

TOKEN = "test-token-123"
CONFIG = ('<View><Image name="img" value="$picture"/><Choices name="colour" toName="img">'
          '<Choice value="Red"/><Choice value="green"/><Choice value="blue"/></Choices></View>')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Images(http.server.BaseHTTPRequestHandler):
    """Label Studio's local-files URLs (/data/local-files/?d=REL) under ``root``, token required."""

    root: Path = Path(".")

    def do_GET(self):  # noqa: N802
        from urllib.parse import parse_qs, urlparse

        if self.headers.get("Authorization") != f"Token {TOKEN}":
            self.send_response(401)
            self.end_headers()
            return
        rel = parse_qs(urlparse(self.path).query).get("d", [""])[0]
        f = self.root / rel
        if not rel or not f.is_file():
            self.send_response(404)
            self.end_headers()
            return
        data = f.read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def image_server(colour_folder):
    handler = type("Images", (_Images,), {"root": colour_folder})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def start(app) -> tuple[str, uvicorn.Server]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.05)
    return f"http://127.0.0.1:{port}", server


def call(url: str, path: str, body=None, headers=None) -> tuple[int, dict]:
    req = urllib.request.Request(url + path, data=None if body is None else json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def tasks(names: list[str]) -> list[dict]:
    return [{"id": i + 1, "data": {"picture": f"/data/local-files/?d={n}"}} for i, n in enumerate(names)]


@pytest.fixture
def backend(tmp_path, tiny_model_file, image_server):
    app = ml_backend.make_app(str(tiny_model_file), ServeOptions(backend="torch"), tmp_path / "work",
                              train_options={"epochs": 1, "batch_size": 6})
    url, server = start(app)
    yield url, app.state.backend, image_server
    server.should_exit = True


def test_predictions_use_the_projects_controls_and_classes(backend, tiny_model):
    url, be, images = backend
    assert call(url, "/health") == (200, {"status": "UP", "model_class": "cvapps", "model_version": "tiny"})
    assert call(url, "/setup", {"project": "3.17", "schema": CONFIG, "hostname": images, "access_token": TOKEN}) == \
        (200, {"model_version": "tiny"})
    names = ["val/red/red0.png", "val/green/green1.png", "val/blue/blue2.png"]
    code, out = call(url, "/predict", {"tasks": tasks(names), "label_config": CONFIG, "project": "3.17"})
    assert code == 200 and len(out["results"]) == 3
    want = [p.label for p in tiny_model.eval().predict([str(be.work.parent / "colours" / n) for n in names])]
    for res, label in zip(out["results"], want):
        assert res["model_version"] == "tiny"
        (r,) = res["result"]
        assert (r["type"], r["from_name"], r["to_name"]) == ("choices", "colour", "img")
        assert r["value"]["choices"] == [{"red": "Red"}.get(label, label)]  # the config's spelling of the class


def test_image_errors_are_one_line_json(backend):
    url, be, images = backend
    call(url, "/setup", {"hostname": images, "access_token": "wrong"})
    code, out = call(url, "/predict", {"tasks": tasks(["val/red/red0.png"]), "label_config": CONFIG})
    assert code == 502 and "refused the API key (401)" in out["error"] and "\n" not in out["error"]
    call(url, "/setup", {"hostname": images, "access_token": TOKEN})
    code, out = call(url, "/predict", {"tasks": tasks(["val/red/nothere.png"]), "label_config": CONFIG})
    assert code == 502 and "local files need LOCAL_FILES_SERVING_ENABLED=true" in out["error"]
    code, out = call(url, "/predict", {"tasks": [{"id": 9, "data": {"image": "x"}}], "label_config": CONFIG})
    assert code == 400 and out["error"].startswith("task 9: no data.picture")


def _export_of(colour_folder: Path, work: Path) -> tuple[Path, Path]:
    """What Backend.annotated makes from a Label Studio project: an export + its images."""
    items = []
    for i, p in enumerate(sorted((colour_folder / "train").glob("*/*.png"))):
        items.append({"id": i + 1, "data": {"picture": f"/data/local-files/?d={p.relative_to(colour_folder)}"},
                      "annotations": [{"result": [{"type": "choices", "from_name": "colour", "to_name": "img",
                                                   "value": {"choices": [p.parent.name]}}]}]})
    export = work / "export.json"
    export.parent.mkdir(parents=True, exist_ok=True)
    export.write_text(json.dumps(items))
    return export, colour_folder


def wait_idle(url: str) -> dict:
    for _ in range(600):
        code, m = call(url, "/metrics")
        if not m["training"] and m["runs"] and m["runs"][-1]["status"] != "running":
            return m
        time.sleep(0.1)
    raise AssertionError("training did not finish")


def test_webhooks_train_in_the_background_and_swap_the_model(backend, monkeypatch, colour_folder):
    url, be, images = backend
    call(url, "/setup", {"hostname": images, "access_token": TOKEN})
    monkeypatch.setattr(ml_backend.Backend, "annotated", lambda self, project: _export_of(colour_folder, be.work))
    code, out = call(url, "/webhook", {"action": "START_TRAINING", "project": {"id": 3}})
    assert code == 201 and out["status"] == "training started"
    code, out = call(url, "/predict", {"tasks": tasks(["val/red/red0.png"]), "label_config": CONFIG})
    assert code == 200  # answered while (or after) training runs
    m = wait_idle(url)
    assert m["model_version"] == "tiny-ft1" and m["runs"][0]["status"] == "done" and m["runs"][0]["annotated_images"] == 18
    code, out = call(url, "/predict", {"tasks": tasks(["val/red/red0.png"]), "label_config": CONFIG})
    assert out["results"][0]["model_version"] == "tiny-ft1"
    # a failing run keeps the model and says why; every N annotations starts a run
    monkeypatch.setattr(ml_backend.Backend, "annotated", lambda self, project: (_ for _ in ()).throw(
        ConnectionError("Label Studio went away")))
    be.train_every = 2
    assert call(url, "/webhook", {"action": "ANNOTATION_CREATED", "project": {"id": 3}})[1] == {"status": "ok"}
    assert call(url, "/webhook", {"action": "ANNOTATION_CREATED", "project": {"id": 3}})[1]["status"] == \
        "training started"
    m = wait_idle(url)
    assert m["model_version"] == "tiny-ft1" and m["runs"][-1]["status"] == "failed"
    assert "ConnectionError: Label Studio went away" in m["runs"][-1]["error"]


def test_basic_auth_guards_every_endpoint(tmp_path, tiny_model_file):
    app = ml_backend.make_app(str(tiny_model_file), ServeOptions(backend="torch"), tmp_path / "w", basic_auth="ls:pw")
    url, server = start(app)
    try:
        assert call(url, "/health")[0] == 401
        ok = {"Authorization": "Basic " + base64.b64encode(b"ls:pw").decode()}
        assert call(url, "/health", headers=ok)[0] == 200
    finally:
        server.should_exit = True
