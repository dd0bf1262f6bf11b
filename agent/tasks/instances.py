"""Deterministic task instances for the six subtasks, with their ground truth.

Every task is built from the bundled corpus (and a few standard-library functions):
injected bugs give localization, fixing and review tasks; "degraded" copies of clean code
(short names, inlined constants, stripped hints...) give refactoring tasks whose reference
is the clean original; small diffs between versions give commit-message and review tasks;
call examples in `cases.json` give test-writing tasks. Same (subtask, n, seed, pool,
kinds) -> the same tasks, in the same order.
"""

from __future__ import annotations

import ast
import hashlib
import random
import re
import sys
import types
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import date
from functools import lru_cache
from typing import Any

from agent.tasks import mutations as mu
SUBTASKS = ("bug-localization", "bug-fixing", "test-writing", "code-review", "commit-message", "refactoring")


class TaskError(ValueError):
    """A bad request for tasks: unknown subtask, pool or kind."""


@dataclass(frozen=True)
class Task:
    id: str
    subtask: str
    prompt: str  # what the user asks, inputs included
    inputs: dict[str, str] = field(default_factory=dict)  # the raw inputs (code, diff, test output)
    truth: dict[str, Any] = field(default_factory=dict)  # ground truth, JSON-serialisable
    kind: str = ""  # which generator made it: an operator, a diff kind, a degradation set

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_subtask(subtask: str) -> str:
    if subtask not in SUBTASKS:
        raise TaskError(f"unknown subtask {subtask!r} (expected one of {', '.join(SUBTASKS)})")
    return subtask


def _task_id(subtask: str, *parts: str) -> str:
    digest = hashlib.sha256("\0".join(parts).encode("utf-8")).hexdigest()[:10]
    return f"{subtask}/{parts[0]}/{digest}"


# --------------------------------------------------------------------------- shared rendering


def numbered(source: str, start: int, end: int) -> str:
    lines = source.splitlines()
    return "\n".join(f"{n:>4} | {lines[n - 1]}" for n in range(start, end + 1))


def format_failures(run_failures: Sequence[mu.TestFailure], passed: int, test_file: str, detail: int = 2) -> str:
    """Failing tests as a compact, pytest-like report."""
    out = [f"$ python -m pytest -q {test_file}", "=" * 30 + " FAILURES " + "=" * 30]
    for failure in run_failures[:detail]:
        out.append(f"____ {failure.test} ____")
        for file, line, func, text in failure.frames:
            out.append(f"{file}:{line}: in {func}")
            if text:
                out.append(f"    {text}")
        first, *more = (failure.explain or failure.message).splitlines() or [""]
        out.append(f"E   {failure.error}: {first}" if first else f"E   {failure.error}")
        out.extend(f"E   {line}" for line in more)
    out.append("=" * 24 + " short test summary info " + "=" * 24)
    for failure in run_failures[:5]:
        out.append(f"FAILED {test_file}::{failure.test} - {failure.error}")
    if len(run_failures) > 5:
        out.append(f"... and {len(run_failures) - 5} more")
    out.append(f"{len(run_failures)} failed, {passed} passed")
    return "\n".join(out)


def literal(value: Any) -> str | None:
    """Python source that evaluates back to value (dates as `date(...)`), or None."""
    if isinstance(value, date):
        return f"date({value.year}, {value.month}, {value.day})"
    if isinstance(value, (list, tuple)):
        items = [literal(v) for v in value]
        if any(i is None for i in items):
            return None
        if isinstance(value, tuple):
            return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
        return "[" + ", ".join(items) + "]"
    if isinstance(value, dict):
        pairs = [(literal(k), literal(v)) for k, v in value.items()]
        if any(k is None or v is None for k, v in pairs):
            return None
        return "{" + ", ".join(f"{k}: {v}" for k, v in pairs) + "}"
    if value is None or isinstance(value, (bool, int, float, str)):
        return repr(value)
    return None


