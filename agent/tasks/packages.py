"""Bug tasks from real packages: SWE-smith-style mutants of small pure-Python packages from the registry.

Each pinned package's sdist is fetched once with pip (`--no-deps --no-binary :all:`) into
`$AGENT_HOME/packages/<name>-<version>/`, and its importable code and its tests are copied into a small
repo tree (`repo/`: the package lifted out of `src/`, the test files, a `pytest.ini` naming them). Its
suite runs in the bubblewrap sandbox; a package whose tests fail, hang or take too long before any
mutation is a counted discard with a one-line reason. Then the mutation operators of
`agent/tasks/mutations.py` (all of them) are applied to the package's modules, spread over operators in
a seeded order; a mutant is kept only if at least one test fails with it (the unmutated suite passed).
Kept mutants carry the same records as corpus mutants, so `agent.tasks.bugs` turns them into the same
tasks and truth; `write_package_repo` writes the repo a task's agent works in. Results are cached per
package tree, seed and caps: a second build reads one JSON file.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import xml.etree.ElementTree as ET
import zipfile
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from agent.tasks import mutations as mu, testrun


@dataclass(frozen=True)
class PackageSpec:
    name: str  # the registry name
    version: str  # pinned: the same sdist, the same tests, the same mutants
    pool: str  # "train" or "eval"
    # Repo-relative files to mutate and test paths to run; empty: found in the sdist (see `layout`).
    modules: tuple[str, ...] = ()
    tests: tuple[str, ...] = ()


# The task world's packages and their split, BY PACKAGE. Eval packages feed only the held-out solve
# benchmark: they must never reach any training data (policy trajectories, synth stages, hypernetwork
# training); tests/test_packages.py checks that no train-pool task list can hold one. Each is small, pure
# Python, ships its tests in its sdist, and its suite (the listed tests) runs in about a second.
PACKAGES: tuple[PackageSpec, ...] = (
    PackageSpec("inflection", "0.5.1", "eval"),
    PackageSpec("isodate", "0.7.2", "eval"),
    PackageSpec("webcolors", "25.10.0", "eval"),
    PackageSpec("parse", "1.22.4", "eval"),
    PackageSpec("six", "1.17.0", "train"),
    PackageSpec("text-unidecode", "1.3", "train"),
    # time.py's and i18n's tests need freezegun and compiled locales: only the three plain modules
    PackageSpec("humanize", "4.17.0", "train",
                modules=("humanize/number.py", "humanize/filesize.py", "humanize/lists.py"),
                tests=("tests/test_number.py", "tests/test_filesize.py", "tests/test_lists.py")),
    PackageSpec("toolz", "1.2.0", "train",
                modules=("toolz/itertoolz.py", "toolz/functoolz.py", "toolz/dicttoolz.py", "toolz/recipes.py"),
                tests=("toolz/tests/test_itertoolz.py", "toolz/tests/test_functoolz.py",
                       "toolz/tests/test_dicttoolz.py", "toolz/tests/test_recipes.py")),
    PackageSpec("boltons", "26.2.0", "train",
                modules=("boltons/strutils.py", "boltons/iterutils.py", "boltons/dictutils.py",
                         "boltons/setutils.py", "boltons/mathutils.py", "boltons/listutils.py"),
                tests=("tests/test_strutils.py", "tests/test_iterutils.py", "tests/test_dictutils.py",
                       "tests/test_setutils.py", "tests/test_mathutils.py", "tests/test_listutils.py")),
    PackageSpec("semver", "3.1.2", "train", modules=("semver/version.py", "semver/_deprecated.py")),
    PackageSpec("cachetools", "8.0.2", "train"),
)
POOLS = ("train", "eval", "all")

MAX_MUTANTS = 30  # kept per package
MAX_TRIED = 60  # candidates run per package: one sandboxed suite run each
MAX_SUITE_S = 15.0  # a package whose unmutated suite takes longer is discarded: each mutant costs a run
BASELINE_TIMEOUT_S = 60.0
BUILD_SEED = 0  # the seed of the package task world that make_tasks draws from
RETRY_TIMEOUT_S = 60.0  # a mutant that timed out runs once more with this much time before it counts as a hang
CACHE_VERSION = 2  # bump when what a build stores or how it decides changes (2: timeouts retried)
# Plugins of the host environment stay out, as in stage 3; hashing is seeded so runs repeat.
SANDBOX_ENV = {"PYTHONHASHSEED": "0", "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1", "COLUMNS": "80"}
PYTEST_INI = "[pytest]\naddopts = -p no:cacheprovider\n"
JUNIT = ".junit.xml"
# xunit1 puts each test's file in the report; short tracebacks give parseable `file:line: in func` frames.
PYTEST_CMD = f"python -m pytest -q --tb=short -o junit_family=xunit1 --junitxml={JUNIT}"
MESSAGE_CHARS = 2000
_NOT_MODULES = {"setup.py", "conftest.py", "noxfile.py", "fabfile.py", "tasks.py", "versioneer.py",
                "__main__.py", "_version.py", "__version__.py", "__about__.py"}
_SKIP = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", ".git")
_SKIP_IN_TASK = shutil.ignore_patterns("__pycache__", "*.pyc", ".layout.json", JUNIT)


class PackageError(ValueError):
    """A request about the package task world that cannot be met (unknown pool or package)."""


@dataclass
class PackageResult:
    name: str
    version: str
    pool: str
    status: str = "ok"  # or "discarded"
    reason: str = ""  # one line, for a discarded package
    tests: int = 0  # tests passing before any mutation
    seconds: float = 0.0  # that suite run's wall time in the sandbox
    modules: tuple[str, ...] = ()
    candidates: int = 0  # mutation candidates in the modules
    tried: int = 0  # of them, run against the suite
    discarded: dict[str, int] = field(default_factory=dict)  # tried mutants not kept, by reason
    mutants: tuple[mu.Mutation, ...] = ()
    cached: bool = False

    @property
    def kept(self) -> int:
        return len(self.mutants)

    def summary(self) -> dict[str, Any]:
        return {"package": self.name, "version": self.version, "pool": self.pool, "status": self.status,
                "reason": self.reason, "tests": self.tests, "seconds": self.seconds, "modules": list(self.modules),
                "candidates": self.candidates, "tried": self.tried, "kept": self.kept,
                "discarded": dict(self.discarded), "cached": self.cached}


def specs(pool: str = "all") -> list[PackageSpec]:
    if pool not in POOLS:
        raise PackageError(f"unknown pool {pool!r} (expected one of {', '.join(POOLS)})")
    return [p for p in PACKAGES if pool == "all" or p.pool == pool]


def eval_packages() -> frozenset[str]:
    return frozenset(p.name for p in PACKAGES if p.pool == "eval")


def cache_root(cache: Path | None = None) -> Path:
    """Where sdists and package repos live: `cache`, else $AGENT_HOME/packages (as agent_home() resolves it)."""
    if cache is not None:
        return Path(cache)
    return Path(os.environ.get("AGENT_HOME") or Path.home() / ".cache" / "parametric-skills") / "packages"


# --------------------------------------------------------------------------- fetch and lay out


class FetchError(RuntimeError):
    pass


def fetch(spec: PackageSpec, folder: Path) -> Path:
    """Download and unpack the pinned sdist into `folder`; the unpacked source tree."""
    dist = folder / "dist"
    dist.mkdir(parents=True, exist_ok=True)
    archives = sorted(p for p in dist.iterdir() if p.name.endswith((".tar.gz", ".zip")))
    if not archives:
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--disable-pip-version-check",
                 "-q", "-d", str(dist), f"{spec.name}=={spec.version}"],
                capture_output=True, text=True, timeout=300)
        except subprocess.TimeoutExpired:
            raise FetchError("pip download timed out after 300 s") from None
        lines = [l.strip() for l in proc.stderr.splitlines() if l.strip() and not l.startswith("WARNING")]
        archives = sorted(p for p in dist.iterdir() if p.name.endswith((".tar.gz", ".zip")))
        if proc.returncode != 0 or not archives:
            raise FetchError(f"pip download failed: {lines[-1] if lines else f'exit code {proc.returncode}'}")
    unpacked = folder / "sdist"
    if not unpacked.is_dir():
        tmp = Path(tempfile.mkdtemp(prefix="sdist.", dir=folder))  # own name: two processes may unpack at once
        if archives[0].name.endswith(".zip"):
            with zipfile.ZipFile(archives[0]) as z:
                z.extractall(tmp)
        else:
            with tarfile.open(archives[0]) as t:
                t.extractall(tmp, filter="data")  # refuses links and paths that leave the folder
        try:
            tmp.rename(unpacked)
        except OSError:  # another process unpacked it first
            shutil.rmtree(tmp, ignore_errors=True)
            if not unpacked.is_dir():
                raise
    tops = [p for p in unpacked.iterdir() if p.is_dir()]
    if len(tops) != 1:
        raise FetchError(f"{archives[0].name}: expected one top folder in the sdist, found {len(tops)}")
    return tops[0]


def _is_test_file(name: str) -> bool:
    return name.endswith(".py") and (name.startswith("test_") or name.endswith("_test.py"))


def layout(sdist: Path) -> tuple[list[str], list[str], list[str]]:
    """(paths to copy, modules to mutate, test files), repo-relative; `src/` is lifted to the top.

    Importable code: the packages (folders with __init__.py) and modules at the top of `src/` or of the
    sdist; tests: `tests/` or `test/`, top-level test files and a top-level conftest.py."""
    base = sdist / "src" if (sdist / "src").is_dir() else sdist
    code = [p for p in sorted(base.iterdir())
            if (p.is_dir() and (p / "__init__.py").is_file() and p.name not in ("tests", "test"))
            or (p.is_file() and p.suffix == ".py" and p.name not in _NOT_MODULES and not _is_test_file(p.name))]
    test_roots = [p for p in sorted(sdist.iterdir())
                  if (p.is_dir() and p.name in ("tests", "test")) or (p.is_file() and _is_test_file(p.name))
                  or p.name == "conftest.py"]
    copies = [p.name for p in code + test_roots]
    modules, tests = [], []
    for root in code + test_roots:
        files = [root] if root.is_file() else sorted(root.rglob("*.py"))
        for f in files:
            rel = f.relative_to(root.parent).as_posix()
            parts = rel.split("/")
            if _is_test_file(f.name):
                tests.append(rel)
            elif root in code and f.name not in _NOT_MODULES and not {"tests", "test"} & set(parts[:-1]):
                modules.append(rel)
    return copies, modules, tests


def module_name(rel: str) -> str:
    """The import name of a repo-relative file: `boltons/strutils.py` -> `boltons.strutils`."""
    parts = rel.removesuffix(".py").split("/")
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def prepare(spec: PackageSpec, sdist: Path, repo: Path) -> dict[str, Any]:
    """Write the repo tree (code, tests, pytest.ini) once; its layout (modules, test paths) as a dict."""
    meta_path = repo / ".layout.json"
    if meta_path.is_file():
        return json.loads(meta_path.read_text(encoding="utf-8"))
    copies, modules, tests = layout(sdist)
    base = sdist / "src" if (sdist / "src").is_dir() else sdist
    tmp = repo.with_name(repo.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for rel in copies:
        src = base / rel if (base / rel).exists() else sdist / rel
        if src.is_dir():
            shutil.copytree(src, tmp / rel, ignore=_SKIP)
        else:
            shutil.copy2(src, tmp / rel)
    meta = {"package": spec.name, "version": spec.version,
            "modules": list(spec.modules) or modules, "tests": list(spec.tests) or tests}
    missing = [p for p in meta["modules"] + meta["tests"] if not (tmp / p).exists()]
    if missing:
        shutil.rmtree(tmp)
        raise FetchError(f"not in the sdist: {', '.join(missing[:3])}")
    (tmp / "pytest.ini").write_text(pytest_ini(PYTEST_INI, meta["tests"]), encoding="utf-8")
    (tmp / ".layout.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    if repo.exists():
        shutil.rmtree(repo)
    tmp.rename(repo)
    return meta


def pytest_ini(base: str, test_paths: Sequence[str]) -> str:
    """Settings `base` plus the package's test paths: what `python -m pytest` with no arguments runs."""
    return base.rstrip("\n") + "\ntestpaths = " + " ".join(test_paths) + "\n"


