"""Refactoring tasks: "degraded" copies of clean corpus code (short names, inlined constants, stripped
hints...), whose reference is the clean original."""

from __future__ import annotations

import ast
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from agent.tasks import mutations as mu, pysource
from agent.tasks.task import Task, TaskError, task_id

DEGRADATIONS = ("shorten-names", "camel-case", "inline-constants", "strip-hints", "strip-docstring",
                "percent-format", "bare-except")


@dataclass(frozen=True)
class _Degraded:
    source: str
    change: str  # what the refactoring (degraded -> clean) does, as an imperative sentence


def _rename(source: str, renames: dict[str, str]) -> str | None:
    """Rename local names by position; None unless the result is exactly the renamed AST."""
    tree = ast.parse(source)
    src = mu.SourceText(source)
    edits = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id in renames:
            span = src.span(node)
            if span is None or src.segment(node) != node.id:
                return None
            edits.append((*span, renames[node.id]))
    lines = list(src.lines)
    for line, col, end, text in sorted(edits, reverse=True):
        lines[line - 1] = lines[line - 1][:col] + text + lines[line - 1][end:]
    out = "\n".join(lines) + "\n"

    class Renamer(ast.NodeTransformer):
        def visit_Name(self, node: ast.Name) -> ast.Name:
            node.id = renames.get(node.id, node.id)
            return node

    try:
        if ast.dump(ast.parse(out)) != ast.dump(Renamer().visit(ast.parse(source))):
            return None
    except SyntaxError:
        return None
    return out


def _plain_locals(func: ast.FunctionDef) -> list[str]:
    params = {a.arg for a in func.args.args + func.args.kwonlyargs + func.args.posonlyargs}
    if func.args.vararg:
        params.add(func.args.vararg.arg)
    if func.args.kwarg:
        params.add(func.args.kwarg.arg)
    keywords = {k.arg for n in ast.walk(func) if isinstance(n, ast.Call) for k in n.keywords}
    globals_ = {name for n in ast.walk(func) if isinstance(n, (ast.Global, ast.Nonlocal)) for name in n.names}
    names = []
    for node in ast.walk(func):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            if node.id not in params | keywords | globals_ and node.id != "_" and node.id not in names:
                names.append(node.id)
    return names


def def_node(source: str) -> ast.FunctionDef:
    node = ast.parse(source).body[0]
    if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        raise TaskError("expected a function definition")
    return node


def _used_names(source: str) -> set[str]:
    return {n.id for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Name)} | \
           {a.arg for n in ast.walk(ast.parse(source)) if isinstance(n, ast.arguments)
            for a in n.args + n.kwonlyargs + n.posonlyargs}


def degrade_shorten_names(source: str) -> _Degraded | None:
    func = def_node(source)
    names = [n for n in _plain_locals(func) if len(n) >= 3]
    if not names:
        return None
    taken = _used_names(source)
    short = [c for c in "abcdefghmnpqrstuvwxyz" if c not in taken]
    renames = dict(zip(names, short))
    if len(renames) < len(names):
        return None
    out = _rename(source, renames)
    if out is None:
        return None
    listed = ", ".join(f"`{s}` to `{n}`" for n, s in renames.items())
    return _Degraded(out, f"Rename {listed}.")


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def degrade_camel_case(source: str) -> _Degraded | None:
    func = def_node(source)
    names = [n for n in _plain_locals(func) if "_" in n.strip("_") and n == n.lower()]
    if not names:
        return None
    renames = {n: _camel(n) for n in names}
    if set(renames.values()) & _used_names(source):
        return None
    out = _rename(source, renames)
    if out is None:
        return None
    listed = ", ".join(f"`{c}` to `{n}`" for n, c in renames.items())
    return _Degraded(out, f"Rename {listed} to follow snake_case.")


