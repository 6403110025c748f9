"""Flower in its own virtual environment, and the link cvapps answers it on.

flwr 1.42 pins versions cvapps's set has moved past (typer < 0.21, protobuf < 7, cryptography
< 51, ray == 2.55.1, ...), so Flower runs in a venv of its own (``cvapps federated setup``,
pinned by flower-constraints.txt) and asks this process — torch, the data, the Trainer — over
a local authenticated socket (wire.py) for every fit, evaluation and model file."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import traceback
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client, Listener
from pathlib import Path

from rich.console import Console

from ..data.io import cvapps_home
from ..errors import ConfigError, CvappsError
from .wire import ENV_ADDRESS, ENV_KEY, pack, unpack

FLOWER = "flwr[simulation]==1.42.0"
HERE = Path(__file__).resolve().parent


def flower_python() -> Path:
    """Flower's interpreter: $CVAPPS_FLOWER_PYTHON, else .venv-flower beside this venv (the
    repository's ``make``), else $CVAPPS_HOME/flower (``cvapps federated setup``)."""
    if os.environ.get("CVAPPS_FLOWER_PYTHON"):
        path = Path(os.environ["CVAPPS_FLOWER_PYTHON"])
        if not path.is_file():
            raise ConfigError("CVAPPS_FLOWER_PYTHON names no file", path=str(path))
        return path
    for venv in (Path(sys.prefix).parent / ".venv-flower", cvapps_home() / "flower"):
        if (venv / "bin" / "python").is_file():
            return venv / "bin" / "python"
    raise ConfigError("Flower is not installed", hint=f"run `cvapps federated setup` (a virtual environment with "
                                                      f"{FLOWER} in {cvapps_home() / 'flower'})")


def setup(venv: str | None = None, console: Console | None = None) -> Path:
    """Create Flower's virtual environment (default $CVAPPS_HOME/flower) from the registries,
    pinned by flower-constraints.txt; -> its python."""
    console = console or Console(stderr=True)
    venv = Path(venv) if venv else cvapps_home() / "flower"
    python = venv / "bin" / "python"
    if not python.is_file():
        console.print(f"creating {venv}", highlight=False)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    console.print(f"installing {FLOWER} into {venv} (a few minutes the first time)", highlight=False)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "-c", str(HERE / "flower-constraints.txt"), FLOWER],
                   check=True)
    subprocess.run([str(python), "-c", "import flwr.simulation, flwr.compat.server.app"], check=True)
    return python


class Link:
    """Runs Flower's ``mode`` (flower.py) with ``job`` and answers its requests with
    ``handlers[op](header, arrays) -> (header, arrays)``, one at a time, until it exits. A
    request that fails is answered with its error (Flower counts a failed client and goes on)
    and the first such failure is raised when Flower's process has ended."""

    def __init__(self, handlers: dict, console: Console):
        self.handlers, self.console = handlers, console
        self.failure: BaseException | None = None

    def run(self, mode: str, job: dict) -> None:
        python = flower_python()
        self.dir = Path(tempfile.mkdtemp(prefix="cvapps-fed-"))
        self.address, self.key = str(self.dir / "link"), secrets.token_bytes(32)
        (self.dir / "job.json").write_text(json.dumps(job))
        listener = Listener(self.address, "AF_UNIX", authkey=self.key)
        server = threading.Thread(target=self._serve, args=(listener,), daemon=True)
        server.start()
        env = {**os.environ, ENV_ADDRESS: self.address, ENV_KEY: self.key.hex(), "RAY_DEDUP_LOGS": "0"}
        proc = subprocess.Popen([str(python), str(HERE / "flower.py"), mode, str(self.dir / "job.json")], env=env)
        interrupted = True
        try:
            code = proc.wait()
            interrupted = False
        except BaseException:  # Ctrl-C: Flower's process goes too (what finished is on disk)
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
            raise
        finally:
            if not interrupted:  # a request being answered finishes first
                with Client(self.address, "AF_UNIX", authkey=self.key) as c:
                    c.send_bytes(pack({"op": "stop"}))
                server.join()
            listener.close()
            shutil.rmtree(self.dir, ignore_errors=True)
        if self.failure is not None:  # ours (bad data, a model that does not fit ...): said once more, raised
            raise self.failure if isinstance(self.failure, CvappsError) else CvappsError(
                f"{mode}: {type(self.failure).__name__}: {self.failure}")
        if code != 0:
            raise CvappsError(f"Flower's {mode} process exited with code {code} (its log is above)")

    def _serve(self, listener: Listener) -> None:
        while True:
            try:
                conn = listener.accept()
            except (OSError, EOFError, AuthenticationError):  # a stranger or a peer gone while connecting
                continue
            try:
                with conn:
                    header, arrays = unpack(conn.recv_bytes())
                    if header["op"] == "stop":
                        return
                    conn.send_bytes(pack(*self._answer(header, arrays)))
            except (OSError, EOFError):  # the asking process died mid-request (a killed client)
                continue

    def _answer(self, header: dict, arrays: list) -> tuple[dict, list | None]:
        try:
            return self.handlers[header["op"]](header, arrays)
        except Exception as e:  # noqa: BLE001 — reported to Flower (a failed fit) and here
            self.failure = self.failure or e
            if not isinstance(e, CvappsError):
                traceback.print_exc()
            self.console.print(f"error: {header['op']} failed: {e}", style="red", highlight=False)
            return {"error": str(e).splitlines()[0] if str(e) else type(e).__name__}, None