# --------------------------------------------------------------------------- the suite in the sandbox


@dataclass(frozen=True)
class SuiteRun:
    passed: tuple[str, ...] = ()
    failed: tuple[testrun.TestFailure, ...] = ()
    files: dict[str, str] = field(default_factory=dict)  # failing test -> its repo-relative file
    error: str | None = None  # nothing ran as tests: collection error, crash
    timed_out: bool = False
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.timed_out and self.error is None and not self.failed and bool(self.passed)


def _failure(test: str, node: ET.Element) -> testrun.TestFailure:
    message = node.get("message") or ""
    head, sep, rest = message.partition(": ")
    if message.startswith("assert "):  # a rewritten assert's report may come without the exception's name
        error, text = "AssertionError", message
    elif sep and head.replace(".", "").replace("_", "").isalnum():
        error, text = head, rest
    else:
        error, text = node.tag.capitalize(), message
    text = text[:MESSAGE_CHARS]
    frames, lines = [], (node.text or "").splitlines()
    for i, line in enumerate(lines):
        path, colon, tail = line.partition(":")
        lineno, _, func = tail.partition(": in ")
        if colon and path.endswith(".py") and lineno.isdigit() and func and not line.startswith(" "):
            code = lines[i + 1].strip() if i + 1 < len(lines) and lines[i + 1].startswith("    ") else ""
            frames.append((path, int(lineno), func.strip(), code))
    explain = text if error == "AssertionError" and text.startswith("assert ") else ""
    return testrun.TestFailure(test, error, text, tuple(frames[-4:]), explain)


