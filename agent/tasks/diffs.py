"""Commit-message and code-review tasks: small diffs between versions of corpus code (fix, feat, refactor,
docs, test, and bug-introducing changes)."""

from __future__ import annotations

import ast
import random
from collections.abc import Sequence
from typing import Any

from agent.tasks import mutations as mu, pysource
from agent.tasks.bugs import balanced, bug_cause
from agent.tasks.refactoring import RefactorSource, def_node, degrade, refactor_sources
from agent.tasks.task import Task, TaskError, task_id

DIFF_KINDS = ("fix", "feat", "refactor", "docs", "test", "bug")
PROJECT_KEYS = ("CORE", "API", "OPS", "WEB", "DATA", "PAY")
AUTHORS = ("Ada Park <ada.park@example.com>", "Bo Lindqvist <bo@example.org>", "Chidi Okafor <chidi@example.net>",
           "Dana Cruz <dana.cruz@example.com>", "Eun-ji Han <eunji@example.org>")


def third_person(verb: str) -> str:
    low = verb.lower()
    if low.endswith("y") and low[-2:-1] not in "aeiou":
        return low[:-1] + "ies"
    if low.endswith(("s", "x", "z", "ch", "sh")):
        return low + "es"
    return low + "s"


def _doc_summary(source: str) -> str:
    doc = ast.get_docstring(def_node(source)) or ""
    return doc.strip().splitlines()[0].rstrip(".") if doc.strip() else ""


def _fix_summaries(m: mu.Mutation, name: str) -> list[str]:
    by_op = {
        "cmp-flip": [f"correct the comparison in {name}", f"fix comparison in {name}"],
        "off-by-one": [f"correct an off-by-one in {name}", f"fix off-by-one in {name}"],
        "arith-swap": [f"correct the arithmetic in {name}", f"fix arithmetic in {name}"],
        "bool-swap": [f"correct the condition in {name}", f"fix condition in {name}"],
        "not-drop": [f"restore the negation in {name}", f"fix condition in {name}"],
        "var-swap": [f"use the right variable in {name}", f"fix variable in {name}"],
        "drop-guard": [f"restore the early exit in {name}", f"restore guard in {name}"],
        "minmax-swap": [f"use the right bound in {name}", f"fix bound in {name}"],
        "range-stop": [f"correct the range bound in {name}", f"fix range in {name}"],
    }
    return by_op.get(m.operator, []) + [f"correct {name}", f"fix {name}"]


def _change_truth(kind: str, file: str, module: str, symbols: list[str], summaries: list[str],
                  why: str, what: str, rng: random.Random, **extra: Any) -> dict[str, Any]:
    return {
        "kind": kind, "file": file, "scope": module, "symbols": symbols, "summaries": summaries,
        "why": why, "what": what, "ticket": f"{rng.choice(PROJECT_KEYS)}-{rng.randint(100, 999)}",
        "issue": rng.randint(10, 999), "author": rng.choice(AUTHORS), **extra,
    }


def _fix_change(m: mu.Mutation, rng: random.Random) -> tuple[str, dict[str, Any]]:
    name = m.function.rsplit(".", 1)[-1]
    test = m.failing_tests[0] if m.failing_tests else "the tests"
    why = bug_cause(m).rstrip(".") + f" (in `{name}`), so `{test}` failed."
    what = m.fix[:1].upper() + m.fix[1:] + "."
    diff = pysource.unified_diff(m.source, m.original, m.file)
    return diff, _change_truth("fix", m.file, m.module, [m.function], _fix_summaries(m, name), why, what, rng,
                               line=m.line, has_bug=False)


def _bug_change(m: mu.Mutation, rng: random.Random) -> tuple[str, dict[str, Any]]:
    """A diff that *introduces* a bug: the reviewer should catch it."""
    name = m.function.rsplit(".", 1)[-1]
    diff = pysource.unified_diff(m.original, m.source, m.file)
    why = f"The change {m.description} in `{name}`, which changes its behaviour."
    what = f"Revert to `{m.original_line.strip()}`."
    return diff, _change_truth("bug", m.file, m.module, [m.function], [f"change {name}"], why, what, rng,
                               has_bug=True, line=m.line, function=m.function, description=m.description,
                               buggy_line=m.mutated_line.strip(), fixed_line=m.original_line.strip(), fix=m.fix)


def _feat_change(mod: mu.CorpusModule, fn: pysource.SourceFunction, rng: random.Random) -> tuple[str, dict[str, Any]] | None:
    lines = mod.source.splitlines(keepends=True)
    start, end = fn.start, fn.end
    # Take the function and the blank lines before it out of the "before" version.
    while start > 1 and not lines[start - 2].strip():
        start -= 1
    before = "".join(lines[: start - 1] + lines[end:])
    summary = _doc_summary(fn.source)
    if not summary:
        return None
    words = summary.split()
    sentence = f"`{fn.name}` {third_person(words[0])} {' '.join(words[1:])}."
    summaries = [f"add {fn.name} to {words[0].lower()} {' '.join(words[1:])}", f"add {fn.name} helper", f"add {fn.name}"]
    diff = pysource.unified_diff(before, mod.source, mod.file)
    return diff, _change_truth("feat", mod.file, mod.name, [fn.qualname], summaries, f"Callers need a way to {summary[0].lower() + summary[1:]}.",
                               sentence, rng, has_bug=False, line=fn.start)


