"""Rule-based adherence checkers: did an answer follow a skill's rules?

A skill's `metadata.checks` is a spec: `;`-separated rule ids with optional `=params`, e.g.
`subject-max-len=50; conventional-type=feat,fix; imperative-subject; body-wrap=72`.
Each rule is a small generic function (format, length, sections, naming...), some of them
task-aware (the cited line is the injected bug's line) and a few execution-based (the fix
makes the failing tests pass), which run the code in a subprocess with a timeout.
Each rule also says itself in English (`describe`) and answers questions about itself
(`questions`), so skill bodies, checkers and knowledge samples cannot drift apart.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # tasks imports the corpus machinery; checks without a task need none of it
    from agent.tasks.instances import Task


class SpecError(ValueError):
    """A checks spec that does not parse or names an unknown rule."""


# --------------------------------------------------------------------------- parsed answers

FENCE_RE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)")
HEADING_RE = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
LABEL_RE = re.compile(r"^\*{0,2}([A-Z][A-Za-z0-9 /-]{0,30}?)\*{0,2}:(?:\s|$)")
BULLET_RE = re.compile(r"^[-*] ")
NUMBERED_RE = re.compile(r"^(\d+)[.)] ")
LOCATION_RE = re.compile(r"([\w./-]+\.py):(\d+)")


@dataclass(frozen=True)
class Block:
    lang: str
    code: str
    start: int  # index of the opening fence line
    end: int  # index of the closing fence line (or the last line if unclosed)


@dataclass(frozen=True)
class Part:
    """A section (`## Name`) or a labelled line (`Name: ...`) with the lines it holds."""

    name: str
    kind: str  # "heading" or "label"
    first: str  # text on the label line after the colon ("" for headings)
    lines: tuple[str, ...]  # following lines up to the next part, code blocks included

    @property
    def text(self) -> str:
        return "\n".join(([self.first] if self.first else []) + list(self.lines)).strip()

    @property
    def prose(self) -> str:
        return strip_code(self.text)


class Answer:
    """A response split into lines, fenced blocks, headings and labelled parts."""

    def __init__(self, text: str):
        self.text = text.replace("\r\n", "\n")
        self.lines = self.text.split("\n")
        self.blocks: list[Block] = []
        self.in_code: list[bool] = [False] * len(self.lines)
        i = 0
        while i < len(self.lines):
            match = FENCE_RE.match(self.lines[i])
            if match:
                fence = match.group(2)
                j = i + 1
                while j < len(self.lines) and not self.lines[j].strip().startswith(fence[0] * len(fence)):
                    j += 1
                for k in range(i, min(j, len(self.lines) - 1) + 1):
                    self.in_code[k] = True
                indent = len(match.group(1))
                body = [line[indent:] if line[:indent].strip() == "" else line for line in self.lines[i + 1 : j]]
                self.blocks.append(Block(match.group(3).lower(), "\n".join(body) + ("\n" if body else ""), i, min(j, len(self.lines) - 1)))
                i = j + 1
            else:
                i += 1

    @property
    def prose_lines(self) -> list[str]:
        return [line for line, code in zip(self.lines, self.in_code) if not code]

    @property
    def prose(self) -> str:
        return "\n".join(self.prose_lines)

    def headings(self, level: int | None = None) -> list[tuple[int, str, int]]:
        out = []
        for i, (line, code) in enumerate(zip(self.lines, self.in_code)):
            match = HEADING_RE.match(line) if not code else None
            if match and (level is None or len(match.group(1)) == level):
                out.append((len(match.group(1)), match.group(2).strip(), i))
        return out

    def parts(self, labels: tuple[str, ...] = ()) -> list[Part]:
        """Headings (any level) and lines that start with one of `labels` + ':'."""
        starts: list[tuple[int, str, str, str]] = []
        for i, (line, code) in enumerate(zip(self.lines, self.in_code)):
            if code:
                continue
            heading = HEADING_RE.match(line)
            if heading:
                starts.append((i, heading.group(2).strip(), "heading", ""))
                continue
            label = LABEL_RE.match(line)
            if label and label.group(1) in labels:
                starts.append((i, label.group(1), "label", line[label.end():].strip()))
        out = []
        for n, (i, name, kind, first) in enumerate(starts):
            stop = starts[n + 1][0] if n + 1 < len(starts) else len(self.lines)
            out.append(Part(name, kind, first, tuple(self.lines[i + 1 : stop])))
        return out

    def part(self, name: str, labels: tuple[str, ...] = ()) -> Part | None:
        for p in self.parts(tuple(labels) + (name,)):
            if p.name == name:
                return p
        return None


def strip_code(text: str) -> str:
    answer = Answer(text)
    return answer.prose


def words(text: str) -> int:
    return len(re.findall(r"\S+", text))


def list_items(text: str) -> tuple[list[str], list[str]]:
    """(items, stray lines) of a bullet or numbered list; continuation lines are indented."""
    items: list[str] = []
    stray: list[str] = []
    for line in Answer(text).prose_lines:
        if not line.strip():
            continue
        if BULLET_RE.match(line) or NUMBERED_RE.match(line):
            items.append(line)
        elif line.startswith((" ", "\t")) and items:
            items[-1] += " " + line.strip()
        else:
            stray.append(line)
    return items, stray


# --------------------------------------------------------------------------- specs


@dataclass(frozen=True)
class RuleCall:
    id: str
    raw: str  # the text after '=', or ""
    value: Any  # parsed parameters


@dataclass(frozen=True)
class Spec:
    calls: tuple[RuleCall, ...]

    def get(self, rule_id: str) -> RuleCall | None:
        return next((c for c in self.calls if c.id == rule_id), None)

    def all(self, rule_id: str) -> list[RuleCall]:
        return [c for c in self.calls if c.id == rule_id]

    def ids(self) -> list[str]:
        return [c.id for c in self.calls]

    @property
    def labels(self) -> tuple[str, ...]:
        """Every label the spec mentions, so parts split at each of them."""
        names: list[str] = ["Verdict"]
        for call in self.calls:
            if call.id == "labels":
                names += call.value
            elif call.id in ("enum-label",):
                names.append(call.value[0])
            elif call.id in KEYED_RULES:
                names.append(call.value[0])
            elif call.id in ("bullets", "numbered", "bullets-imperative"):
                names.append(call.value)
        return tuple(dict.fromkeys(names))


@dataclass
class Ctx:
    answer: Answer
    spec: Spec
    task: Task | None
    execute: bool


Check = Callable[[Ctx, Any], "str | None"]


@dataclass(frozen=True)
class Rule:
    id: str
    param: str  # none | int | list | num-list | str | key-int | key-list | choice:a|b
    check: Check
    describe: Callable[[Any], str]
    questions: Callable[[Any], list[tuple[str, str]]] = lambda v: []
    subtasks: tuple[str, ...] = ()  # empty: any subtask
    needs_task: bool = False
    executes: bool = False
    stated: Callable[[Any], list[str]] | None = None  # words the skill body must contain


RULES: dict[str, Rule] = {}
KEYED_RULES = {"section-max-words", "min-bullets", "max-bullets"}
SKIP = object()  # returned by a check that cannot run (no task, or execution disabled)


def rule(id: str, param: str, describe: Callable[[Any], str], questions=None, subtasks=(), needs_task=False,
         executes=False, stated=None):
    def register(fn: Check) -> Check:
        if id in RULES:
            raise RuntimeError(f"rule {id} registered twice")
        RULES[id] = Rule(id, param, fn, describe, questions or (lambda v: []), tuple(subtasks), needs_task,
                         executes, stated)
        return fn
    return register


def _parse_value(rule: Rule, raw: str) -> Any:
    kind = rule.param
    if kind == "none":
        if raw:
            raise SpecError(f"rule {rule.id!r} takes no parameters (got {raw!r})")
        return None
    if not raw:
        raise SpecError(f"rule {rule.id!r} needs a parameter ({kind})")
    if kind == "int":
        if not raw.isdigit() or int(raw) < 0:
            raise SpecError(f"rule {rule.id!r}: {raw!r} is not a non-negative integer")
        return int(raw)
    if kind == "list":
        items = [x.strip() for x in raw.split(",")]
        if not all(items):
            raise SpecError(f"rule {rule.id!r}: empty item in {raw!r}")
        return items
    if kind == "num-list":
        items = [x.strip() for x in raw.split(",")]
        try:
            [float(x) for x in items]
        except ValueError:
            raise SpecError(f"rule {rule.id!r}: {raw!r} is not a comma-separated list of numbers") from None
        return items
    if kind == "str":
        return raw
    if kind in ("key-int", "key-list"):
        key, sep, rest = raw.partition(":")
        if not sep or not key.strip() or not rest.strip():
            raise SpecError(f"rule {rule.id!r}: expected 'Name:{'N' if kind == 'key-int' else 'a,b'}', got {raw!r}")
        if kind == "key-int":
            if not rest.strip().isdigit():
                raise SpecError(f"rule {rule.id!r}: {rest!r} is not an integer")
            return (key.strip(), int(rest))
        items = [x.strip() for x in rest.split(",")]
        if not all(items):
            raise SpecError(f"rule {rule.id!r}: empty item in {raw!r}")
        return (key.strip(), items)
    if kind.startswith("choice:"):
        options = kind[len("choice:"):].split("|")
        if raw not in options:
            raise SpecError(f"rule {rule.id!r}: {raw!r} is not one of {', '.join(options)}")
        return raw
    raise SpecError(f"rule {rule.id!r}: unknown parameter kind {kind!r}")


def parse_spec(spec: str) -> Spec:
    """Parse a checks spec; raises SpecError on syntax errors and unknown rules."""
    calls = []
    for chunk in spec.split(";"):
        chunk = chunk.strip()
        if not chunk:
            continue
        rule_id, _, raw = chunk.partition("=")
        rule_id, raw = rule_id.strip(), raw.strip()
        if not re.fullmatch(r"[a-z][a-z0-9]*(-[a-z0-9]+)*", rule_id):
            raise SpecError(f"bad rule id {rule_id!r} in checks spec")
        if rule_id not in RULES:
            raise SpecError(f"unknown rule {rule_id!r} in checks spec")
        calls.append(RuleCall(rule_id, raw, _parse_value(RULES[rule_id], raw)))
    if not calls:
        raise SpecError("empty checks spec")
    return Spec(tuple(calls))


@dataclass(frozen=True)
class CheckResult:
    passed: bool
    score: float  # fraction of the rules that ran and passed
    failures: list[str] = field(default_factory=list)  # "rule-id: why"
    skipped: list[str] = field(default_factory=list)  # rule ids that could not run here
    checked: int = 0


def check(response: str, spec: str | Spec, task: Task | None = None, execute: bool = True) -> CheckResult:
    """Check a response against every rule of a spec.

    Task-aware rules are skipped without a task; execution-based ones also when execute
    is False. A response that passes every rule that ran has passed.
    """
    parsed = spec if isinstance(spec, Spec) else parse_spec(spec)
    ctx = Ctx(Answer(response), parsed, task, execute)
    failures, skipped, ran = [], [], 0
    for call in parsed.calls:
        r = RULES[call.id]
        if (r.needs_task and task is None) or (r.executes and not execute):
            skipped.append(call.id)
            continue
        try:
            outcome = r.check(ctx, call.value)
        except (SyntaxError, ValueError, KeyError, IndexError, TypeError) as exc:
            outcome = f"could not check ({type(exc).__name__}: {exc})"
        if outcome is SKIP:
            skipped.append(call.id)
            continue
        ran += 1
        if outcome:
            failures.append(f"{call.id}: {outcome}")
    score = (ran - len(failures)) / ran if ran else 1.0
    return CheckResult(not failures, score, failures, skipped, ran)


def describe_spec(spec: str | Spec) -> list[str]:
    """One English sentence per rule, as a skill body states them."""
    parsed = spec if isinstance(spec, Spec) else parse_spec(spec)
    return [RULES[c.id].describe(c.value) for c in parsed.calls]


def rule_questions(spec: str | Spec) -> list[tuple[str, str, str]]:
    """(rule id, question, answer) pairs about the rules of a spec."""
    parsed = spec if isinstance(spec, Spec) else parse_spec(spec)
    return [(c.id, q, a) for c in parsed.calls for q, a in RULES[c.id].questions(c.value)]


def _code(x: str) -> str:
    return f"`{x}`"


def _join(items: list[str], code: bool = True) -> str:
    items = [_code(i) if code else i for i in items]
    if len(items) <= 2:
        return " and ".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _truth(ctx: Ctx, key: str) -> Any:
    if ctx.task is None or key not in ctx.task.truth:
        return SKIP
    return ctx.task.truth[key]


# --------------------------------------------------------------------------- generic rules


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
      lambda v: f"Use exactly these level-2 headings, in this order and no others: {_join(['## ' + s for s in v])}.",
      lambda v: [("Which sections must the answer contain, in order?", f"{_join(['## ' + s for s in v])}, in that order."),
                 ("What is the first section?", f"`## {v[0]}`."), ("What is the last section?", f"`## {v[-1]}`.")],
      stated=lambda v: list(v))
def _sections(ctx: Ctx, names: list[str]):
    found = [title for _, title, _ in ctx.answer.headings(2)]
    if found == names:
        return None
    return f"level-2 headings are {found or 'missing'}, expected {names}"


@rule("labels", "list",
      lambda v: f"Write these labelled lines, each once and in this order: {_join([s + ':' for s in v])}.",
      lambda v: [("Which labelled lines must the answer have, in order?", f"{_join([s + ':' for s in v])}, in that order."),
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


@rule("bullets", "str",
      lambda name: f"Under `{name}`, write only `- ` bullet points (or the single line `None.` when there is nothing to list).",
      lambda name: [(f"How is the `{name}` part formatted?", "As `- ` bullet points, or `None.` when empty.")],
      stated=lambda name: [name])
def _bullets(ctx: Ctx, name: str):
    part = ctx.answer.part(name, ctx.spec.labels)
    if part is None:
        return f"no `{name}` part"
    if part.prose.strip() == "None.":
        return None
    items, stray = list_items(part.prose)
    if stray or not items or not all(BULLET_RE.match(i) for i in items):
        return f"`{name}` is not a plain `- ` bullet list"
    return None


@rule("numbered", "str",
      lambda name: f"Under `{name}`, write a numbered list (`1.`, `2.`, ...), or `None.` when there is nothing to list.",
      lambda name: [(f"How is the `{name}` part formatted?", "As a numbered list: `1.`, `2.`, ...")],
      stated=lambda name: [name])
def _numbered(ctx: Ctx, name: str):
    part = ctx.answer.part(name, ctx.spec.labels)
    if part is None:
        return f"no `{name}` part"
    if part.prose.strip() == "None.":
        return None
    items, stray = list_items(part.prose)
    numbers = [NUMBERED_RE.match(i) for i in items]
    if stray or not items or not all(numbers):
        return f"`{name}` is not a numbered list"
    if [int(m.group(1)) for m in numbers] != list(range(1, len(items) + 1)):
        return f"`{name}` is not numbered 1, 2, 3..."
    return None


@rule("min-bullets", "key-int", lambda v: f"List at least {v[1]} item{'s' if v[1] != 1 else ''} under `{v[0]}`.",
      lambda v: [(f"How many items must `{v[0]}` have?", f"At least {v[1]}.")], stated=lambda v: [v[0], str(v[1])])
def _min_bullets(ctx: Ctx, v):
    part = ctx.answer.part(v[0], ctx.spec.labels)
    if part is None:
        return f"no `{v[0]}` part"
    items, _ = list_items(part.prose)
    return None if len(items) >= v[1] else f"`{v[0]}` has {len(items)} items, need {v[1]}"


@rule("max-bullets", "key-int", lambda v: f"List at most {v[1]} item{'s' if v[1] != 1 else ''} under `{v[0]}`.",
      lambda v: [(f"How many items may `{v[0]}` have?", f"At most {v[1]}.")], stated=lambda v: [v[0], str(v[1])])
def _max_bullets(ctx: Ctx, v):
    part = ctx.answer.part(v[0], ctx.spec.labels)
    if part is None:
        return f"no `{v[0]}` part"
    items, _ = list_items(part.prose)
    return None if len(items) <= v[1] else f"`{v[0]}` has {len(items)} items, limit {v[1]}"


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


def _json_answer(text: str) -> Any:
    answer = Answer(text)
    body = text.strip()
    if answer.blocks:
        if len(answer.blocks) != 1 or answer.prose.strip():
            raise ValueError("expected only one ```json block")
        body = answer.blocks[0].code
    return json.loads(body)


@rule("json-object", "list",
      lambda v: f"Answer with a single JSON object (bare, or alone in a ```json block) with exactly these keys: {_join(v)}.",
      lambda v: [("What is the output format?", f"One JSON object with the keys {_join(v)}."),
                 ("Which keys does the JSON object have?", f"{_join(v)}.")], stated=lambda v: list(v))
def _json_object(ctx: Ctx, keys: list[str]):
    try:
        data = _json_answer(ctx.answer.text)
    except ValueError as exc:
        return f"not a JSON object ({str(exc).splitlines()[0][:60]})"
    if not isinstance(data, dict):
        return "JSON value is not an object"
    if sorted(data) != sorted(keys):
        return f"keys are {sorted(data)}, expected {sorted(keys)}"
    return None


@rule("enum-label", "key-list",
      lambda v: f"Include a line `{v[0]}: <value>` where the value is exactly one of: {_join(v[1])}.",
      lambda v: [(f"Which values may `{v[0]}` take?", f"{_join(v[1])}.")], stated=lambda v: [v[0], *v[1]])
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
    file = _truth(ctx, "file")
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


# --------------------------------------------------------------------------- commit messages

COMMIT_KINDS = {"fix": "fix", "feat": "feat", "refactor": "refactor", "docs": "docs", "test": "test"}
GITMOJI = {"feat": "✨", "fix": "🐛", "refactor": "♻️", "docs": "📝", "test": "✅"}
CONVENTIONAL_RE = re.compile(r"^([a-z]+)(\(([^()\s]+)\))?(!)?: (\S.*)$")
TICKET_RE = re.compile(r"^\[([A-Z][A-Z0-9]*-\d+)\] (\S.*)$")
SUBSYSTEM_RE = re.compile(r"^([a-z][a-z0-9_]*): (\S.*)$")
TRAILER_RE = re.compile(r"^([A-Za-z][A-Za-z-]*): (\S.*)$")
# Common verbs of commit subjects and change lists, for the imperative-mood check.
VERBS = set("""add adjust allow annotate avoid bump catch change check clamp clean clarify convert correct cover
create cut declare define delete deprecate describe document drop enable ensure expand expose extract fix
format guard handle harden implement import improve include inline introduce keep limit log make merge move
name narrow normalize normalise optimize optimise parse prefer prevent print raise reduce refactor reject
remove rename reorder replace require reset resolve restore restrict return reuse revert rewrite run separate
set show simplify skip sort split strip support swap switch test tidy track trim update upgrade use validate
verify widen wrap write modernise modernize reword count""".split())


def is_imperative(word: str) -> bool:
    w = word.lower().strip("`*_,.:;")
    if not w.isalpha():
        return False
    if w in VERBS:
        return True
    if w.endswith("ing") or (w.endswith("ed") and not w.endswith("eed")):
        return False
    if w.endswith("ies") and w[:-3] + "y" in VERBS:
        return False
    if w.endswith("es") and w[:-2] in VERBS or w.endswith("s") and w[:-1] in VERBS:
        return False
    return True


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
    kind = _truth(ctx, "kind")
    return kind if kind is SKIP else COMMIT_KINDS.get(kind, kind)


CM = ("commit-message",)


@rule("subject-max-len", "int", lambda n: f"The subject line is at most {n} characters long.",
      lambda n: [("What is the maximum length of the subject line?", f"{n} characters.")], CM)
def _subject_max_len(ctx: Ctx, n: int):
    c = _commit(ctx)
    return None if len(c.subject) <= n else f"subject is {len(c.subject)} characters, limit {n}"


@rule("conventional-type", "list",
      lambda v: f"Write the subject as `type: summary` or `type(scope): summary`, where type is one of {_join(v)}.",
      lambda v: [("Which commit types are allowed?", f"{_join(v)}."),
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
    scope = _truth(ctx, "scope")
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


def _trailer_value(key: str, truth: dict[str, Any]) -> str | None:
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
        want = _trailer_value(key, ctx.task.truth)
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
    symbols = _truth(ctx, "symbols")
    if symbols is SKIP:
        return SKIP
    names = {s.rsplit(".", 1)[-1] for s in symbols}
    return None if any(n in ctx.answer.text for n in names) else f"does not name any of {sorted(names)}"


# --------------------------------------------------------------------------- locations (localization, review)


def is_test_file(name: str) -> bool:
    return name.startswith("test_") or name.endswith("_test.py")


def find_location(text: str) -> tuple[str, int] | None:
    """The first `file.py:LINE` outside test files, else JSON {file, line}, else `File:`/`Line:` labels."""
    try:
        data = _json_answer(text)
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
    truth_file, truth_line = _truth(ctx, "file"), _truth(ctx, "line")
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
    name = _truth(ctx, "name") if ctx.task and "name" in ctx.task.truth else _truth(ctx, "function")
    if name is SKIP:
        return SKIP
    name = name.rsplit(".", 1)[-1]
    text = ctx.answer.text
    try:
        data = _json_answer(text)
        if isinstance(data, dict) and str(data.get("function", "")).rsplit(".", 1)[-1] == name:
            return None
    except (ValueError, TypeError):
        pass
    return None if f"`{name}`" in text or re.search(rf"`[\w.]*\.{re.escape(name)}`", text) else f"does not name `{name}`"


@rule("names-test", "none", lambda v: "Name a failing test that shows the bug, in backticks (`test_merge_touching`).",
      lambda v: [("Which test do you mention?", "A failing test that shows the bug, in backticks.")], needs_task=True)
def _names_test(ctx: Ctx, _):
    tests = _truth(ctx, "failing_tests")
    if tests is SKIP:
        return SKIP
    return None if any(t in ctx.answer.text for t in tests) else "names none of the failing tests"


@rule("quotes-line", "none", lambda v: "Quote the faulty line of code verbatim, in backticks.",
      lambda v: [("Do you quote the code?", "Yes: the faulty line, verbatim, in backticks.")], needs_task=True)
def _quotes_line(ctx: Ctx, _):
    line = _truth(ctx, "buggy_line")
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


# --------------------------------------------------------------------------- bug fixing


def _python_blocks(ctx: Ctx) -> list[Block]:
    return [b for b in ctx.answer.blocks if b.lang in ("python", "py")]


def _def_source(code: str, name: str) -> str | None:
    """The text of `def name` (with decorators) inside a code block, dedented."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return None
    lines = code.splitlines()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == name:
            start = min([node.lineno] + [d.lineno for d in node.decorator_list])
            import textwrap

            return textwrap.dedent("\n".join(lines[start - 1 : node.end_lineno])) + "\n"
    return None


