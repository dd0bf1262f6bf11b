"""Bug-localization and bug-fixing tasks: one injected mutation each, with the failing tests as evidence."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from agent.tasks import mutations as mu, pysource
from agent.tasks import packages
from agent.tasks.task import Task, TaskError, format_failures, numbered, task_id


def _excerpt(mutation: mu.Mutation, rng: random.Random, max_lines: int = 40) -> tuple[int, int, str]:
    """Line range around the buggy function: it, plus an adjacent function when room allows."""
    funcs = pysource.functions_of(mutation.original, mutation.module)
    target = next(f for f in funcs if f.qualname == mutation.function)
    lines = mutation.original.splitlines()
    depth = target.qualname.count(".")

    def adjacent(a: pysource.SourceFunction, b: pysource.SourceFunction) -> bool:
        """Only blank lines between a (above) and b (below)."""
        return a.end < b.start and all(not lines[i - 1].strip() for i in range(a.end + 1, b.start))

    neighbours = [f for f in funcs if f.qualname.count(".") == depth and f.qualname != target.qualname
                  and (adjacent(f, target) or adjacent(target, f))]
    rng.shuffle(neighbours)
    start, end = target.start, target.end
    for other in neighbours:
        lo, hi = min(start, other.start), max(end, other.end)
        if hi - lo + 1 <= max_lines:
            start, end = lo, hi
            break
    return start, end, numbered(mutation.source, start, end)


def bug_cause(m: mu.Mutation) -> str:
    """One sentence saying what is wrong, as a careful reader of the buggy code would."""
    before, after, line = m.before, m.after, m.line
    return {
        "cmp-flip": f"The comparison on line {line} uses `{after}` where `{before}` is needed.",
        "off-by-one": f"The constant `{after}` on line {line} is off by one; it should be `{before}`.",
        "arith-swap": f"Line {line} uses the operator `{after}` where `{before}` is needed.",
        "bool-swap": f"The condition on line {line} joins its parts with `{after}` instead of `{before}`.",
        "not-drop": f"The condition on line {line} lost its `not`: it should be `{before}`.",
        "var-swap": f"Line {line} reads `{after}` where it should read `{before}`.",
        "drop-guard": f"The guard on line {line} does nothing; it should run `{before}`.",
        "minmax-swap": f"Line {line} calls `{after}` where `{before}` is needed.",
        "range-stop": f"The `range` on line {line} stops one step early at `{after}`.",
        "arg-swap": f"Line {line} passes `{after}` where `{before}` is needed: the arguments are swapped.",
        "stmt-drop": f"Line {line} no longer runs `{before}`, which is needed.",
        "cond-invert": f"The condition on line {line} is inverted: `{after}` should be `{before}`.",
        "bool-const": f"Line {line} uses `{after}` where `{before}` is needed.",
    }.get(m.operator, f"Line {line} is wrong: it should be `{m.original_line.strip()}`.")


def _evidence(m: mu.Mutation) -> list[str]:
    out = []
    for failure in m.failures[:2]:
        detail = (failure.explain or failure.message).splitlines()[0] if (failure.explain or failure.message) else ""
        if len(detail) > 70:
            detail = detail[:67] + "..."
        out.append(f"`{failure.test}` fails with {failure.error}" + (f": `{detail}`." if detail else "."))
    return out


def _tests_of(m: mu.Mutation) -> tuple[str, str]:
    """(test file, its source) of a mutant: the corpus module's, or the package's file of the first failing test."""
    if m.package is not None:
        return m.test_file, (Path(m.package.root) / m.test_file).read_text(encoding="utf-8")
    mod = mu.corpus_module(m.module)
    return mod.test_file, mod.tests


def _test_source(tests: str, test: str) -> str:
    # pytest's `TestClass::test_x[param]` is the function `TestClass.test_x`
    for fn in pysource.functions_of(tests, "?"):
        if fn.qualname == test.split("[")[0].replace("::", "."):
            return fn.source
    return ""


def _package_truth(m: mu.Mutation) -> dict[str, Any]:
    o = m.package
    return {} if o is None else {"package": o.name, "version": o.version, "pool": o.pool, "root": o.root,
                                 "test_paths": list(o.test_paths)}


def _bug_truth(m: mu.Mutation) -> dict[str, Any]:
    test_file, tests = _tests_of(m)
    return {
        "module": m.module, "file": m.file, "function": m.function, "name": m.function.rsplit(".", 1)[-1],
        "line": m.line, "buggy_line": m.mutated_line, "fixed_line": m.original_line,
        "operator": m.operator, "description": m.description, "fix": m.fix, "before": m.before, "after": m.after,
        "cause": bug_cause(m), "evidence": _evidence(m), "failing_tests": list(m.failing_tests),
        "failing_errors": [f.error for f in m.failures],
        "frames": [[file, line, func] for file, line, func, _ in (m.failures[0].frames if m.failures else ())],
        "test_file": test_file,
        # The shortest failing test makes the most focused regression test.
        "failing_test_source": min((_test_source(tests, t) for t in m.failing_tests), key=len, default=""),
    } | _package_truth(m)


def _bug_report(m: mu.Mutation) -> str:
    return format_failures(m.failures, len(m.passed), _tests_of(m)[0])


def balanced(items: list[mu.Mutation], n: int, rng: random.Random) -> list[mu.Mutation]:
    """Pick n mutations, spreading over operators (var-swap and off-by-one are most common)."""
    by_op: dict[str, list[mu.Mutation]] = {}
    for item in items:
        by_op.setdefault(item.operator, []).append(item)
    for group in by_op.values():
        rng.shuffle(group)
    ops = sorted(by_op)
    out: list[mu.Mutation] = []
    while len(out) < n and any(by_op.values()):
        rng.shuffle(ops)
        for op in ops:
            if by_op[op] and len(out) < n:
                out.append(by_op[op].pop())
    return out


def localization_task(m: mu.Mutation, rng: random.Random) -> Task:
    start, end, code = _excerpt(m, rng)
    report = _bug_report(m)
    ask = rng.choice([
        "Where is the bug? Point to the faulty line.",
        "Locate the bug that makes these tests fail.",
        "Find the line that causes the failure.",
    ])
    prompt = (f"The tests for `{m.file}` fail.\n\nTest output:\n```text\n{report}\n```\n\n"
              f"Code (`{m.file}`, lines {start}-{end}):\n```python\n{code}\n```\n\n{ask}")
    truth = _bug_truth(m) | {"excerpt": [start, end]}
    return Task(task_id("bug-localization", m.module, m.id), "bug-localization", prompt,
                {"file": m.file, "test_output": report, "code": code}, truth, m.operator)


def fixing_task(m: mu.Mutation, rng: random.Random) -> Task:
    fn = pysource.find_function(m.source, m.function)
    fixed = pysource.find_function(m.original, m.function)
    report = _bug_report(m)
    ask = rng.choice(["Fix the bug.", "Please fix this bug.", "Make the failing tests pass with a minimal fix."])
    prompt = (f"The tests for `{m.file}` fail.\n\nTest output:\n```text\n{report}\n```\n\n"
              f"Code (`{m.file}`, `{m.function}`, lines {fn.start}-{fn.end}):\n```python\n{fn.source}```\n\n{ask}")
    truth = _bug_truth(m) | {
        "buggy_function": fn.source, "fixed_function": fixed.source, "start": fn.start, "end": fn.end,
        "diff": pysource.unified_diff(m.source, m.original, m.file),
    }
    return Task(task_id("bug-fixing", m.module, m.id), "bug-fixing", prompt,
                {"file": m.file, "test_output": report, "code": fn.source}, truth, m.operator)


def buggy_source(truth: dict[str, Any]) -> str:
    """The buggy module a bug task describes (corpus or package source with the one-line edit)."""
    if truth.get("package"):
        where, source = f"package {truth['package']!r} ({truth['file']})", packages.original_source(truth)
    else:
        where, source = f"corpus module {truth['module']!r}", mu.corpus_module(truth["module"]).source
    lines = source.splitlines()
    if lines[truth["line"] - 1] != truth["fixed_line"]:
        raise TaskError(f"task truth does not match {where}")
    lines[truth["line"] - 1] = truth["buggy_line"]
    return "\n".join(lines) + ("\n" if source.endswith("\n") or not truth.get("package") else "")