# --------------------------------------------------------------------------- bugs


def _excerpt(mutation: mu.Mutation, rng: random.Random, max_lines: int = 40) -> tuple[int, int, str]:
    """Line range around the buggy function: it, plus an adjacent function when room allows."""
    funcs = mu.functions_of(mutation.original, mutation.module)
    target = next(f for f in funcs if f.qualname == mutation.function)
    lines = mutation.original.splitlines()
    depth = target.qualname.count(".")

    def adjacent(a: mu.SourceFunction, b: mu.SourceFunction) -> bool:
        """Only blank lines between a (above) and b (below)."""
        return a.end < b.start and all(not lines[i - 1].strip() for i in range(a.end + 1, b.start))

    neighbours = [f for f in funcs if f.qualname.count(".") == depth and f.qualname != target.qualname
                  and (adjacent(f, target) or adjacent(target, f))]
    rng.shuffle(neighbours)
    start, end = target.start, target.end
    for other in neighbours:
        lo, hi = min(start, other.start), max(end, other.end)
        if hi - lo + 1 <= max_lines:
            start, end = lo, hi
            break
    return start, end, numbered(mutation.source, start, end)


def bug_cause(m: mu.Mutation) -> str:
    """One sentence saying what is wrong, as a careful reader of the buggy code would."""
    before, after, line = m.before, m.after, m.line
    return {
        "cmp-flip": f"The comparison on line {line} uses `{after}` where `{before}` is needed.",
        "off-by-one": f"The constant `{after}` on line {line} is off by one; it should be `{before}`.",
        "arith-swap": f"Line {line} uses the operator `{after}` where `{before}` is needed.",
        "bool-swap": f"The condition on line {line} joins its parts with `{after}` instead of `{before}`.",
        "not-drop": f"The condition on line {line} lost its `not`: it should be `{before}`.",
        "var-swap": f"Line {line} reads `{after}` where it should read `{before}`.",
        "drop-guard": f"The guard on line {line} does nothing; it should run `{before}`.",
        "minmax-swap": f"Line {line} calls `{after}` where `{before}` is needed.",
        "range-stop": f"The `range` on line {line} stops one step early at `{after}`.",
    }.get(m.operator, f"Line {line} is wrong: it should be `{m.original_line.strip()}`.")


def _evidence(m: mu.Mutation) -> list[str]:
    out = []
    for failure in m.failures[:2]:
        detail = (failure.explain or failure.message).splitlines()[0] if (failure.explain or failure.message) else ""
        if len(detail) > 70:
            detail = detail[:67] + "..."
        out.append(f"`{failure.test}` fails with {failure.error}" + (f": `{detail}`." if detail else "."))
    return out


def _test_source(module: str, test: str) -> str:
    mod = mu.corpus_module(module)
    for fn in mu.functions_of(mod.tests, module):
        if fn.qualname == test.split("[")[0]:
            return fn.source
    return ""


def _bug_truth(m: mu.Mutation) -> dict[str, Any]:
    return {
        "module": m.module, "file": m.file, "function": m.function, "name": m.function.rsplit(".", 1)[-1],
        "line": m.line, "buggy_line": m.mutated_line, "fixed_line": m.original_line,
        "operator": m.operator, "description": m.description, "fix": m.fix, "before": m.before, "after": m.after,
        "cause": bug_cause(m), "evidence": _evidence(m), "failing_tests": list(m.failing_tests),
        "failing_errors": [f.error for f in m.failures],
        "frames": [[file, line, func] for file, line, func, _ in (m.failures[0].frames if m.failures else ())],
        "test_file": mu.corpus_module(m.module).test_file,
        # The shortest failing test makes the most focused regression test.
        "failing_test_source": min((_test_source(m.module, t) for t in m.failing_tests), key=len, default=""),
    }


def _bug_report(m: mu.Mutation) -> str:
    mod = mu.corpus_module(m.module)
    return format_failures(m.failures, len(m.passed), mod.test_file)