def fixed_source(response: str, truth: dict[str, Any]) -> str | None:
    """The module after applying the answer's fix (a diff or a whole function), or None."""
    from agent.tasks import mutations as mu
    from agent.tasks.instances import buggy_source

    buggy = buggy_source(truth)
    answer = Answer(response)
    for block in answer.blocks:
        if block.lang in ("diff", "patch"):
            try:
                return mu.apply_diff(buggy, block.code)
            except mu.PatchError:
                return None
    name = truth["function"].rsplit(".", 1)[-1]
    for block in answer.blocks:
        if block.lang in ("python", "py"):
            new_def = _def_source(block.code, name)
            if new_def is not None:
                return mu.replace_function(buggy, truth["function"], new_def)
    return None


BF = ("bug-fixing",)


@rule("diff-applies", "none",
      lambda v: "Give the fix as a unified diff (`--- a/file.py`, `+++ b/file.py`, `@@` hunks) that applies to the file as shown.",
      lambda v: [("In what form do you give the fix?", "A unified diff that applies to the file as shown.")], BF, needs_task=True)
def _diff_applies(ctx: Ctx, _):
    if ctx.task is None or "module" not in ctx.task.truth:
        return SKIP
    from agent.tasks import mutations as mu
    from agent.tasks.instances import buggy_source

    blocks = [b for b in ctx.answer.blocks if b.lang in ("diff", "patch")]
    if not blocks:
        return "no ```diff block"
    try:
        mu.apply_diff(buggy_source(ctx.task.truth), blocks[0].code)
    except mu.PatchError as exc:
        return f"diff does not apply ({exc})"
    return None