def parse_junit(xml: str) -> tuple[list[str], list[testrun.TestFailure], dict[str, str], str | None]:
    """(passed, failed, failing test -> file, collection error) from pytest's xunit1 report."""
    passed, failed, files, error = [], [], {}, None
    for case in ET.fromstring(xml).iter("testcase"):
        file, cls, name = case.get("file") or "", case.get("classname") or "", case.get("name") or ""
        module = file.removesuffix(".py").replace("/", ".")
        inner = cls[len(module) + 1:] if module and cls.startswith(module + ".") else ""
        test = f"{inner}::{name}" if inner else name
        bad = case.find("failure")
        if bad is None:
            bad = case.find("error")
        if bad is not None and not cls and (bad.get("message") or "").startswith("collection failure"):
            last = (bad.text or "").strip().splitlines()[-1:] or ["?"]
            error = error or f"cannot collect {name}: {last[0].strip()}"[:300]
        elif bad is not None:
            failed.append(_failure(test, bad))
            files.setdefault(test, file)
        elif case.find("skipped") is None:
            passed.append(test)
    return passed, failed, files, error


class Runner:
    """A private copy of a package repo and a sandbox confined to it; runs the suite on a module variant."""

    def __init__(self, repo: Path):
        from sandbox import Sandbox, cleanup

        self._cleanup = cleanup
        self._owned = cleanup.make_owned_dir("parametric-skills-pkg-")
        self.path = self._owned / "repo"
        try:
            shutil.copytree(repo, self.path, ignore=_SKIP)
            self.sandbox = Sandbox(self.path, env=SANDBOX_ENV)
        except BaseException:
            self.close()
            raise

    def run(self, timeout: float, file: str | None = None, source: str | None = None) -> SuiteRun:
        target = self.path / file if file else None
        original = target.read_text(encoding="utf-8") if target else None
        junit = self.path / JUNIT
        junit.unlink(missing_ok=True)
        try:
            if target is not None:
                target.write_text(source, encoding="utf-8")
            result = self.sandbox.run(PYTEST_CMD, timeout=timeout)
            xml = junit.read_text(encoding="utf-8") if junit.is_file() else None
        finally:
            if target is not None:
                target.write_text(original, encoding="utf-8")
            junit.unlink(missing_ok=True)
        seconds = round(result.duration_s, 2)
        if result.timed_out:
            return SuiteRun(timed_out=True, seconds=seconds)
        if xml is None:
            tail = [l for l in result.output.strip().splitlines() if l.strip()][-1:] or [f"exit code {result.exit_code}"]
            return SuiteRun(error=f"no test report (exit code {result.exit_code}): {tail[0][:200]}", seconds=seconds)
        try:
            passed, failed, files, error = parse_junit(xml)
        except ET.ParseError as exc:
            return SuiteRun(error=f"unreadable test report: {exc}", seconds=seconds)
        if error is None and result.exit_code in (2, 3, 4):
            error = f"pytest stopped with exit code {result.exit_code}"
        return SuiteRun(tuple(passed), tuple(failed), files, error, False, seconds)

    def close(self) -> None:
        self._cleanup.discard(self._owned)


