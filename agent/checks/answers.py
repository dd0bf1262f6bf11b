"""An answer parsed once for every rule: fenced blocks, labelled parts, lists."""

from __future__ import annotations

import re
from dataclasses import dataclass

FENCE_RE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)")
HEADING_RE = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
LABEL_RE = re.compile(r"^\*{0,2}([A-Z][A-Za-z0-9 /-]{0,30}?)\*{0,2}:(?:\s|$)")
BULLET_RE = re.compile(r"^[-*] ")
NUMBERED_RE = re.compile(r"^(\d+)[.)] ")
LOCATION_RE = re.compile(r"([\w./-]+\.py):(\d+)")


@dataclass(frozen=True)
class Block:
    lang: str
    code: str
    start: int  # index of the opening fence line
    end: int  # index of the closing fence line (or the last line if unclosed)


@dataclass(frozen=True)
class Part:
    """A section (`## Name`) or a labelled line (`Name: ...`) with the lines it holds."""

    name: str
    kind: str  # "heading" or "label"
    first: str  # text on the label line after the colon ("" for headings)
    lines: tuple[str, ...]  # following lines up to the next part, code blocks included

    @property
    def text(self) -> str:
        return "\n".join(([self.first] if self.first else []) + list(self.lines)).strip()

    @property
    def prose(self) -> str:
        return strip_code(self.text)


class Answer:
    """A response split into lines, fenced blocks, headings and labelled parts."""

    def __init__(self, text: str):
        self.text = text.replace("\r\n", "\n")
        self.lines = self.text.split("\n")
        self.blocks: list[Block] = []
        self.in_code: list[bool] = [False] * len(self.lines)
        i = 0
        while i < len(self.lines):
            match = FENCE_RE.match(self.lines[i])
            if match:
                fence = match.group(2)
                j = i + 1
                while j < len(self.lines) and not self.lines[j].strip().startswith(fence[0] * len(fence)):
                    j += 1
                for k in range(i, min(j, len(self.lines) - 1) + 1):
                    self.in_code[k] = True
                indent = len(match.group(1))
                body = [line[indent:] if line[:indent].strip() == "" else line for line in self.lines[i + 1 : j]]
                self.blocks.append(Block(match.group(3).lower(), "\n".join(body) + ("\n" if body else ""), i, min(j, len(self.lines) - 1)))
                i = j + 1
            else:
                i += 1

    @property
    def prose_lines(self) -> list[str]:
        return [line for line, code in zip(self.lines, self.in_code) if not code]

    @property
    def prose(self) -> str:
        return "\n".join(self.prose_lines)

    def headings(self, level: int | None = None) -> list[tuple[int, str, int]]:
        out = []
        for i, (line, code) in enumerate(zip(self.lines, self.in_code)):
            match = HEADING_RE.match(line) if not code else None
            if match and (level is None or len(match.group(1)) == level):
                out.append((len(match.group(1)), match.group(2).strip(), i))
        return out

    def parts(self, labels: tuple[str, ...] = ()) -> list[Part]:
        """Headings (any level) and lines that start with one of `labels` + ':'."""
        starts: list[tuple[int, str, str, str]] = []
        for i, (line, code) in enumerate(zip(self.lines, self.in_code)):
            if code:
                continue
            heading = HEADING_RE.match(line)
            if heading:
                starts.append((i, heading.group(2).strip(), "heading", ""))
                continue
            label = LABEL_RE.match(line)
            if label and label.group(1) in labels:
                starts.append((i, label.group(1), "label", line[label.end():].strip()))
        out = []
        for n, (i, name, kind, first) in enumerate(starts):
            stop = starts[n + 1][0] if n + 1 < len(starts) else len(self.lines)
            out.append(Part(name, kind, first, tuple(self.lines[i + 1 : stop])))
        return out

    def part(self, name: str, labels: tuple[str, ...] = ()) -> Part | None:
        for p in self.parts(tuple(labels) + (name,)):
            if p.name == name:
                return p
        return None


def strip_code(text: str) -> str:
    answer = Answer(text)
    return answer.prose


def words(text: str) -> int:
    return len(re.findall(r"\S+", text))


def list_items(text: str) -> tuple[list[str], list[str]]:
    """(items, stray lines) of a bullet or numbered list; continuation lines are indented."""
    items: list[str] = []
    stray: list[str] = []
    for line in Answer(text).prose_lines:
        if not line.strip():
            continue
        if BULLET_RE.match(line) or NUMBERED_RE.match(line):
            items.append(line)
        elif line.startswith((" ", "\t")) and items:
            items[-1] += " " + line.strip()
        else:
            stray.append(line)
    return items, stray


VERBS = set("""add adjust allow annotate avoid bump catch change check clamp clean clarify convert correct cover
create cut declare define delete deprecate describe document drop enable ensure expand expose extract fix
format guard handle harden implement import improve include inline introduce keep limit log make merge move
name narrow normalize normalise optimize optimise parse prefer prevent print raise reduce refactor reject
remove rename reorder replace require reset resolve restore restrict return reuse revert rewrite run separate
set show simplify skip sort split strip support swap switch test tidy track trim update upgrade use validate
verify widen wrap write modernise modernize reword count""".split())


def is_imperative(word: str) -> bool:
    w = word.lower().strip("`*_,.:;")
    if not w.isalpha():
        return False
    if w in VERBS:
        return True
    if w.endswith("ing") or (w.endswith("ed") and not w.endswith("eed")):
        return False
    if w.endswith("ies") and w[:-3] + "y" in VERBS:
        return False
    if w.endswith("es") and w[:-2] in VERBS or w.endswith("s") and w[:-1] in VERBS:
        return False
    return True
