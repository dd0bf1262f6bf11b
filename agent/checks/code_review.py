"""Code-review rules: verdict, findings with locations, severity, suggested change."""

from __future__ import annotations

import re

from agent.checks.answers import LOCATION_RE, list_items
from agent.checks.registry import SKIP, Ctx, english_list, rule, truth_value

CR = ("code-review",)
COMMENT_SECTIONS = ("Issues", "Findings", "Comments", "Problems", "Concerns", "Blocking")


def review_comments(ctx: Ctx) -> list[str]:
    """Bullet items of the first comments section, or of the whole answer when there is none."""
    for name in COMMENT_SECTIONS:
        part = ctx.answer.part(name, ctx.spec.labels)
        if part is not None:
            items, _ = list_items(part.prose)
            return [i for i in items if not re.match(r"^[-*] \[[ xX]\] ", i)]
    items, _ = list_items(ctx.answer.prose)
    return [i for i in items if not re.match(r"^[-*] \[[ xX]\] ", i)]


def _verdicts(ctx: Ctx) -> list[str] | None:
    call = ctx.spec.get("verdict")
    return call.value if call else None


@rule("verdict", "list",
      lambda v: f"End with the line `Verdict: {v[0]}` when the change is safe to merge, or `Verdict: {v[1]}` when it is not.",
      lambda v: [("How does the review end?", f"With `Verdict: {v[0]}` or `Verdict: {v[1]}`."),
                 ("Which verdict do you give a change with a bug?", f"`{v[1]}`.")], CR, stated=lambda v: list(v[:2]))
def _verdict(ctx: Ctx, values: list[str]):
    lines = [l.strip() for l in ctx.answer.lines if l.strip()]
    last = lines[-1] if lines else ""
    match = re.fullmatch(r"\**Verdict:\**\s*(.+?)\s*", last)
    if match is None:
        return "last line is not `Verdict: ...`"
    return None if match.group(1).strip("*`") in values else f"verdict {match.group(1)!r} not in {values}"


@rule("verdict-correct", "none",
      lambda v: "Approve only a change with no defect; request changes for any change that breaks behaviour.",
      lambda v: [("When do you approve?", "Only when the change has no defect.")], CR, needs_task=True)
def _verdict_correct(ctx: Ctx, _):
    has_bug = truth_value(ctx, "has_bug")
    values = _verdicts(ctx)
    if has_bug is SKIP or not values:
        return SKIP
    lines = [l.strip() for l in ctx.answer.lines if l.strip()]
    match = re.fullmatch(r"\**Verdict:\**\s*(.+?)\s*", lines[-1] if lines else "")
    got = match.group(1).strip("*`") if match else None
    want = values[1] if has_bug else values[0]
    return None if got == want else f"verdict {got!r}, expected {want!r}"


@rule("severity-tags", "list",
      lambda v: f"Start every issue bullet with a severity tag in brackets, one of {english_list(['[' + s + ']' for s in v])}.",
      lambda v: [("How do you mark severity?", f"With a tag in brackets at the start of each issue: {english_list(['[' + s + ']' for s in v])}.")],
      CR, stated=lambda v: list(v))
def _severity_tags(ctx: Ctx, tags: list[str]):
    for item in review_comments(ctx):
        match = re.match(r"^[-*] \[([^\]]+)\] ", item)
        if match is None or match.group(1) not in tags:
            return f"issue without a severity tag: {item[:50]!r}"
    return None


@rule("comment-labels", "list",
      lambda v: f"Start every comment bullet with a label and a colon, one of {english_list([s + ':' for s in v])} "
                "(Conventional Comments).",
      lambda v: [("Which labels may a comment have?", f"{english_list([s + ':' for s in v])}.")], CR, stated=lambda v: list(v))
def _comment_labels(ctx: Ctx, labels: list[str]):
    items = review_comments(ctx)
    if not items:
        return "no comments"
    for item in items:
        match = re.match(r"^[-*] \**([a-z]+)(?: \([a-z-]+\))?\**: ", item)
        if match is None or match.group(1) not in labels:
            return f"comment without a label: {item[:50]!r}"
    return None


@rule("cite-lines", "none", lambda v: "Every issue bullet cites its place as `file.py:LINE`.",
      lambda v: [("What must every issue include?", "Its place as `file.py:LINE`.")], CR)
def _cite_lines(ctx: Ctx, _):
    for item in review_comments(ctx):
        if not LOCATION_RE.search(item) and not re.match(r"^[-*] \**praise", item):
            return f"issue without `file.py:LINE`: {item[:50]!r}"
    return None


@rule("flags-bug", "int", lambda t: "When the change breaks behaviour, point to the exact line that breaks it.",
      lambda t: [("What must a review of a broken change point to?", "The exact line that breaks it, as `file.py:LINE`.")],
      CR, needs_task=True, stated=lambda t: [])
def _flags_bug(ctx: Ctx, tolerance: int):
    has_bug = truth_value(ctx, "has_bug")
    if has_bug is SKIP:
        return SKIP
    if not has_bug:
        return None
    file, line = ctx.task.truth["file"], ctx.task.truth["line"]
    for match in LOCATION_RE.finditer(ctx.answer.prose):
        if match.group(1).rsplit("/", 1)[-1] == file and abs(int(match.group(2)) - line) <= tolerance:
            return None
    return f"does not point to {file}:{line}"


@rule("max-comments", "int", lambda n: f"Raise at most {n} issues; keep only the ones that matter most.",
      lambda n: [("How many issues may a review raise?", f"At most {n}.")], CR)
def _max_comments(ctx: Ctx, n: int):
    count = len(review_comments(ctx))
    return None if count <= n else f"{count} issues, limit {n}"


@rule("suggestion-block", "none",
      lambda v: "For every defect, add a ```suggestion block holding the corrected line(s), ready to apply.",
      lambda v: [("How do you propose a fix in a review?", "In a ```suggestion block with the corrected line.")], CR)
def _suggestion_block(ctx: Ctx, _):
    blocks = [b for b in ctx.answer.blocks if b.lang == "suggestion"]
    has_issue = any(not re.match(r"^[-*] \**praise", c) for c in review_comments(ctx))
    if has_issue and not blocks:
        return "issues raised without a ```suggestion block"
    if ctx.task is not None and ctx.task.truth.get("has_bug"):
        want = ctx.task.truth["fixed_line"].strip()
        if not any(want in [l.strip() for l in b.code.splitlines()] for b in blocks):
            return "no ```suggestion block with the corrected line"
    return None


@rule("checklist", "list",
      lambda v: "Include this checklist, each item as `- [x] Item` when it holds or `- [ ] Item` when it does not, "
                f"in this order: {english_list(v)}.",
      lambda v: [("Which checklist items does the review have?", f"{english_list(v)}, in that order, each `- [x]` or `- [ ]`.")],
      CR, stated=lambda v: list(v))
def _checklist(ctx: Ctx, items: list[str]):
    found = []
    for line in ctx.answer.prose_lines:
        match = re.match(r"^[-*] \[([ xX])\] (.+?)\s*$", line.strip())
        if match:
            found.append(match.group(2).split(":")[0].strip())
    return None if found == items else f"checklist items {found}, expected {items}"
