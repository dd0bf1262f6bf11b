"""Bug-localization rules: the cited `file.py:LINE`, function, test and quoted line (also used by review)."""

from __future__ import annotations

import re

from agent.checks.answers import LOCATION_RE, NUMBERED_RE, Answer, list_items
from agent.checks.generic import json_answer
from agent.checks.registry import SKIP, Ctx, rule, truth_value


def is_test_file(name: str) -> bool:
    return name.startswith("test_") or name.endswith("_test.py")


def find_location(text: str) -> tuple[str, int] | None:
    """The first `file.py:LINE` outside test files, else JSON {file, line}, else `File:`/`Line:` labels."""
    try:
        data = json_answer(text)
        if isinstance(data, dict) and "file" in data and "line" in data:
            return str(data["file"]).rsplit("/", 1)[-1], int(data["line"])
    except (ValueError, TypeError):
        pass
    answer = Answer(text)
    for match in LOCATION_RE.finditer(answer.prose):
        name = match.group(1).rsplit("/", 1)[-1]
        if not is_test_file(name):  # a test's own line is evidence, not a suspect
            return name, int(match.group(2))
    file = answer.part("File", ("File", "Line"))
    line = answer.part("Line", ("File", "Line"))
    if file and line:
        num = re.search(r"\d+", line.first)
        name = re.search(r"[\w./-]+\.py", file.first)
        if num and name:
            return name.group(0).rsplit("/", 1)[-1], int(num.group(0))
    return None


BL = ("bug-localization",)


@rule("cites-location", "none", lambda v: "Cite the faulty line as `file.py:LINE` (for example `intervals.py:21`).",
      lambda v: [("How do you cite a location?", "As `file.py:LINE`, for example `intervals.py:21`.")])
def _cites_location(ctx: Ctx, _):
    return None if LOCATION_RE.search(ctx.answer.prose) else "no `file.py:LINE` reference"


@rule("location-correct", "int", lambda t: "The first location you give is your answer: it must be the faulty line.",
      lambda t: [("Which location comes first?", "The faulty line itself; other candidates come after it.")],
      needs_task=True, stated=lambda t: [])
def _location_correct(ctx: Ctx, tolerance: int):
    truth_file, truth_line = truth_value(ctx, "file"), truth_value(ctx, "line")
    if truth_file is SKIP or truth_line is SKIP:
        return SKIP
    got = find_location(ctx.answer.text)
    if got is None:
        return "no location found"
    if got[0] != truth_file or abs(got[1] - truth_line) > tolerance:
        return f"points to {got[0]}:{got[1]}, the bug is at {truth_file}:{truth_line}"
    return None


@rule("names-function", "none", lambda v: "Name the function that contains the bug, in backticks (`merge`).",
      lambda v: [("Do you name the function?", "Yes, in backticks, for example `merge`.")], needs_task=True)
def _names_function(ctx: Ctx, _):
    name = truth_value(ctx, "name") if ctx.task and "name" in ctx.task.truth else truth_value(ctx, "function")
    if name is SKIP:
        return SKIP
    name = name.rsplit(".", 1)[-1]
    text = ctx.answer.text
    try:
        data = json_answer(text)
        if isinstance(data, dict) and str(data.get("function", "")).rsplit(".", 1)[-1] == name:
            return None
    except (ValueError, TypeError):
        pass
    return None if f"`{name}`" in text or re.search(rf"`[\w.]*\.{re.escape(name)}`", text) else f"does not name `{name}`"


@rule("names-test", "none", lambda v: "Name a failing test that shows the bug, in backticks (`test_merge_touching`).",
      lambda v: [("Which test do you mention?", "A failing test that shows the bug, in backticks.")], needs_task=True)
def _names_test(ctx: Ctx, _):
    tests = truth_value(ctx, "failing_tests")
    if tests is SKIP:
        return SKIP
    return None if any(t in ctx.answer.text for t in tests) else "names none of the failing tests"


@rule("quotes-line", "none", lambda v: "Quote the faulty line of code verbatim, in backticks.",
      lambda v: [("Do you quote the code?", "Yes: the faulty line, verbatim, in backticks.")], needs_task=True)
def _quotes_line(ctx: Ctx, _):
    line = truth_value(ctx, "buggy_line")
    if line is SKIP:
        return SKIP
    return None if f"`{line.strip()}`" in ctx.answer.text or any(
        line.strip() in b.code for b in ctx.answer.blocks) else "does not quote the faulty line"


@rule("ranked-list", "int",
      lambda n: f"List exactly {n} suspects as a numbered list, most likely first, each with its `file.py:LINE`.",
      lambda n: [("How many suspects do you list?", f"Exactly {n}, most likely first."),
                 ("How is the list of suspects formatted?", "Numbered, each item with `file.py:LINE`.")])
def _ranked_list(ctx: Ctx, n: int):
    items, _ = list_items(ctx.answer.prose)
    numbered = [i for i in items if NUMBERED_RE.match(i)]
    if len(numbered) != n:
        return f"{len(numbered)} numbered suspects, expected {n}"
    if not all(LOCATION_RE.search(i) for i in numbered):
        return "a suspect has no `file.py:LINE`"
    return None
