"""Reference bug-localization answers: the faulty line, function, failing test, suspects."""

from __future__ import annotations

import json
from typing import Any

from agent import checks as ck
from agent.synth.layout import Content, Layout, fence, first_free, rule_number
from agent.tasks import mutations as mu
from agent.tasks.task import Task


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
    ranked = rule_number(spec, "ranked-list", 3)
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
        return fence("json", json.dumps({k: values[k] for k in keys}, indent=2)) + "\n"

    def build(extras: list[str]) -> str | None:
        contents = _localization_contents(t, layout, spec)
        labels = [f"{c.value[0]}: {c.value[1][0]}" for c in spec.all("enum-label") if c.value[0] not in layout.parts]
        if layout.parts:
            if any(p not in contents for p in layout.parts):
                return None
            free = first_free(layout.parts, LOCALIZATION_FREE) or layout.parts[-1]
            contents[free] = Content(" ".join([contents[free].text] + extras).strip(), contents[free].items)
            return layout.assemble(contents, labels)
        if spec.get("ranked-list"):
            items = contents["Suspects"].items
            if len(items) < rule_number(spec, "ranked-list", 3):
                return None
            chunks = ["\n".join(f"{i}. {item}" for i, item in enumerate(items, 1))]
            return "\n\n".join(chunks + [" ".join(extras)] * bool(extras) + labels) + "\n"
        line = " ".join([f"`{t['file']}:{t['line']}` in `{t['name']}`: {t['cause']}"] + extras)
        return "\n".join([line] + labels) + "\n"

    first = build([])
    if first is None:
        return None
    extras = missing_extras(first, t, spec)
    return build(extras) if extras else first


def missing_extras(text: str, t: dict[str, Any], spec: ck.Spec) -> list[str]:
    """Sentences for content rules (test name, quoted line, function) that the answer does not yet satisfy."""
    out = []
    if spec.get("names-function") and f"`{t['name']}`" not in text:
        out.append(f"The bug is in `{t['name']}`.")
    if spec.get("names-test") and t["failing_tests"] and not any(x in text for x in t["failing_tests"]):
        out.append(f"`{t['failing_tests'][0]}` shows it.")
    if spec.get("quotes-line") and f"`{t['buggy_line'].strip()}`" not in text:
        out.append(f"The faulty line is `{t['buggy_line'].strip()}`.")
    return out