@rule("defines-function", "none",
      lambda v: "Give the complete corrected function (the whole `def`, not a fragment) in a ```python block.",
      lambda v: [("What goes in the code block?", "The complete corrected function, the whole `def`.")], BF, needs_task=True)
def _defines_function(ctx: Ctx, _):
    name = _truth(ctx, "function")
    if name is SKIP:
        return SKIP
    name = name.rsplit(".", 1)[-1]
    if any(_def_source(b.code, name) for b in _python_blocks(ctx)):
        return None
    return f"no ```python block defines `{name}`"


@rule("fix-passes-tests", "none", lambda v: "The fix must make the failing tests pass without breaking the others.",
      lambda v: [("When is a fix done?", "When the failing tests pass and no other test breaks.")], BF,
      needs_task=True, executes=True)
def _fix_passes_tests(ctx: Ctx, _):
    if ctx.task is None or "module" not in ctx.task.truth or "failing_tests" not in ctx.task.truth:
        return SKIP
    from agent.tasks import mutations as mu
    source = fixed_source(ctx.answer.text, ctx.task.truth)
    if source is None:
        return "no applicable fix found"
    mod = mu.corpus_module(ctx.task.truth["module"])
    run = mu.run_tests(mod.name, source, mod.tests)
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
    for block in _python_blocks(ctx):
        try:
            tree = ast.parse(block.code)
        except SyntaxError:
            continue
        if any(isinstance(n, ast.FunctionDef) and n.name.startswith("test_") for n in ast.walk(tree)):
            return None
    return "no ```python block with a `def test_...`"