# --------------------------------------------------------------------------- mutants


def spread(cands: list[mu.Mutation], rng: random.Random) -> list[mu.Mutation]:
    """A seeded order that takes the operators in turn (var-swap and off-by-one are most common)."""
    by_op: dict[str, list[mu.Mutation]] = {}
    for c in cands:
        by_op.setdefault(c.operator, []).append(c)
    for group in by_op.values():
        rng.shuffle(group)
    ops, out = sorted(by_op), []
    while any(by_op.values()):
        rng.shuffle(ops)
        out += [by_op[op].pop() for op in ops if by_op[op]]
    return out


def _record(m: mu.Mutation) -> dict[str, Any]:
    keep = ("module", "file", "operator", "function", "line", "original_line", "mutated_line", "description",
            "fix", "before", "after", "passed", "test_file")
    return {k: getattr(m, k) for k in keep} | {"failures": [asdict(f) for f in m.failures]}


def _mutant(rec: dict[str, Any], original: str, origin: mu.PackageOrigin) -> mu.Mutation:
    lines = original.splitlines()
    if lines[rec["line"] - 1] != rec["original_line"]:
        raise FetchError(f"{rec['file']}: the cached mutants do not match the source")
    lines[rec["line"] - 1] = rec["mutated_line"]
    source = "\n".join(lines) + ("\n" if original.endswith("\n") else "")
    failures = tuple(testrun.TestFailure(f["test"], f["error"], f["message"], tuple(tuple(x) for x in f["frames"]),
                                    f["explain"]) for f in rec["failures"])
    fields = {k: v for k, v in rec.items() if k not in ("failures", "passed")}
    return mu.Mutation(**fields, source=source, original=original, failures=failures, passed=tuple(rec["passed"]),
                       package=origin)


