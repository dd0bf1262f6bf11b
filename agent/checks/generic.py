"""Rules any subtask can use: length, sections, labels, lists, code blocks, JSON answers."""

from __future__ import annotations

import ast
import json
import re
from typing import Any

from agent.checks.answers import BULLET_RE, NUMBERED_RE, Answer, is_imperative, list_items, words
from agent.checks.registry import SKIP, Ctx, english_list, rule, truth_value


@rule("max-words", "int", lambda n: f"Keep the prose (everything outside code blocks) to at most {n} words.",
      lambda n: [("How long may the answer be?", f"At most {n} words of prose, not counting code blocks.")])
def _max_words(ctx: Ctx, n: int):
    count = words(ctx.answer.prose)
    return None if count <= n else f"{count} words of prose, limit {n}"


@rule("max-lines", "int", lambda n: f"The whole answer is at most {n} non-blank line{'s' if n != 1 else ''}.",
      lambda n: [("How many lines may the answer have?", f"At most {n} non-blank line{'s' if n != 1 else ''}.")])
def _max_lines(ctx: Ctx, n: int):
    count = sum(1 for line in ctx.answer.lines if line.strip())
    return None if count <= n else f"{count} non-blank lines, limit {n}"


@rule("sections", "list",
      lambda v: f"Use exactly these level-2 headings, in this order and no others: {english_list(['## ' + s for s in v])}.",
      lambda v: [("Which sections must the answer contain, in order?", f"{english_list(['## ' + s for s in v])}, in that order."),
                 ("What is the first section?", f"`## {v[0]}`."), ("What is the last section?", f"`## {v[-1]}`.")],
      stated=lambda v: list(v))
def _sections(ctx: Ctx, names: list[str]):
    found = [title for _, title, _ in ctx.answer.headings(2)]
    if found == names:
        return None
    return f"level-2 headings are {found or 'missing'}, expected {names}"


@rule("labels", "list",
      lambda v: f"Write these labelled lines, each once and in this order: {english_list([s + ':' for s in v])}.",
      lambda v: [("Which labelled lines must the answer have, in order?", f"{english_list([s + ':' for s in v])}, in that order."),
                 ("What is the first label?", f"`{v[0]}:`.")],
      stated=lambda v: list(v))
def _labels(ctx: Ctx, names: list[str]):
    found = [p.name for p in ctx.answer.parts(tuple(names)) if p.kind == "label" and p.name in names]
    if found == names:
        return None
    return f"labels are {found or 'missing'}, expected {names}"


@rule("section-max-words", "key-int",
      lambda v: f"The `{v[0]}` part is at most {v[1]} words.",
      lambda v: [(f"How long may the `{v[0]}` part be?", f"At most {v[1]} words.")],
      stated=lambda v: [v[0], str(v[1])])
def _section_max_words(ctx: Ctx, v):
    part = ctx.answer.part(v[0], ctx.spec.labels)
    if part is None:
        return f"no `{v[0]}` part"
    count = words(part.prose)
    return None if count <= v[1] else f"`{v[0]}` has {count} words, limit {v[1]}"


def _list_of(ctx: Ctx, name: str) -> tuple[list[str] | None, Any]:
    """(items, stray lines) of the list under `name`, or (None, outcome): no such part is an error, an
    explicit `None.` passes."""
    part = ctx.answer.part(name, ctx.spec.labels)
    if part is None:
        return None, f"no `{name}` part"
    if part.prose.strip() == "None.":
        return None, None
    return list_items(part.prose)


@rule("bullets", "str",
      lambda name: f"Under `{name}`, write only `- ` bullet points (or the single line `None.` when there is nothing to list).",
      lambda name: [(f"How is the `{name}` part formatted?", "As `- ` bullet points, or `None.` when empty.")],
      stated=lambda name: [name])
def _bullets(ctx: Ctx, name: str):
    items, stray = _list_of(ctx, name)
    if items is None:
        return stray
    if stray or not items or not all(BULLET_RE.match(i) for i in items):
        return f"`{name}` is not a plain `- ` bullet list"
    return None