# --------------------------------------------------------------------------- test writing


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
    blocks = _python_blocks(ctx)
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
      TW, stated=lambda t: [t])
def _test_name(ctx: Ctx, template: str):
    got = _tests(ctx)
    if isinstance(got, str):
        return got
    regex = name_regex(template, _unit(ctx))
    bad = [t.name for t in got[0] if not regex.match(t.name)]
    return None if not bad else f"`{bad[0]}` does not match `{template}`"


@rule("min-tests", "int", lambda n: f"Write at least {n} test functions.",
      lambda n: [("How many tests do you write at least?", f"{n}.")], TW)
def _min_tests(ctx: Ctx, n: int):
    got = _tests(ctx)
    if isinstance(got, str):
        return got
    return None if len(got[0]) >= n else f"{len(got[0])} tests, need at least {n}"


@rule("max-tests", "int", lambda n: f"Write at most {n} test functions.",
      lambda n: [("How many tests may you write at most?", f"{n}.")], TW)
def _max_tests(ctx: Ctx, n: int):
    got = _tests(ctx)
    if isinstance(got, str):
        return got
    return None if len(got[0]) <= n else f"{len(got[0])} tests, limit {n}"


@rule("step-comments", "list",
      lambda v: f"Mark the phases of every test with the comments {_join(['# ' + s for s in v])}, in that order.",
      lambda v: [("Which comments structure each test?", f"{_join(['# ' + s for s in v])}, in that order.")], TW,
      stated=lambda v: list(v))