def _tree_digest(repo: Path, paths: Sequence[str]) -> str:
    h = hashlib.sha256()
    for folder, dirs, files in os.walk(repo):
        dirs.sort()
        for name in sorted(files):
            full = Path(folder) / name
            if name.endswith(".py") or name == "pytest.ini":
                h.update(full.relative_to(repo).as_posix().encode() + b"\0" + full.read_bytes() + b"\0")
    h.update("\0".join(paths).encode())
    return h.hexdigest()


_BUILT: dict[tuple, PackageResult] = {}
_LOCK = threading.Lock()


def build(spec: PackageSpec, *, cache: Path | None = None, source: Path | None = None, seed: int = BUILD_SEED,
          max_mutants: int | None = None, max_tried: int | None = None, workers: int = 1,
          timeout: float | None = None, max_suite_s: float | None = None,
          progress: Callable[[int, int], None] | None = None) -> PackageResult:
    """The package's kept mutants, or a discard with its reason; cached under the package's folder.

    source: an unpacked source tree to use instead of fetching the sdist (tests, local packages).
    Caps and limits left None are the module's MAX_MUTANTS, MAX_TRIED, BASELINE_TIMEOUT_S, MAX_SUITE_S.
    progress(tried, max_tried) after each round of mutant runs."""
    max_mutants, max_tried = max_mutants or MAX_MUTANTS, max_tried or MAX_TRIED
    timeout, max_suite_s = timeout or BASELINE_TIMEOUT_S, max_suite_s or MAX_SUITE_S
    folder = cache_root(cache) / f"{spec.name}-{spec.version}"
    result = PackageResult(spec.name, spec.version, spec.pool)
    try:
        meta = prepare(spec, source if source is not None else fetch(spec, folder), folder / "repo")
    except (FetchError, OSError) as exc:
        return replace(result, status="discarded", reason=f"fetch: {exc}".splitlines()[0][:300])
    repo = folder / "repo"
    origin = mu.PackageOrigin(spec.name, spec.version, spec.pool, str(repo.resolve()), tuple(meta["tests"]))
    key = hashlib.sha256(json.dumps([CACHE_VERSION, _tree_digest(repo, meta["modules"]), seed, max_mutants,
                                     max_tried, mu.ALL_OPERATORS]).encode()).hexdigest()[:16]
    memo = (str(repo), key, spec.pool)
    with _LOCK:
        if memo in _BUILT:
            return _BUILT[memo]
    stored = folder / f"build-{key}.json"
    if stored.is_file():
        data = json.loads(stored.read_text(encoding="utf-8"))
        sources = {f: (repo / f).read_text(encoding="utf-8") for f in data["summary"]["modules"]}
        # the pool is always today's PACKAGES entry, never what a cached build recorded
        summary = {k: v for k, v in data["summary"].items() if k not in ("package", "kept", "cached")} | {"pool": spec.pool}
        done = PackageResult(name=spec.name, **{**summary, "modules": tuple(summary["modules"])}, cached=True,
                             mutants=tuple(_mutant(r, sources[r["file"]], origin) for r in data["mutants"]))
        with _LOCK:
            _BUILT[memo] = done
        return done
    done = _validate(spec, repo, meta, origin, result, seed, max_mutants, max_tried, workers, timeout, max_suite_s,
                     progress)
    # A hang or a slow suite may be the machine's load, not the package: only settled outcomes are stored.
    if done.status == "ok" or done.reason.startswith("tests fail"):
        payload = {"summary": done.summary(), "mutants": [_record(m) for m in done.mutants]}
        stored.write_text(json.dumps(payload, ensure_ascii=False) + "\n", encoding="utf-8")
    with _LOCK:
        _BUILT[memo] = done
    return done


