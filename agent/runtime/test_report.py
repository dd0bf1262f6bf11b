"""A failing test run, told compactly: which tests failed, the assertion, expected vs actual, the last frames.

A small model reads a few lines better than a pytest traceback; the full output stays one `bash` away.
Written by hand because it is this project's own view of pytest's and unittest's text, not a parser of a
format a library owns. Output that is neither (a `make test`, a crash) comes back as it was, shortened.
"""

from __future__ import annotations

import ast
import builtins
import itertools
import json
import re
import shlex
from pathlib import Path

MAX_FAILURES = 2  # failing tests shown in detail; the rest by name
MAX_LINES = 30

_PYTEST_FAILED = re.compile(r"^(?:FAILED|ERROR) (\S+::\S+|\S+\.py)(?: - (.*))?$")
_PYTEST_HEAD = re.compile(r"^_{3,} (?:ERROR at \w+ of )?(\S.*?) _{3,}$")
_UNITTEST_HEAD = re.compile(r"^(FAIL|ERROR): (\w+) \(([\w.]+)\)")
_FRAME = re.compile(r'^\s*File "([^"]+)", line (\d+), in (\S+)')
_PYTEST_FRAME = re.compile(r"^([\w./-]+\.py):(\d+): \w+")
_SUMMARY = re.compile(r"^=*\s*(\d+ (?:failed|passed|error|errors)\b.*?)\s*=*$")
_UNITTEST_SUMMARY = re.compile(r"^(Ran \d+ tests?|FAILED \(.*\)|OK\b.*)")
_DURATION = re.compile(r" in \d+(?:\.\d+)?s\b(?: \(\d+:\d\d:\d\d\))?")
_EXPECTED = re.compile(r"(AssertionError|assert|Error)\b")
# Calls by bare name, or after a dot (`inflection.pluralize(...)`, `old.is_compatible(new)`): tests of a package
# mostly call it through the module or an object. A dotted name that is a method of a builtin type
# (`d.get(k)`, `s.split()`) is left out: a repo's own `def get` would be the wrong place to look.
_CALL = re.compile(r"(\.?)\b([A-Za-z_]\w*)\s*\(")
_SKIP_NAMES = set(dir(builtins)) | {"self", "cls"}
_BUILTIN_METHODS = {n for t in (str, bytes, list, dict, set, tuple, int, float, object) for n in dir(t)}
MAX_DEFINITIONS = 3
MAX_SCANNED = 200  # source files looked at for definitions: a big repo is not walked whole
_PYTEST_CMD = re.compile(r"^(\S*python[\d.]*) -m pytest\b")
TRACE_MARK = "@@returned "
# Re-runs one failing test under a profiler and prints, per function the failing line calls, the line its last
# normal return came from and the value (an exception exit is not a return: its frames are in the traceback).
# A wrong return value leaves no frame of the function in the traceback, so without this a small model sees
# only where the function starts and guesses the line. Only functions' code counts (co_flags & 1, CO_OPTIMIZED):
# a class body of the same name "returns" None at its last line when the module is imported.
_TRACER = """
import dis, json, os, sys
names, root, seen = set(sys.argv[1].split(",")), os.getcwd() + os.sep, {}
RET = {dis.opmap[o] for o in ("RETURN_VALUE", "RETURN_CONST") if o in dis.opmap}
def prof(frame, event, arg):
    code = frame.f_code
    if event == "return" and code.co_flags & 1 and code.co_name in names and code.co_filename.startswith(root) \\
            and code.co_code[frame.f_lasti] in RET:
        seen[code.co_name] = [os.path.relpath(code.co_filename, root), frame.f_lineno, repr(arg)[:60]]
import pytest
sys.setprofile(prof)
try:
    pytest.main(["-q", "-x", "-p", "no:cacheprovider", *sys.argv[2:]])
finally:
    sys.setprofile(None)
print("@@returned " + json.dumps(seen))
"""


def _short_path(path: str) -> str:
    """A repo file as `read` and `edit` name it (pytest prints those relative to the repo, unittest absolute
    under the sandbox's /workspace); any other file (site-packages, the interpreter) by its name alone. A repo
    file cut to its name sent the model to `parse.py` for `parse/__init__.py`, a file that does not exist."""
    if "/workspace/" in path:
        return path.split("/workspace/", 1)[-1]
    return path.rsplit("/", 1)[-1] if path.startswith(("/", "..")) else path


def _repo_frames(frames: list[tuple[str, str]]) -> list[str]:
    """The shown frames of (printed path, line) pairs: the repo's, where there are any. `re.sub` calling a
    repo's callback put `at __init__.py:185` (the interpreter's re/__init__.py) last, and the model took
    its line number for the bug's."""
    inside = [text for path, text in frames if "/workspace/" in path or not path.startswith(("/", ".."))]
    return inside or [text for _, text in frames]