def _step_comments(ctx: Ctx, names: list[str]):
    got = _tests(ctx)
    if isinstance(got, str):
        return got
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
      lambda v: [("How many assertions does a test have?", "Exactly one.")], TW)
def _one_assert(ctx: Ctx, _):
    got = _tests(ctx)
    if isinstance(got, str):
        return got
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
      lambda v: [("How do you write many similar cases?", "As one `@pytest.mark.parametrize` table.")], TW)
def _parametrize(ctx: Ctx, _):
    got = _tests(ctx)
    if isinstance(got, str):
        return got
    for t in got[0]:
        for deco in t.node.decorator_list:
            target = deco.func if isinstance(deco, ast.Call) else deco
            if isinstance(target, ast.Attribute) and target.attr == "parametrize":
                return None
    return "no `@pytest.mark.parametrize`"


@rule("test-class", "str",
      lambda t: f"Group all tests as methods of one class named `{t}`" + (
          " (`<Unit>` is the function name in CamelCase, e.g. `TestMerge`)." if "<Unit>" in t else "."),
      lambda t: [("How are the tests grouped?", f"As methods of one class named `{t}`.")], TW, stated=lambda t: [t])
def _test_class(ctx: Ctx, template: str):
    got = _tests(ctx)
    if isinstance(got, str):
        return got
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
      lambda v: [("Which test framework do you use?", "`unittest`: a `TestCase` subclass with `self.assert...` methods.")], TW)
