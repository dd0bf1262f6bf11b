"""Bug tasks from registry packages: layout, suite runs in the sandbox, kept and discarded mutants, the split.

No network: every package here is a tiny folder written by the test and built from that folder (`source=`,
or `fetch` replaced by a copy)."""

from __future__ import annotations

import json
import random
import shutil
import time
from pathlib import Path

import pytest

from agent.synth.stage3 import write_repo
from agent.tasks import bugs
from agent.tasks import make as T
from agent.tasks import mutations as mu, pysource
from agent.tasks import packages as pk
from agent.tasks.task import TaskError
from tests.sandbox_fixtures import needs_bwrap

MODULE = '''\
def clamp(x, lo, hi):
    if x < lo:
        return lo
    if x > hi:
        return hi
    return x


def total(items, start=0):
    s = start
    for item in items:
        s += item
    return s


def last_words(text, n):
    words = text.split()
    return " ".join(words[len(words) - n:])
'''

TESTS = '''\
import pytest

from {name} import clamp, last_words, total


@pytest.mark.parametrize("x,want", [(-5, 0), (5, 5), (50, 10), (0, 0), (10, 10)])
def test_clamp(x, want):
    assert clamp(x, 0, 10) == want


class TestTotal:
    def test_sum(self):
        assert total([1, 2, 3]) == 6

    def test_start(self):
        assert total([1, 2], start=10) == 13


def test_last_words():
    assert last_words("a b c d", 2) == "c d"
'''


def make_package(root: Path, name: str, tests: str | None = None) -> Path:
    """A tiny sdist-like tree: src/<name>/__init__.py, tests/test_<name>.py, a setup.py and docs."""
    (root / "src" / name).mkdir(parents=True)
    (root / "src" / name / "__init__.py").write_text(MODULE)
    (root / "tests").mkdir()
    (root / "tests" / f"test_{name}.py").write_text(tests if tests is not None else TESTS.format(name=name))
    (root / "setup.py").write_text("raise SystemExit('never run')\n")
    (root / "docs").mkdir()
    (root / "docs" / "conf.py").write_text("project = 'x'\n")
    return root


def test_layout_lifts_src_and_finds_modules_and_tests(tmp_path):
    sdist = make_package(tmp_path / "tiny-1.0", "tiny")
    (sdist / "src" / "tiny" / "_version.py").write_text("version = '1.0'\n")
    copies, modules, tests = pk.layout(sdist)
    assert copies == ["tiny", "tests"]
    assert modules == ["tiny/__init__.py"] and tests == ["tests/test_tiny.py"]
    assert pk.module_name("tiny/__init__.py") == "tiny" and pk.module_name("boltons/strutils.py") == "boltons.strutils"


def test_junit_report_gives_test_ids_errors_and_frames():
    xml = '''<?xml version="1.0"?><testsuites><testsuite>
    <testcase classname="tests.test_a" name="test_ok[1]" file="tests/test_a.py" line="3"/>
    <testcase classname="tests.test_a.TestB" name="test_bad" file="tests/test_a.py" line="9">
      <failure message="AssertionError: assert 3 == 4">tests/test_a.py:10: in test_bad
    assert f(1) == 4
E   AssertionError: assert 3 == 4</failure></testcase>
    <testcase classname="tests.test_a" name="test_raises" file="tests/test_a.py" line="12">
      <failure message="ZeroDivisionError: division by zero">tests/test_a.py:13: in test_raises
    f(0)
pkg/core.py:5: in f
    return 1 / x
E   ZeroDivisionError: division by zero</failure></testcase>
    <testcase classname="tests.test_a" name="test_skip" file="tests/test_a.py" line="20"><skipped/></testcase>
    </testsuite></testsuites>'''
    passed, failed, files, error = pk.parse_junit(xml)
    assert passed == ["test_ok[1]"] and error is None
    assert [f.test for f in failed] == ["TestB::test_bad", "test_raises"]
    assert files == {"TestB::test_bad": "tests/test_a.py", "test_raises": "tests/test_a.py"}
    bad, raises = failed
    assert (bad.error, bad.message, bad.explain) == ("AssertionError", "assert 3 == 4", "assert 3 == 4")
    assert raises.error == "ZeroDivisionError" and raises.explain == ""
    assert raises.frames == (("tests/test_a.py", 13, "test_raises", "f(0)"), ("pkg/core.py", 5, "f", "return 1 / x"))
    collect = '''<testsuites><testsuite><testcase classname="" name="tests.test_a" file="tests/test_a.py">
      <error message="collection failure">E   ImportError: cannot import name 'x'</error></testcase></testsuite></testsuites>'''
    assert pk.parse_junit(collect)[3] == "cannot collect tests.test_a: E   ImportError: cannot import name 'x'"


