"""Refactoring rules: behaviour preserved, the asked-for change made, nothing else touched."""

from __future__ import annotations

import ast
import re
from typing import Any

from agent.checks.answers import Answer
from agent.checks.bug_fixing import def_source, python_blocks
from agent.checks.registry import RULES, SKIP, Ctx, english_list, rule, truth_value
from agent.tasks import mutations as mu, pysource, testrun

RF = ("refactoring",)
SNAKE_RE = re.compile(r"_{0,2}[a-z][a-z0-9]*(_[a-z0-9]+)*_{0,2}")
UPPER_RE = re.compile(r"_?[A-Z][A-Z0-9]*(_[A-Z0-9]+)*")


def _code_tree(ctx: Ctx) -> ast.Module | str:
    blocks = python_blocks(ctx)
    if not blocks:
        return "no ```python block"
    try:
        return ast.parse("\n".join(b.code for b in blocks))
    except SyntaxError as exc:
        return f"code does not parse ({exc.msg})"


def _functions(tree: ast.AST) -> list[ast.FunctionDef]:
    return [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


@rule("preserves-api", "none", lambda v: "Keep the function's name and its parameter names exactly as they are.",
      lambda v: [("May you rename the function or its parameters?", "No: names and parameters stay exactly as they are.")],
      RF, needs_task=True)
def _preserves_api(ctx: Ctx, _):
    func, params = truth_value(ctx, "function"), truth_value(ctx, "params")
    if func is SKIP or params is SKIP:
        return SKIP
    tree = _code_tree(ctx)
    if isinstance(tree, str):
        return tree
    name = func.rsplit(".", 1)[-1]
    for node in _functions(tree):
        if node.name == name:
            got = [a.arg for a in ast.walk(node.args) if isinstance(a, ast.arg)]
            return None if got == params else f"parameters {got}, expected {params}"
    return f"no function named `{name}`"


@rule("snake-case", "none",
      lambda v: "Use snake_case for functions, parameters and variables, UPPER_CASE for module constants.",
      lambda v: [("Which naming style do you use?", "snake_case for functions, parameters and variables; UPPER_CASE for constants.")], RF, parse=_code_tree)
def _snake_case(ctx: Ctx, tree, _):
    module_level = {id(t) for node in tree.body if isinstance(node, (ast.Assign, ast.AnnAssign))
                    for t in ast.walk(node)}
    for node in ast.walk(tree):
        name = None
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            name = node.name
        elif isinstance(node, ast.arg):
            name = node.arg
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            name = node.id
            if id(node) in module_level and UPPER_RE.fullmatch(name):
                continue
        if name is not None and name != "_" and not SNAKE_RE.fullmatch(name):
            return f"`{name}` is not snake_case"
    return None


def _numbers_in_bodies(tree: ast.AST) -> list[ast.Constant]:
    out = []
    for func in _functions(tree):
        docs = set()
        if func.body and isinstance(func.body[0], ast.Expr) and isinstance(func.body[0].value, ast.Constant):
            docs.add(id(func.body[0].value))
        for stmt in func.body:
            for node in ast.walk(stmt):
                if isinstance(node, ast.Constant) and type(node.value) in (int, float) and id(node) not in docs:
                    out.append(node)
    return out


def _allowed_numbers(values: list[str]) -> set[float]:
    return {float(v) for v in values}


@rule("no-magic-numbers", "num-list",
      lambda v: f"Inside functions use no numeric literal other than {english_list(v)}; give every other number a name as an "
                "UPPER_CASE module constant defined above the function.",
      lambda v: [("Which numbers may appear literally inside a function?", f"Only {english_list(v)}."),
                 ("Where do other numbers go?", "Into UPPER_CASE module constants above the function.")], RF,
      stated=lambda v: list(v), parse=_code_tree)
def _no_magic_numbers(ctx: Ctx, tree, allowed: list[str]):
    ok = _allowed_numbers(allowed)
    for node in _numbers_in_bodies(tree):
        # A unary minus is its own node: -1 is USub(1); accept 1 when -1 is allowed.
        if float(node.value) not in ok:  # -1 is USub(1): the sign is an operator, not part of the literal
            return f"magic number {node.value!r} inside a function"
    return None


@rule("type-hints", "none",
      lambda v: "Annotate every parameter (except `self`) and every return value with type hints.",
      lambda v: [("What must every function signature have?", "Type hints on every parameter and on the return value.")], RF, parse=_code_tree)
def _type_hints(ctx: Ctx, tree, _):
    for func in _functions(tree):
        args = func.args
        for a in args.posonlyargs + args.args + args.kwonlyargs + [x for x in (args.vararg, args.kwarg) if x]:
            if a.annotation is None and a.arg not in ("self", "cls"):
                return f"parameter `{a.arg}` of `{func.name}` has no type hint"
        if func.returns is None:
            return f"`{func.name}` has no return type"
    return None


@rule("docstrings", "none",
      lambda v: "Give every function a docstring whose first line is one sentence ending with a period.",
      lambda v: [("Which functions need a docstring?", "Every function; the first line is one sentence ending with a period.")], RF, parse=_code_tree)
def _docstrings(ctx: Ctx, tree, _):
    for func in _functions(tree):
        doc = ast.get_docstring(func)
        if not doc or not doc.strip().splitlines()[0].endswith("."):
            return f"`{func.name}` has no docstring with a one-sentence first line"
    return None


@rule("max-function-lines", "int", lambda n: f"Keep every function at most {n} lines long, `def` line included.",
      lambda n: [("How long may a function be?", f"At most {n} lines.")], RF, parse=_code_tree)
def _max_function_lines(ctx: Ctx, tree, n: int):
    for func in _functions(tree):
        length = func.end_lineno - func.lineno + 1
        if length > n:
            return f"`{func.name}` has {length} lines, limit {n}"
    return None


@rule("min-name-length", "int",
      lambda n: f"Give parameters and local variables names of at least {n} characters (only `i`, `j`, `k` and `_` may be shorter).",
      lambda n: [("How short may a variable name be?", f"At least {n} characters, except `i`, `j`, `k` and `_`.")], RF, parse=_code_tree)
def _min_name_length(ctx: Ctx, tree, n: int):
    for func in _functions(tree):
        for node in ast.walk(func):
            name = node.arg if isinstance(node, ast.arg) else node.id if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store) else None
            if name and len(name) < n and name not in ("i", "j", "k", "_", "self", "cls"):
                return f"`{name}` is shorter than {n} characters"
    return None


