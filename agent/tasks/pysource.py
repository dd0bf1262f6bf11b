"""Source text helpers: the functions of a module, replacing one, unified diffs and applying them.

Shared by the corpus, the package tasks and the checks; a few pure-Python standard-library functions add
more source for diffs and refactors.
"""

from __future__ import annotations

import ast
import difflib
import inspect
import re
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache


class SourceError(ValueError):
    """A function asked for is not in the source."""


@dataclass(frozen=True)
class SourceFunction:
    """One function with where it came from, for diffs and refactoring tasks."""

    origin: str  # "corpus" or "stdlib"
    module: str  # "intervals", "textwrap"
    qualname: str  # "merge", "LRUCache.get"
    source: str  # the def, dedented
    start: int  # first line (decorators included) in the module, 1-based
    end: int  # last line, inclusive

    @property
    def file(self) -> str:
        return f"{self.module}.py"

    @property
    def name(self) -> str:
        return self.qualname.rsplit(".", 1)[-1]


def function_nodes(tree: ast.AST) -> Iterator[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    """(qualname, node) for every function and method, outer ones first."""

    def visit(node: ast.AST, prefix: str) -> Iterator[tuple[str, ast.AST]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                qual = f"{prefix}{child.name}"
                yield qual, child
                yield from visit(child, qual + ".")
            elif isinstance(child, ast.ClassDef):
                yield from visit(child, f"{prefix}{child.name}.")

    yield from visit(tree, "")


def functions_of(source: str, module: str, origin: str = "corpus") -> list[SourceFunction]:
    return list(_functions_of(source, module, origin))


@lru_cache(maxsize=4096)
def _functions_of(source: str, module: str, origin: str) -> tuple[SourceFunction, ...]:
    lines = source.splitlines()
    out = []
    for qual, node in function_nodes(ast.parse(source)):
        start = min([node.lineno] + [d.lineno for d in node.decorator_list])
        text = textwrap.dedent("\n".join(lines[start - 1 : node.end_lineno])) + "\n"
        out.append(SourceFunction(origin, module, qual, text, start, node.end_lineno or node.lineno))
    return tuple(out)


def find_function(source: str, qualname: str) -> SourceFunction:
    for fn in functions_of(source, "?"):
        if fn.qualname == qualname:
            return fn
    raise SourceError(f"no function {qualname!r} in the source")


def replace_function(source: str, qualname: str, new_def: str) -> str:
    """Swap one function's text for new_def, re-indented to where the old one stood."""
    old = find_function(source, qualname)
    lines = source.splitlines(keepends=True)
    indent = re.match(r"\s*", lines[old.start - 1]).group(0)
    body = textwrap.indent(textwrap.dedent(new_def).strip("\n") + "\n", indent)
    return "".join(lines[: old.start - 1]) + body + "".join(lines[old.end :])


def unified_diff(before: str, after: str, path: str) -> str:
    """A git-style unified diff with three lines of context."""
    body = difflib.unified_diff(
        before.splitlines(keepends=True), after.splitlines(keepends=True), f"a/{path}", f"b/{path}", n=3
    )
    text = "".join(line if line.endswith("\n") else line + "\n" for line in body)
    return f"diff --git a/{path} b/{path}\n{text}" if text else ""


class PatchError(ValueError):
    """A diff that does not apply."""


HUNK_RE = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


def apply_diff(source: str, diff: str, fuzz: int = 3) -> str:
    """Apply a unified diff to source; hunks may sit up to `fuzz` lines off their stated place."""
    lines = source.splitlines()
    hunks: list[tuple[int, list[str]]] = []
    for raw in diff.rstrip().splitlines():
        match = HUNK_RE.match(raw)
        if match:
            hunks.append((int(match.group(1)), []))
        elif hunks and raw[:1] in (" ", "+", "-") and not raw.startswith(("--- ", "+++ ")):
            hunks[-1][1].append(raw)
        elif hunks and raw == "":
            hunks[-1][1].append(" ")  # editors strip the space of empty context lines
    if not hunks:
        raise PatchError("no hunks in the diff")
    offset = 0
    for start, body in hunks:
        old = [line[1:] for line in body if line[0] in " -"]
        new = [line[1:] for line in body if line[0] in " +"]
        at = max(start - 1 + offset, 0) if old else start + offset
        want = [l.rstrip() for l in old]

        def matches(pos: int) -> bool:
            return 0 <= pos <= len(lines) and [l.rstrip() for l in lines[pos : pos + len(old)]] == want

        near = [at + d for d in sorted(range(-fuzz, fuzz + 1), key=abs) if matches(at + d)]
        # Wrong line numbers are common in hand-written diffs: a context found exactly once still applies.
        anywhere = [p for p in range(len(lines) + 1) if matches(p)] if not near and old else []
        found = near[:1] or (anywhere if len(anywhere) == 1 else [])
        if not found:
            raise PatchError(f"hunk at line {start} does not match the source")
        lines[found[0] : found[0] + len(old)] = new
        offset += len(new) - len(old) + found[0] - at
    return "\n".join(lines) + "\n"


# Short, pure-Python functions whose source ships with every CPython.
STDLIB_FUNCTIONS = (
    ("textwrap", "dedent"), ("textwrap", "indent"), ("textwrap", "shorten"),
    ("colorsys", "rgb_to_hsv"), ("colorsys", "hsv_to_rgb"), ("colorsys", "rgb_to_hls"),
    ("colorsys", "rgb_to_yiq"), ("shlex", "quote"), ("shlex", "join"), ("fnmatch", "filter"),
    ("string", "capwords"), ("calendar", "isleap"), ("calendar", "leapdays"),
    ("genericpath", "commonprefix"), ("html", "escape"), ("heapq", "nsmallest"),
    ("bisect", "insort_right"), ("statistics", "median_low"), ("statistics", "median_high"),
    ("base64", "b64encode"), ("keyword", "issoftkeyword"), ("posixpath", "splitext"),
)


@lru_cache(maxsize=None)
def stdlib_functions() -> tuple[SourceFunction, ...]:
    """The listed standard-library functions that have readable Python source here."""
    import importlib

    out = []
    for module_name, attr in STDLIB_FUNCTIONS:
        try:
            module = importlib.import_module(module_name)
            func = getattr(module, attr)
            source = textwrap.dedent(inspect.getsource(func))
            ast.parse(source)
        except (ImportError, AttributeError, OSError, TypeError, SyntaxError):
            continue  # C-accelerated or missing on this build
        if not source.lstrip().startswith("def ") or source.count("\n") > 45:
            continue
        lines = source.count("\n")
        out.append(SourceFunction("stdlib", module_name, attr, source, 1, lines))
    return tuple(out)