def _balanced(items: list[mu.Mutation], n: int, rng: random.Random) -> list[mu.Mutation]:
    """Pick n mutations, spreading over operators (var-swap and off-by-one are most common)."""
    by_op: dict[str, list[mu.Mutation]] = {}
    for item in items:
        by_op.setdefault(item.operator, []).append(item)
    for group in by_op.values():
        rng.shuffle(group)
    ops = sorted(by_op)
    out: list[mu.Mutation] = []
    while len(out) < n and any(by_op.values()):
        rng.shuffle(ops)
        for op in ops:
            if by_op[op] and len(out) < n:
                out.append(by_op[op].pop())
    return out


def _localization_task(m: mu.Mutation, rng: random.Random) -> Task:
    start, end, code = _excerpt(m, rng)
    report = _bug_report(m)
    ask = rng.choice([
        "Where is the bug? Point to the faulty line.",
        "Locate the bug that makes these tests fail.",
        "Find the line that causes the failure.",
    ])
    prompt = (f"The tests for `{m.file}` fail.\n\nTest output:\n```text\n{report}\n```\n\n"
              f"Code (`{m.file}`, lines {start}-{end}):\n```python\n{code}\n```\n\n{ask}")
    truth = _bug_truth(m) | {"excerpt": [start, end]}
    return Task(_task_id("bug-localization", m.module, m.id), "bug-localization", prompt,
                {"file": m.file, "test_output": report, "code": code}, truth, m.operator)


def _fixing_task(m: mu.Mutation, rng: random.Random) -> Task:
    fn = mu.find_function(m.source, m.function)
    fixed = mu.find_function(m.original, m.function)
    report = _bug_report(m)
    ask = rng.choice(["Fix the bug.", "Please fix this bug.", "Make the failing tests pass with a minimal fix."])
    prompt = (f"The tests for `{m.file}` fail.\n\nTest output:\n```text\n{report}\n```\n\n"
              f"Code (`{m.file}`, `{m.function}`, lines {fn.start}-{fn.end}):\n```python\n{fn.source}```\n\n{ask}")
    truth = _bug_truth(m) | {
        "buggy_function": fn.source, "fixed_function": fixed.source, "start": fn.start, "end": fn.end,
        "diff": mu.unified_diff(m.source, m.original, m.file),
    }
    return Task(_task_id("bug-fixing", m.module, m.id), "bug-fixing", prompt,
                {"file": m.file, "test_output": report, "code": fn.source}, truth, m.operator)


def buggy_source(truth: dict[str, Any]) -> str:
    """The buggy module a bug task describes (corpus source with the one-line edit)."""
    mod = mu.corpus_module(truth["module"])
    lines = mod.source.splitlines()
    if lines[truth["line"] - 1] != truth["fixed_line"]:
        raise TaskError(f"task truth does not match corpus module {mod.name!r}")
    lines[truth["line"] - 1] = truth["buggy_line"]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- test writing


@lru_cache(maxsize=None)
def _module_namespace(name: str) -> dict[str, Any]:
    """Import a corpus module in-process (our own code) to compute expected values."""
    mod = mu.corpus_module(name)
    module = types.ModuleType(f"_corpus_{name}")
    sys.modules[module.__name__] = module  # dataclasses look their module up
    exec(compile(mod.source, mod.file, "exec"), module.__dict__)
    namespace = dict(module.__dict__)
    for line in mod.imports:
        exec(line, namespace)
    return namespace


def _cases(mod: mu.CorpusModule, func: str) -> list[dict[str, str]]:
    namespace = _module_namespace(mod.name)
    out = []
    for call, condition in mod.cases.get(func, ()):
        case = {"call": call, "condition": condition}
        try:
            value = eval(call, dict(namespace))
        except Exception as exc:  # the case documents an error
            case["raises"] = type(exc).__name__
            case["message"] = str(exc)
        else:
            text = literal(value)
            if text is None or eval(text, dict(namespace)) != value:
                continue
            case["expect"] = text
        out.append(case)
    return out


