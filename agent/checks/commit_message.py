"""Commit-message rules: conventional type and scope, subject form, body, trailers."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from agent.checks.answers import BULLET_RE, NUMBERED_RE, is_imperative, list_items
from agent.checks.registry import SKIP, Ctx, english_list, rule, truth_value

COMMIT_KINDS = {"fix": "fix", "feat": "feat", "refactor": "refactor", "docs": "docs", "test": "test"}
GITMOJI = {"feat": "✨", "fix": "🐛", "refactor": "♻️", "docs": "📝", "test": "✅"}
CONVENTIONAL_RE = re.compile(r"^([a-z]+)(\(([^()\s]+)\))?(!)?: (\S.*)$")
TICKET_RE = re.compile(r"^\[([A-Z][A-Z0-9]*-\d+)\] (\S.*)$")
SUBSYSTEM_RE = re.compile(r"^([a-z][a-z0-9_]*): (\S.*)$")
TRAILER_RE = re.compile(r"^([A-Za-z][A-Za-z-]*): (\S.*)$")
# Common verbs of commit subjects and change lists, for the imperative-mood check.
@dataclass(frozen=True)
class Commit:
    subject: str
    summary: str  # the subject without any recognised prefix
    prefix: str
    body: list[str]  # lines after the blank line, trailers excluded
    trailers: list[str]
    raw_lines: list[str]


def parse_commit(text: str) -> Commit:
    text = text.strip()
    fenced = re.fullmatch(r"(`{3,}|~{3,})[\w-]*\n(.*)\n\1", text, re.S)
    if fenced:  # a message wrapped in one code fence is still that message
        text = fenced.group(2).strip()
    lines = text.split("\n")
    subject = lines[0].strip() if lines else ""
    summary, prefix = subject, ""
    for emoji in GITMOJI.values():
        if summary.startswith(emoji):
            prefix += emoji
            summary = summary[len(emoji):].lstrip("\ufe0f").lstrip()
            break
    for regex, group in ((TICKET_RE, 2), (CONVENTIONAL_RE, 5), (SUBSYSTEM_RE, 2)):
        match = regex.match(summary)
        if match:
            prefix += summary[: match.start(group)]
            summary = match.group(group)
            break
    rest = lines[1:]
    paragraphs: list[list[str]] = [[]]
    for line in rest:
        if line.strip():
            paragraphs[-1].append(line)
        elif paragraphs[-1]:
            paragraphs.append([])
    paragraphs = [p for p in paragraphs if p]
    trailers: list[str] = []
    if paragraphs and all(TRAILER_RE.match(l) or re.match(r"^[A-Z][a-z]+ #\d+$", l) for l in paragraphs[-1]):
        trailers = paragraphs.pop()
    body = [l for p in paragraphs for l in p]
    return Commit(subject, summary, prefix, body, trailers, lines)


def _commit(ctx: Ctx) -> Commit:
    return parse_commit(ctx.answer.text)


def _expected_kind(ctx: Ctx) -> Any:
    kind = truth_value(ctx, "kind")
    return kind if kind is SKIP else COMMIT_KINDS.get(kind, kind)


CM = ("commit-message",)


@rule("subject-max-len", "int", lambda n: f"The subject line is at most {n} characters long.",
      lambda n: [("What is the maximum length of the subject line?", f"{n} characters.")], CM)
def _subject_max_len(ctx: Ctx, n: int):
    c = _commit(ctx)
    return None if len(c.subject) <= n else f"subject is {len(c.subject)} characters, limit {n}"


@rule("conventional-type", "list",
      lambda v: f"Write the subject as `type: summary` or `type(scope): summary`, where type is one of {english_list(v)}.",
      lambda v: [("Which commit types are allowed?", f"{english_list(v)}."),
                 ("What format does the subject line follow?", "`type(scope): summary`, Conventional Commits style.")],
      CM, stated=lambda v: list(v))
def _conventional_type(ctx: Ctx, types: list[str]):
    match = CONVENTIONAL_RE.match(_commit(ctx).subject)
    if match is None:
        return "subject is not `type(scope): summary`"
    return None if match.group(1) in types else f"type {match.group(1)!r} not in {types}"


@rule("scope-required", "none", lambda v: "Always put a scope in parentheses after the type: `type(scope): summary`.",
      lambda v: [("Is the scope optional?", "No: every subject has `type(scope): `.")], CM)
def _scope_required(ctx: Ctx, _):
    match = CONVENTIONAL_RE.match(_commit(ctx).subject)
    return None if match and match.group(3) else "no `(scope)` after the type"


@rule("scope-is-module", "none",
      lambda v: "The scope is the changed module's file name without `.py` (for `intervals.py`, the scope is `intervals`).",
      lambda v: [("What do you use as the scope?", "The changed module's name without `.py`.")], CM, needs_task=True)
def _scope_is_module(ctx: Ctx, _):
    scope = truth_value(ctx, "scope")
    if scope is SKIP:
        return SKIP
    match = CONVENTIONAL_RE.match(_commit(ctx).subject)
    got = match.group(3) if match else None
    return None if got == scope else f"scope is {got!r}, expected {scope!r}"


@rule("type-matches", "none",
      lambda v: "Pick the type from what the diff does: `fix` for a bug fix, `feat` for new behaviour, `refactor` for "
                "a change that keeps behaviour, `docs` for documentation only, `test` for tests only.",
      lambda v: [("Which type does a commit that only adds a docstring get?", "`docs`."),
                 ("Which type does a bug fix get?", "`fix`.")], CM, needs_task=True)
def _type_matches(ctx: Ctx, _):
    kind = _expected_kind(ctx)
    if kind is SKIP:
        return SKIP
    match = CONVENTIONAL_RE.match(_commit(ctx).subject)
    got = match.group(1) if match else None
    return None if got == kind else f"type is {got!r}, the diff is a {kind!r} change"


@rule("imperative-subject", "none",
      lambda v: "Write the summary in the imperative mood, as a command: `Add`, `Fix`, `Remove`, not `Added` or `Adds`.",
      lambda v: [("What mood does the subject use?", "The imperative: `Fix ...`, not `Fixed ...` or `Fixes ...`.")], CM)
def _imperative_subject(ctx: Ctx, _):
    summary = _commit(ctx).summary
    first = summary.split()[0] if summary.split() else ""
    return None if is_imperative(first) else f"summary starts with {first!r}, not an imperative verb"


@rule("subject-case", "choice:lower|upper",
      lambda v: ("Start the summary (after any prefix) with a lowercase letter." if v == "lower"
                 else "Start the summary (after any prefix) with a capital letter."),
      lambda v: [("How does the summary start?", "With a lowercase letter." if v == "lower" else "With a capital letter.")],
      CM, stated=lambda v: ["lowercase" if v == "lower" else "capital"])
def _subject_case(ctx: Ctx, case: str):
    summary = _commit(ctx).summary
    if not summary:
        return "empty summary"
    ok = summary[0].islower() if case == "lower" else summary[0].isupper()
    return None if ok else f"summary starts with {summary[0]!r}, expected {case}case"


@rule("subject-no-period", "none", lambda v: "Do not end the subject line with a period.",
      lambda v: [("Does the subject end with a period?", "No.")], CM)
def _subject_no_period(ctx: Ctx, _):
    return None if not _commit(ctx).subject.endswith(".") else "subject ends with a period"


@rule("blank-line-after-subject", "none", lambda v: "Separate the subject from the body with one blank line.",
      lambda v: [("What separates the subject from the body?", "One blank line.")], CM)
def _blank_after_subject(ctx: Ctx, _):
    lines = _commit(ctx).raw_lines
    return None if len(lines) == 1 or not lines[1].strip() else "line 2 is not blank"


@rule("body", "choice:required|none",
      lambda v: ("Always write a body under the subject that explains why the change is needed." if v == "required"
                 else "Write the subject line only: no body, no trailers."),
      lambda v: [("Does the commit message have a body?",
                  "Yes, always: it explains why." if v == "required" else "No: the subject line only.")], CM,
      stated=lambda v: [] if v == "required" else ["only"])
def _body(ctx: Ctx, mode: str):
    c = _commit(ctx)
    if mode == "none":
        return None if len([l for l in c.raw_lines if l.strip()]) == 1 else "expected the subject line only"
    return None if c.body else "no body"


@rule("body-wrap", "int", lambda n: f"Wrap body lines at {n} characters.",
      lambda n: [("At what width do you wrap the body?", f"{n} characters.")], CM)
def _body_wrap(ctx: Ctx, n: int):
    c = _commit(ctx)
    longest = max((len(l) for l in c.raw_lines[1:]), default=0)
    return None if longest <= n else f"a body line has {longest} characters, limit {n}"


@rule("body-bullets", "none", lambda v: "Write the body as `- ` bullet points, one point per change or reason.",
      lambda v: [("How is the body formatted?", "As `- ` bullet points.")], CM)
def _body_bullets(ctx: Ctx, _):
    c = _commit(ctx)
    if not c.body:
        return "no body"
    items, stray = list_items("\n".join(c.body))
    return None if items and not stray and all(BULLET_RE.match(i) for i in items) else "body is not a `- ` bullet list"


@rule("body-prose", "none", lambda v: "Write the body as prose sentences, not as a list.",
      lambda v: [("Is the body a list?", "No: it is written as prose sentences.")], CM)
def _body_prose(ctx: Ctx, _):
    c = _commit(ctx)
    if not c.body:
        return "no body"
    return "body is a list, expected prose" if any(BULLET_RE.match(l) or NUMBERED_RE.match(l) for l in c.body) else None


def trailer_value(key: str, truth: dict[str, Any]) -> str | None:
    low = key.lower()
    if low in ("signed-off-by", "co-authored-by", "reviewed-by"):
        return truth.get("author")
    if low in ("refs", "fixes", "closes", "issue"):
        return f"#{truth['issue']}" if "issue" in truth else None
    if low in ("ticket", "jira"):
        return truth.get("ticket")
    if low == "changelog":
        return {"feat": "added", "fix": "fixed"}.get(truth.get("kind", ""), "changed")
    return None


@rule("trailer", "str",
      lambda key: f"End with a trailer line `{key}: <value>` after a blank line" + (
          " (the author as `Name <email>`)." if key.lower() in ("signed-off-by", "co-authored-by") else
          " (the issue number, as `#123`)." if key.lower() in ("refs", "fixes", "closes") else
          " (the ticket id, as `ABC-123`)." if key.lower() in ("ticket", "jira") else
          " (`added` for new features, `fixed` for bug fixes, `changed` otherwise)." if key.lower() == "changelog" else "."),
      lambda key: [("Which trailer does the message end with?", f"`{key}: <value>`, after a blank line.")], CM,
      stated=lambda key: [key])
def _trailer(ctx: Ctx, key: str):
    c = _commit(ctx)
    found = [TRAILER_RE.match(l) for l in c.trailers]
    values = [m.group(2).strip() for m in found if m and m.group(1) == key]
    if not values:
        return f"no `{key}:` trailer after a blank line"
    if ctx.task is not None:
        want = trailer_value(key, ctx.task.truth)
        if want is not None and want not in values:
            return f"`{key}` is {values[0]!r}, expected {want!r}"
    return None


@rule("closes-issue", "str",
      lambda word: f"End with the line `{word} #<issue number>` (no colon) after a blank line.",
      lambda word: [("How do you reference the issue?", f"Last line: `{word} #<number>`.")], CM,
      stated=lambda word: [word])
def _closes_issue(ctx: Ctx, word: str):
    c = _commit(ctx)
    last = c.raw_lines[-1].strip() if c.raw_lines else ""
    match = re.fullmatch(rf"{re.escape(word)} #(\d+)", last)
    if match is None or last not in c.trailers:
        return f"last line is not `{word} #N` after a blank line"
    if ctx.task is not None and "issue" in ctx.task.truth and int(match.group(1)) != ctx.task.truth["issue"]:
        return f"issue #{match.group(1)}, expected #{ctx.task.truth['issue']}"
    return None


@rule("ticket-prefix", "none", lambda v: "Start the subject with the ticket id in brackets: `[ABC-123] Summary`.",
      lambda v: [("How does the subject start?", "With the ticket id in square brackets, like `[ABC-123] `.")], CM)
def _ticket_prefix(ctx: Ctx, _):
    match = TICKET_RE.match(_commit(ctx).subject)
    if match is None:
        return "subject does not start with `[TICKET-123] `"
    if ctx.task is not None and "ticket" in ctx.task.truth and match.group(1) != ctx.task.truth["ticket"]:
        return f"ticket {match.group(1)}, expected {ctx.task.truth['ticket']}"
    return None


@rule("subsystem-prefix", "none",
      lambda v: "Start the subject with the changed module's name and a colon: `intervals: summary`.",
      lambda v: [("How does the subject start?", "With the module name and a colon, like `intervals: `.")], CM)
def _subsystem_prefix(ctx: Ctx, _):
    match = SUBSYSTEM_RE.match(_commit(ctx).subject)
    if match is None:
        return "subject does not start with `module: `"
    if ctx.task is not None and "scope" in ctx.task.truth and match.group(1) != ctx.task.truth["scope"]:
        return f"prefix {match.group(1)!r}, expected {ctx.task.truth['scope']!r}"
    return None


@rule("gitmoji", "none",
      lambda v: "Start the subject with the emoji for the kind of change, then a space: " +
                ", ".join(f"{e} {k}" for k, e in GITMOJI.items()) + ".",
      lambda v: [("Which emoji marks a bug fix?", f"{GITMOJI['fix']}."), ("Which emoji marks a new feature?", f"{GITMOJI['feat']}."),
                 ("How does the subject start?", "With the gitmoji for the kind of change, then a space.")], CM,
      stated=lambda v: list(GITMOJI.values()))
def _gitmoji(ctx: Ctx, _):
    subject = _commit(ctx).subject
    used = next((k for k, e in GITMOJI.items() if subject.startswith(e)), None)
    if used is None:
        return "subject does not start with a gitmoji"
    kind = _expected_kind(ctx) if ctx.task is not None else SKIP
    if kind is not SKIP and used != kind:
        return f"emoji for {used!r}, the diff is a {kind!r} change"
    return None


@rule("mentions-symbol", "none", lambda v: "Name the changed function in the message.",
      lambda v: [("What must the message name?", "The changed function.")], CM, needs_task=True)
def _mentions_symbol(ctx: Ctx, _):
    symbols = truth_value(ctx, "symbols")
    if symbols is SKIP:
        return SKIP
    names = {s.rsplit(".", 1)[-1] for s in symbols}
    return None if any(n in ctx.answer.text for n in names) else f"does not name any of {sorted(names)}"