def test_extra_operators_are_for_packages_only():
    source = ("def f(a, b, flag=True):\n    out = []\n    if a:\n        out.append(divmod(a, b))\n"
              "        b += 1\n    return out if flag else b\n")
    extra = {m.operator for m in mu.candidates(source, "demo", mu.ALL_OPERATORS)} - set(mu.OPERATORS)
    assert extra == set(mu.EXTRA_OPERATORS)
    assert {m.operator for m in mu.candidates(source, "demo")} <= set(mu.OPERATORS)  # the corpus is unchanged
    swap = next(m for m in mu.candidates(source, "demo", ["arg-swap"]))
    assert swap.mutated_line == "        out.append(divmod(b, a))" and "swapped" in bugs.bug_cause(swap) + swap.description
    for m in mu.candidates(source, "demo", mu.EXTRA_OPERATORS):
        compile(m.source, "demo.py", "exec")
        assert bugs.bug_cause(m).startswith(("Line", "The")) and str(m.line) in bugs.bug_cause(m)


@pytest.fixture(scope="module")
def tiny_build(tmp_path_factory):
    """One local package built once: (its result, the cache folder, the source tree)."""
    root = tmp_path_factory.mktemp("pkgs")
    sdist = make_package(root / "src-tiny" / "tiny-1.0", "tiny")
    spec = pk.PackageSpec("tiny", "1.0", "train")
    started = time.perf_counter()
    result = pk.build(spec, cache=root / "cache", source=sdist, max_mutants=4, max_tried=8)
    return result, root / "cache", sdist, time.perf_counter() - started


@needs_bwrap
def test_a_local_package_keeps_only_mutants_its_tests_catch(tiny_build):
    result, cache, _, _ = tiny_build
    assert result.status == "ok", result.reason
    assert result.tests == 8 and result.modules == ("tiny/__init__.py",) and result.seconds > 0
    assert 0 < result.kept <= 4 and result.tried <= 8
    assert result.kept + sum(result.discarded.values()) == result.tried
    assert set(result.discarded) <= {"survived", "timeout", "import-error"}
    repo = cache / "tiny-1.0" / "repo"
    assert sorted(p.name for p in repo.iterdir()) == [".layout.json", "pytest.ini", "tests", "tiny"]
    assert "testpaths = tests/test_tiny.py" in (repo / "pytest.ini").read_text()
    for m in result.mutants:
        assert m.failures and m.file == "tiny/__init__.py" and m.test_file == "tests/test_tiny.py"
        assert m.source != m.original == MODULE and m.package.name == "tiny" and m.package.pool == "train"
        assert set(m.failing_tests).isdisjoint(m.passed) and len(m.failing_tests) + len(m.passed) == 8


@needs_bwrap
def test_a_mutant_that_times_out_once_is_run_again_so_load_does_not_change_the_kept_set(tiny_build, tmp_path,
                                                                                         monkeypatch):
    import dataclasses

    result, _, sdist, _ = tiny_build
    real, retries = pk.Runner.run, []

    def loaded_machine(self, timeout, file=None, source=None):  # every mutant's first run "times out"
        if file is not None and timeout < pk.RETRY_TIMEOUT_S:
            return dataclasses.replace(real(self, timeout, file, source), timed_out=True)
        if file is not None:
            retries.append(timeout)
        return real(self, timeout, file, source)

    monkeypatch.setattr(pk.Runner, "run", loaded_machine)
    again = pk.build(pk.PackageSpec("tiny", "1.0", "train"), cache=tmp_path / "cache", source=sdist, max_mutants=4,
                     max_tried=8)
    assert [(m.line, m.mutated_line) for m in again.mutants] == [(m.line, m.mutated_line) for m in result.mutants]
    assert "timeout" not in again.discarded and pk.RETRY_TIMEOUT_S in retries


