"""Run folders are written by one run at a time: ``RunLock`` holds an exclusive lock on
``FOLDER/.cvapps.lock`` (an OS file lock, released by the kernel when the process ends, even
when it is killed) and records who holds it. A second run into the folder stops in one line
naming the first; a lock file left by a run that was killed is recognised as stale, said,
and taken over (``--resume`` continues such a run as usual)."""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import weakref
from pathlib import Path

from .errors import ConfigError

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows: a lock file whose process is checked by pid
    fcntl = None

LOCK_NAME = ".cvapps.lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


class RunLock:
    """``RunLock(folder, what).acquire()`` -> the holder's record of a previous run that ended
    without releasing the lock (killed), else None; ``release()`` (also on garbage collection)."""

    def __init__(self, folder: str | os.PathLike, what: str = "run"):
        self.folder, self.what = Path(folder), what
        self.path = self.folder / LOCK_NAME
        self.fd: int | None = None
        self._final = None

    def _read(self) -> dict:
        try:
            return json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return {}

    def acquire(self) -> dict | None:
        self.folder.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            held = self._read()
            if fcntl is None:  # pragma: no cover - Windows
                if held.get("pid") and held.get("host") == socket.gethostname() and _alive(int(held["pid"])):
                    os.close(fd)
                    self._refuse(held)
                break
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                self._refuse(held)
            try:  # the holder we waited on may have removed the file meanwhile: lock the one at the path
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        stale = held or None  # a record but no holder: its run ended without releasing (killed)
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                  "command": " ".join(sys.argv[:8])[:300]}
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(record).encode())
        os.fsync(fd)
        self.fd = fd
        self._final = weakref.finalize(self, RunLock._free, fd, str(self.path))
        return stale

    def _refuse(self, held: dict) -> None:
        who = f"pid {held.get('pid')} on {held.get('host')}, started {held.get('started')}" if held else "another process"
        raise ConfigError(f"{self.folder} is in use by another {self.what} ({who})", path=str(self.folder),
                          hint="wait for it to finish, or pass another --out")

    @staticmethod
    def _free(fd: int, path: str) -> None:
        try:
            os.unlink(path)  # before unlocking: a waiting run never sees our record as stale
        except OSError:
            pass
        try:
            os.close(fd)  # closing releases the flock
        except OSError:
            pass

    def release(self) -> None:
        if self._final is not None:
            self._final()
            self._final, self.fd = None, None

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def stale_note(folder: Path, stale: dict) -> str:
    """What to tell the user about a lock left by a killed run."""
    return (f"{folder}: the previous run here (pid {stale.get('pid')}, started {stale.get('started')}) ended "
            "without finishing (killed?); its files are kept, and --resume continues from its checkpoint")