def module_constants(module_source: str) -> dict[str, str]:
    """UPPER_CASE module constants bound to a plain number: name -> literal text."""
    out = {}
    for node in ast.parse(module_source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name, value = node.targets[0].id, node.value
            if re.fullmatch(r"[A-Z][A-Z0-9_]*", name) and isinstance(value, ast.Constant) \
                    and type(value.value) in (int, float):
                out[name] = ast.unparse(value)
    return out


def degrade_inline_constants(source: str, constants: dict[str, str]) -> tuple[_Degraded, dict[str, str]] | None:
    used = {n.id for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Name) and n.id in constants}
    if not used:
        return None
    tree = ast.parse(source)
    src = mu.SourceText(source)
    edits = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id in used:
            span = src.span(node)
            if span is None:
                return None
            edits.append((*span, constants[node.id]))
    lines = list(src.lines)
    for line, col, end, text in sorted(edits, reverse=True):
        lines[line - 1] = lines[line - 1][:col] + text + lines[line - 1][end:]
    picked = {name: constants[name] for name in sorted(used)}
    listed = ", ".join(f"`{name} = {value}`" for name, value in picked.items())
    return _Degraded("\n".join(lines) + "\n", f"Extract the literal{'s' if len(picked) > 1 else ''} into {listed}."), picked


def degrade_strip_hints(source: str) -> _Degraded | None:
    func = def_node(source)
    args = func.args
    annotated = [a for a in args.posonlyargs + args.args + args.kwonlyargs + [args.vararg, args.kwarg] if a and a.annotation]
    if not annotated and func.returns is None:
        return None
    body_start = func.body[0].lineno
    if body_start == func.lineno:
        return None
    stripped = ast.parse(source).body[0]
    for a in ast.walk(stripped.args):
        if isinstance(a, ast.arg):
            a.annotation = None
    prefix = "async def" if isinstance(func, ast.AsyncFunctionDef) else "def"
    signature = f"{prefix} {func.name}({ast.unparse(stripped.args)}):"
    lines = source.splitlines()
    # The signature runs from the def line (decorators sit above it) to the line before the body.
    lines[func.lineno - 1 : body_start - 1] = [signature]
    out = "\n".join(lines) + "\n"
    try:
        ast.parse(out)
    except SyntaxError:
        return None
    return _Degraded(out, f"Add type hints to the parameters and the return value of `{func.name}`.")


def degrade_strip_docstring(source: str) -> _Degraded | None:
    func = def_node(source)
    first = func.body[0]
    if not (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str)):
        return None
    if len(func.body) == 1:
        return None
    lines = source.splitlines()
    del lines[first.lineno - 1 : first.end_lineno]
    return _Degraded("\n".join(lines) + "\n", f"Add a one-line docstring to `{func.name}`.")


_SPEC_RE = re.compile(r"^(0?)(\d*)(\.\d+)?([dfs]?)$")


def _percent_piece(value: ast.FormattedValue) -> str | None:
    conv = {-1: "s", ord("s"): "s", ord("r"): "r"}.get(value.conversion)
    if conv is None:
        return None
    if value.format_spec is None:
        return "%" + conv
    spec = value.format_spec
    if not (isinstance(spec, ast.JoinedStr) and len(spec.values) == 1 and isinstance(spec.values[0], ast.Constant)):
        return None
    text = spec.values[0].value
    if text.startswith(">"):
        text = text[1:]
    elif text.startswith("<"):
        text = "-" + text[1:]
    match = _SPEC_RE.match(text.lstrip("-"))
    if match is None or conv == "r":
        return None
    return "%" + text + ("" if match.group(4) else "s")


def degrade_percent_format(source: str) -> _Degraded | None:
    tree = ast.parse(source)
    src = mu.SourceText(source)
    edits = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.JoinedStr) or src.span(node) is None:
            continue
        parts, args = [], []
        for value in node.values:
            if isinstance(value, ast.Constant):
                parts.append(value.value.replace("%", "%%"))
            else:
                piece = _percent_piece(value)
                if piece is None or isinstance(value.value, ast.JoinedStr):
                    break
                parts.append(piece)
                args.append(ast.unparse(value.value))
        else:
            if not args:
                continue
            fmt = '"' + "".join(parts).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
            edits.append((*src.span(node), f"{fmt} % ({', '.join(args)},)" if len(args) == 1 else f"{fmt} % ({', '.join(args)})"))
    if not edits:
        return None
    lines = list(src.lines)
    for line, col, end, text in sorted(edits, reverse=True):
        lines[line - 1] = lines[line - 1][:col] + text + lines[line - 1][end:]
    out = "\n".join(lines) + "\n"
    try:
        ast.parse(out)
    except SyntaxError:
        return None
    return _Degraded(out, "Replace `%` formatting with f-strings.")


