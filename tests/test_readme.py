"""Every `cvapps ...` command the README shows parses with the current CLI: the command
exists and every option is spelled as written with a value of the right type. (They are
not run: most need data the README only names; the ones that work on synthetic data run in
the other tests, e.g. `eval pose --results ... --data ...` in test_foundation.)"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer
from typer._click.core import Context  # typer vendors its own click
from typer._click.exceptions import UsageError

from cvapps.cli import _sources_as_arguments, app

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_commands() -> list[str]:
    text = README.read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    commands = []
    for block in blocks:
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.split("  #")[0].split(" # ")[0].strip()
            if "-m cvapps " in line:
                line = "cvapps " + line.split("-m cvapps ", 1)[1]
            if line.startswith("cvapps ") and "..." not in line:
                commands.append(line)
    return commands


COMMANDS = readme_commands()


def test_the_readme_has_commands():
    assert len(COMMANDS) >= 5


@pytest.mark.parametrize("line", COMMANDS)
def test_readme_command_parses(line):
    args = shlex.split(line)[1:]
    if len(args) > 1 and args[0] == "predict" and "," in args[1]:
        args = ["predict", "multi", "--tasks", args[1], *args[2:]]
    if args[:1] == ["predict"]:
        args = _sources_as_arguments(args)
    group = typer.main.get_command(app)
    ctx = Context(group, info_name="cvapps")
    cmd, rest = group, args
    while hasattr(cmd, "get_command") and rest and not rest[0].startswith("-"):
        sub = cmd.get_command(ctx, rest[0])
        assert sub is not None, f"no command {rest[0]!r} in: {line}"
        ctx = Context(sub, info_name=rest[0], parent=ctx)
        cmd, rest = sub, rest[1:]
    if rest == ["--version"] or not rest and hasattr(cmd, "get_command"):
        return
    try:
        cmd.make_context(cmd.name, list(rest), parent=ctx.parent)
    except UsageError as e:
        pytest.fail(f"{line}\n-> {e.format_message()}")
