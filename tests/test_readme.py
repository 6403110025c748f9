"""Every `cvapps ...` command the README shows parses with the current CLI: the command
exists and every option is spelled as written with a value of the right type. (They are
not run: most need data the README only names; the ones that work on synthetic data run in
the other tests, e.g. `eval pose --results ... --data ...` in test_foundation.)"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from test_docs import parse  # the docs' commands parse the same way

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
    parse(shlex.split(line)[1:])
