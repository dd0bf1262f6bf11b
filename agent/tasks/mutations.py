"""Programs with tests, and bugs injected into them.

The bundled corpus (`agent/tasks/corpus/<name>/{<name>.py, check_<name>.py, cases.json}`) holds
small real modules with passing tests. AST mutation operators make buggy variants as minimal
single-line text edits, so diffs stay small and line numbers keep their meaning; a variant is kept
only when the module's tests catch it (`agent/tasks/testrun.py` runs them).
"""

from __future__ import annotations

import ast
import hashlib
import itertools
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from agent.tasks.pysource import function_nodes
from agent.tasks.testrun import TestFailure, TestJob, TestRun, run_mutants

CORPUS_DIR = Path(__file__).resolve().parent / "corpus"
# Modules kept out of training tasks so evaluation tasks use code the model never saw.
EVAL_MODULES = frozenset({"stats", "paginate", "textcase"})
POOLS = ("train", "eval", "all")


class CorpusError(ValueError):
    """The corpus or a request about it is unusable."""


# --------------------------------------------------------------------------- corpus


@dataclass(frozen=True)
class CorpusModule:
    name: str
    source: str
    tests: str
    cases: dict[str, tuple[tuple[str, str], ...]]
    imports: tuple[str, ...]

    @property
    def file(self) -> str:
        return f"{self.name}.py"

    @property
    def test_file(self) -> str:
        return f"test_{self.name}.py"

    @property
    def pool(self) -> str:
        return "eval" if self.name in EVAL_MODULES else "train"


@lru_cache(maxsize=None)
def _load_all() -> tuple[CorpusModule, ...]:
    modules = []
    for folder in sorted(p for p in CORPUS_DIR.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))):
        name = folder.name
        src, tests, cases_path = folder / f"{name}.py", folder / f"check_{name}.py", folder / "cases.json"
        if not (src.is_file() and tests.is_file()):
            continue
        raw = json.loads(cases_path.read_text(encoding="utf-8")) if cases_path.is_file() else {}
        imports = tuple(raw.pop("__imports__", ()))
        cases = {fn: tuple((call, cond) for call, cond in items) for fn, items in raw.items()}
        modules.append(CorpusModule(name, src.read_text(encoding="utf-8"), tests.read_text(encoding="utf-8"), cases, imports))
    if not modules:
        raise CorpusError(f"{CORPUS_DIR}: no corpus modules found")
    return tuple(modules)


def load_corpus(pool: str = "all") -> list[CorpusModule]:
    """Corpus modules of a pool: 'train', 'eval' (held-out code) or 'all'."""
    if pool not in POOLS:
        raise CorpusError(f"unknown pool {pool!r} (expected one of {', '.join(POOLS)})")
    return [m for m in _load_all() if pool == "all" or m.pool == pool]


def corpus_module(name: str) -> CorpusModule:
    for module in _load_all():
        if module.name == name:
            return module
    raise CorpusError(f"no corpus module named {name!r}")


# --------------------------------------------------------------------------- mutation operators


@dataclass(frozen=True)
class PackageOrigin:
    """Where a package mutant's repo lives: the validated tree (modules, tests) it is a one-line edit of."""

    name: str  # the registry name ("inflection")
    version: str
    pool: str  # "train" or "eval"
    root: str  # the repo tree in the cache (agent/tasks/packages.py writes it)
    test_paths: tuple[str, ...]  # what pytest runs (the repo's pytest.ini `testpaths`)


