"""Reference tests for a function: the cases, style and framework a skill asks for."""

from __future__ import annotations

import ast
import re
from typing import Any

from agent import checks as ck
from agent.synth.layout import Content, Layout, fence, rule_number
from agent.tasks import mutations as mu, pysource
from agent.tasks.task import Task


def _signature(truth: dict[str, Any]) -> list[str] | None:
    mod = mu.corpus_module(truth["module"])
    fn = pysource.find_function(mod.source, truth["function"])
    node = ast.parse(fn.source).body[0]
    if node.args.vararg or node.args.kwarg:
        return None
    return [a.arg for a in node.args.posonlyargs + node.args.args + node.args.kwonlyargs]


def _arrange(call: str, params: list[str] | None, unit: str) -> tuple[list[str], str] | None:
    """Split `f(a, b=c)` into assignments of named arguments and a call that uses them."""
    if params is None:
        return None
    node = ast.parse(call, mode="eval").body
    if not isinstance(node, ast.Call) or len(node.args) > len(params):
        return None
    assigns, used = [], []
    for name, arg in list(zip(params, node.args)) + [(k.arg, k.value) for k in node.keywords]:
        var = name if name not in (unit, "result", "pytest", "error") else f"{name}_value"
        assigns.append(f"{var} = {ast.unparse(arg)}")
        used.append(var if name in params[: len(node.args)] else f"{name}={var}")
    return assigns, f"{unit}({', '.join(used)})"


def _condition_words(case: dict[str, str]) -> str:
    return case["condition"].replace("_", " ")


def _pick_cases(cases: list[dict[str, str]], spec: ck.Spec) -> list[dict[str, str]] | None:
    covers = spec.get("covers").value if spec.get("covers") else []
    need_error = bool(spec.get("error-case"))
    limit = rule_number(spec, "max-tests", 99)
    chosen: list[dict[str, str]] = []
    for word in covers:
        match = next((c for c in cases if word in c["condition"]), None)
        if match is None:
            return None
        if match not in chosen:
            chosen.append(match)
    if need_error and not any("raises" in c for c in chosen):
        error = next((c for c in cases if "raises" in c), None)
        if error is None:
            return None
        chosen.append(error)
    for case in cases:
        if case not in chosen:
            chosen.append(case)
    return chosen[:limit] if not spec.get("parametrize") else chosen


def _raiser(case: dict[str, str], style: dict[str, Any]) -> str | None:
    """The context manager that expects a case's exception, with its message if the style wants it."""
    error = case["raises"]
    if not style["match"]:
        return f"self.assertRaises({error})" if style["unittest"] else f"pytest.raises({error})"
    message = case.get("message", "")
    if not message.strip():
        return None
    pattern = repr(re.sub(r"([.^$*+?{}\[\]\\|()])", r"\\\1", message[:40]))  # escape only what regex needs
    return f"self.assertRaisesRegex({error}, {pattern})" if style["unittest"] else f"pytest.raises({error}, match={pattern})"


def _test_lines(case: dict[str, str], unit: str, params: list[str] | None, style: dict[str, Any]) -> list[str] | None:
    """Body lines of one test (without the def line), indented by four spaces."""
    steps = style["steps"]
    self_ = style["unittest"]
    note = f', "{_condition_words(case)}"' if style["messages"] else ""
    doc = []
    if style["docstrings"]:
        outcome = f"raises {case['raises']}" if "raises" in case else (
            f"returns {case['expect']}" if len(case["expect"]) <= 40 else "returns the expected value")
        doc = [f'"""{unit} {outcome} for {_condition_words(case)}."""']
    raiser = _raiser(case, style) if "raises" in case else ""
    if raiser is None:
        return None
    split = _arrange(case["call"], params, unit) if steps else None
    if steps and split is None:
        return None
    if steps:
        assigns, call = split
        arrange, act, check = steps
        body = [f"# {arrange}", *assigns, f"# {act}"]
        if "raises" in case:
            body += [f"with {raiser} as error:", f"    {call}", f"# {check}"]
            body.append(f"self.assertIs(error.exception.__class__, {case['raises']})" if self_
                        else f"assert error.type is {case['raises']}{note}")
        else:
            body += [f"result = {call}", f"# {check}"]
            body.append(f"self.assertEqual(result, {case['expect']})" if self_ else f"assert result == {case['expect']}{note}")
    elif "raises" in case:
        body = [f"with {raiser}:", f"    {case['call']}"]
    else:
        body = [f"self.assertEqual({case['call']}, {case['expect']})" if self_
                else f"assert {case['call']} == {case['expect']}{note}"]
    return doc + body


def _test_name(template: str, unit: str, condition: str) -> str:
    return template.replace("<unit>", unit).replace("<condition>", condition).replace("<Unit>", ck.camel(unit))