def _test_writing_tasks(pool: str) -> list[Task]:
    tasks = []
    for mod in mu.load_corpus(pool):
        for fn in mu.functions_of(mod.source, mod.name):
            if fn.qualname not in mod.cases:
                continue
            cases = _cases(mod, fn.qualname)
            if len(cases) < 2:
                continue
            imports = [f"from {mod.name} import {fn.qualname}", *mod.imports]
            prompt = (f"Write pytest tests for `{fn.qualname}` in `{mod.file}` "
                      f"(import it with `from {mod.name} import {fn.qualname}`).\n\n```python\n{fn.source}```")
            truth = {"module": mod.name, "file": mod.file, "function": fn.qualname, "cases": cases,
                     "imports": imports, "error_types": sorted({c["raises"] for c in cases if "raises" in c})}
            kind = "raises" if truth["error_types"] else "values"
            tasks.append(Task(_task_id("test-writing", mod.name, fn.qualname), "test-writing", prompt,
                              {"file": mod.file, "code": fn.source}, truth, kind))
    return tasks


# --------------------------------------------------------------------------- degradations (refactoring)

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


def _def_node(source: str) -> ast.FunctionDef:
    node = ast.parse(source).body[0]
    if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        raise TaskError("expected a function definition")
    return node


def _used_names(source: str) -> set[str]:
    return {n.id for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Name)} | \
           {a.arg for n in ast.walk(ast.parse(source)) if isinstance(n, ast.arguments)
            for a in n.args + n.kwonlyargs + n.posonlyargs}


def degrade_shorten_names(source: str) -> _Degraded | None:
    func = _def_node(source)
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
    func = _def_node(source)
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
    func = _def_node(source)
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
    func = _def_node(source)
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
class _RefactorSource:
    fn: mu.SourceFunction
    module_source: str  # where the function lives (for diffs and inlined constants)


@lru_cache(maxsize=None)
def _refactor_sources(pool: str) -> tuple[_RefactorSource, ...]:
    out = []
    for mod in mu.load_corpus(pool):
        for fn in mu.functions_of(mod.source, mod.name):
            if "." not in fn.qualname and not fn.name.startswith("_"):
                out.append(_RefactorSource(fn, mod.source))
    if pool in ("train", "all"):
        import inspect
        import importlib

        for fn in mu.stdlib_functions():
            try:
                module_source = inspect.getsource(importlib.import_module(fn.module))
            except (OSError, TypeError):
                continue
            located = next((f for f in mu.functions_of(module_source, fn.module, origin="stdlib")
                            if f.qualname == fn.qualname), None)
            if located is not None:
                out.append(_RefactorSource(located, module_source))
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


def _refactoring_tasks(pool: str, kinds: Sequence[str] | None, rng: random.Random, n: int) -> list[Task]:
    sources = list(_refactor_sources(pool))
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
        params = [a.arg for a in ast.walk(_def_node(src.fn.source).args) if isinstance(a, ast.arg)]
        truth = {"origin": src.fn.origin, "module": src.fn.module, "file": src.fn.file, "function": src.fn.qualname,
                 "kinds": chosen, "changes": changes, "constants": constants, "clean_code": clean,
                 "degraded_code": code, "params": params}
        tasks.append(Task(_task_id("refactoring", src.fn.module, src.fn.qualname, ",".join(chosen)), "refactoring",
                          prompt, {"code": code, "file": src.fn.file}, truth, "+".join(chosen)))
    return tasks


# --------------------------------------------------------------------------- diffs (commit messages, reviews)

DIFF_KINDS = ("fix", "feat", "refactor", "docs", "test", "bug")
PROJECT_KEYS = ("CORE", "API", "OPS", "WEB", "DATA", "PAY")
AUTHORS = ("Ada Park <ada.park@example.com>", "Bo Lindqvist <bo@example.org>", "Chidi Okafor <chidi@example.net>",
           "Dana Cruz <dana.cruz@example.com>", "Eun-ji Han <eunji@example.org>")


