"""Test-writing rules: the written tests parse, follow the style asked for and catch the bug."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

from agent.checks.bug_fixing import python_blocks
from agent.checks.registry import SKIP, Ctx, english_list, rule, truth_value
from agent.tasks import mutations as mu, testrun


@dataclass(frozen=True)
class TestFn:
    name: str
    cls: str | None
    node: ast.FunctionDef
    lines: tuple[str, ...]


def test_functions(code: str) -> list[TestFn]:
    tree = ast.parse(code)
    lines = code.splitlines()
    out = []

    def grab(node: ast.FunctionDef, cls: str | None):
        out.append(TestFn(node.name, cls, node, tuple(lines[node.lineno - 1 : node.end_lineno])))

    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test"):
            grab(node, None)
        elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name.startswith("test"):
                    grab(item, node.name)
    return out


def _tests(ctx: Ctx) -> tuple[list[TestFn], str] | str:
    blocks = python_blocks(ctx)
    if not blocks:
        return "no ```python block"
    code = "\n".join(b.code for b in blocks)
    try:
        found = test_functions(code)
    except SyntaxError as exc:
        return f"tests do not parse ({exc.msg})"
    if not found:
        return "no test functions"
    return found, code


def camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_") if part)


def name_regex(template: str, unit: str | None) -> re.Pattern[str]:
    pattern = re.escape(template)
    pattern = pattern.replace(re.escape("<unit>"), re.escape(unit) if unit else r"[a-z][a-z0-9_]*?")
    pattern = pattern.replace(re.escape("<Unit>"), re.escape(camel(unit)) if unit else r"[A-Z][A-Za-z0-9]*")
    pattern = pattern.replace(re.escape("<condition>"), r"[a-z0-9]+(?:_[a-z0-9]+)*")
    return re.compile(pattern + r"$")


TW = ("test-writing",)


def _unit(ctx: Ctx) -> str | None:
    if ctx.task is not None and "function" in ctx.task.truth:
        return ctx.task.truth["function"].rsplit(".", 1)[-1]
    return None


@rule("test-name", "str",
      lambda t: f"Name every test `{t}`" + (", where `<unit>` is the function under test" if "<unit>" in t else "")
                + (" and `<condition>` says in snake_case what the case covers" if "<condition>" in t else "")
                + f" (for example `{t.replace('<unit>', 'merge').replace('<condition>', 'empty_list')}`).",
      lambda t: [("How do you name tests?", f"`{t}`, for example `{t.replace('<unit>', 'merge').replace('<condition>', 'empty_list')}`.")],
      TW, stated=lambda t: [t], parse=_tests)
def _test_name(ctx: Ctx, got, template: str):
    regex = name_regex(template, _unit(ctx))
    bad = [t.name for t in got[0] if not regex.match(t.name)]
    return None if not bad else f"`{bad[0]}` does not match `{template}`"


@rule("min-tests", "int", lambda n: f"Write at least {n} test functions.",
      lambda n: [("How many tests do you write at least?", f"{n}.")], TW, parse=_tests)
def _min_tests(ctx: Ctx, got, n: int):
    return None if len(got[0]) >= n else f"{len(got[0])} tests, need at least {n}"


@rule("max-tests", "int", lambda n: f"Write at most {n} test functions.",
      lambda n: [("How many tests may you write at most?", f"{n}.")], TW, parse=_tests)
def _max_tests(ctx: Ctx, got, n: int):
    return None if len(got[0]) <= n else f"{len(got[0])} tests, limit {n}"


@rule("step-comments", "list",
      lambda v: f"Mark the phases of every test with the comments {english_list(['# ' + s for s in v])}, in that order.",
      lambda v: [("Which comments structure each test?", f"{english_list(['# ' + s for s in v])}, in that order.")], TW,
      stated=lambda v: list(v), parse=_tests)
def _step_comments(ctx: Ctx, got, names: list[str]):
    for t in got[0]:
        comments = [l.strip()[1:].strip() for l in t.lines if l.strip().startswith("#")]
        marks = [c for c in comments if c in names]
        # Phases may merge ("# Act and assert" is not allowed: each must be its own comment).
        if marks != names:
            return f"`{t.name}` has step comments {marks}, expected {names}"
    return None


def _assert_count(node: ast.FunctionDef) -> tuple[int, int]:
    asserts = sum(1 for n in ast.walk(node) if isinstance(n, ast.Assert))
    asserts += sum(1 for n in ast.walk(node) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
                   and n.func.attr.startswith("assert") and not n.func.attr.startswith("assertRaises"))
    raises = len(_raises_calls(node))
    return asserts, raises


@rule("one-assert", "none",
      lambda v: "Each test checks one thing: exactly one `assert` (or one `pytest.raises` block and no `assert`).",
      lambda v: [("How many assertions does a test have?", "Exactly one.")], TW, parse=_tests)
def _one_assert(ctx: Ctx, got, _):
    for t in got[0]:
        asserts, raises = _assert_count(t.node)
        if asserts + raises == 1 or (raises == 1 and asserts == 1 and _asserts_on_raised(t.node)):
            continue
        return f"`{t.name}` has {asserts} assertion(s) and {raises} raises block(s)"
    return None


def _asserts_on_raised(node: ast.FunctionDef) -> bool:
    """`with pytest.raises(E) as err: ...` then one assert about err is still one check."""
    names = {i.optional_vars.id for n in ast.walk(node) if isinstance(n, ast.With) for i in n.items
             if isinstance(i.optional_vars, ast.Name)}
    return any(isinstance(n, ast.Assert) and any(isinstance(x, ast.Name) and x.id in names for x in ast.walk(n))
               for n in ast.walk(node))


@rule("parametrize", "none",
      lambda v: "Put the value cases in one table with `@pytest.mark.parametrize` instead of repeating a test per case.",
      lambda v: [("How do you write many similar cases?", "As one `@pytest.mark.parametrize` table.")], TW, parse=_tests)
def _parametrize(ctx: Ctx, got, _):
    for t in got[0]:
        for deco in t.node.decorator_list:
            target = deco.func if isinstance(deco, ast.Call) else deco
            if isinstance(target, ast.Attribute) and target.attr == "parametrize":
                return None
    return "no `@pytest.mark.parametrize`"


@rule("test-class", "str",
      lambda t: f"Group all tests as methods of one class named `{t}`" + (
          " (`<Unit>` is the function name in CamelCase, e.g. `TestMerge`)." if "<Unit>" in t else "."),
      lambda t: [("How are the tests grouped?", f"As methods of one class named `{t}`.")], TW, stated=lambda t: [t], parse=_tests)
def _test_class(ctx: Ctx, got, template: str):
    regex = name_regex(template, _unit(ctx))
    classes = {t.cls for t in got[0]}
    if None in classes:
        return "a test is not inside the class"
    if len(classes) != 1 or not regex.match(next(iter(classes))):
        return f"classes {sorted(classes)} do not match `{template}`"
    return None


@rule("unittest", "none",
      lambda v: "Use the standard `unittest` module: a `unittest.TestCase` subclass with `self.assertEqual`-style "
                "assertions and `self.assertRaises`, never a bare `assert`.",
      lambda v: [("Which test framework do you use?", "`unittest`: a `TestCase` subclass with `self.assert...` methods.")], TW, parse=_tests)
def _unittest(ctx: Ctx, got, _):
    tree = ast.parse(got[1])
    cases = [n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)
             and any(ast.unparse(b).endswith("TestCase") for b in n.bases)]
    if not cases:
        return "no unittest.TestCase subclass"
    if any(isinstance(n, ast.Assert) for n in ast.walk(tree)):
        return "uses a bare `assert`"
    return None


@rule("error-case", "none",
      lambda v: "Include at least one test for invalid input that expects the exception with `pytest.raises` (or `assertRaises`).",
      lambda v: [("Do you test error cases?", "Yes: at least one test expects an exception with `pytest.raises`.")], TW, parse=_tests)
def _error_case(ctx: Ctx, got, _):
    return None if re.search(r"\b(pytest\.raises|assertRaises|assertRaisesRegex)\(", got[1]) else "no `pytest.raises` test"


@rule("imports-unit", "none",
      lambda v: "Import the function under test directly: `from <module> import <function>`.",
      lambda v: [("How do you import the code under test?", "`from <module> import <function>`.")], TW, needs_task=True)
def _imports_unit(ctx: Ctx, _):
    module, func = truth_value(ctx, "module"), truth_value(ctx, "function")
    if module is SKIP or func is SKIP:
        return SKIP
    pattern = rf"^\s*from {re.escape(module)} import [^\n]*\b{re.escape(func)}\b"
    return None if re.search(pattern, ctx.answer.text, re.M) else f"no `from {module} import {func}`"


@rule("tests-pass", "none", lambda v: "Every test must pass against the current code.",
      lambda v: [("Must the tests pass?", "Yes, every test passes against the current code.")], TW,
      needs_task=True, executes=True)
def _tests_pass(ctx: Ctx, _):
    if ctx.task is None or "module" not in ctx.task.truth or "cases" not in ctx.task.truth:
        return SKIP
    got = _tests(ctx)
    if isinstance(got, str):
        return got
    mod = mu.corpus_module(ctx.task.truth["module"])
    run = testrun.run_tests(mod.name, mod.source, got[1], test_file="test_answer.py")
    if run.ok:
        return None
    return f"tests fail ({run.error or ', '.join(f.test for f in run.failed[:3])})"


@rule("covers", "list",
      lambda v: "Cover these cases, with the word in the test name: " + english_list(v) + ".",
      lambda v: [("Which cases must the tests cover?", f"{english_list(v)}, named in the test names.")], TW,
      stated=lambda v: list(v), parse=_tests)
def _covers(ctx: Ctx, got, conditions: list[str]):
    names = [t.name for t in got[0]]
    missing = [c for c in conditions if not any(c in n for n in names)]
    return None if not missing else f"no test named for {missing}"


def _raises_calls(tree: ast.AST) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
            and n.func.attr in ("raises", "assertRaises", "assertRaisesRegex")]


@rule("raises-match", "none",
      lambda v: "Check the error message too: pass `match=` with a part of the expected message to every `pytest.raises` "
                "(or use `assertRaisesRegex`).",
      lambda v: [("How do you check an expected exception?", "With `pytest.raises(Error, match=...)`, matching part of the message.")], TW, parse=_tests)
def _raises_match(ctx: Ctx, got, _):
    calls = _raises_calls(ast.parse(got[1]))
    if not calls:
        return "no expected exception is tested"
    for call in calls:
        if call.func.attr == "assertRaises" or (call.func.attr == "raises" and not any(k.arg == "match" for k in call.keywords)):
            return "an expected exception is checked without its message"
    return None


@rule("assert-messages", "none",
      lambda v: "Give every `assert` a message after a comma that says which case failed: `assert got == want, \"empty list\"`.",
      lambda v: [("What does every assert carry?", "A message after a comma naming the case.")], TW, parse=_tests)
def _assert_messages(ctx: Ctx, got, _):
    asserts = [n for n in ast.walk(ast.parse(got[1])) if isinstance(n, ast.Assert)]
    if not asserts:
        return "no `assert` statements"
    return None if all(a.msg is not None for a in asserts) else "an `assert` has no message"


@rule("test-docstrings", "none",
      lambda v: "Give every test a one-line docstring that states the expected behaviour and ends with a period.",
      lambda v: [("What does every test start with?", "A one-line docstring stating the expected behaviour.")], TW, parse=_tests)
def _test_docstrings(ctx: Ctx, got, _):
    for t in got[0]:
        doc = ast.get_docstring(t.node)
        if not doc or "\n" in doc.strip() or not doc.strip().endswith("."):
            return f"`{t.name}` has no one-line docstring ending with a period"
    return None


@rule("max-test-lines", "int", lambda n: f"Keep each test function at most {n} lines long, `def` line included.",
      lambda n: [("How long may a test be?", f"At most {n} lines.")], TW, parse=_tests)
def _max_test_lines(ctx: Ctx, got, n: int):
    longest = max(got[0], key=lambda t: len(t.lines))
    return None if len(longest.lines) <= n else f"`{longest.name}` has {len(longest.lines)} lines, limit {n}"
