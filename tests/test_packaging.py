"""The weights manifests are found from a non-editable (wheel) install."""

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_ships_manifests_and_finds_them(tmp_path):
    pytest.importorskip("setuptools")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                        str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    wheel = next(tmp_path.glob("cvapps-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    manifests = sorted(Path(n).name for n in names if n.startswith("cvapps/manifests/") and n.endswith(".json"))
    assert manifests == sorted(p.name for p in (ROOT / "weights").glob("*.json"))
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = ("import cvapps, cvapps.weights as w; "
            "print(cvapps.__file__); print(len(w.all_weights())); print(w.get_spec('mobilenet_v2.imagenet1k').sha256)")
    env = {**os.environ, "PYTHONPATH": str(site)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    file, count, sha = out.stdout.split()
    assert file.startswith(str(site))  # the installed copy, not the checkout
    assert int(count) == sum(len(json.loads(p.read_text())) for p in (ROOT / "weights").glob("*.json"))
    assert sha.startswith("b0353104")


def test_every_package_is_listed_in_pyproject():
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "cvapps").rglob("__init__.py")}
    assert found <= listed, f"add to pyproject.toml packages: {sorted(found - listed)}"