def third_person(verb: str) -> str:
    low = verb.lower()
    if low.endswith("y") and low[-2:-1] not in "aeiou":
        return low[:-1] + "ies"
    if low.endswith(("s", "x", "z", "ch", "sh")):
        return low + "es"
    return low + "s"


def _doc_summary(source: str) -> str:
    doc = ast.get_docstring(_def_node(source)) or ""
    return doc.strip().splitlines()[0].rstrip(".") if doc.strip() else ""


def _fix_summaries(m: mu.Mutation, name: str) -> list[str]:
    by_op = {
        "cmp-flip": [f"correct the comparison in {name}", f"fix comparison in {name}"],
        "off-by-one": [f"correct an off-by-one in {name}", f"fix off-by-one in {name}"],
        "arith-swap": [f"correct the arithmetic in {name}", f"fix arithmetic in {name}"],
        "bool-swap": [f"correct the condition in {name}", f"fix condition in {name}"],
        "not-drop": [f"restore the negation in {name}", f"fix condition in {name}"],
        "var-swap": [f"use the right variable in {name}", f"fix variable in {name}"],
        "drop-guard": [f"restore the early exit in {name}", f"restore guard in {name}"],
        "minmax-swap": [f"use the right bound in {name}", f"fix bound in {name}"],
        "range-stop": [f"correct the range bound in {name}", f"fix range in {name}"],
    }
    return by_op.get(m.operator, []) + [f"correct {name}", f"fix {name}"]


def _change_truth(kind: str, file: str, module: str, symbols: list[str], summaries: list[str],
                  why: str, what: str, rng: random.Random, **extra: Any) -> dict[str, Any]:
    return {
        "kind": kind, "file": file, "scope": module, "symbols": symbols, "summaries": summaries,
        "why": why, "what": what, "ticket": f"{rng.choice(PROJECT_KEYS)}-{rng.randint(100, 999)}",
        "issue": rng.randint(10, 999), "author": rng.choice(AUTHORS), **extra,
    }


def _fix_change(m: mu.Mutation, rng: random.Random) -> tuple[str, dict[str, Any]]:
    name = m.function.rsplit(".", 1)[-1]
    test = m.failing_tests[0] if m.failing_tests else "the tests"
    why = bug_cause(m).rstrip(".") + f" (in `{name}`), so `{test}` failed."
    what = m.fix[:1].upper() + m.fix[1:] + "."
    diff = mu.unified_diff(m.source, m.original, m.file)
    return diff, _change_truth("fix", m.file, m.module, [m.function], _fix_summaries(m, name), why, what, rng,
                               line=m.line, has_bug=False)


def _bug_change(m: mu.Mutation, rng: random.Random) -> tuple[str, dict[str, Any]]:
    """A diff that *introduces* a bug: the reviewer should catch it."""
    name = m.function.rsplit(".", 1)[-1]
    diff = mu.unified_diff(m.original, m.source, m.file)
    why = f"The change {m.description} in `{name}`, which changes its behaviour."
    what = f"Revert to `{m.original_line.strip()}`."
    return diff, _change_truth("bug", m.file, m.module, [m.function], [f"change {name}"], why, what, rng,
                               has_bug=True, line=m.line, function=m.function, description=m.description,
                               buggy_line=m.mutated_line.strip(), fixed_line=m.original_line.strip(), fix=m.fix)