def _validate(spec: PackageSpec, repo: Path, meta: dict[str, Any], origin: mu.PackageOrigin, result: PackageResult,
              seed: int, max_mutants: int, max_tried: int, workers: int, timeout: float, max_suite_s: float,
              progress: Callable[[int, int], None] | None) -> PackageResult:
    modules = tuple(meta["modules"])
    runners = [Runner(repo) for _ in range(max(1, workers))]
    try:
        base = runners[0].run(timeout)
        result = replace(result, tests=len(base.passed), seconds=base.seconds, modules=modules)
        if base.timed_out:
            return replace(result, status="discarded", reason=f"tests hang: no result within {timeout:g} s")
        if base.error:
            return replace(result, status="discarded", reason=f"tests fail before any mutation: {base.error}")
        if base.failed:
            f = base.failed[0]
            return replace(result, status="discarded", reason=(
                f"tests fail before any mutation: {len(base.failed)} failing, first {f.test} "
                f"({f.error}{': ' + f.message.splitlines()[0][:120] if f.message else ''})"))
        if not base.passed:
            return replace(result, status="discarded", reason="no tests ran")
        if base.seconds > max_suite_s:
            return replace(result, status="discarded", reason=f"tests too slow: {base.seconds:.1f} s (limit {max_suite_s:g} s)")
        cands = []
        for rel in modules:
            source = (repo / rel).read_text(encoding="utf-8")
            try:
                found = mu.candidates(source, module_name(rel), mu.ALL_OPERATORS)
            except SyntaxError:
                continue
            cands += [replace(c, file=rel, package=origin) for c in found]
        order = spread(cands, random.Random(f"{spec.name}|{spec.version}|{seed}"))
        mutant_timeout = max(5.0, 4 * base.seconds + 2)
        kept: list[mu.Mutation] = []
        reasons: Counter[str] = Counter()
        tried = 0
        with ThreadPoolExecutor(len(runners)) as pool:
            while len(kept) < max_mutants and tried < min(max_tried, len(order)):
                batch = order[tried:min(tried + len(runners), max_tried)]
                runs = list(pool.map(lambda job: job[0].run(mutant_timeout, job[1].file, job[1].source),
                                     zip(runners, batch)))
                # a timeout may be the machine's load, and a kept set that depends on load draws other held-out
                # tasks on another machine: a mutant counts as hanging only if it hangs again with room to spare
                runs = [runners[0].run(RETRY_TIMEOUT_S, cand.file, cand.source) if run.timed_out else run
                        for cand, run in zip(batch, runs)]
                tried += len(batch)
                for cand, run in zip(batch, runs):
                    if run.timed_out:
                        reasons["timeout"] += 1
                    elif run.error:
                        reasons["import-error"] += 1
                    elif not run.failed:
                        reasons["survived"] += 1
                    elif len(kept) < max_mutants:
                        first = run.failed[0].test
                        kept.append(replace(cand, failures=run.failed, passed=run.passed, test_file=run.files[first]))
                if progress:
                    progress(tried, min(max_tried, len(order)))
        return replace(result, candidates=len(cands), tried=tried, discarded=dict(sorted(reasons.items())),
                       mutants=tuple(kept))
    finally:
        for r in runners:
            r.close()


