"""How commands talk to people: one-line errors, JSON when asked, rich tables otherwise.

rich is the one progress library. On a terminal, text wraps to its width and slow steps show a spinner;
piped or redirected, text is never wrapped (rich would wrap at 80 columns), tables keep their natural
width, and each slow step is one line on stderr, so a log still shows what the command was doing.
"""

from __future__ import annotations

import contextlib
import json
import sys
from typing import Any, NoReturn

from rich.console import Console
from rich.measure import Measurement
from rich.table import Table


class _Console(Console):
    def __init__(self, stderr: bool = False) -> None:
        stream = sys.stderr if stderr else sys.stdout
        # soft wrap: print() neither wraps nor crops lines when the stream is not a terminal
        super().__init__(stderr=stderr, soft_wrap=not _isatty(stream))

    def status(self, status, *args, **kwargs):
        """A spinner on a terminal stderr; otherwise the text (and each update) as one line on stderr. Never
        on stdout, which may be JSON for a pipe."""
        if err_console.is_terminal:
            return Console.status(err_console, status, *args, **kwargs)
        return _LineStatus(status)


class _LineStatus(contextlib.AbstractContextManager):
    """rich's Status for a stream that is not a terminal: one plain line per step."""

    def __init__(self, text: str) -> None:
        self.update(text)

    def update(self, status: str | None = None, **_) -> None:
        if status:
            err_console.print(status, highlight=False)

    def __exit__(self, *exc) -> None:
        return None


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


console = _Console()
err_console = _Console(stderr=True)


def fail(message: str, code: int = 2) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise SystemExit(code)


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def table(rows: list[dict], columns: list[str], title: str | None = None) -> None:
    t = Table(title=title, show_lines=False, header_style="bold")
    for c in columns:
        t.add_column(c)
    for r in rows:
        t.add_row(*("" if r.get(c) is None else str(r.get(c)) for c in columns))
    if console.is_terminal:
        console.print(t)
        return
    # not a terminal: the table at its natural width, so no cell is wrapped at 80 columns
    natural = Measurement.get(console, console.options.update_width(1_000_000), t).maximum
    Console(file=console.file, width=max(natural, 20)).print(t)