@needs_bwrap
def test_package_tasks_have_corpus_truth_and_a_repo_that_fails_then_passes(tiny_build, tmp_path):
    from sandbox import Sandbox

    result, _, _, _ = tiny_build
    m = result.mutants[0]
    task = bugs.fixing_task(m, random.Random(0))
    t = task.truth
    json.dumps(task.to_dict())  # JSON-serialisable, as every task
    assert t["package"] == "tiny" and t["pool"] == "train" and t["file"] == "tiny/__init__.py"
    assert t["test_file"] == "tests/test_tiny.py" and t["test_paths"] == ["tests/test_tiny.py"]
    assert t["failing_tests"][0] in task.prompt and "def test_" in t["failing_test_source"]
    buggy = bugs.buggy_source(t)
    assert buggy == m.source and pysource.apply_diff(buggy, t["diff"]) == MODULE
    repo = tmp_path / "repo"
    repo.mkdir()
    write_repo(repo, t, "[pytest]\naddopts = -p no:cacheprovider\n")
    assert (repo / "tiny" / "__init__.py").read_text() == buggy and not (repo / ".layout.json").exists()
    sandbox = Sandbox(repo, env=pk.SANDBOX_ENV)
    before = sandbox.run("python -m pytest -q", timeout=60)
    assert before.exit_code == 1 and t["failing_tests"][0] in before.output
    (repo / "tiny" / "__init__.py").write_text(MODULE)
    assert sandbox.run("python -m pytest -q", timeout=60).exit_code == 0


@needs_bwrap
def test_a_second_build_reads_the_cache(tiny_build):
    result, cache, sdist, first_s = tiny_build
    pk._BUILT.clear()
    started = time.perf_counter()
    again = pk.build(pk.PackageSpec("tiny", "1.0", "train"), cache=cache, source=sdist, max_mutants=4, max_tried=8)
    assert again.cached and time.perf_counter() - started < min(1.0, first_s / 4)
    assert [(m.id, m.failures, m.passed, m.test_file) for m in again.mutants] == \
        [(m.id, m.failures, m.passed, m.test_file) for m in result.mutants]
    assert again.summary() | {"cached": False} == result.summary()
    # moved to the other pool in PACKAGES: the cached build follows the list, not what it recorded
    moved = pk.build(pk.PackageSpec("tiny", "1.0", "eval"), cache=cache, source=sdist, max_mutants=4, max_tried=8)
    assert moved.cached and moved.pool == "eval" and {m.package.pool for m in moved.mutants} == {"eval"}


@needs_bwrap
def test_a_package_whose_tests_fail_before_mutation_is_a_counted_discard(tmp_path):
    failing = TESTS.format(name="broken") + "\n\ndef test_wrong():\n    assert clamp(1, 0, 10) == 2\n"
    sdist = make_package(tmp_path / "broken-1.0", "broken", failing)
    result = pk.build(pk.PackageSpec("broken", "1.0", "train"), cache=tmp_path / "cache", source=sdist)
    assert result.status == "discarded" and not result.mutants and result.tried == 0
    assert result.reason.startswith("tests fail before any mutation: 1 failing, first test_wrong (AssertionError")
    assert "\n" not in result.reason
    unimportable = make_package(tmp_path / "nope-1.0", "nope", "from nope import missing\n\ndef test_x():\n    pass\n")
    result = pk.build(pk.PackageSpec("nope", "1.0", "train"), cache=tmp_path / "cache", source=unimportable)
    assert result.status == "discarded" and result.reason.startswith("tests fail before any mutation: cannot collect")


@needs_bwrap
def test_a_hanging_suite_is_discarded_by_timeout(tmp_path):
    hangs = "from hang import clamp\n\ndef test_forever():\n    while True:\n        pass\n"
    sdist = make_package(tmp_path / "hang-1.0", "hang", hangs)
    started = time.perf_counter()
    result = pk.build(pk.PackageSpec("hang", "1.0", "train"), cache=tmp_path / "cache", source=sdist, timeout=3)
    assert result.status == "discarded" and result.reason == "tests hang: no result within 3 s"
    assert time.perf_counter() - started < 30
    assert not list((tmp_path / "cache" / "hang-1.0").glob("build-*.json"))  # a hang may be load: not stored


def test_a_package_that_cannot_be_fetched_is_a_discard_not_a_crash(tmp_path, monkeypatch):
    def offline(spec, folder):
        raise pk.FetchError("pip download failed: No matching distribution found for nosuch==0")

    monkeypatch.setattr(pk, "fetch", offline)
    result = pk.build(pk.PackageSpec("nosuch", "0", "train"), cache=tmp_path)
    assert result.status == "discarded" and result.reason.startswith("fetch: pip download failed")


def test_the_pinned_split_is_by_package_with_about_a_third_held_out():
    names = [p.name for p in pk.PACKAGES]
    assert len(names) == len(set(names)) and 8 <= len(names) <= 12
    assert {p.pool for p in pk.PACKAGES} == {"train", "eval"}
    held = pk.eval_packages()
    assert 0.25 <= len(held) / len(names) <= 0.4
    assert {p.name for p in pk.specs("train")}.isdisjoint(held) and {p.name for p in pk.specs("eval")} == held
    assert all(p.version and p.version[0].isdigit() for p in pk.PACKAGES)  # pinned
    with pytest.raises(pk.PackageError, match="unknown pool"):
        pk.specs("test")