def build_pool(pool: str = "all", *, cache: Path | None = None, seed: int = BUILD_SEED, workers: int = 1,
               progress: Callable[[PackageSpec, int, int], None] | None = None, **caps: Any) -> list[PackageResult]:
    """Every package of a pool, built (or read from the cache) in list order."""
    out = []
    for spec in specs(pool):
        out.append(build(spec, cache=cache, seed=seed, workers=workers,
                         progress=(lambda t, n, s=spec: progress(s, t, n)) if progress else None, **caps))
    return out


def mutants_of_pool(pool: str = "train", cache: Path | None = None) -> list[mu.Mutation]:
    """Kept mutants of every package of a pool (the BUILD_SEED world); discarded packages give none."""
    return [m for r in build_pool(pool, cache=cache) for m in r.mutants]


# --------------------------------------------------------------------------- a task's repo


def package_root(truth: dict[str, Any]) -> Path:
    """The repo tree a package task's truth refers to (re-fetched into the cache if it is gone)."""
    root = Path(truth["root"])
    if (root / ".layout.json").is_file():
        return root
    spec = next((p for p in PACKAGES if (p.name, p.version) == (truth["package"], truth["version"])), None)
    if spec is None:
        raise FetchError(f"package repo {root} is gone and {truth['package']}=={truth['version']} is not pinned")
    folder = cache_root() / f"{spec.name}-{spec.version}"
    prepare(spec, fetch(spec, folder), folder / "repo")
    return folder / "repo"


def original_source(truth: dict[str, Any]) -> str:
    return (package_root(truth) / truth["file"]).read_text(encoding="utf-8")


def write_package_repo(folder: Path, truth: dict[str, Any], buggy: str, ini: str = PYTEST_INI) -> None:
    """The package's repo with the buggy module, and pytest settings `ini` plus the package's test paths."""
    shutil.copytree(package_root(truth), folder, ignore=_SKIP_IN_TASK, dirs_exist_ok=True)
    (folder / truth["file"]).write_text(buggy, encoding="utf-8")
    (folder / "pytest.ini").write_text(pytest_ini(ini, truth["test_paths"]), encoding="utf-8")