def _pytest_sections(lines: list[str]) -> dict[str, list[str]]:
    """Traceback sections of pytest's FAILURES block, by test name."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in lines:
        head = _PYTEST_HEAD.match(line)
        if head:
            current = sections.setdefault(head.group(1), [])
        elif line.startswith(("=====", "-----")) and current is not None and "short test summary" in line:
            current = None
        elif current is not None:
            current.append(line)
    return sections


def _detail(section: list[str]) -> list[str]:
    """The assertion and expected/actual lines plus the last two frames of one traceback."""
    errors = [l[1:].strip() for l in section if l.startswith("E ")]
    # pytest's hints and blank lines say nothing about the bug
    errors = [e for e in errors if e and not e.startswith(("Use -v", "Full diff", "At index"))]
    frames = _repo_frames([(m.group(1), f"at {_short_path(m.group(1))}:{m.group(2)}")
                           for m in map(_PYTEST_FRAME.match, section) if m]
                          + [(m.group(1), f"at {_short_path(m.group(1))}:{m.group(2)} in {m.group(3)}")
                             for m in map(_FRAME.match, section) if m])
    code = [l.strip() for l in section if l.startswith(">")]
    out = [f"  {e}" for e in errors[:3]]
    if code:
        out.append(f"  line: {code[-1].lstrip('> ').strip()}")
    out += [f"  {f}" for f in frames[-2:]]
    return out


def _pytest(text: str) -> list[str] | None:
    lines = text.splitlines()
    failed = [(m.group(1), m.group(2)) for m in map(_PYTEST_FAILED.match, lines) if m]
    summary = next((m.group(1) for m in map(_SUMMARY.match, reversed(lines)) if m), None)
    if not failed and summary is None:
        return None
    sections = _pytest_sections(lines)
    entries = []
    for name, reason in failed:
        short = name.split("::", 1)[-1].replace("::", ".")
        section = next((v for k, v in sections.items() if k == short or k.endswith(short.rsplit(".", 1)[-1])), [])
        entries.append((name, reason, _detail(section)))
    # The sandbox keeps a huge run's head and tail only: the FAILED lines (tail) may all belong to tests whose
    # tracebacks (head) were cut, and their reasons are cut to the terminal's width ("Valu..."). Then the
    # first traceback that is there is shown, under its section's name.
    if not any(detail for *_, detail in entries):
        first = next(((k, d) for k, v in sections.items() if (d := _detail(v))), None)
        if first is not None:
            entries.insert(0, (first[0], None, first[1]))
    out = []
    for i, (name, reason, detail) in enumerate(entries):
        out.append(f"FAILED {name}")
        if i >= MAX_FAILURES:
            continue
        out += detail if detail else ([f"  {reason}"] if reason else [])
    if summary:
        out.append(_DURATION.sub("", summary))
    return out


def _unittest(text: str) -> list[str] | None:
    lines = text.splitlines()
    heads = [(i, m) for i, m in enumerate(map(_UNITTEST_HEAD.match, lines)) if m]
    summary = [l for l in lines if _UNITTEST_SUMMARY.match(l.strip())]
    if not heads and not summary:
        return None
    out = []
    for n, (i, m) in enumerate(heads):
        kind, test, where = m.groups()
        out.append(f"{kind} {where if where.endswith(test) else f'{where}.{test}'}")
        if n >= MAX_FAILURES:
            continue
        end = heads[n + 1][0] if n + 1 < len(heads) else len(lines)
        block = [l for l in lines[i + 1:end] if l.strip() and not set(l.strip()) <= set("-=")]
        frames = _repo_frames([(f.group(1), f"  at {_short_path(f.group(1))}:{f.group(2)} in {f.group(3)}")
                               for f in map(_FRAME.match, block) if f])
        code = [block[j + 1].strip() for j, l in enumerate(block[:-1]) if _FRAME.match(l)
                and not _FRAME.match(block[j + 1])]
        errors = [f"  {l.strip()}" for l in block if _EXPECTED.search(l) and not _FRAME.match(l)
                  and not l.startswith("Traceback")]
        out += errors[-2:]
        if code:
            out.append(f"  line: {code[-1]}")
        out += frames[-2:]
    out += [_DURATION.sub("", l.strip()) for l in summary[-2:]]
    return out


def is_test_file(path: Path) -> bool:
    return path.name.startswith("test_") or path.stem.endswith("_test") or "tests" in path.parts


def definitions(lines: list[str], root: Path, test: str | None = None) -> list[str]:
    """Where the functions and classes the failing lines call are defined, outside the tests: the test's line
    numbers are the test file's, and a small model otherwise copies them into the source it reads next.
    A failing line that calls nothing of the repo (`assert triplet == result`) falls back to the function
    the failing test is named after (`test_hex_to_rgb_percent[navy]` -> `hex_to_rgb_percent`), if defined."""
    names = [n for line in lines if line.lstrip().startswith("line: ")
             for dot, n in _CALL.findall(line)
             if n not in _SKIP_NAMES and not n.startswith("assert") and not (dot and n in _BUILTIN_METHODS)]
    names = list(dict.fromkeys(names))
    found = _find(names, root) if names else {}
    if not found and test and (named := re.sub(r"\[.*$", "", re.split(r"::|\.", test)[-1]).removeprefix("test_")):
        names = [named]
        found = _find(names, root)
    return [f"  defined: {n} at {found[n]}" for n in names if n in found][:MAX_DEFINITIONS]


def _find(names: list[str], root: Path) -> dict[str, str]:
    """{name: "path:line"} of the first `def`/`class` of each name in the repo's source files."""
    pattern = re.compile(rf"^[ \t]*(?:async[ \t]+)?(?:def|class)[ \t]+({'|'.join(map(re.escape, names))})\b", re.M)
    found: dict[str, str] = {}
    files = sorted(p for p in root.rglob("*.py") if not is_test_file(p.relative_to(root)) and p.is_file()
                   and not p.is_symlink())[:MAX_SCANNED]
    for path in files:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        for m in pattern.finditer(text):
            found.setdefault(m.group(1), f"{path.relative_to(root)}:{text.count(chr(10), 0, m.start()) + 1}")
    return found