def degrade_bare_except(source: str) -> _Degraded | None:
    tree = ast.parse(source)
    src = mu.SourceText(source)
    edits, caught = [], []
    for node in ast.walk(tree):
        if isinstance(node, ast.ExceptHandler) and node.type is not None and node.name is None:
            span = src.span(node.type)
            if span is None:
                continue
            line = src.lines[span[0] - 1]
            head = line[: span[1]].rstrip()
            if not head.endswith("except"):
                continue
            edits.append((span[0], len(head), span[2], ""))
            caught.append(src.segment(node.type))
    if not edits:
        return None
    lines = list(src.lines)
    for line, col, end, text in sorted(edits, reverse=True):
        lines[line - 1] = lines[line - 1][:col] + text + lines[line - 1][end:]
    names = ", ".join(f"`{c}`" for c in caught)
    return _Degraded("\n".join(lines) + "\n", f"Catch {names} instead of using a bare `except`.")


@dataclass(frozen=True)
class RefactorSource:
    fn: pysource.SourceFunction
    module_source: str  # where the function lives (for diffs and inlined constants)


@lru_cache(maxsize=None)
def refactor_sources(pool: str) -> tuple[RefactorSource, ...]:
    out = []
    for mod in mu.load_corpus(pool):
        for fn in pysource.functions_of(mod.source, mod.name):
            if "." not in fn.qualname and not fn.name.startswith("_"):
                out.append(RefactorSource(fn, mod.source))
    if pool in ("train", "all"):
        import importlib
        import inspect

        for fn in pysource.stdlib_functions():
            try:
                module_source = inspect.getsource(importlib.import_module(fn.module))
            except (OSError, TypeError):
                continue
            located = next((f for f in pysource.functions_of(module_source, fn.module, origin="stdlib")
                            if f.qualname == fn.qualname), None)
            if located is not None:
                out.append(RefactorSource(located, module_source))
    return tuple(out)


def degrade(source: str, kinds: Sequence[str], module_source: str = "") -> tuple[str, list[str], dict[str, str]] | None:
    """Apply degradations in order; None if one does not apply. Returns (code, changes, constants)."""
    got = _degrade(source, tuple(kinds), module_source)
    return None if got is None else (got[0], list(got[1]), dict(got[2]))


@lru_cache(maxsize=8192)
def _degrade(source: str, kinds: tuple[str, ...], module_source: str) -> tuple[str, tuple[str, ...], tuple] | None:
    changes: list[str] = []
    constants: dict[str, str] = {}
    current = source
    for kind in kinds:
        if kind == "inline-constants":
            got = degrade_inline_constants(current, module_constants(module_source)) if module_source else None
            if got is None:
                return None
            result, constants = got
        else:
            result = {
                "shorten-names": degrade_shorten_names, "camel-case": degrade_camel_case,
                "strip-hints": degrade_strip_hints, "strip-docstring": degrade_strip_docstring,
                "percent-format": degrade_percent_format, "bare-except": degrade_bare_except,
            }[kind](current)
        if result is None:
            return None
        current = result.source
        changes.append(result.change)
    return current, tuple(changes), tuple(constants.items())


def refactoring_tasks(pool: str, kinds: Sequence[str] | None, rng: random.Random, n: int) -> list[Task]:
    sources = list(refactor_sources(pool))
    rng.shuffle(sources)
    tasks = []
    for src in sources:
        if len(tasks) >= n:
            break
        if kinds:
            chosen = list(kinds)
        else:
            options = [k for k in DEGRADATIONS if degrade(src.fn.source, [k], src.module_source)]
            if not options:
                continue
            chosen = [rng.choice(options)]
        got = degrade(src.fn.source, chosen, src.module_source)
        if got is None:
            continue
        code, changes, constants = got
        clean = "".join(f"{name} = {value}\n" for name, value in constants.items())
        clean = (clean + "\n\n" if clean else "") + src.fn.source
        ask = rng.choice(["Refactor this function.", "Please clean up this code.", "Refactor this code without changing its behaviour."])
        prompt = f"{ask}\n\n```python\n{code}```"
        params = [a.arg for a in ast.walk(def_node(src.fn.source).args) if isinstance(a, ast.arg)]
        truth = {"origin": src.fn.origin, "module": src.fn.module, "file": src.fn.file, "function": src.fn.qualname,
                 "kinds": chosen, "changes": changes, "constants": constants, "clean_code": clean,
                 "degraded_code": code, "params": params}
        tasks.append(Task(task_id("refactoring", src.fn.module, src.fn.qualname, ",".join(chosen)), "refactoring",
                          prompt, {"code": code, "file": src.fn.file}, truth, "+".join(chosen)))
    return tasks