@rule("numbered", "str",
      lambda name: f"Under `{name}`, write a numbered list (`1.`, `2.`, ...), or `None.` when there is nothing to list.",
      lambda name: [(f"How is the `{name}` part formatted?", "As a numbered list: `1.`, `2.`, ...")],
      stated=lambda name: [name])
def _numbered(ctx: Ctx, name: str):
    items, stray = _list_of(ctx, name)
    if items is None:
        return stray
    numbers = [NUMBERED_RE.match(i) for i in items]
    if stray or not items or not all(numbers):
        return f"`{name}` is not a numbered list"
    if [int(m.group(1)) for m in numbers] != list(range(1, len(items) + 1)):
        return f"`{name}` is not numbered 1, 2, 3..."
    return None


def _item_count(ctx: Ctx, name: str) -> int | str:
    part = ctx.answer.part(name, ctx.spec.labels)
    return f"no `{name}` part" if part is None else len(list_items(part.prose)[0])


@rule("min-bullets", "key-int", lambda v: f"List at least {v[1]} item{'s' if v[1] != 1 else ''} under `{v[0]}`.",
      lambda v: [(f"How many items must `{v[0]}` have?", f"At least {v[1]}.")], stated=lambda v: [v[0], str(v[1])])
def _min_bullets(ctx: Ctx, v):
    count = _item_count(ctx, v[0])
    if isinstance(count, str):
        return count
    return None if count >= v[1] else f"`{v[0]}` has {count} items, need {v[1]}"


@rule("max-bullets", "key-int", lambda v: f"List at most {v[1]} item{'s' if v[1] != 1 else ''} under `{v[0]}`.",
      lambda v: [(f"How many items may `{v[0]}` have?", f"At most {v[1]}.")], stated=lambda v: [v[0], str(v[1])])
def _max_bullets(ctx: Ctx, v):
    count = _item_count(ctx, v[0])
    if isinstance(count, str):
        return count
    return None if count <= v[1] else f"`{v[0]}` has {count} items, limit {v[1]}"


@rule("code-block", "str", lambda lang: f"Include a fenced code block tagged `{lang}` (opened with ```{lang}).",
      lambda lang: [("What kind of code block does the answer contain?", f"A fenced block tagged `{lang}`.")])
def _code_block(ctx: Ctx, lang: str):
    return None if any(b.lang == lang for b in ctx.answer.blocks) else f"no ```{lang} block"


@rule("one-code-block", "none", lambda v: "Use exactly one fenced code block.",
      lambda v: [("How many code blocks may the answer have?", "Exactly one.")])
def _one_code_block(ctx: Ctx, _):
    n = len(ctx.answer.blocks)
    return None if n == 1 else f"{n} code blocks, expected exactly 1"


@rule("no-code-block", "none", lambda v: "Do not include any code blocks.",
      lambda v: [("May the answer include code blocks?", "No, none.")])
def _no_code_block(ctx: Ctx, _):
    return None if not ctx.answer.blocks else f"{len(ctx.answer.blocks)} code block(s), expected none"


@rule("code-parses", "none", lambda v: "Every ```python block must be valid Python that parses.",
      lambda v: [("Must the Python code be valid?", "Yes: every ```python block must parse.")])
def _code_parses(ctx: Ctx, _):
    blocks = [b for b in ctx.answer.blocks if b.lang in ("python", "py")]
    if not blocks:
        return "no ```python block"
    for b in blocks:
        try:
            ast.parse(b.code)
        except SyntaxError as exc:
            return f"python block does not parse (line {exc.lineno}: {exc.msg})"
    return None


@rule("code-only", "none", lambda v: "Answer with the code block only: no text before or after it.",
      lambda v: [("What goes around the code block?", "Nothing: the answer is the code block alone.")])
