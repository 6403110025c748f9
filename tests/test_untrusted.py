"""Untrusted images are bounded before they are decoded (every decoder path: files, bytes,
folders, video frames, API arrays, URLs, the server), and inputs given directly or inside a
folder are treated alike. The hostile files are made here: PNGs whose header declares far
more pixels than their few bytes hold."""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import colour_image, run_cli, write_image

import cvapps
from cvapps.data.io import decode_image, max_pixels, read_image, set_max_pixels
from cvapps.errors import DataError, ImageTooLarge


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png(width: int, height: int, real: bool = False) -> bytes:
    """An 8-bit grey PNG declaring width x height. ``real``: its pixel data is complete (zeros
    compress ~1000:1, so a 20000 x 20000 image is ~0.4 MB), so a decoder would allocate all of
    it; otherwise only the header and a few rows are there."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    c, row = zlib.compressobj(9), b"\0" * (width + 1)
    parts = [c.compress(row) for _ in range(height if real else 4)]
    idat = b"".join(parts) + c.flush()
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


@pytest.fixture
def limit(monkeypatch):
    """The default pixel limit during the test, restored after it."""
    monkeypatch.delenv("CVAPPS_MAX_PIXELS", raising=False)
    set_max_pixels(None)
    yield
    set_max_pixels(None)


def test_the_header_is_checked_before_any_decode(tmp_path, limit):
    f = tmp_path / "bomb.png"
    f.write_bytes(bomb_png(30000, 30000))
    with pytest.raises(ImageTooLarge, match="900,000,000 pixels, over the limit of 100,000,000"):
        read_image(f)
    with pytest.raises(ImageTooLarge):
        decode_image(f.read_bytes(), "upload")
    f2 = tmp_path / "wide.png"  # above OpenCV's own 2^30 limit: still our one-line error, not a cv2 traceback
    f2.write_bytes(bomb_png(60000, 20000))
    with pytest.raises(ImageTooLarge, match="1,200,000,000 pixels"):
        read_image(f2)
    set_max_pixels(1000)
    assert max_pixels() == 1000
    ok = write_image(tmp_path / "ok.png", colour_image((10, 20, 30)))  # 64 x 48 = 3072 pixels
    with pytest.raises(ImageTooLarge, match="64x48 = 3,072 pixels, over the limit of 1,000"):
        read_image(ok)
    with pytest.raises(ImageTooLarge, match=r"input 0: is 64x48"):  # arrays given through the API
        cvapps.create_model("classify", "mobilenet_v3_small", labels=["a"], img_size=32).predict(colour_image((1, 2, 3)))
    set_max_pixels(None)
    assert read_image(ok).shape == (48, 64, 3)
    os.environ["CVAPPS_MAX_PIXELS"] = "2e3"
    try:
        assert max_pixels() == 2000
        with pytest.raises(ImageTooLarge):
            read_image(ok)
    finally:
        del os.environ["CVAPPS_MAX_PIXELS"]
    with pytest.raises(cvapps.ConfigError, match="not a number of pixels"):
        set_max_pixels("lots")


def test_predict_folder_skips_the_bomb_and_keeps_the_rest(tmp_path, capsys, tiny_model_file, limit):
    folder = tmp_path / "photos"
    write_image(folder / "a.png", colour_image((200, 10, 10)))
    (folder / "bomb.png").write_bytes(bomb_png(30000, 30000))
    code, out, err = run_cli(capsys, "predict", "classify", folder, "--model", tiny_model_file, "--save-json",
                             tmp_path / "p.jsonl")
    assert code == 0 and "Traceback" not in err
    assert [json.loads(ln)["source"] for ln in (tmp_path / "p.jsonl").read_text().splitlines()] == [
        str(folder / "a.png")]
    assert "bomb.png: declares 900,000,000 pixels" in err and "1 predicted, 1 skipped" in err
    # --max-pixels anywhere on the line raises the limit for this run (CVAPPS_MAX_PIXELS for its processes)
    code, _, err = run_cli(capsys, "predict", "classify", folder / "a.png", "--model", tiny_model_file,
                           "--max-pixels", "100")
    assert code == 2 and "over the limit of 100 " in err and len(err.strip().splitlines()) == 1
    os.environ.pop("CVAPPS_MAX_PIXELS", None)
    code, _, err = run_cli(capsys, "--max-pixels", "many", "predict", "classify", folder)
    assert code == 2 and "--max-pixels 'many' is not a number of pixels" in err


def test_video_frames_are_bounded_by_the_declared_size(tmp_path, capsys, tiny_model_file, limit):
    video = tmp_path / "clip.avi"
    vw = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for i in range(3):
        vw.write(colour_image((40 * i, 100, 200), seed=i))
    vw.release()
    code, _, err = run_cli(capsys, "predict", "classify", video, "--model", tiny_model_file, "--max-pixels", "1000")
    os.environ.pop("CVAPPS_MAX_PIXELS", None)
    assert code == 2 and "clip.avi: has frames of 64x48 = 3,072 pixels, over the limit of 1,000" in err


def test_gif_and_other_formats_read_the_same_in_a_folder_as_directly(tmp_path, capsys, tiny_model_file):
    from PIL import Image

    folder = tmp_path / "mixed"
    folder.mkdir()
    Image.fromarray(colour_image((200, 10, 10))).save(folder / "a.gif")
    Image.fromarray(colour_image((10, 200, 10))).save(folder / "b.jp2")
    write_image(folder / "c.png", colour_image((10, 10, 200)))
    (folder / "notes.txt").write_text("not an image")
    (folder / ".DS_Store").write_bytes(b"\0\1")
    code, out, err = run_cli(capsys, "predict", "classify", folder, "--model", tiny_model_file)
    assert code == 0 and "3 predicted, 0 skipped" in err
    assert "left out 1 file that is neither an image nor a video: notes.txt" in err  # named, hidden files not
    for name in ("a.gif", "b.jp2"):
        code, out, err = run_cli(capsys, "predict", "classify", folder / name, "--model", tiny_model_file)
        assert code == 0 and "1 predicted" in err


def test_list_files_say_where_relative_paths_were_found(tmp_path, capsys, tiny_model_file, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_image(tmp_path / "here.png", colour_image((1, 2, 3)))
    lists = tmp_path / "lists"
    write_image(lists / "beside.png", colour_image((4, 5, 6)))
    (lists / "l.txt").write_text("beside.png\nhere.png\n")
    code, _, err = run_cli(capsys, "predict", "classify", lists / "l.txt", "--model", tiny_model_file)
    assert code == 0 and "2 predicted" in err
    assert "1 relative path not beside the list, read from the working directory" in err
    (lists / "bad.txt").write_text("nowhere.png\n")
    code, _, err = run_cli(capsys, "predict", "classify", lists / "bad.txt", "--model", tiny_model_file)
    assert code == 2 and "neither beside the list" in err


class _Files(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *a):  # quiet
        pass


@contextlib.contextmanager
def http_folder(folder: Path):
    handler = lambda *a, **k: _Files(*a, directory=str(folder), **k)  # noqa: E731
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()


def test_image_urls_are_fetched_not_mangled(tmp_path, tiny_model, capsys, tiny_model_file, limit):
    write_image(tmp_path / "web" / "x.png", colour_image((200, 100, 50)))
    (tmp_path / "web" / "bomb.png").write_bytes(bomb_png(30000, 30000))
    with http_folder(tmp_path / "web") as base:
        want = tiny_model.predict(str(tmp_path / "web" / "x.png"))[0].scores
        np.testing.assert_allclose(tiny_model.predict(base + "/x.png")[0].scores, want, atol=1e-6)
        with pytest.raises(DataError, match=r"http://127\.0\.0\.1:\d+/gone\.png: HTTP 404"):
            tiny_model.predict(base + "/gone.png")
        with pytest.raises(ImageTooLarge):
            tiny_model.predict(base + "/bomb.png")
        code, out, err = run_cli(capsys, "predict", "classify", base + "/x.png", "--model", tiny_model_file)
        assert code == 0 and out.startswith(base + "/x.png\t")
    with pytest.raises(DataError, match="no input given"):
        tiny_model.predict(None)
    with pytest.raises(DataError, match="input 0 must be a path, an image URL or an"):
        tiny_model.predict([3.5])


def test_a_missing_camera_is_one_line_without_opencv_noise(capsys, tiny_model_file):
    code, _, err = run_cli(capsys, "predict", "classify", "--source", "7", "--model", tiny_model_file,
                           "--reconnect", "0")
    assert code == 2 and err.strip().splitlines() == [err.strip()]
    assert "no camera 7 on this machine" in err and "network" not in err


def test_outputs_that_cannot_be_written_are_one_line_before_any_work(tmp_path, capsys, tiny_model_file, colour_folder):
    img = write_image(tmp_path / "a.png", colour_image((1, 2, 3)))
    (tmp_path / "afile").write_text("x")
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o555)
    cases = [
        (["predict", "classify", img, "--model", tiny_model_file, "--out", tmp_path / "afile"], "is an existing file"),
        (["predict", "classify", img, "--model", tiny_model_file, "--save-json", tmp_path / "afile" / "p.jsonl"],
         "the folder of --save-json"),
        (["train", "classify", "--data", colour_folder, "--out", tmp_path / "afile"], "is an existing file"),
        (["select", "--model", tiny_model_file, "--pool", img.parent, "--budget", 1, "--out", tmp_path / "afile"],
         "is an existing file"),
        (["export", "--model", tiny_model_file, "--out", tmp_path], "is a folder, not a file name"),
        (["eval", "classify", "--model", tiny_model_file, "--data", colour_folder, "--out", tmp_path / "afile"],
         "is an existing file, not a folder"),
    ]
    if os.geteuid() != 0:  # root writes anywhere
        cases.append((["predict", "classify", img, "--model", tiny_model_file, "--out", ro / "sub"], "cannot be created"))
    for args, words in cases:
        code, _, err = run_cli(capsys, *args)
        lines = err.strip().splitlines()
        assert code == 2 and words in lines[-1] and lines[-1].startswith("error:") and "Traceback" not in err, err
    code, _, err = run_cli(capsys, "select", "--model", tiny_model_file, "--pool", img.parent, "--budget", 0,
                           "--out", tmp_path / "s")
    assert code == 2 and "--budget must be at least 1" in err and not (tmp_path / "s" / "contact_sheet.png").exists()


def _rss_kb(pid: int, key: str = "VmHWM") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise AssertionError(key)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads memory from /proc")
def test_serve_refuses_a_bomb_upload_from_its_header(tmp_path, tiny_model_file):
    """The real command in its own process: a 20000 x 20000 PNG (0.4 MB that decode to 1.2 GB
    of RGB) gets 413 JSON, the server's peak memory grows by less than 200 MB, and it goes on
    serving; overload answers are JSON too."""
    pytest.importorskip("uvicorn")
    from test_serving import free_port

    port = free_port()
    env = {**os.environ, "CVAPPS_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "cvapps", "serve", "--model", str(tiny_model_file), "--port",
                             str(port), "--backend", "torch"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            with contextlib.suppress(OSError):
                urllib.request.urlopen(base + "/health", timeout=1)
                break
            time.sleep(0.1)
        ok = cv2.imencode(".png", colour_image((5, 6, 7)))[1].tobytes()

        def post(data: bytes) -> tuple[int, dict]:
            try:
                with urllib.request.urlopen(urllib.request.Request(base + "/predict", data=data), timeout=60) as r:
                    return r.status, json.loads(r.read())
            except urllib.error.HTTPError as e:
                return e.code, json.loads(e.read())

        assert post(ok)[0] == 200
        before = _rss_kb(proc.pid)
        code, body = post(bomb_png(20000, 20000, real=True))
        grown = _rss_kb(proc.pid) - before
        assert code == 413 and "400,000,000 pixels, over the limit" in body["error"], body
        assert grown < 200_000, f"peak RSS grew by {grown / 1024:.0f} MB"
        assert post(ok)[0] == 200
    finally:
        proc.terminate()
        proc.wait(30)


def test_overload_answers_are_json(tmp_path, tiny_model_file):
    pytest.importorskip("uvicorn")
    import asyncio

    from cvapps.serving import Bounded

    async def app(scope, receive, send):  # a request that is still inside
        raise AssertionError("not reached")

    from starlette.responses import JSONResponse

    sent = []

    async def send(msg):
        sent.append(msg)

    async def receive():
        return {"type": "http.request", "body": b""}

    bounded = Bounded(app, 2, {"pending": 2}, lambda: JSONResponse({"error": "server busy"}, status_code=503))
    asyncio.run(bounded({"type": "http", "path": "/predict", "method": "POST", "headers": []}, receive, send))
    assert sent[0]["status"] == 503 and dict(sent[0]["headers"])[b"content-type"] == b"application/json"
    assert json.loads(sent[1]["body"]) == {"error": "server busy"}
