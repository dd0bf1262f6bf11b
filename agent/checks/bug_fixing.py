"""Bug-fixing rules: the fix applies as a diff or a whole function and makes the failing tests pass."""

from __future__ import annotations

import ast
import textwrap
from typing import Any

from agent.checks.answers import Answer, Block
from agent.checks.registry import SKIP, Ctx, rule, truth_value
from agent.tasks import mutations as mu, pysource, testrun
from agent.tasks.bugs import buggy_source


def python_blocks(ctx: Ctx) -> list[Block]:
    return [b for b in ctx.answer.blocks if b.lang in ("python", "py")]


def def_source(code: str, name: str) -> str | None:
    """The text of `def name` (with decorators) inside a code block, dedented."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return None
    lines = code.splitlines()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == name:
            start = min([node.lineno] + [d.lineno for d in node.decorator_list])
            return textwrap.dedent("\n".join(lines[start - 1 : node.end_lineno])) + "\n"
    return None


def fixed_source(response: str, truth: dict[str, Any]) -> str | None:
    """The module after applying the answer's fix (a diff or a whole function), or None."""
    buggy = buggy_source(truth)
    answer = Answer(response)
    for block in answer.blocks:
        if block.lang in ("diff", "patch"):
            try:
                return pysource.apply_diff(buggy, block.code)
            except pysource.PatchError:
                return None
    name = truth["function"].rsplit(".", 1)[-1]
    for block in answer.blocks:
        if block.lang in ("python", "py"):
            new_def = def_source(block.code, name)
            if new_def is not None:
                return pysource.replace_function(buggy, truth["function"], new_def)
    return None


BF = ("bug-fixing",)


@rule("diff-applies", "none",
      lambda v: "Give the fix as a unified diff (`--- a/file.py`, `+++ b/file.py`, `@@` hunks) that applies to the file as shown.",
      lambda v: [("In what form do you give the fix?", "A unified diff that applies to the file as shown.")], BF, needs_task=True)
def _diff_applies(ctx: Ctx, _):
    if ctx.task is None or "module" not in ctx.task.truth:
        return SKIP
    blocks = [b for b in ctx.answer.blocks if b.lang in ("diff", "patch")]
    if not blocks:
        return "no ```diff block"
    try:
        pysource.apply_diff(buggy_source(ctx.task.truth), blocks[0].code)
    except pysource.PatchError as exc:
        return f"diff does not apply ({exc})"
    return None


@rule("defines-function", "none",
      lambda v: "Give the complete corrected function (the whole `def`, not a fragment) in a ```python block.",
      lambda v: [("What goes in the code block?", "The complete corrected function, the whole `def`.")], BF, needs_task=True)
def _defines_function(ctx: Ctx, _):
    name = truth_value(ctx, "function")
    if name is SKIP:
        return SKIP
    name = name.rsplit(".", 1)[-1]
    if any(def_source(b.code, name) for b in python_blocks(ctx)):
        return None
    return f"no ```python block defines `{name}`"


@rule("fix-passes-tests", "none", lambda v: "The fix must make the failing tests pass without breaking the others.",
      lambda v: [("When is a fix done?", "When the failing tests pass and no other test breaks.")], BF,
      needs_task=True, executes=True)
def _fix_passes_tests(ctx: Ctx, _):
    if ctx.task is None or "module" not in ctx.task.truth or "failing_tests" not in ctx.task.truth:
        return SKIP
    source = fixed_source(ctx.answer.text, ctx.task.truth)
    if source is None:
        return "no applicable fix found"
    mod = mu.corpus_module(ctx.task.truth["module"])
    run = testrun.run_tests(mod.name, source, mod.tests)
    if run.ok:
        return None
    return f"tests still fail ({run.error or ', '.join(f.test for f in run.failed[:3])})"


@rule("max-diff-lines", "int",
      lambda n: f"Keep the fix minimal: the diff adds and removes at most {n} lines in total.",
      lambda n: [("How large may the fix be?", f"At most {n} changed lines (`+` and `-` lines together).")], BF)
def _max_diff_lines(ctx: Ctx, n: int):
    blocks = [b for b in ctx.answer.blocks if b.lang in ("diff", "patch")]
    if not blocks:
        return "no ```diff block"
    changed = sum(1 for l in blocks[0].code.splitlines() if l[:1] in "+-" and not l.startswith(("+++", "---")))
    return None if changed <= n else f"{changed} changed lines, limit {n}"


@rule("regression-test", "none",
      lambda v: "Add a regression test: a ```python block with a `def test_...` function that fails before the fix and passes after it.",
      lambda v: [("What do you add besides the fix?", "A regression test in its own ```python block.")], BF)
def _regression_test(ctx: Ctx, _):
    for block in python_blocks(ctx):
        try:
            tree = ast.parse(block.code)
        except SyntaxError:
            continue
        if any(isinstance(n, ast.FunctionDef) and n.name.startswith("test_") for n in ast.walk(tree)):
            return None
    return "no ```python block with a `def test_...`"