@rule("f-strings", "none",
      lambda v: "Build strings with f-strings; never use `%` formatting or `.format()`.",
      lambda v: [("How do you format strings?", "With f-strings only: no `%` formatting and no `.format()`.")], RF, parse=_code_tree)
def _f_strings(ctx: Ctx, tree, _):
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod) and isinstance(node.left, (ast.Constant, ast.JoinedStr)) \
                and isinstance(getattr(node.left, "value", ""), str):
            return "uses `%` formatting"
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format" \
                and isinstance(node.func.value, ast.Constant) and isinstance(node.func.value.value, str):
            return "uses `.format()`"
    return None


@rule("no-bare-except", "none", lambda v: "Never write a bare `except:`; name the exceptions you expect.",
      lambda v: [("May you write a bare `except:`?", "No: always name the exception types.")], RF, parse=_code_tree)
def _no_bare_except(ctx: Ctx, tree, _):
    return "bare `except:`" if any(isinstance(n, ast.ExceptHandler) and n.type is None for n in ast.walk(tree)) else None


def _depth(node: ast.AST, level: int = 0) -> int:
    blocks = (ast.If, ast.For, ast.While, ast.With, ast.Try, ast.AsyncFor, ast.AsyncWith)
    deepest = level
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            continue
        # `elif` is an If nested in orelse; it reads as the same level.
        is_elif = isinstance(node, ast.If) and isinstance(child, ast.If) and node.orelse == [child]
        deepest = max(deepest, _depth(child, level + (1 if isinstance(child, blocks) and not is_elif else 0)))
    return deepest


@rule("max-nesting", "int", lambda n: f"Nest blocks (`if`, `for`, `while`, `with`, `try`) at most {n} levels deep inside a function; "
                                     "use early returns to flatten.",
      lambda n: [("How deep may blocks nest?", f"At most {n} levels inside a function.")], RF, parse=_code_tree)
def _max_nesting(ctx: Ctx, tree, n: int):
    for func in _functions(tree):
        depth = _depth(func)
        if depth > n:
            return f"`{func.name}` nests {depth} levels, limit {n}"
    return None


def refactored_module(response: str, truth: dict[str, Any]) -> str | None:
    """The corpus module with the answer's version of the function (and its constants) swapped in."""
    if truth.get("origin") != "corpus":
        return None
    answer = Answer(response)
    code = "\n".join(b.code for b in answer.blocks if b.lang in ("python", "py"))
    new_def = def_source(code, truth["function"].rsplit(".", 1)[-1])
    if new_def is None:
        return None
    module = mu.corpus_module(truth["module"])
    out = pysource.replace_function(module.source, truth["function"], new_def)
    tree = ast.parse(code)
    lines = code.splitlines()
    extra = [("\n".join(lines[n.lineno - 1 : n.end_lineno])) for n in tree.body
             if isinstance(n, (ast.Assign, ast.AnnAssign, ast.Import, ast.ImportFrom))]
    # Functions read globals when called, so constants appended at the end are in time.
    return out + ("\n" + "\n".join(extra) + "\n" if extra else "")


@rule("behavior-preserved", "none", lambda v: "Do not change behaviour: the existing tests must still pass.",
      lambda v: [("May a refactoring change behaviour?", "No: the existing tests must still pass.")], RF,
      needs_task=True, executes=True)
def _behavior_preserved(ctx: Ctx, _):
    if ctx.task is None or ctx.task.truth.get("origin") != "corpus":
        return SKIP
    try:
        source = refactored_module(ctx.answer.text, ctx.task.truth)
    except SyntaxError:
        return "code does not parse"
    if source is None:
        return "no refactored function found"
    module = mu.corpus_module(ctx.task.truth["module"])
    run = testrun.run_tests(module.name, source, module.tests)
    return None if run.ok else f"tests fail ({run.error or ', '.join(f.test for f in run.failed[:3])})"


def rule_ids() -> list[str]:
    return sorted(RULES)