def _feat_change(mod: mu.CorpusModule, fn: mu.SourceFunction, rng: random.Random) -> tuple[str, dict[str, Any]] | None:
    lines = mod.source.splitlines(keepends=True)
    start, end = fn.start, fn.end
    # Take the function and the blank lines before it out of the "before" version.
    while start > 1 and not lines[start - 2].strip():
        start -= 1
    before = "".join(lines[: start - 1] + lines[end:])
    summary = _doc_summary(fn.source)
    if not summary:
        return None
    words = summary.split()
    sentence = f"`{fn.name}` {third_person(words[0])} {' '.join(words[1:])}."
    summaries = [f"add {fn.name} to {words[0].lower()} {' '.join(words[1:])}", f"add {fn.name} helper", f"add {fn.name}"]
    diff = mu.unified_diff(before, mod.source, mod.file)
    return diff, _change_truth("feat", mod.file, mod.name, [fn.qualname], summaries, f"Callers need a way to {summary[0].lower() + summary[1:]}.",
                               sentence, rng, has_bug=False, line=fn.start)


def _test_change(mod: mu.CorpusModule, rng: random.Random) -> tuple[str, dict[str, Any]] | None:
    tests = [f for f in mu.functions_of(mod.tests, mod.name) if f.name.startswith("test_")]
    if not tests:
        return None
    fn = rng.choice(tests)
    lines = mod.tests.splitlines(keepends=True)
    start = fn.start
    while start > 1 and not lines[start - 2].strip():
        start -= 1
    before = "".join(lines[: start - 1] + lines[fn.end:])
    words = fn.name[len("test_"):].split("_")
    units = [f.name for f in mu.functions_of(mod.source, mod.name)]
    unit = next((u for u in sorted(units, key=len, reverse=True) if fn.name[len("test_"):].startswith(u)), words[0])
    rest = fn.name[len("test_") + len(unit):].strip("_").replace("_", " ") or "basic behaviour"
    summaries = [f"add test for {rest} in {unit}", f"test {unit} {rest}", f"add {unit} test", "add test"]
    diff = mu.unified_diff(before, mod.tests, mod.test_file)
    return diff, _change_truth("test", mod.test_file, mod.name, [fn.name], summaries,
                               f"`{unit}` had no test for {rest}.", f"Add `{fn.name}`.", rng, has_bug=False, line=fn.start)


def _refactor_change(src: _RefactorSource, kind: str, rng: random.Random) -> tuple[str, dict[str, Any]] | None:
    got = degrade(src.fn.source, [kind], src.module_source)
    if got is None:
        return None
    code, changes, constants = got
    if constants:
        return None  # an inlined constant would also leave its definition behind: not a one-function diff
    before = mu.replace_function(src.module_source, src.fn.qualname, code)
    diff = mu.unified_diff(before, src.module_source, src.fn.file)
    name = src.fn.name
    docs = kind == "strip-docstring"
    summaries = {
        "shorten-names": [f"use descriptive names in {name}", f"rename locals in {name}"],
        "camel-case": [f"use snake_case names in {name}", f"rename locals in {name}"],
        "strip-hints": [f"add type hints to {name}", f"annotate {name}"],
        "strip-docstring": [f"document {name}", f"add {name} docstring"],
        "percent-format": [f"use f-strings in {name}", f"modernise {name}"],
        "bare-except": [f"catch specific errors in {name}", f"narrow except in {name}"],
    }[kind]
    return diff, _change_truth("docs" if docs else "refactor", src.fn.file, src.fn.module, [src.fn.qualname],
                               summaries + [f"tidy {name}"], "The code was harder to read than it needs to be." if not docs
                               else f"`{name}` had no docstring.", changes[0], rng, has_bug=False, line=src.fn.start)