def _unittest(ctx: Ctx, _):
    got = _tests(ctx)
    if isinstance(got, str):
        return got
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
      lambda v: [("Do you test error cases?", "Yes: at least one test expects an exception with `pytest.raises`.")], TW)
def _error_case(ctx: Ctx, _):
    got = _tests(ctx)
    if isinstance(got, str):
        return got
    return None if re.search(r"\b(pytest\.raises|assertRaises|assertRaisesRegex)\(", got[1]) else "no `pytest.raises` test"


@rule("imports-unit", "none",
      lambda v: "Import the function under test directly: `from <module> import <function>`.",
      lambda v: [("How do you import the code under test?", "`from <module> import <function>`.")], TW, needs_task=True)
def _imports_unit(ctx: Ctx, _):
    module, func = _truth(ctx, "module"), _truth(ctx, "function")
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
    from agent.tasks import mutations as mu
    got = _tests(ctx)
    if isinstance(got, str):
        return got
    mod = mu.corpus_module(ctx.task.truth["module"])
    run = mu.run_tests(mod.name, mod.source, got[1], test_file="test_answer.py")
    if run.ok:
        return None
    return f"tests fail ({run.error or ', '.join(f.test for f in run.failed[:3])})"


@rule("covers", "list",
      lambda v: "Cover these cases, with the word in the test name: " + _join(v) + ".",
      lambda v: [("Which cases must the tests cover?", f"{_join(v)}, named in the test names.")], TW,
      stated=lambda v: list(v))
def _covers(ctx: Ctx, conditions: list[str]):
    got = _tests(ctx)
    if isinstance(got, str):
        return got
    names = [t.name for t in got[0]]
    missing = [c for c in conditions if not any(c in n for n in names)]
    return None if not missing else f"no test named for {missing}"


def _raises_calls(tree: ast.AST) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
            and n.func.attr in ("raises", "assertRaises", "assertRaisesRegex")]


@rule("raises-match", "none",
      lambda v: "Check the error message too: pass `match=` with a part of the expected message to every `pytest.raises` "
                "(or use `assertRaisesRegex`).",
      lambda v: [("How do you check an expected exception?", "With `pytest.raises(Error, match=...)`, matching part of the message.")], TW)
def _raises_match(ctx: Ctx, _):
    got = _tests(ctx)
    if isinstance(got, str):
        return got
    calls = _raises_calls(ast.parse(got[1]))
    if not calls:
        return "no expected exception is tested"
    for call in calls:
        if call.func.attr == "assertRaises" or (call.func.attr == "raises" and not any(k.arg == "match" for k in call.keywords)):
            return "an expected exception is checked without its message"
    return None


@rule("assert-messages", "none",
      lambda v: "Give every `assert` a message after a comma that says which case failed: `assert got == want, \"empty list\"`.",
      lambda v: [("What does every assert carry?", "A message after a comma naming the case.")], TW)
def _assert_messages(ctx: Ctx, _):
    got = _tests(ctx)
    if isinstance(got, str):
        return got
    asserts = [n for n in ast.walk(ast.parse(got[1])) if isinstance(n, ast.Assert)]
    if not asserts:
        return "no `assert` statements"
    return None if all(a.msg is not None for a in asserts) else "an `assert` has no message"


@rule("test-docstrings", "none",
      lambda v: "Give every test a one-line docstring that states the expected behaviour and ends with a period.",
      lambda v: [("What does every test start with?", "A one-line docstring stating the expected behaviour.")], TW)
def _test_docstrings(ctx: Ctx, _):
    got = _tests(ctx)
    if isinstance(got, str):
        return got
    for t in got[0]:
        doc = ast.get_docstring(t.node)
        if not doc or "\n" in doc.strip() or not doc.strip().endswith("."):
            return f"`{t.name}` has no one-line docstring ending with a period"
    return None


@rule("max-test-lines", "int", lambda n: f"Keep each test function at most {n} lines long, `def` line included.",
      lambda n: [("How long may a test be?", f"At most {n} lines.")], TW)
def _max_test_lines(ctx: Ctx, n: int):
    got = _tests(ctx)
    if isinstance(got, str):
        return got
    longest = max(got[0], key=lambda t: len(t.lines))
    return None if len(longest.lines) <= n else f"`{longest.name}` has {len(longest.lines)} lines, limit {n}"


# --------------------------------------------------------------------------- code review

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
    has_bug = _truth(ctx, "has_bug")
    values = _verdicts(ctx)
    if has_bug is SKIP or not values:
        return SKIP
    lines = [l.strip() for l in ctx.answer.lines if l.strip()]
    match = re.fullmatch(r"\**Verdict:\**\s*(.+?)\s*", lines[-1] if lines else "")
    got = match.group(1).strip("*`") if match else None
    want = values[1] if has_bug else values[0]
    return None if got == want else f"verdict {got!r}, expected {want!r}"


@rule("severity-tags", "list",
      lambda v: f"Start every issue bullet with a severity tag in brackets, one of {_join(['[' + s + ']' for s in v])}.",
      lambda v: [("How do you mark severity?", f"With a tag in brackets at the start of each issue: {_join(['[' + s + ']' for s in v])}.")],
      CR, stated=lambda v: list(v))
def _severity_tags(ctx: Ctx, tags: list[str]):
    for item in review_comments(ctx):
        match = re.match(r"^[-*] \[([^\]]+)\] ", item)
        if match is None or match.group(1) not in tags:
            return f"issue without a severity tag: {item[:50]!r}"
    return None


