"""Run pytest-style tests against many variants of one module, in one process.

A standalone script (stdlib only; uses pytest if installed, else a small shim) so that
mutation testing and execution-based checks cost one interpreter start per batch instead
of one per variant. Reads a JSON request on stdin and writes a JSON answer on stdout:

  request: {"timeout": 2.0, "jobs": [{"id", "module", "source", "tests", "test_file"}]}
  answer:  {"results": [{"id", "passed": [...], "failed": [{test, error, message, frames,
            explain}], "error": null | "collection error text"}]}

Supported: module-level `test*` functions (with `pytest.mark.parametrize`), `Test*` classes
(plain, with optional setup_method, or unittest.TestCase). Fixtures are not supported.
"""

from __future__ import annotations

import ast
import contextlib
import io
import itertools
import json
import linecache
import signal
import sys
import types
import unittest

MAX_REPR = 160


class TestTimeout(Exception):
    """A test ran past its time limit (an infinite loop, usually)."""


def _on_alarm(signum, frame):
    raise TestTimeout("test timed out")


def _install_pytest() -> None:
    try:
        import pytest  # noqa: F401
    except ImportError:
        sys.modules["pytest"] = _shim()


def _shim() -> types.ModuleType:
    """The few pytest features the corpus tests and typical generated tests use."""
    import re

    mod = types.ModuleType("pytest")

    class _Raises:
        def __init__(self, expected, match=None):
            self.expected, self.match = expected, match

        def __enter__(self):
            return self

        def __exit__(self, kind, value, tb):
            if kind is None:
                raise AssertionError(f"DID NOT RAISE {self.expected}")
            if not issubclass(kind, self.expected):
                return False
            if self.match is not None and not re.search(self.match, str(value)):
                raise AssertionError(f"Regex {self.match!r} does not match {str(value)!r}")
            return True

    class _Mark:
        def __init__(self, name, args, kwargs):
            self.name, self.args, self.kwargs = name, args, kwargs

    class _MarkGen:
        def __getattr__(self, name):
            def make(*args, **kwargs):
                def deco(func):
                    func.pytestmark = [*getattr(func, "pytestmark", []), _Mark(name, args, kwargs)]
                    return func
                return deco
            return make

    class _Approx:
        def __init__(self, expected, rel=1e-6, abs=1e-12):
            self.expected, self.rel, self.abs = expected, rel, abs

        def __eq__(self, other):
            return abs(other - self.expected) <= max(self.rel * abs(self.expected), self.abs)

        def __repr__(self):
            return f"approx({self.expected!r})"

    def fail(msg=""):
        raise AssertionError(msg)

    mod.raises = _Raises
    mod.mark = _MarkGen()
    mod.approx = _Approx
    mod.fail = fail
    return mod


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= MAX_REPR else text[: MAX_REPR - 3] + "..."


def _param_sets(func):
    """Expand stacked parametrize marks into (suffix, kwargs) pairs."""
    marks = [m for m in getattr(func, "pytestmark", []) if getattr(m, "name", "") == "parametrize"]
    if not marks:
        return [("", {})]
    axes = []
    for mark in marks:
        names, values = mark.args[0], list(mark.args[1])
        if isinstance(names, str):
            names = [n.strip() for n in names.split(",") if n.strip()]
        axis = []
        for value in values:
            if hasattr(value, "values") and hasattr(value, "marks"):  # pytest.param(...)
                value = value.values
            elif len(names) == 1:
                value = (value,)
            axis.append(dict(zip(names, value)))
        axes.append(axis)
    out = []
    for index, combo in enumerate(itertools.product(*axes)):
        merged = {}
        for part in combo:
            merged.update(part)
        out.append((f"[{index}]", merged))
    return out


def _collect(namespace):
    """(name, callable) pairs in definition order."""
    tests = []
    for name, obj in list(namespace.items()):
        if name.startswith("test") and isinstance(obj, types.FunctionType):
            for suffix, kwargs in _param_sets(obj):
                tests.append((name + suffix, _bind(obj, kwargs)))
        elif name.startswith("Test") and isinstance(obj, type):
            if issubclass(obj, unittest.TestCase):
                for meth in unittest.TestLoader().getTestCaseNames(obj):
                    tests.append((f"{name}::{meth}", lambda cls=obj, m=meth: cls(m).debug()))
            else:
                for meth, func in vars(obj).items():
                    if meth.startswith("test") and isinstance(func, types.FunctionType):
                        for suffix, kwargs in _param_sets(func):
                            tests.append((f"{name}::{meth}{suffix}", _bind_method(obj, meth, kwargs)))
    return tests