@dataclass(frozen=True)
class Mutation:
    module: str
    file: str
    operator: str
    function: str  # qualname of the enclosing function
    line: int  # 1-based; the same in the original and the mutated source
    original_line: str
    mutated_line: str
    description: str  # what the bug does: "changed `<` to `<=`"
    fix: str  # what the fix does: "use `<` instead of `<=`"
    before: str  # the code the bug replaced ("<", "3", "return x")
    after: str  # the code the bug put there ("<=", "4", "pass")
    source: str  # the whole mutated module
    original: str = field(repr=False, default="")
    failures: tuple[TestFailure, ...] = ()
    passed: tuple[str, ...] = ()
    package: PackageOrigin | None = None  # set for a mutant of a registry package (agent/tasks/packages.py)
    test_file: str = ""  # the repo-relative file of the first failing test (package mutants)

    @property
    def id(self) -> str:
        digest = hashlib.sha256(self.source.encode("utf-8")).hexdigest()[:8]
        return f"{self.module}:{self.line}:{self.operator}:{digest}"

    @property
    def failing_tests(self) -> tuple[str, ...]:
        return tuple(f.test for f in self.failures)


@dataclass(frozen=True)
class _Edit:
    line: int
    col: int  # character offsets in the line
    end_col: int
    text: str
    operator: str
    description: str
    fix: str
    before: str
    after: str


CMP_SWAP = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq,
            ast.NotEq: ast.Eq, ast.In: ast.NotIn, ast.NotIn: ast.In, ast.Is: ast.IsNot, ast.IsNot: ast.Is}
CMP_TEXT = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!=",
            ast.In: "in", ast.NotIn: "not in", ast.Is: "is", ast.IsNot: "is not"}
ARITH_SWAP = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Add, ast.Div: ast.FloorDiv,
              ast.FloorDiv: ast.Div, ast.Mod: ast.FloorDiv}
ARITH_TEXT = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//", ast.Mod: "%"}
OPERATORS = ("cmp-flip", "arith-swap", "off-by-one", "bool-swap", "not-drop", "var-swap",
             "drop-guard", "minmax-swap", "range-stop")
# More of SWE-smith's bug kinds (swapped arguments, a dropped statement, an inverted condition, a wrong
# constant). Package tasks use them; the corpus keeps OPERATORS alone, so its tasks (and every data set and
# benchmark already drawn from it) stay what they were.
EXTRA_OPERATORS = ("arg-swap", "stmt-drop", "cond-invert", "bool-const")
ALL_OPERATORS = OPERATORS + EXTRA_OPERATORS


class SourceText:
    """Source text with AST positions (UTF-8 byte columns) turned into character columns."""

    def __init__(self, text: str):
        self.text = text
        self.lines = text.splitlines()

    def col(self, line: int, byte_col: int) -> int:
        return len(self.lines[line - 1].encode("utf-8")[:byte_col].decode("utf-8", "replace"))

    def span(self, node: ast.AST) -> tuple[int, int, int] | None:
        """(line, col, end_col) of a node on one line, else None."""
        if node.lineno != node.end_lineno:
            return None
        return node.lineno, self.col(node.lineno, node.col_offset), self.col(node.lineno, node.end_col_offset)

    def segment(self, node: ast.AST) -> str | None:
        span = self.span(node)
        return None if span is None else self.lines[span[0] - 1][span[1] : span[2]]

    def gap(self, left: ast.AST, right: ast.AST) -> tuple[int, int, int, str] | None:
        """The text between two nodes on the same line (where an operator sits)."""
        if left.end_lineno != right.lineno:
            return None
        line = right.lineno
        start, end = self.col(line, left.end_col_offset), self.col(line, right.col_offset)
        return line, start, end, self.lines[line - 1][start:end]


def _docstring_nodes(tree: ast.AST) -> set[int]:
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                skip.add(id(body[0].value))
    return skip


def _local_names(func: ast.FunctionDef) -> dict[str, int]:
    """Local names and the first line that binds them (parameters: line 0).

    Names bound only inside comprehensions are left out: they are not in scope elsewhere.
    """
    names = {a.arg: 0 for a in func.args.args + func.args.kwonlyargs + func.args.posonlyargs}
    hidden = {id(n) for c in ast.walk(func) if isinstance(c, (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp))
              for gen in c.generators for n in ast.walk(gen.target)}
    for node in ast.walk(func):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store) and id(node) not in hidden:
            names[node.id] = min(names.get(node.id, node.lineno), node.lineno)
    names.pop("self", None)
    names.pop("_", None)
    return names


