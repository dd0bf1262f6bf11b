"""The bundled corpus and the AST mutation operators."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest

from agent.tasks import mutations as mu, pysource, testrun


def test_corpus_has_small_real_modules_with_tests():
    modules = mu.load_corpus()
    assert len(modules) >= 12
    assert {m.pool for m in modules} == {"train", "eval"}
    for m in modules:
        assert m.source.count("\n") <= 150, m.name
        assert "def test_" in m.tests and f"from {m.name} import" in m.tests
        assert m.cases, m.name
    with pytest.raises(mu.CorpusError):
        mu.load_corpus("nope")
    with pytest.raises(mu.CorpusError):
        mu.corpus_module("nope")


def test_corpus_tests_pass_under_real_pytest():
    """The corpus is ordinary code: pytest itself collects and passes every test file."""
    files = [str(mu.CORPUS_DIR / m.name / f"check_{m.name}.py") for m in mu.load_corpus()]
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(mu.CORPUS_DIR), *files],
        capture_output=True, text=True, timeout=120, cwd=str(mu.CORPUS_DIR),
    )
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert " passed" in proc.stdout and "failed" not in proc.stdout


def test_runner_reports_failures_with_explanations():
    mod = mu.corpus_module("intervals")
    assert testrun.run_tests(mod.name, mod.source, mod.tests).ok
    broken = mod.source.replace("start <= merged[-1][1]", "start < merged[-1][1]")
    run = testrun.run_tests(mod.name, broken, mod.tests)
    assert not run.ok
    failure = next(f for f in run.failed if f.test == "test_merge_touching_intervals")
    assert failure.error == "AssertionError"
    assert failure.explain == "assert [(1, 3), (3, 5)] == [(1, 5)]"
    assert failure.frames[0][:2] == ("test_intervals.py", failure.frames[0][1])
    hanging = mod.source.replace("    ordered = sorted(", "    while True:\n        pass\n    ordered = sorted(")
    run = testrun.run_tests(mod.name, hanging, mod.tests, timeout=0.2)
    assert any(f.error == "TestTimeout" for f in run.failed)
    assert testrun.run_tests(mod.name, "def broken(:\n", mod.tests).error.startswith("SyntaxError")


@pytest.fixture(scope="module")
def train_mutants():
    return mu.mutants_of_pool("train")


def test_mutants_are_single_line_edits_that_tests_catch(train_mutants):
    assert len(train_mutants) >= 300
    assert len({m.operator for m in train_mutants}) >= 8
    for m in train_mutants:
        original, mutated = m.original.splitlines(), m.source.splitlines()
        assert len(original) == len(mutated), m.id
        changed = [i + 1 for i, (a, b) in enumerate(zip(original, mutated)) if a != b]
        assert changed == [m.line], m.id
        assert mutated[m.line - 1] == m.mutated_line and original[m.line - 1] == m.original_line
        ast.parse(m.source)
        assert m.failures, m.id
        fn = pysource.find_function(m.original, m.function)
        assert fn.start <= m.line <= fn.end, m.id


def test_some_mutants_really_fail_when_rerun(train_mutants):
    picked = train_mutants[:: max(1, len(train_mutants) // 12)]
    # A different test-file name bypasses the run cache, so these are fresh runs.
    jobs = [testrun.TestJob(m.module, m.source, mu.corpus_module(m.module).tests, "rerun_test.py") for m in picked]
    for m, run in zip(picked, testrun.run_many(jobs)):
        assert not run.ok, m.id
        assert set(m.failing_tests) <= {f.test for f in run.failed} | {"<all>"}


def test_mutations_are_deterministic():
    mod = mu.corpus_module("roman")
    first = mu.candidates(mod.source, mod.name)
    second = mu.candidates(mod.source, mod.name)
    assert [m.id for m in first] == [m.id for m in second]
    assert [m.id for m in mu.mutants(mod)] == [m.id for m in mu.mutants("roman")]


def test_candidates_of_a_line_range_are_the_full_lists_lines_in_that_range():
    mod = mu.corpus_module("roman")
    full = mu.candidates(mod.source, mod.name)
    lo, hi = full[len(full) // 3].line, full[2 * len(full) // 3].line
    part = mu.candidates(mod.source, mod.name, within=(lo, hi))
    assert part and len(part) < len(full)
    assert [(m.line, m.mutated_line) for m in part] == [(m.line, m.mutated_line) for m in full if lo <= m.line <= hi]


def test_operators_cover_the_catalogue():
    source = (
        "def f(items, limit):\n"
        "    total = 0\n"
        "    for i in range(len(items)):\n"
        "        if items[i] < limit and not total:\n"
        "            return max(total, 1)\n"
        "        total += items[i] * 2\n"
        "    return total\n"
    )
    ops = {m.operator for m in mu.candidates(source, "demo")}
    assert {"cmp-flip", "off-by-one", "arith-swap", "bool-swap", "not-drop", "var-swap", "drop-guard",
            "minmax-swap", "range-stop"} <= ops
    for m in mu.candidates(source, "demo"):
        assert m.description and m.fix and m.before != m.after


def test_diff_round_trip_and_fuzzy_apply():
    mod = mu.corpus_module("rle")
    changed = mod.source.replace("run_length = 1\n    for", "run_length = 1  # first run\n    for")
    diff = pysource.unified_diff(mod.source, changed, "rle.py")
    assert diff.startswith("diff --git a/rle.py b/rle.py\n--- a/rle.py\n+++ b/rle.py\n@@ ")
    assert pysource.apply_diff(mod.source, diff) == changed
    start = int(diff.split("@@ -")[1].split(",")[0])
    shifted = diff.replace(f"@@ -{start},", f"@@ -{start + 2},", 1)
    assert shifted != diff
    assert pysource.apply_diff(mod.source, shifted) == changed  # a hunk stated two lines off still applies
    far = diff.replace(f"@@ -{start},", "@@ -90,", 1)
    assert pysource.apply_diff(mod.source, far + "\n\n") == changed  # unique context anywhere; trailing blanks ignored
    with pytest.raises(pysource.PatchError):
        pysource.apply_diff("nothing like it\n", diff)


def test_replace_function_keeps_indentation():
    mod = mu.corpus_module("lru")
    new = pysource.replace_function(mod.source, "LRUCache.peek", "def peek(self, key, default=None):\n    return default\n")
    assert "    def peek(self, key, default=None):\n        return default\n" in new
    ast.parse(new)


def test_stdlib_functions_are_available():
    funcs = pysource.stdlib_functions()
    assert len(funcs) >= 8
    for fn in funcs:
        assert fn.origin == "stdlib" and fn.source.startswith("def ")
        ast.parse(fn.source)


def test_a_mutant_that_times_out_under_load_is_run_again_so_the_kept_set_does_not_depend_on_load(monkeypatch):
    mod = mu.corpus_module("pqueue")  # has mutants that really loop (kept as hangs) and mutants that survive
    quiet = mu.mutants(mod)
    real = testrun._run_batch

    def busy(jobs, timeout):  # the machine was too busy for any test to finish within the mutant limit
        if timeout == testrun.MUTANT_TIMEOUT_S:
            return [testrun.TestRun((), (testrun.TestFailure("t", "TestTimeout", "test timed out", (), ""),)) for _ in jobs]
        return real(jobs, timeout)

    monkeypatch.setattr(testrun, "_RUN_CACHE", {})
    monkeypatch.setattr(mu, "_MUTANTS", {})
    monkeypatch.setattr(testrun, "_run_batch", busy)
    loaded = mu.mutants(mod)
    assert [m.source for m in loaded] == [m.source for m in quiet]
    def outcome(m):  # frames and messages vary run to run (where a loop was stopped, object addresses)
        return m.passed, [(f.test, f.error) for f in m.failures]

    assert [outcome(m) for m in loaded] == [outcome(m) for m in quiet]
    # the real hangs are kept as before, still marked as timeouts, so the draws leave them out after drawing
    assert any(testrun.TestRun(m.passed, m.failures).timed_out for m in quiet)