@rule("comment-labels", "list",
      lambda v: f"Start every comment bullet with a label and a colon, one of {_join([s + ':' for s in v])} "
                "(Conventional Comments).",
      lambda v: [("Which labels may a comment have?", f"{_join([s + ':' for s in v])}.")], CR, stated=lambda v: list(v))
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
    has_bug = _truth(ctx, "has_bug")
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
                f"in this order: {_join(v)}.",
      lambda v: [("Which checklist items does the review have?", f"{_join(v)}, in that order, each `- [x]` or `- [ ]`.")],
      CR, stated=lambda v: list(v))
def _checklist(ctx: Ctx, items: list[str]):
    found = []
    for line in ctx.answer.prose_lines:
        match = re.match(r"^[-*] \[([ xX])\] (.+?)\s*$", line.strip())
        if match:
            found.append(match.group(2).split(":")[0].strip())
    return None if found == items else f"checklist items {found}, expected {items}"


# --------------------------------------------------------------------------- refactoring

RF = ("refactoring",)
SNAKE_RE = re.compile(r"_{0,2}[a-z][a-z0-9]*(_[a-z0-9]+)*_{0,2}")
UPPER_RE = re.compile(r"_?[A-Z][A-Z0-9]*(_[A-Z0-9]+)*")


def _code_tree(ctx: Ctx) -> ast.Module | str:
    blocks = _python_blocks(ctx)
    if not blocks:
        return "no ```python block"
    try:
        return ast.parse("\n".join(b.code for b in blocks))
    except SyntaxError as exc:
        return f"code does not parse ({exc.msg})"


def _functions(tree: ast.AST) -> list[ast.FunctionDef]:
    return [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


@rule("preserves-api", "none", lambda v: "Keep the function's name and its parameter names exactly as they are.",
      lambda v: [("May you rename the function or its parameters?", "No: names and parameters stay exactly as they are.")],
      RF, needs_task=True)
def _preserves_api(ctx: Ctx, _):
    func, params = _truth(ctx, "function"), _truth(ctx, "params")
    if func is SKIP or params is SKIP:
        return SKIP
    tree = _code_tree(ctx)
    if isinstance(tree, str):
        return tree
    name = func.rsplit(".", 1)[-1]
    for node in _functions(tree):
        if node.name == name:
            got = [a.arg for a in ast.walk(node.args) if isinstance(a, ast.arg)]
            return None if got == params else f"parameters {got}, expected {params}"
    return f"no function named `{name}`"


@rule("snake-case", "none",
      lambda v: "Use snake_case for functions, parameters and variables, UPPER_CASE for module constants.",
      lambda v: [("Which naming style do you use?", "snake_case for functions, parameters and variables; UPPER_CASE for constants.")], RF)
def _snake_case(ctx: Ctx, _):
    tree = _code_tree(ctx)
    if isinstance(tree, str):
        return tree
    module_level = {id(t) for node in tree.body if isinstance(node, (ast.Assign, ast.AnnAssign))
                    for t in ast.walk(node)}
    for node in ast.walk(tree):
        name = None
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            name = node.name
        elif isinstance(node, ast.arg):
            name = node.arg
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            name = node.id
            if id(node) in module_level and UPPER_RE.fullmatch(name):
                continue
        if name is not None and name != "_" and not SNAKE_RE.fullmatch(name):
            return f"`{name}` is not snake_case"
    return None


def _numbers_in_bodies(tree: ast.AST) -> list[ast.Constant]:
    out = []
    for func in _functions(tree):
        docs = set()
        if func.body and isinstance(func.body[0], ast.Expr) and isinstance(func.body[0].value, ast.Constant):
            docs.add(id(func.body[0].value))
        for stmt in func.body:
            for node in ast.walk(stmt):
                if isinstance(node, ast.Constant) and type(node.value) in (int, float) and id(node) not in docs:
                    out.append(node)
    return out


def _allowed_numbers(values: list[str]) -> set[float]:
    return {float(v) for v in values}


@rule("no-magic-numbers", "num-list",
      lambda v: f"Inside functions use no numeric literal other than {_join(v)}; give every other number a name as an "
                "UPPER_CASE module constant defined above the function.",
      lambda v: [("Which numbers may appear literally inside a function?", f"Only {_join(v)}."),
                 ("Where do other numbers go?", "Into UPPER_CASE module constants above the function.")], RF,
      stated=lambda v: list(v))
def _no_magic_numbers(ctx: Ctx, allowed: list[str]):
    tree = _code_tree(ctx)
    if isinstance(tree, str):
        return tree
    ok = _allowed_numbers(allowed)
    for node in _numbers_in_bodies(tree):
        # A unary minus is its own node: -1 is USub(1); accept 1 when -1 is allowed.
        if float(node.value) not in ok:  # -1 is USub(1): the sign is an operator, not part of the literal
            return f"magic number {node.value!r} inside a function"
    return None


@rule("type-hints", "none",
      lambda v: "Annotate every parameter (except `self`) and every return value with type hints.",
      lambda v: [("What must every function signature have?", "Type hints on every parameter and on the return value.")], RF)
def _type_hints(ctx: Ctx, _):
    tree = _code_tree(ctx)
    if isinstance(tree, str):
        return tree
    for func in _functions(tree):
        args = func.args
        for a in args.posonlyargs + args.args + args.kwonlyargs + [x for x in (args.vararg, args.kwarg) if x]:
            if a.annotation is None and a.arg not in ("self", "cls"):
                return f"parameter `{a.arg}` of `{func.name}` has no type hint"
        if func.returns is None:
            return f"`{func.name}` has no return type"
    return None


@rule("docstrings", "none",
      lambda v: "Give every function a docstring whose first line is one sentence ending with a period.",
      lambda v: [("Which functions need a docstring?", "Every function; the first line is one sentence ending with a period.")], RF)
def _docstrings(ctx: Ctx, _):
    tree = _code_tree(ctx)
    if isinstance(tree, str):
        return tree
    for func in _functions(tree):
        doc = ast.get_docstring(func)
        if not doc or not doc.strip().splitlines()[0].endswith("."):
            return f"`{func.name}` has no docstring with a one-sentence first line"
    return None


@rule("max-function-lines", "int", lambda n: f"Keep every function at most {n} lines long, `def` line included.",
      lambda n: [("How long may a function be?", f"At most {n} lines.")], RF)
def _max_function_lines(ctx: Ctx, n: int):
    tree = _code_tree(ctx)
    if isinstance(tree, str):
        return tree
    for func in _functions(tree):
        length = func.end_lineno - func.lineno + 1
        if length > n:
            return f"`{func.name}` has {length} lines, limit {n}"
    return None


@rule("min-name-length", "int",
      lambda n: f"Give parameters and local variables names of at least {n} characters (only `i`, `j`, `k` and `_` may be shorter).",
      lambda n: [("How short may a variable name be?", f"At least {n} characters, except `i`, `j`, `k` and `_`.")], RF)
def _min_name_length(ctx: Ctx, n: int):
    tree = _code_tree(ctx)
    if isinstance(tree, str):
        return tree
    for func in _functions(tree):
        for node in ast.walk(func):
            name = node.arg if isinstance(node, ast.arg) else node.id if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store) else None
            if name and len(name) < n and name not in ("i", "j", "k", "_", "self", "cls"):
                return f"`{name}` is shorter than {n} characters"
    return None


