"""Running a module's tests in a subprocess (`agent/tasks/corpus/runner.py`), one per batch of jobs,
with per-test timeouts; runs are cached by content.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

RUNNER = Path(__file__).resolve().parent / "corpus" / "runner.py"
TEST_TIMEOUT_S = 1.0
# Corpus tests take milliseconds; a mutant that needs longer is looping.
MUTANT_TIMEOUT_S = 0.25
# ...unless the machine was busy: one that timed out runs again with this much time before it counts as a hang,
# so the kept set (and every seeded draw over it) does not depend on the load while it was built.
RETRY_TIMEOUT_S = 3.0
BATCH_TIMEOUT_S = 120.0
TIMEOUT_ERRORS = ("TestTimeout", "Timeout")  # a test the runner stopped, a job the batch runner stopped


@dataclass(frozen=True)
class TestFailure:
    test: str
    error: str
    message: str
    frames: tuple[tuple[str, int, str, str], ...]  # (file, line, function, source line)
    explain: str  # "assert [(1, 3)] == [(1, 5)]" when the runner could re-evaluate it


@dataclass(frozen=True)
class TestRun:
    passed: tuple[str, ...]
    failed: tuple[TestFailure, ...]
    error: str | None = None  # the module or the tests did not even import

    @property
    def ok(self) -> bool:
        return self.error is None and not self.failed and bool(self.passed)

    @property
    def timed_out(self) -> bool:
        return (self.error or "").startswith("TestTimeout") or any(f.error in TIMEOUT_ERRORS for f in self.failed)


@dataclass(frozen=True)
class TestJob:
    module: str
    source: str
    tests: str
    test_file: str = ""

    @property
    def key(self) -> str:
        raw = "\0".join((self.module, self.source, self.tests, self.test_file or f"test_{self.module}.py"))
        return hashlib.sha256(raw.encode("utf-8")).hexdigest()


_RUN_CACHE: dict[str, TestRun] = {}


def _to_run(raw: dict) -> TestRun:
    failed = tuple(
        TestFailure(f["test"], f["error"], f["message"], tuple(tuple(x) for x in f["frames"]), f["explain"])
        for f in raw["failed"]
    )
    return TestRun(tuple(raw["passed"]), failed, raw.get("error"))


def _run_batch(jobs: list[TestJob], timeout: float) -> list[TestRun]:
    request = {
        "timeout": timeout,
        "jobs": [
            {"id": str(i), "module": j.module, "source": j.source, "tests": j.tests,
             "test_file": j.test_file or f"test_{j.module}.py"}
            for i, j in enumerate(jobs)
        ],
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["PYTHONHASHSEED"] = "0"
    try:
        proc = subprocess.run(
            [sys.executable, "-I", str(RUNNER)], input=json.dumps(request), capture_output=True,
            text=True, timeout=BATCH_TIMEOUT_S if len(jobs) > 1 else timeout * 10 + 10, env=env, cwd=str(RUNNER.parent),
        )
    except subprocess.TimeoutExpired:
        if len(jobs) == 1:
            return [TestRun((), (TestFailure("<all>", "Timeout", "the test run timed out", (), ""),))]
        half = len(jobs) // 2  # bisect to isolate the job that hangs
        return _run_batch(jobs[:half], timeout) + _run_batch(jobs[half:], timeout)
    try:
        results = json.loads(proc.stdout)["results"]
    except (ValueError, KeyError):
        if len(jobs) == 1:
            tail = (proc.stderr or "").strip().splitlines()[-1:] or ["no output"]
            return [TestRun((), (TestFailure("<all>", "Crash", tail[0][:200], (), ""),))]
        half = len(jobs) // 2  # one variant crashed the interpreter: isolate it
        return _run_batch(jobs[:half], timeout) + _run_batch(jobs[half:], timeout)
    return [_to_run(r) for r in results]


def run_many(jobs: list[TestJob], timeout: float = TEST_TIMEOUT_S, workers: int = 2) -> list[TestRun]:
    """Run test jobs (cached by content), split over `workers` concurrent subprocesses."""
    def key(job: TestJob) -> str:
        return f"{job.key}:{timeout}"

    todo = [j for j in dict.fromkeys(jobs) if key(j) not in _RUN_CACHE]
    if todo:
        from concurrent.futures import ThreadPoolExecutor

        chunks = [todo[i::workers] for i in range(min(workers, len(todo)))]
        with ThreadPoolExecutor(len(chunks)) as pool:
            for chunk, runs in zip(chunks, pool.map(lambda c: _run_batch(c, timeout), chunks)):
                for job, run in zip(chunk, runs):
                    _RUN_CACHE[key(job)] = run
    return [_RUN_CACHE[key(j)] for j in jobs]


def run_mutants(jobs: list[TestJob]) -> list[TestRun]:
    """run_many with the mutant limit, each timed-out job run once more with RETRY_TIMEOUT_S."""
    runs = run_many(jobs, MUTANT_TIMEOUT_S)
    slow = list(dict.fromkeys(j for j, r in zip(jobs, runs) if r.timed_out))
    again = dict(zip(slow, run_many(slow, RETRY_TIMEOUT_S))) if slow else {}
    return [again.get(j, r) for j, r in zip(jobs, runs)]


def run_tests(module: str, source: str, tests: str, test_file: str = "", timeout: float = TEST_TIMEOUT_S) -> TestRun:
    return run_many([TestJob(module, source, tests, test_file)], timeout)[0]
