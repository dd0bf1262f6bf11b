"""Parsing a model reply into one action. Tolerant of small models, strict about ambiguity.

A reply holds one fenced block whose info string names the action:

    ```bash            any shell command, run in the sandbox
    ```read            a path, optionally with a window: `path:START` or `path:START-END`
    ```edit            a path line, then <<<<<<< SEARCH / ======= / >>>>>>> REPLACE,
                       or `path:START-END` then the new text of lines START..END
    ```test            runs the repo's test command
    ```submit          ends the run
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

KINDS = ("bash", "read", "edit", "test", "submit")
# The GBNF grammar of the replies this parser accepts (the llama backend decodes under it)
GRAMMAR_PATH = Path(__file__).with_name("actions.gbnf")
ALIASES = {"sh": "bash", "shell": "bash", "console": "bash", "": "bash"}
FENCE = re.compile(r"```([A-Za-z]*)[^\n]*\n(.*?)```", re.DOTALL)
RANGE = re.compile(r"^(?P<path>[^\n:]+):(?P<start>\d+)-(?P<end>\d+)[ \t]*(?:\n(?P<text>.*))?$", re.DOTALL)
EDIT = re.compile(r"^(?P<path>[^\n]+)\n<{5,7} ?SEARCH\n(?P<search>.*?)\n?={5,7}\n(?P<replace>.*?)\n?>{5,7} ?REPLACE",
                  re.DOTALL)


class FormatError(ValueError):
    """The reply holds no usable action; the message goes back to the model."""


@dataclass(frozen=True)
class Action:
    kind: str
    arg: str = ""
    search: str = ""
    replace: str = ""
    lines: tuple[int, int] | None = None  # a line-range edit: replace lines START..END with `replace`

    def key(self) -> tuple:
        """Identity for loop detection."""
        return (self.kind, self.arg.strip(), self.search, self.replace, self.lines)

    def to_dict(self) -> dict:
        d: dict = {"kind": self.kind, "arg": self.arg}
        if self.kind == "edit":
            d |= {"search": self.search, "replace": self.replace}
            if self.lines:
                d["lines"] = list(self.lines)
        return d


def parse(reply: str) -> Action:
    blocks = [(ALIASES.get(lang.lower(), lang.lower()), body) for lang, body in FENCE.findall(reply)]
    blocks = [(kind, body) for kind, body in blocks if kind in KINDS]
    if not blocks:
        raise FormatError(
            "no action found: reply with exactly one fenced block whose language is one of "
            + ", ".join(KINDS) + " (e.g. ```bash\\nls\\n```)"
        )
    if len({(k, b) for k, b in blocks}) > 1:
        raise FormatError(f"found {len(blocks)} action blocks: send exactly one action per reply")
    kind, body = blocks[0]
    if kind == "bash":
        if not body.strip():
            raise FormatError("empty bash block: put one shell command in it")
        return Action("bash", body.strip())
    if kind == "read":
        if not body.strip():
            raise FormatError("empty read block: give a file path")
        return Action("read", body.strip().splitlines()[0].strip())
    if kind == "edit":
        body = body.lstrip("\n")
        m = EDIT.match(body)
        if m:
            return Action("edit", m["path"].strip(), m["search"], m["replace"])
        r = RANGE.match(body)
        if r:  # (SEARCH/REPLACE was tried first: a range whose text holds markers is still a range)
            start, end = int(r["start"]), int(r["end"])
            if start < 1:  # (an END before START is the tool's to refuse: the grammar cannot compare numbers)
                raise FormatError(f"edit line range {start}-{end}: lines start at 1")
            return Action("edit", r["path"].strip(), "", (r["text"] or "").removesuffix("\n"), (start, end))
        raise FormatError(
            "edit block must be: a path line, then <<<<<<< SEARCH, the exact old text, =======, "
            "the new text, >>>>>>> REPLACE; or `path:START-END` and then the new text of those lines"
        )
    return Action(kind)