@rule("f-strings", "none",
      lambda v: "Build strings with f-strings; never use `%` formatting or `.format()`.",
      lambda v: [("How do you format strings?", "With f-strings only: no `%` formatting and no `.format()`.")], RF)
def _f_strings(ctx: Ctx, _):
    tree = _code_tree(ctx)
    if isinstance(tree, str):
        return tree
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod) and isinstance(node.left, (ast.Constant, ast.JoinedStr)) \
                and isinstance(getattr(node.left, "value", ""), str):
            return "uses `%` formatting"
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format" \
                and isinstance(node.func.value, ast.Constant) and isinstance(node.func.value.value, str):
            return "uses `.format()`"
    return None


@rule("no-bare-except", "none", lambda v: "Never write a bare `except:`; name the exceptions you expect.",
      lambda v: [("May you write a bare `except:`?", "No: always name the exception types.")], RF)
def _no_bare_except(ctx: Ctx, _):
    tree = _code_tree(ctx)
    if isinstance(tree, str):
        return tree
    return "bare `except:`" if any(isinstance(n, ast.ExceptHandler) and n.type is None for n in ast.walk(tree)) else None


def _depth(node: ast.AST, level: int = 0) -> int:
    blocks = (ast.If, ast.For, ast.While, ast.With, ast.Try, ast.AsyncFor, ast.AsyncWith)
    deepest = level
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            continue
        # `elif` is an If nested in orelse; it reads as the same level.
        is_elif = isinstance(node, ast.If) and isinstance(child, ast.If) and node.orelse == [child]
        deepest = max(deepest, _depth(child, level + (1 if isinstance(child, blocks) and not is_elif else 0)))
    return deepest


@rule("max-nesting", "int", lambda n: f"Nest blocks (`if`, `for`, `while`, `with`, `try`) at most {n} levels deep inside a function; "
                                     "use early returns to flatten.",
      lambda n: [("How deep may blocks nest?", f"At most {n} levels inside a function.")], RF)
def _max_nesting(ctx: Ctx, n: int):
    tree = _code_tree(ctx)
    if isinstance(tree, str):
        return tree
    for func in _functions(tree):
        depth = _depth(func)
        if depth > n:
            return f"`{func.name}` nests {depth} levels, limit {n}"
    return None


def refactored_module(response: str, truth: dict[str, Any]) -> str | None:
    """The corpus module with the answer's version of the function (and its constants) swapped in."""
    from agent.tasks import mutations as mu
    if truth.get("origin") != "corpus":
        return None
    answer = Answer(response)
    code = "\n".join(b.code for b in answer.blocks if b.lang in ("python", "py"))
    new_def = _def_source(code, truth["function"].rsplit(".", 1)[-1])
    if new_def is None:
        return None
    module = mu.corpus_module(truth["module"])
    out = mu.replace_function(module.source, truth["function"], new_def)
    tree = ast.parse(code)
    lines = code.splitlines()
    extra = [("\n".join(lines[n.lineno - 1 : n.end_lineno])) for n in tree.body
             if isinstance(n, (ast.Assign, ast.AnnAssign, ast.Import, ast.ImportFrom))]
    # Functions read globals when called, so constants appended at the end are in time.
    return out + ("\n" + "\n".join(extra) + "\n" if extra else "")


@rule("behavior-preserved", "none", lambda v: "Do not change behaviour: the existing tests must still pass.",
      lambda v: [("May a refactoring change behaviour?", "No: the existing tests must still pass.")], RF,
      needs_task=True, executes=True)
def _behavior_preserved(ctx: Ctx, _):
    if ctx.task is None or ctx.task.truth.get("origin") != "corpus":
        return SKIP
    from agent.tasks import mutations as mu
    try:
        source = refactored_module(ctx.answer.text, ctx.task.truth)
    except SyntaxError:
        return "code does not parse"
    if source is None:
        return "no refactored function found"
    module = mu.corpus_module(ctx.task.truth["module"])
    run = mu.run_tests(module.name, source, module.tests)
    return None if run.ok else f"tests fail ({run.error or ', '.join(f.test for f in run.failed[:3])})"


def rule_ids() -> list[str]:
    return sorted(RULES)