def _code_only(ctx: Ctx, _):
    if len(ctx.answer.blocks) != 1:
        return f"{len(ctx.answer.blocks)} code blocks, expected exactly 1"
    return None if not ctx.answer.prose.strip() else "text outside the code block"


@rule("no-headings", "none", lambda v: "Do not use markdown headings.",
      lambda v: [("May the answer use headings?", "No markdown headings at all.")])
def _no_headings(ctx: Ctx, _):
    found = ctx.answer.headings()
    return None if not found else f"{len(found)} heading(s) found"


def json_answer(text: str) -> Any:
    answer = Answer(text)
    body = text.strip()
    if answer.blocks:
        if len(answer.blocks) != 1 or answer.prose.strip():
            raise ValueError("expected only one ```json block")
        body = answer.blocks[0].code
    return json.loads(body)


@rule("json-object", "list",
      lambda v: f"Answer with a single JSON object (bare, or alone in a ```json block) with exactly these keys: {english_list(v)}.",
      lambda v: [("What is the output format?", f"One JSON object with the keys {english_list(v)}."),
                 ("Which keys does the JSON object have?", f"{english_list(v)}.")], stated=lambda v: list(v))
def _json_object(ctx: Ctx, keys: list[str]):
    try:
        data = json_answer(ctx.answer.text)
    except ValueError as exc:
        return f"not a JSON object ({str(exc).splitlines()[0][:60]})"
    if not isinstance(data, dict):
        return "JSON value is not an object"
    if sorted(data) != sorted(keys):
        return f"keys are {sorted(data)}, expected {sorted(keys)}"
    return None


@rule("enum-label", "key-list",
      lambda v: f"Include a line `{v[0]}: <value>` where the value is exactly one of: {english_list(v[1])}.",
      lambda v: [(f"Which values may `{v[0]}` take?", f"{english_list(v[1])}.")], stated=lambda v: [v[0], *v[1]])
def _enum_label(ctx: Ctx, v):
    part = ctx.answer.part(v[0], ctx.spec.labels)
    if part is None or part.kind != "label":
        return f"no `{v[0]}:` line"
    value = part.first.strip().strip("*`").rstrip(".")
    return None if value in v[1] else f"`{v[0]}` is {value!r}, expected one of {v[1]}"


@rule("line-max-len", "int", lambda n: f"No line outside code blocks is longer than {n} characters.",
      lambda n: [("How long may a line be?", f"At most {n} characters outside code blocks.")])
def _line_max_len(ctx: Ctx, n: int):
    longest = max((len(line) for line in ctx.answer.prose_lines), default=0)
    return None if longest <= n else f"a line has {longest} characters, limit {n}"


@rule("mentions-file", "none", lambda v: "Name the file you are talking about (for example `intervals.py`).",
      needs_task=True)
def _mentions_file(ctx: Ctx, _):
    file = truth_value(ctx, "file")
    if file is SKIP:
        return SKIP
    return None if file in ctx.answer.text else f"does not mention {file}"


def bullets_imperative_ok(item: str) -> bool:
    text = re.sub(r"^([-*]|\d+[.)])\s+", "", item).lstrip("`*[ ")
    first = re.split(r"[\s:]", text, maxsplit=1)[0]
    return bool(first) and first[0].isupper() and is_imperative(first)


@rule("bullets-imperative", "str",
      lambda name: f"Start every item under `{name}` with a capitalised verb in the imperative (Rename, Extract, Add...).",
      lambda name: [(f"How does each `{name}` item start?", "With a capitalised imperative verb, like `Rename` or `Extract`.")],
      stated=lambda name: [name])
def _bullets_imperative(ctx: Ctx, name: str):
    part = ctx.answer.part(name, ctx.spec.labels)
    if part is None:
        return f"no `{name}` part"
    items, _ = list_items(part.prose)
    if not items:
        return f"`{name}` has no items"
    bad = [i for i in items if not bullets_imperative_ok(i)]
    return None if not bad else f"item does not start with an imperative verb: {bad[0][:50]!r}"
