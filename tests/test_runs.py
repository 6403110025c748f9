"""One run per run folder: a second `train` into a folder another run is writing stops in
one line naming it (it used to exit 0 reporting the first run's metrics, its own model lost);
a lock left by a killed run is recognised as stale and `--resume` continues it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import run_cli

from cvapps.runs import LOCK_NAME, RunLock

TRAIN = ["train", "classify", "--backbone", "mobilenet_v3_small", "--img-size", "32", "--batch-size", "6"]


def test_a_second_run_into_a_busy_folder_is_refused(tmp_path, capsys, colour_folder):
    out = tmp_path / "run"
    held = RunLock(out, "training run")
    held.acquire()  # as a running `cvapps train --out run` holds it
    try:
        code, _, err = run_cli(capsys, *TRAIN, "--data", colour_folder, "--epochs", "1", "--out", out)
        assert code == 2 and f"{out} is in use by another training run (pid {os.getpid()}" in err
        assert not (out / "best.safetensors").exists()
    finally:
        held.release()
    assert not (out / LOCK_NAME).exists()  # released: nothing left behind
    code, _, err = run_cli(capsys, *TRAIN, "--data", colour_folder, "--epochs", "1", "--out", out)
    assert code == 0, err
    assert not (out / LOCK_NAME).exists()


def test_select_into_a_busy_folder_is_refused(tmp_path, tiny_model_file, colour_folder):
    import cvapps

    held = RunLock(tmp_path / "sel")
    held.acquire()
    try:
        with pytest.raises(cvapps.ConfigError, match="is in use by another"):
            cvapps.select(str(tiny_model_file), str(colour_folder / "val"), 1, out=str(tmp_path / "sel"))
    finally:
        held.release()


@pytest.mark.skipif(sys.platform == "win32", reason="kill -9")
def test_a_killed_run_leaves_a_stale_lock_that_resume_takes_over(tmp_path, colour_folder):
    out = tmp_path / "run"
    env = {**os.environ, "CVAPPS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "cvapps", *TRAIN, "--data", str(colour_folder), "--out", str(out)]
    first = subprocess.Popen(cmd + ["--epochs", "500"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for _ in range(600):  # until it has written its first checkpoint
            if (out / "checkpoint.pt").exists() or first.poll() is not None:
                break
            time.sleep(0.1)
        assert first.poll() is None, first.stderr.read().decode()
        holder = json.loads((out / LOCK_NAME).read_text())
        assert holder["pid"] == first.pid
        second = subprocess.run(cmd + ["--epochs", "1", "--overwrite"], env=env, capture_output=True, text=True,
                                timeout=300)
        assert second.returncode == 2 and f"in use by another training run (pid {first.pid}" in second.stderr
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(30)
    assert (out / LOCK_NAME).exists()  # killed: the record stays, the kernel dropped the lock
    resumed = subprocess.run(cmd + ["--epochs", "500", "--resume", "--time-limit", "0.001"], env=env,
                             capture_output=True, text=True, timeout=300)
    flat = " ".join(resumed.stderr.split())
    assert resumed.returncode == 0, resumed.stderr
    assert f"the previous run here (pid {first.pid}" in flat and "ended without finishing" in flat
    assert "resumed from" in flat and not (out / LOCK_NAME).exists()