def enclosing(frame: str, root: Path) -> str | None:
    """`  defined: f at path:N` for the function around a traceback's innermost frame (`  at path:L`) in a
    repo source file: an exception raised inside a function the test reaches only indirectly names no
    function, and without a start line a small model reads a made-up window (lines 20-39 for line 230)."""
    m = re.match(r"  at ([\w./-]+\.py):(\d+)", frame)
    if m is None or is_test_file(Path(m.group(1))):
        return None
    path, line = (root / m.group(1)).resolve(), int(m.group(2))
    if root.resolve() not in path.parents:  # test output can print any path: nothing outside the repo is read
        return None
    try:
        tree = ast.parse(path.read_text(encoding="utf-8", errors="replace")) if path.is_file() else None
    except (OSError, SyntaxError, ValueError):
        return None
    best = None
    for node in ast.walk(tree) if tree is not None else ():
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.lineno <= line <= (node.end_lineno or 0):
            if best is None or node.lineno > best.lineno:  # the innermost
                best = node
    if best is None:
        return None
    return f"  defined: {best.name} at {m.group(1)}:{best.lineno}"  # the `def` line, as definitions() gives


def trace_command(output: str, test_cmd: str, root: Path) -> str | None:
    """The command that re-runs the first failing test under the return tracer, or None when the test
    command is not `<python> -m pytest ...` or the failing line calls nothing defined in the repo."""
    m = _PYTEST_CMD.match(test_cmd)
    lines = _pytest(output) if m else None
    first = next((l.split(" ", 1)[1] for l in lines or [] if l.startswith("FAILED ") and "::" in l), None)
    code = next((l for l in lines or [] if l.startswith("  line: ")), None)
    if first is None or code is None:
        return None
    names = [d.split()[1] for d in definitions([code], root, first)]
    if not names:
        return None
    return " ".join([m.group(1), "-c", shlex.quote(_TRACER), shlex.quote(",".join(names)), shlex.quote(first)])


def parse_returns(output: str) -> dict[str, str]:
    """{function: "NAME returned VALUE at PATH:LINE"} from the tracer's output; {} when it printed none."""
    line = next((l for l in reversed(output.splitlines()) if l.startswith(TRACE_MARK)), None)
    try:
        seen = json.loads(line[len(TRACE_MARK):]) if line else {}
        return {name: f"  {name} returned {value} at {path}:{n}" for name, (path, n, value) in seen.items()}
    except (ValueError, TypeError):
        return {}


def compact(output: str, test_cmd: str = "", root: Path | None = None, returns: dict[str, str] | None = None) -> str:
    """The test output as a few lines a small model can act on; unknown formats are returned as they are.
    With the repo's root, the lines also say where the functions the failing lines call are defined; with
    `returns` (parse_returns of the first failing test's trace), where they returned from."""
    lines = _pytest(output) or _unittest(output)
    if lines is None:
        return output
    if root is not None:  # each failure's definitions right under its failing line
        out, returns, test = [], dict(returns or {}), None
        for i, line in enumerate(lines):
            out.append(line)
            if line.startswith(("FAILED ", "ERROR ", "FAIL ")):
                test = line.split(" ", 1)[1]
            if line.startswith("  line: "):
                found = definitions([line], root, test)
                for d in found:
                    out.append(d)
                    if (r := returns.pop(d.split()[1], None)) is not None:  # the first failure's only
                        out.append(r)
                returns = {}
                frames = list(itertools.takewhile(lambda l: l.startswith("  at "), lines[i + 1:]))
                if frames and (d := enclosing(frames[-1], root)) is not None and d not in found:
                    out.append(d)
        lines = out
    if len(lines) > MAX_LINES:
        lines = lines[:MAX_LINES - 1] + [f"... ({len(lines) - MAX_LINES + 1} more lines)"]
    hint = f"\n(full output: `{test_cmd}` in a bash block)" if test_cmd else ""
    return "\n".join(lines) + hint