@needs_bwrap
def test_no_eval_package_or_eval_corpus_module_reaches_the_train_task_lists(tmp_path, monkeypatch):
    """With one train and one eval package (local folders standing in for the registry), every train-pool task
    list of every source holds neither the eval package nor an eval corpus module, and the eval pool holds
    only held-out code."""
    trees = {name: make_package(tmp_path / "src" / name / f"{name}-1.0", name) for name in ("alpha", "omega")}
    monkeypatch.setattr(pk, "PACKAGES", (pk.PackageSpec("alpha", "1.0", "train"), pk.PackageSpec("omega", "1.0", "eval")))
    monkeypatch.setattr(pk, "fetch", lambda spec, folder: trees[spec.name])
    monkeypatch.setattr(pk, "MAX_MUTANTS", 3)
    monkeypatch.setattr(pk, "MAX_TRIED", 6)
    monkeypatch.setenv("AGENT_HOME", str(tmp_path / "home"))
    for subtask in ("bug-fixing", "bug-localization"):
        for source in ("packages", "all"):
            train = T.make_tasks(subtask, 10_000, seed=0, pool="train", source=source)
            assert train and {t.truth.get("package") for t in train} <= {"alpha", None}
            assert "alpha" in {t.truth.get("package") for t in train}
            assert not {t.truth["module"] for t in train} & (set(mu.EVAL_MODULES) | {"omega"})
            held = T.make_tasks(subtask, 10_000, seed=0, pool="eval", source=source)
            assert held and all(t.truth.get("package") == "omega" or t.truth["module"] in mu.EVAL_MODULES for t in held)
    assert all(t.truth.get("package") is None for t in T.make_tasks("bug-fixing", 10_000, pool="train"))


def test_make_tasks_sources():
    assert T.make_tasks("bug-fixing", 6, seed=2) == T.make_tasks("bug-fixing", 6, seed=2, source="corpus")
    with pytest.raises(TaskError, match="unknown task source"):
        T.make_tasks("bug-fixing", 1, source="web")
    with pytest.raises(TaskError, match="bug tasks only"):
        T.make_tasks("refactoring", 1, source="packages")


def test_data_packages_defaults_are_the_task_world_s_caps():
    """make_tasks draws from the build with the module's caps and seed: the command's defaults build that one."""
    import inspect

    from agent.commands import data

    params = inspect.signature(data.packages).parameters
    assert params["max_mutants"].default.default == pk.MAX_MUTANTS
    assert params["max_tried"].default.default == pk.MAX_TRIED
    assert params["seed"].default.default == pk.BUILD_SEED
    assert [p.value for p in data.PackagePool] == list(pk.POOLS) and [s.value for s in data.Source] == list(T.SOURCES)


def test_data_packages_refuses_an_unknown_pool_in_one_line(cli):
    r = cli("data", "packages", "--pool", "test")
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1 and "'test' is not one of" in r.err, r.err


@needs_bwrap
def test_data_packages_lists_kept_and_discarded_packages(cli, tmp_path, monkeypatch):
    trees = {"alpha": make_package(tmp_path / "a" / "alpha-1.0", "alpha"),
             "broken": make_package(tmp_path / "b" / "broken-1.0", "broken",
                                    "from broken import clamp\n\ndef test_x():\n    assert clamp(1, 0, 1) == 0\n")}
    monkeypatch.setattr(pk, "PACKAGES", (pk.PackageSpec("alpha", "1.0", "train"), pk.PackageSpec("broken", "2", "train")))
    monkeypatch.setattr(pk, "fetch", lambda spec, folder: trees[spec.name])
    r = cli("data", "packages", "--pool", "train", "--cache", str(tmp_path / "cache"), "--max-mutants", "2",
            "--max-tried", "4", "--json")
    assert r.code == 0, r.err
    rows = {row["package"]: row for row in json.loads(r.out)}
    assert rows["alpha"]["status"] == "ok" and 0 < rows["alpha"]["kept"] <= 2 and rows["alpha"]["tests"] == 8
    assert rows["broken"]["status"] == "discarded" and rows["broken"]["reason"].startswith("tests fail before")
    r = cli("data", "packages", "--pool", "train", "--cache", str(tmp_path / "cache"), "--max-mutants", "2",
            "--max-tried", "4")
    assert r.code == 0 and "alpha" in r.out and "package: tests fail before any mutation" in r.out
    assert "mutants kept from 1 of 2 packages; 1 packages discarded" in r.out
    shutil.rmtree(tmp_path / "cache")
