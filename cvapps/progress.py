"""Progress for long loops: a rich bar on a terminal; elsewhere (logs, CI, pipes) a line
every ``every`` seconds once a phase has run that long, and one when it ends, so a long run
is never silent while a short one adds nothing."""

from __future__ import annotations

import time
import weakref

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
    TimeRemainingColumn
from rich.text import Text


class Phase:
    """``with Phase(console, "epoch 3/10", total) as p: ... p.advance(n)``; ``total`` may be None."""

    def __init__(self, console: Console, description: str, total: int | None = None, enabled: bool = True,
                 every: float = 30.0):
        self.console, self.description, self.total, self.every = console, description, total, every
        self.enabled = enabled and not console.quiet
        self.live = self.enabled and console.is_terminal
        self.done, self.logged = 0, False
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                            TimeRemainingColumn(), console=console, transient=True) if self.live else None

    def __enter__(self) -> "Phase":
        self.t0 = self.last = time.perf_counter()
        if self.bar is not None:
            self.bar.__enter__()
            self.tid = self.bar.add_task(self.description, total=self.total)
        return self

    def _line(self, text: str) -> None:
        self.console.print(Text(f"{self.description}: {text}"), highlight=False)
        self.logged = True

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.advance(self.tid, n)
        elif self.enabled and time.perf_counter() - self.last >= self.every:
            self.last = time.perf_counter()
            of = f" of {self.total}" if self.total else ""
            self._line(f"{self.done}{of} after {self.last - self.t0:.0f} s")

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)
        elif self.logged and exc[0] is None:
            self._line(f"{self.done} done in {time.perf_counter() - self.t0:.0f} s")


def count(n: int, noun: str, plural: str | None = None) -> str:
    """"1 file", "2 files", "0 boxes" (``plural`` where adding s is wrong)."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def note(console: Console, label: str, message: str, style: str = "red") -> None:
    """``label`` coloured, then ``message`` as plain text (paths and class names may hold
    brackets, which rich would take for markup)."""
    console.print(Text(label + " ", style=style) + Text(message), highlight=False)


_said: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # console -> what it was told


def say_once(console, text: str) -> None:
    """Tell ``console`` once (a CLI run has its own console: each run is told)."""
    if console is not None and text not in _said.setdefault(console, set()):
        _said[console].add(text)
        console.print(text, highlight=False, markup=False)