def _test_change(mod: mu.CorpusModule, rng: random.Random) -> tuple[str, dict[str, Any]] | None:
    tests = [f for f in pysource.functions_of(mod.tests, mod.name) if f.name.startswith("test_")]
    if not tests:
        return None
    fn = rng.choice(tests)
    lines = mod.tests.splitlines(keepends=True)
    start = fn.start
    while start > 1 and not lines[start - 2].strip():
        start -= 1
    before = "".join(lines[: start - 1] + lines[fn.end:])
    words = fn.name[len("test_"):].split("_")
    units = [f.name for f in pysource.functions_of(mod.source, mod.name)]
    unit = next((u for u in sorted(units, key=len, reverse=True) if fn.name[len("test_"):].startswith(u)), words[0])
    rest = fn.name[len("test_") + len(unit):].strip("_").replace("_", " ") or "basic behaviour"
    summaries = [f"add test for {rest} in {unit}", f"test {unit} {rest}", f"add {unit} test", "add test"]
    diff = pysource.unified_diff(before, mod.tests, mod.test_file)
    return diff, _change_truth("test", mod.test_file, mod.name, [fn.name], summaries,
                               f"`{unit}` had no test for {rest}.", f"Add `{fn.name}`.", rng, has_bug=False, line=fn.start)


def _refactor_change(src: RefactorSource, kind: str, rng: random.Random) -> tuple[str, dict[str, Any]] | None:
    got = degrade(src.fn.source, [kind], src.module_source)
    if got is None:
        return None
    code, changes, constants = got
    if constants:
        return None  # an inlined constant would also leave its definition behind: not a one-function diff
    before = pysource.replace_function(src.module_source, src.fn.qualname, code)
    diff = pysource.unified_diff(before, src.module_source, src.fn.file)
    name = src.fn.name
    docs = kind == "strip-docstring"
    summaries = {
        "shorten-names": [f"use descriptive names in {name}", f"rename locals in {name}"],
        "camel-case": [f"use snake_case names in {name}", f"rename locals in {name}"],
        "strip-hints": [f"add type hints to {name}", f"annotate {name}"],
        "strip-docstring": [f"document {name}", f"add {name} docstring"],
        "percent-format": [f"use f-strings in {name}", f"modernise {name}"],
        "bare-except": [f"catch specific errors in {name}", f"narrow except in {name}"],
    }[kind]
    return diff, _change_truth("docs" if docs else "refactor", src.fn.file, src.fn.module, [src.fn.qualname],
                               summaries + [f"tidy {name}"], "The code was harder to read than it needs to be." if not docs
                               else f"`{name}` had no docstring.", changes[0], rng, has_bug=False, line=src.fn.start)


def diff_tasks(subtask: str, pool: str, kinds: Sequence[str] | None, rng: random.Random, n: int) -> list[Task]:
    allowed = list(kinds) if kinds else (["fix", "feat", "refactor", "docs", "test"] if subtask == "commit-message"
                                         else ["bug", "bug", "refactor", "feat", "docs"])
    for kind in allowed:
        if kind not in DIFF_KINDS:
            raise TaskError(f"unknown diff kind {kind!r} (expected one of {', '.join(DIFF_KINDS)})")
    mutations = mu.mutants_of_pool(pool)
    modules = mu.load_corpus(pool)
    sources = list(refactor_sources(pool))
    tasks: list[Task] = []
    seen: set[str] = set()
    attempts = 0
    while len(tasks) < n and attempts < n * 20:
        attempts += 1
        kind = rng.choice(allowed)
        made = None
        if kind in ("fix", "bug"):
            m = balanced(mutations, 1, rng)[0] if mutations else None
            made = None if m is None else (_fix_change if kind == "fix" else _bug_change)(m, rng)
        elif kind == "feat":
            mod = rng.choice(modules)
            fns = [f for f in pysource.functions_of(mod.source, mod.name) if "." not in f.qualname and not f.name.startswith("_")]
            made = _feat_change(mod, rng.choice(fns), rng) if fns else None
        elif kind == "test":
            made = _test_change(rng.choice(modules), rng)
        else:
            src = rng.choice(sources)
            options = ["strip-docstring"] if kind == "docs" else ["shorten-names", "camel-case", "strip-hints", "percent-format", "bare-except"]
            made = _refactor_change(src, rng.choice(options), rng)
        if made is None:
            continue
        diff, truth = made
        if not diff or diff in seen or diff.count("\n") > 60:
            continue
        seen.add(diff)
        if subtask == "commit-message":
            ask = rng.choice(["Write a commit message for this diff.", "Write the commit message for this change.",
                              "Please write a commit message for the following diff."])
            extra = (f"\n\nTicket: {truth['ticket']}. Issue: #{truth['issue']}. Author: {truth['author']}.")
            prompt = f"{ask}{extra}\n\n```diff\n{diff}```"
        else:
            ask = rng.choice(["Review this change.", "Please review this diff.", "Code review, please:"])
            prompt = f"{ask}\n\n```diff\n{diff}```"
        tasks.append(Task(task_id(subtask, truth["scope"], diff), subtask, prompt, {"diff": diff, "file": truth["file"]},
                          truth | {"diff": diff}, truth["kind"]))
    return tasks