def _diff_tasks(subtask: str, pool: str, kinds: Sequence[str] | None, rng: random.Random, n: int) -> list[Task]:
    allowed = list(kinds) if kinds else (["fix", "feat", "refactor", "docs", "test"] if subtask == "commit-message"
                                         else ["bug", "bug", "refactor", "feat", "docs"])
    for kind in allowed:
        if kind not in DIFF_KINDS:
            raise TaskError(f"unknown diff kind {kind!r} (expected one of {', '.join(DIFF_KINDS)})")
    mutations = mu.mutants_of_pool(pool)
    modules = mu.load_corpus(pool)
    sources = list(_refactor_sources(pool))
    tasks: list[Task] = []
    seen: set[str] = set()
    attempts = 0
    while len(tasks) < n and attempts < n * 20:
        attempts += 1
        kind = rng.choice(allowed)
        made = None
        if kind in ("fix", "bug"):
            m = _balanced(mutations, 1, rng)[0] if mutations else None
            made = None if m is None else (_fix_change if kind == "fix" else _bug_change)(m, rng)
        elif kind == "feat":
            mod = rng.choice(modules)
            fns = [f for f in mu.functions_of(mod.source, mod.name) if "." not in f.qualname and not f.name.startswith("_")]
            made = _feat_change(mod, rng.choice(fns), rng) if fns else None
        elif kind == "test":
            made = _test_change(rng.choice(modules), rng)
        else:
            src = rng.choice(sources)
            options = ["strip-docstring"] if kind == "docs" else ["shorten-names", "camel-case", "strip-hints", "percent-format", "bare-except"]
            made = _refactor_change(src, rng.choice(options), rng)
        if made is None:
            continue
        diff, truth = made
        if not diff or diff in seen or diff.count("\n") > 60:
            continue
        seen.add(diff)
        if subtask == "commit-message":
            ask = rng.choice(["Write a commit message for this diff.", "Write the commit message for this change.",
                              "Please write a commit message for the following diff."])
            extra = (f"\n\nTicket: {truth['ticket']}. Issue: #{truth['issue']}. Author: {truth['author']}.")
            prompt = f"{ask}{extra}\n\n```diff\n{diff}```"
        else:
            ask = rng.choice(["Review this change.", "Please review this diff.", "Code review, please:"])
            prompt = f"{ask}\n\n```diff\n{diff}```"
        tasks.append(Task(_task_id(subtask, truth["scope"], diff), subtask, prompt, {"diff": diff, "file": truth["file"]},
                          truth | {"diff": diff}, truth["kind"]))
    return tasks


# --------------------------------------------------------------------------- entry point


def make_tasks(subtask: str, n: int, seed: int = 0, pool: str = "train", kinds: Sequence[str] | None = None) -> list[Task]:
    """n tasks for a subtask (fewer if the pool runs out), deterministic in all arguments.

    pool: 'train' (training corpus + stdlib), 'eval' (held-out corpus modules) or 'all'.
    kinds: bug tasks -> mutation operators; diff tasks -> diff kinds (fix, feat, refactor,
    docs, test, bug); refactoring -> degradations applied together; test-writing ->
    'raises' or 'values'.
    """
    check_subtask(subtask)
    if n < 0:
        raise TaskError("n must not be negative")
    if pool not in mu.POOLS:
        raise TaskError(f"unknown pool {pool!r} (expected one of {', '.join(mu.POOLS)})")
    rng = random.Random(f"{subtask}|{seed}|{pool}|{','.join(kinds or ())}")
    if n == 0:
        return []
    if subtask in ("bug-localization", "bug-fixing"):
        muts = mu.mutants_of_pool(pool)
        if kinds:
            unknown = set(kinds) - set(mu.OPERATORS)
            if unknown:
                raise TaskError(f"unknown mutation operator(s): {', '.join(sorted(unknown))}")
            muts = [m for m in muts if m.operator in kinds]
        make = _localization_task if subtask == "bug-localization" else _fixing_task
        return [make(m, rng) for m in _balanced(muts, n, rng)]
    if subtask == "test-writing":
        tasks = _test_writing_tasks(pool)
        if kinds:
            tasks = [t for t in tasks if t.kind in kinds]
        rng.shuffle(tasks)
        return tasks[:n]
    if subtask == "refactoring":
        if kinds:
            unknown = set(kinds) - set(DEGRADATIONS)
            if unknown:
                raise TaskError(f"unknown degradation(s): {', '.join(sorted(unknown))}")
        return _refactoring_tasks(pool, kinds, rng, n)
    return _diff_tasks(subtask, pool, kinds, rng, n)