def render_tests_code(task: Task, spec: ck.Spec) -> str | None:
    t = task.truth
    unit = t["function"]
    cases = _pick_cases(list(t["cases"]), spec)
    if cases is None:
        return None
    is_unittest = bool(spec.get("unittest"))
    class_template = spec.get("test-class").value if spec.get("test-class") else ("Test<Unit>" if is_unittest else None)
    template = spec.get("test-name").value if spec.get("test-name") else (
        "test_<condition>" if class_template else "test_<unit>_<condition>")
    steps = spec.get("step-comments").value if spec.get("step-comments") else None
    if steps is not None and len(steps) != 3:
        return None
    style = {"steps": steps, "unittest": is_unittest, "docstrings": bool(spec.get("test-docstrings")),
             "match": bool(spec.get("raises-match")), "messages": bool(spec.get("assert-messages"))}
    if style["match"] and not any("raises" in c for c in cases):
        return None
    params = _signature(t)
    tests: list[tuple[str, list[str], list[str]]] = []  # (name, decorators, body)
    if spec.get("parametrize"):
        values = [c for c in cases if "raises" not in c and "=" not in c["call"].split("(", 1)[1]]
        errors = [c for c in cases if "raises" in c]
        if len(values) < 2 or steps or is_unittest:
            return None
        rows = []
        for c in values:
            args = ast.parse(c["call"], mode="eval").body.args
            rows.append(f"    (({', '.join(ast.unparse(a) for a in args)}{',' if len(args) == 1 else ''}), {c['expect']}),")
        deco = ["@pytest.mark.parametrize(", '    ("args", "expected"),', "    [", *["    " + r for r in rows], "    ],", ")"]
        doc = [f'"""{unit} returns the expected value for each case."""'] if style["docstrings"] else []
        note = ', "expected values"' if style["messages"] else ""
        tests.append((_test_name(template, unit, "expected_values"), deco, doc + [f"assert {unit}(*args) == expected{note}"],
                      ["args", "expected"]))
        for c in errors[:1]:
            body = _test_lines(c, unit, params, style)
            if body is None:
                return None
            tests.append((_test_name(template, unit, c["condition"]), [], body, []))
    else:
        for c in cases:
            body = _test_lines(c, unit, params, style)
            if body is None:
                return None
            tests.append((_test_name(template, unit, c["condition"]), [], body, []))
    min_tests = rule_number(spec, "min-tests", 1)
    if len(tests) < min_tests or len({t[0] for t in tests}) != len(tests):
        return None
    uses_pytest = not is_unittest and any("pytest." in l for _, d, b, _ in tests for l in d + b)
    head = (["import unittest", ""] if is_unittest else (["import pytest", ""] if uses_pytest else []))
    imports = list(t["imports"])
    stdlib = sorted(i for i in imports if i.startswith("from datetime"))
    lines = head + stdlib + ([""] if stdlib else []) + [i for i in imports if not i.startswith("from datetime")]
    indent = "    " if class_template else ""
    if class_template:
        cls = _test_name(class_template, unit, "")
        base = "(unittest.TestCase)" if is_unittest else ""
        lines += ["", "", f"class {cls}{base}:"]
    for i, (name, decos, body, args) in enumerate(tests):
        lines += ([""] if class_template and i else [] if class_template else ["", ""])
        lines += [indent + d for d in decos]
        params_text = ", ".join((["self"] if class_template else []) + args)
        lines.append(f"{indent}def {name}({params_text}):")
        lines += [indent + "    " + b for b in body]
    return "\n".join(lines).strip("\n") + "\n"


TEST_PLAN_PARTS = ("Test plan", "Cases", "Plan", "Coverage")
TEST_CODE_PARTS = ("Tests", "Code", "Test code")


def render_tests(task: Task, spec: ck.Spec) -> str | None:
    code = render_tests_code(task, spec)
    if code is None:
        return None
    layout = Layout(spec)
    if not layout.parts:
        return fence("python", code) + "\n"
    cases = _pick_cases(list(task.truth["cases"]), spec) or []
    plan = [f"`{c['call']}` " + (f"raises `{c['raises']}`" if "raises" in c else f"returns `{c['expect']}`")
            + f" ({_condition_words(c)})." for c in cases]
    contents = {name: Content(items=plan) for name in TEST_PLAN_PARTS}
    contents.update({name: Content("", code=[("python", code)]) for name in TEST_CODE_PARTS})
    contents["Notes"] = Content(f"The tests import `{task.truth['function']}` from `{task.truth['module']}` and need no fixtures.")
    if any(p not in contents for p in layout.parts) or not any(p in TEST_CODE_PARTS for p in layout.parts):
        return None
    return layout.assemble(contents)
