"""DDP under torchrun (2 gloo processes on CPU, one loader worker each, random augmentation)
matches one process with the same global batch and two loader workers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

SCRIPT = """
import sys, cvapps
r = cvapps.train("classify", sys.argv[1], backbone="resnet18", img_size=32, epochs=2, batch_size=6, lr=1e-2,
                 freeze="backbone", augment=True, head={"dropout": 0.0}, warmup_epochs=0, out=sys.argv[2],
                 workers=int(sys.argv[3]))
print("RESULT", r["rank"], r["world_size"])
"""

TIMEOUT = 300  # seconds; a normal run takes ~20 s


def _run(cmd: list[str], tmp: Path) -> str:
    """A run that hangs is stopped with SIGTERM, which torchrun passes on to the ranks it
    started in sessions of their own (killing torchrun alone leaves them spinning through
    later tests, holding the output pipes), and the failure shows what they printed."""
    env = {**os.environ, "CVAPPS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp)
    try:
        out, err = p.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        p.terminate()
        out, err = p.communicate(timeout=60)
        pytest.fail(f"no result after {TIMEOUT} s:\n" + out[-2000:] + err[-4000:])
    assert p.returncode == 0, out[-2000:] + err[-4000:]
    return out


def test_two_process_gloo_matches_one_process(tmp_path, colour_folder):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    out2 = _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                 str(script), str(colour_folder), str(tmp_path / "ddp"), "1"], tmp_path)
    out1 = _run([sys.executable, str(script), str(colour_folder), str(tmp_path / "one"), "2"], tmp_path)
    assert sorted(out2.split("RESULT")[1:]) == [" 0 2\n", " 1 2\n"] and "RESULT 0 1" in out1
    # one set of outputs, written by rank 0
    files = sorted(p.name for p in (tmp_path / "ddp").iterdir())
    assert files == sorted(p.name for p in (tmp_path / "one").iterdir())
    assert len((tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()) == 2
    a, b = load_file(tmp_path / "ddp" / "last.safetensors"), load_file(tmp_path / "one" / "last.safetensors")
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5), k
    ra = [json.loads(x) for x in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    rb = [json.loads(x) for x in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
    for x, y in zip(ra, rb):
        assert x["train_loss"] == pytest.approx(y["train_loss"], rel=1e-4)
        assert x["val_loss"] == pytest.approx(y["val_loss"], rel=1e-4)
    assert ra[0]["train_loss"] != ra[1]["train_loss"]  # it trained
