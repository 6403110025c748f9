"""The package's shape: imports point down the layers only (no cycles), cvapps modules are
imported at module level (the CLI's lazy ones aside), and no code outside cvapps/tasks/
branches on a task name."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "cvapps"
# lowest first; a unit may import only from units in lower layers (or from itself)
LAYERS = [
    ["cvapps.errors"],
    ["cvapps.registry", "cvapps.options", "cvapps.runtime", "cvapps.schema", "cvapps.draw", "cvapps.progress",
     "cvapps.runs"],
    ["cvapps.ops", "cvapps.tracking"],
    ["cvapps.data", "cvapps.convert"],
    ["cvapps.backbones", "cvapps.weights"],
    ["cvapps.tasks"],
    ["cvapps.modelfile"],
    ["cvapps.pretrained"],
    ["cvapps.training", "cvapps.inference", "cvapps.exporting"],
    ["cvapps.runtimes"],  # how a model is run: the only unit that decides on a runtime
    ["cvapps.loading"],  # models from names, files and configs
    ["cvapps.active", "cvapps.embedding"],
    ["cvapps.api"],
    ["cvapps.serving", "cvapps.benchmarking", "cvapps.distilling", "cvapps.scaleout", "cvapps.faces",
     "cvapps.multitask"],
    # learning around a model: rounds, adapting, SSL, federated sites
    ["cvapps.selftraining", "cvapps.adapting", "cvapps.pretraining", "cvapps.federated"],
    ["cvapps.integrations"],  # labelling tools and other systems around cvapps
    ["cvapps.cli"],
    ["cvapps.__main__", "cvapps.__init__"],
]
LAYER = {u: i for i, units in enumerate(LAYERS) for u in units}
LAZY_OK = {"cvapps.cli"}  # imports api / tasks when a command runs, so `cvapps --help` needs no torch
TASK_NAMES = {"classify", "detect", "segment", "landmarks", "pose"}


def unit(module: str) -> str:
    parts = module.split(".")
    if len(parts) >= 2 and parts[1].startswith("__") and parts[1] not in ("__init__", "__main__"):
        return parts[0]  # a name of the package itself, e.g. cvapps.__version__
    return ".".join(parts[:2]) if len(parts) >= 2 else module


def imports():
    """(importing module, imported module, at module level?) for every cvapps import."""
    for f in sorted(ROOT.rglob("*.py")):
        mod = ".".join(f.relative_to(ROOT.parent).with_suffix("").parts)
        pkg = mod[:-9] if mod.endswith(".__init__") else mod.rsplit(".", 1)[0]
        tree = ast.parse(f.read_text())
        top = {id(n) for n in tree.body} | {id(n) for n in ast.walk(tree) if isinstance(n, ast.If)
                                            and getattr(n.test, "id", "") == "TYPE_CHECKING" for n in n.body}
        for n in ast.walk(tree):
            targets = []
            if isinstance(n, ast.ImportFrom):
                if n.level:
                    base = pkg.split(".")[: len(pkg.split(".")) - (n.level - 1)]
                    targets = [".".join(base + [n.module])] if n.module else [".".join(base + [a.name]) for a in n.names]
                else:
                    targets = [n.module or ""]
            elif isinstance(n, ast.Import):
                targets = [a.name for a in n.names]
            for t in targets:
                if t.startswith("cvapps"):
                    yield mod, t, id(n) in top


def test_every_unit_has_a_layer():
    units = {unit(m) for m, _, _ in imports()} | {unit(t) for _, t, _ in imports()}
    assert units - set(LAYER) - {"cvapps"} == set(), "add new packages to LAYERS"


def test_imports_point_down_the_layers():
    bad = sorted({(unit(m), unit(t)) for m, t, _ in imports()
                  if unit(t) not in (unit(m), "cvapps") and LAYER[unit(t)] >= LAYER[unit(m)]})
    assert bad == [], f"imports from a same or higher layer: {bad}"


def test_no_function_level_imports_of_cvapps_modules():
    lazy = sorted({(m, t) for m, t, at_top in imports() if not at_top and unit(m) not in LAZY_OK})
    assert lazy == [], f"move these imports to the module top (or fix the layering): {lazy}"


def _mentions_task(node) -> bool:
    if isinstance(node, ast.Constant):
        return node.value in TASK_NAMES
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return any(_mentions_task(e) for e in node.elts)
    return False


def test_no_task_name_branches_outside_tasks():
    found = []
    for f in sorted(ROOT.rglob("*.py")):
        if "tasks" in f.relative_to(ROOT).parts:
            continue
        for n in ast.walk(ast.parse(f.read_text())):
            if isinstance(n, ast.Compare) and any(_mentions_task(c) for c in [n.left, *n.comparators]):
                found.append(f"{f.relative_to(ROOT)}:{n.lineno}")
    assert found == [], f"ask the task's spec instead of comparing task names: {found}"


def test_the_rules_catch_what_they_should(tmp_path):
    """The checks above would fail on the patterns they forbid (they are not vacuous)."""
    tree = ast.parse("def f(model):\n    from .api import load\n    return model.task == 'detect'\n")
    compares = [n for n in ast.walk(tree) if isinstance(n, ast.Compare)]
    assert _mentions_task(compares[0].comparators[0])
    assert LAYER["cvapps.api"] >= LAYER["cvapps.tasks"]  # tasks importing api would be flagged


RUNTIME_NAMES = {"torch", "onnxruntime", "openvino", "tensorrt"}  # and "auto" compared with a backend


def _about_backend(n) -> bool:
    text = ast.unparse(n).lower()
    return "backend" in text or "runtime" in text


def _runtime_decision(node) -> bool:
    """A comparison with a runtime's name (``backend == "auto"``, ``in ("auto", "torch")``) or a
    test of a name's prefix (``name.startswith("onnxruntime")``)."""
    def names_runtime(n):
        if isinstance(n, ast.Constant):
            return n.value in RUNTIME_NAMES
        return isinstance(n, (ast.Tuple, ast.List, ast.Set)) and any(names_runtime(e) for e in n.elts)

    if isinstance(node, ast.Compare):
        sides = [node.left, *node.comparators]
        auto = any(isinstance(c, ast.Constant) and c.value == "auto" for c in sides) and any(map(_about_backend, sides))
        return auto or any(names_runtime(c) for c in sides)
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("startswith", "endswith") and any(names_runtime(a) for a in node.args))


def test_no_runtime_decisions_outside_the_runtime_room():
    found = []
    for f in sorted(ROOT.rglob("*.py")):
        if "runtimes" in f.relative_to(ROOT).parts:
            continue
        for n in ast.walk(ast.parse(f.read_text())):
            if _runtime_decision(n):
                found.append(f"{f.relative_to(ROOT)}:{n.lineno}")
    assert found == [], f"ask cvapps.runtimes (prepare, load_file, ...) instead of comparing runtime names: {found}"


def test_the_runtime_rule_catches_what_it_should():
    for code in ('backend == "auto"', 'b in ("auto", "torch")', 'name.startswith("onnxruntime")',
                 'getattr(m, "backend", "torch") == "torch"'):
        assert any(_runtime_decision(n) for n in ast.walk(ast.parse(code))), code
    for code in ('prepare(m, "auto")', 'init == "auto"'):
        assert not any(_runtime_decision(n) for n in ast.walk(ast.parse(code))), code