def _edits_in(func: ast.FunctionDef, src: SourceText, docstrings: set[int]) -> Iterator[_Edit]:
    own = [n for n in ast.walk(func) if n is not func]
    nested = {id(n) for inner in own if isinstance(inner, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
              for n in ast.walk(inner)}
    nodes = [n for n in own if id(n) not in nested and hasattr(n, "lineno")]
    nodes.sort(key=lambda n: (n.lineno, n.col_offset))
    local_names = _local_names(func)
    swaps = 0
    for node in nodes:
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            for i, op in enumerate(node.ops):
                gap = src.gap(operands[i], operands[i + 1])
                if gap is None or gap[3].strip() != CMP_TEXT[type(op)]:
                    continue
                line, start, end, text = gap
                old, new = CMP_TEXT[type(op)], CMP_TEXT[CMP_SWAP[type(op)]]
                yield _Edit(line, start, end, text.replace(old, new, 1), "cmp-flip",
                            f"changed `{old}` to `{new}`", f"use `{old}` instead of `{new}`", old, new)
        elif isinstance(node, (ast.BinOp, ast.AugAssign)) and type(node.op) in ARITH_SWAP:
            left, right = (node.left, node.right) if isinstance(node, ast.BinOp) else (node.target, node.value)
            if any(isinstance(x, (ast.JoinedStr, ast.List, ast.Tuple)) or
                   (isinstance(x, ast.Constant) and isinstance(x.value, str)) for x in (left, right)):
                continue  # sequence concatenation or repetition: a type error, not a subtle bug
            gap = src.gap(left, right)
            old = ARITH_TEXT[type(node.op)] + ("=" if isinstance(node, ast.AugAssign) else "")
            if gap is None or gap[3].strip() != old:
                continue
            new = ARITH_TEXT[ARITH_SWAP[type(node.op)]] + ("=" if isinstance(node, ast.AugAssign) else "")
            line, start, end, text = gap
            yield _Edit(line, start, end, text.replace(old, new, 1), "arith-swap",
                        f"changed `{old}` to `{new}`", f"use `{old}` instead of `{new}`", old, new)
        elif isinstance(node, ast.Constant) and type(node.value) is int and id(node) not in docstrings:
            span = src.span(node)
            if span is None or src.segment(node) != str(node.value) or node.value > 1000:
                continue
            for new_value in (node.value + 1, node.value - 1):
                if new_value < 0:
                    continue
                yield _Edit(*span, str(new_value), "off-by-one", f"changed the constant `{node.value}` to `{new_value}`",
                            f"use `{node.value}` instead of `{new_value}`", str(node.value), str(new_value))
        elif isinstance(node, ast.BoolOp) and len(node.values) == 2:
            gap = src.gap(node.values[0], node.values[1])
            old = "and" if isinstance(node.op, ast.And) else "or"
            if gap is None or gap[3].strip() != old:
                continue
            new = "or" if old == "and" else "and"
            line, start, end, text = gap
            yield _Edit(line, start, end, text.replace(old, new, 1), "bool-swap",
                        f"changed `{old}` to `{new}`", f"use `{old}` instead of `{new}`", old, new)
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            span, inner = src.span(node), src.segment(node.operand)
            if span is None or inner is None:
                continue
            yield _Edit(*span, inner, "not-drop", f"dropped the `not` before `{inner}`", f"negate `{inner}` again with `not`",
                        src.segment(node), inner)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and node.id in local_names and swaps < 3:
            # Only names already bound on an earlier line: the bug reads a wrong value,
            # not an unbound one.
            others = sorted(n for n, first in local_names.items() if n != node.id and first < node.lineno)
            span = src.span(node)
            if not others or span is None:
                continue
            # A stable but spread-out choice of the wrong name.
            other = others[(node.lineno + node.col_offset) % len(others)]
            swaps += 1
            yield _Edit(*span, other, "var-swap", f"used `{other}` where `{node.id}` was meant",
                        f"use `{node.id}` instead of `{other}`", node.id, other)
        elif isinstance(node, ast.If) and len(node.body) == 1 and isinstance(node.body[0], (ast.Return, ast.Raise, ast.Continue, ast.Break)):
            stmt = node.body[0]
            span, text = src.span(stmt), src.segment(stmt)
            if span is None:
                continue
            kind = type(stmt).__name__.lower()
            yield _Edit(*span, "pass", "drop-guard", f"removed the `{kind}` under `if {ast.unparse(node.test)}`",
                        f"restore `{text}` under `if {ast.unparse(node.test)}`", text, "pass")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("min", "max") and node.func.id not in local_names:
            span = src.span(node.func)
            if span is None:
                continue
            new = "max" if node.func.id == "min" else "min"
            yield _Edit(*span, new, "minmax-swap", f"called `{new}` instead of `{node.func.id}`",
                        f"call `{node.func.id}` instead of `{new}`", node.func.id, new)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "range" and node.args:
            stop = node.args[1] if len(node.args) > 1 else node.args[0]
            span, text = src.span(stop), src.segment(stop)
            if span is None or isinstance(stop, ast.Constant):
                continue
            yield _Edit(*span, f"{text} - 1", "range-stop", f"made `range` stop at `{text} - 1`",
                        f"let `range` run up to `{text}`", text, f"{text} - 1")


def _extra_edits_in(func: ast.FunctionDef, src: SourceText) -> Iterator[_Edit]:
    """EXTRA_OPERATORS: swapped arguments, a dropped statement, an inverted condition, a flipped boolean."""
    own = [n for n in ast.walk(func) if n is not func]
    nested = {id(n) for inner in own if isinstance(inner, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
              for n in ast.walk(inner)}
    nodes = [n for n in own if id(n) not in nested and hasattr(n, "lineno")]
    nodes.sort(key=lambda n: (n.lineno, n.col_offset))
    for node in nodes:
        if isinstance(node, ast.Call) and len(node.args) >= 2 and not any(isinstance(a, ast.Starred) for a in node.args[:2]):
            first, second = node.args[0], node.args[1]
            a, b = src.segment(first), src.segment(second)
            gap = src.gap(first, second)
            if a is None or b is None or gap is None or a == b:
                continue
            line, start, end = src.span(first)[0], src.span(first)[1], src.span(second)[2]
            old, new = f"{a}{gap[3]}{b}", f"{b}{gap[3]}{a}"
            name = ast.unparse(node.func)
            yield _Edit(line, start, end, new, "arg-swap", f"swapped the arguments `{a}` and `{b}` of `{name}`",
                        f"pass `{a}` before `{b}`", old, new)
        elif isinstance(node, (ast.If, ast.While, ast.IfExp)) and not (
                isinstance(node.test, ast.UnaryOp) and isinstance(node.test.op, ast.Not)):
            span, text = src.span(node.test), src.segment(node.test)
            if span is None or text is None:
                continue
            simple = isinstance(node.test, (ast.Name, ast.Call, ast.Attribute, ast.Subscript))
            new = f"not {text}" if simple else f"not ({text})"
            yield _Edit(*span, new, "cond-invert", f"inverted the condition `{text}`",
                        f"test `{text}`, not its negation", text, new)
        elif isinstance(node, ast.Constant) and type(node.value) is bool:
            span = src.span(node)
            if span is None:
                continue
            old, new = str(node.value), str(not node.value)
            yield _Edit(*span, new, "bool-const", f"changed `{old}` to `{new}`", f"use `{old}` instead of `{new}`",
                        old, new)
    # Dropped statement: a call made for its effect or an in-place update, in a block that keeps others.
    for block_owner in [func, *(n for n in nodes if isinstance(n, ast.stmt))]:
        for block in (getattr(block_owner, f, None) for f in ("body", "orelse", "finalbody")):
            if not isinstance(block, list) or len(block) < 2:
                continue
            for stmt in block:
                if not (isinstance(stmt, ast.AugAssign) or (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call))):
                    continue
                span, text = src.span(stmt), src.segment(stmt)
                if span is None or text is None:
                    continue
                yield _Edit(*span, "pass", "stmt-drop", f"removed the statement `{text}`", f"restore `{text}`",
                            text, "pass")


def candidates(source: str, module: str, operators: Sequence[str] = OPERATORS,
               within: tuple[int, int] | None = None) -> list[Mutation]:
    """Every single-line mutation of the functions in source (not yet checked by tests), by the given
    operators (default: the corpus's OPERATORS; ALL_OPERATORS adds EXTRA_OPERATORS); only of lines
    first..last when `within` is given (each candidate is a parse of the whole file: on a package module of
    2,000 lines, asking for one function's candidates instead of the file's is ~100× less work)."""
    tree = ast.parse(source)
    src = SourceText(source)
    docstrings = _docstring_nodes(tree)
    wanted = set(operators)
    seen: set[str] = set()
    out = []
    for qual, func in function_nodes(tree):
        edits = _edits_in(func, src, docstrings)
        if wanted & set(EXTRA_OPERATORS):
            edits = itertools.chain(edits, _extra_edits_in(func, src))
        for edit in edits:
            if edit.operator not in wanted or (within and not within[0] <= edit.line <= within[1]):
                continue
            old_line = src.lines[edit.line - 1]
            new_line = old_line[: edit.col] + edit.text + old_line[edit.end_col :]
            if new_line == old_line:
                continue
            lines = list(src.lines)
            lines[edit.line - 1] = new_line
            mutated = "\n".join(lines) + ("\n" if source.endswith("\n") else "")
            if mutated in seen:
                continue
            try:
                ast.parse(mutated)
            except SyntaxError:
                continue
            seen.add(mutated)
            out.append(Mutation(module, f"{module}.py", edit.operator, qual, edit.line, old_line, new_line,
                                edit.description, edit.fix, edit.before, edit.after, mutated, source))
    return out


_MUTANTS: dict[str, tuple[Mutation, ...]] = {}


def mutants(module: CorpusModule | str) -> list[Mutation]:
    """Mutations of a corpus module that its tests catch, in source order (cached)."""
    mod = corpus_module(module) if isinstance(module, str) else module
    key = hashlib.sha256((mod.source + "\0" + mod.tests).encode("utf-8")).hexdigest()
    if key not in _MUTANTS:
        cands = candidates(mod.source, mod.name)
        jobs = [TestJob(mod.name, mod.source, mod.tests)] + [TestJob(mod.name, c.source, mod.tests) for c in cands]
        runs = run_mutants(jobs)
        if not runs[0].ok:
            raise CorpusError(f"corpus module {mod.name!r}: its own tests fail ({_first_problem(runs[0])})")
        kept = []
        for cand, run in zip(cands, runs[1:]):
            if run.error is None and run.failed:  # an import-time crash is no bug to localize
                kept.append(_with_run(cand, run))
        _MUTANTS[key] = tuple(kept)
    return list(_MUTANTS[key])


def mutants_of_pool(pool: str = "train") -> list[Mutation]:
    modules = load_corpus(pool)
    # One round of subprocesses for every module at once keeps both cores busy.
    pending = [m for m in modules if hashlib.sha256((m.source + "\0" + m.tests).encode()).hexdigest() not in _MUTANTS]
    if pending:
        jobs = []
        for mod in pending:
            jobs.append(TestJob(mod.name, mod.source, mod.tests))
            jobs += [TestJob(mod.name, c.source, mod.tests) for c in candidates(mod.source, mod.name)]
        run_mutants(jobs)
    return [m for mod in modules for m in mutants(mod)]


def _with_run(cand: Mutation, run: TestRun) -> Mutation:
    from dataclasses import replace

    return replace(cand, failures=run.failed, passed=run.passed)


def _first_problem(run: TestRun) -> str:
    if run.error:
        return run.error
    if run.failed:
        f = run.failed[0]
        return f"{f.test}: {f.error} {f.message}".strip()
    return "no tests ran"