def _bind(func, kwargs):
    return lambda: func(**kwargs)


def _bind_method(cls, meth, kwargs):
    def run():
        instance = cls()
        if hasattr(instance, "setup_method"):
            instance.setup_method(getattr(instance, meth))
        try:
            getattr(instance, meth)(**kwargs)
        finally:
            if hasattr(instance, "teardown_method"):
                instance.teardown_method(getattr(instance, meth))
    return run


def _explain(exc, tree, test_file):
    """Re-evaluate a failed `assert a == b` to show both sides, as pytest does."""
    tb, last = exc.__traceback__, None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == test_file:
            last = tb
        tb = tb.tb_next
    if last is None or tree is None:
        return ""
    line = last.tb_lineno
    node = next(
        (n for n in ast.walk(tree) if isinstance(n, ast.Assert) and n.lineno <= line <= (n.end_lineno or n.lineno)),
        None,
    )
    if node is None:
        return ""
    frame = last.tb_frame

    def value(expr):
        code = compile(ast.Expression(expr), test_file, "eval")
        return eval(code, frame.f_globals, dict(frame.f_locals))

    try:
        test = node.test
        if isinstance(test, ast.Compare) and len(test.ops) == 1:
            symbol = {ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">",
                      ast.GtE: ">=", ast.In: "in", ast.NotIn: "not in", ast.Is: "is",
                      ast.IsNot: "is not"}[type(test.ops[0])]
            left, right = value(test.left), value(test.comparators[0])
            return f"assert {_short(left)} {symbol} {_short(right)}"
        if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
            inner = value(test.operand)
            return f"assert not {_short(inner)}\n +  where {_short(inner)} = {ast.unparse(test.operand)}"
        result = value(test)
        return f"assert {_short(result)}\n +  where {_short(result)} = {ast.unparse(test)}"
    except BaseException:  # the re-evaluation itself may fail; the failure stands anyway
        return ""


def _frames(exc, files):
    import traceback

    out = []
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename in files:
            out.append([frame.filename, frame.lineno, frame.name, (frame.line or "").strip()])
    return out


def _register(filename, source):
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)


def run_job(job, timeout):
    module_name, test_file = job["module"], job["test_file"]
    module_file = f"{module_name}.py"
    result = {"id": job["id"], "passed": [], "failed": [], "error": None}
    sink = io.StringIO()
    try:
        _register(module_file, job["source"])
        _register(test_file, job["tests"])
        module = types.ModuleType(module_name)
        module.__file__ = module_file
        sys.modules[module_name] = module
        namespace = {"__name__": test_file[:-3], "__file__": test_file}
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            signal.setitimer(signal.ITIMER_REAL, timeout)
            try:
                exec(compile(job["source"], module_file, "exec"), module.__dict__)
                exec(compile(job["tests"], test_file, "exec"), namespace)
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
    except BaseException as exc:  # a variant that does not even import fails every test
        result["error"] = f"{type(exc).__name__}: {exc}"
        return result
    try:
        tree = ast.parse(job["tests"])
    except SyntaxError:
        tree = None
    for name, run in _collect(namespace):
        if any(f["error"] == "TestTimeout" for f in result["failed"]):
            break  # a variant that hangs once hangs again; the rest would only cost time
        try:
            with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                signal.setitimer(signal.ITIMER_REAL, timeout)
                try:
                    run()
                finally:
                    signal.setitimer(signal.ITIMER_REAL, 0)
        except unittest.SkipTest:
            result["passed"].append(name)
        except BaseException as exc:
            result["failed"].append({
                "test": name,
                "error": type(exc).__name__,
                "message": str(exc)[:300],
                "frames": _frames(exc, {module_file, test_file}),
                "explain": _explain(exc, tree, test_file) if isinstance(exc, AssertionError) else "",
            })
        else:
            result["passed"].append(name)
        sink.seek(0)
        sink.truncate()
    sys.modules.pop(module_name, None)
    return result


def main() -> None:
    request = json.loads(sys.stdin.read())
    try:
        import resource

        limit = int(request.get("memory_bytes", 2 << 30))
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ImportError, ValueError, OSError):
        pass
    sys.setrecursionlimit(2000)
    signal.signal(signal.SIGALRM, _on_alarm)
    _install_pytest()
    timeout = float(request.get("timeout", 2.0))
    results = [run_job(job, timeout) for job in request["jobs"]]
    sys.__stdout__.write(json.dumps({"results": results}))


if __name__ == "__main__":
    main()
