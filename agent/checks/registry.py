"""Checks specs and the rule registry: parse a skill's `metadata.checks`, run its rules on an answer.

A spec is `;`-separated rule ids with optional `=params`, e.g.
`subject-max-len=50; conventional-type=feat,fix; imperative-subject; body-wrap=72`.
Each rule is a small function registered with `@rule` in one module per subtask (format, length,
sections, naming...), some task-aware (the cited line is the injected bug's line) and a few
execution-based (the fix makes the failing tests pass). Each rule also says itself in English
(`describe`) and answers questions about itself (`questions`), so skill bodies, checkers and
knowledge samples cannot drift apart.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agent.checks.answers import Answer
from agent.tasks.task import Task


class SpecError(ValueError):
    """A checks spec that does not parse or names an unknown rule."""




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
         executes=False, stated=None, parse: Callable[[Ctx], Any] | None = None):
    """Register a rule. With `parse`, the check gets `parse(ctx)` as its second argument, and a parse
    that returns an error string (or SKIP) is the rule's outcome without calling the check."""
    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        if id in RULES:
            raise RuntimeError(f"rule {id} registered twice")
        check = fn if parse is None else _after_parse(parse, fn)
        RULES[id] = Rule(id, param, check, describe, questions or (lambda v: []), tuple(subtasks), needs_task,
                         executes, stated)
        return fn
    return register


def _after_parse(parse: Callable[[Ctx], Any], fn: Callable[[Ctx, Any, Any], Any]) -> Check:
    def check(ctx: Ctx, value: Any):
        got = parse(ctx)
        if got is SKIP or isinstance(got, str):
            return got
        return fn(ctx, got, value)
    return check


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


def code_span(x: str) -> str:
    return f"`{x}`"


def english_list(items: list[str], code: bool = True) -> str:
    items = [code_span(i) if code else i for i in items]
    if len(items) <= 2:
        return " and ".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def truth_value(ctx: Ctx, key: str) -> Any:
    if ctx.task is None or key not in ctx.task.truth:
        return SKIP
    return ctx.task.truth[key]
