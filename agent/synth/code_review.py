"""Reference code reviews of a change: verdict, findings with locations, suggestions."""

from __future__ import annotations

from typing import Any

from agent import checks as ck
from agent.synth.layout import Content, Layout, fence
from agent.tasks import mutations as mu
from agent.tasks.task import Task

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
            tail += [fence(*s) for s in suggestion]
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
    chunks += [fence(*s) for s in suggestion]
    for call in spec.all("enum-label"):
        chunks.append(f"{call.value[0]}: {contents[call.value[0]].text}")
    chunks.append(verdict_line)
    return "\n\n".join(chunks) + "\n"
