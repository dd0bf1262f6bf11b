"""What each action does: shell and tests in the sandbox, read and edit on the workspace files."""

from __future__ import annotations

import ast
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from agent.runtime.actions import Action
from agent.runtime.test_report import compact, is_test_file, parse_returns, trace_command
from sandbox.files import FileRefused, read_regular

READ_WINDOW = 80  # lines a `read` shows from its start line: enough for a function, small for a 135M model
FILE_LIMIT = 1_000_000  # bytes: read/edit refuse larger files (the model never needs one whole)
MAX_LISTED = 5_000  # files scanned when a named file does not exist
_REPORTED = re.compile(r"\bat ([\w./-]+\.\w+):\d+")  # "at pkg/mod.py:12", "defined: f at pkg/mod.py:3"


class CommandRunner(Protocol):
    """The part of sandbox.Sandbox the agent uses (a runner may also have `check_disk`, see `_shell`)."""

    def run(self, command: str, timeout: float): ...


@dataclass(frozen=True)
class Observation:
    text: str
    ok: bool
    exit_code: int | None = None
    # set when a resource limit was crossed that ends the run (the workspace's disk budget): the message
    limit: str | None = None


class Tools:
    def __init__(self, workspace: Path, runner: CommandRunner, test_cmd: str, timeout: float = 60.0) -> None:
        self.root = workspace.resolve()
        self.runner = runner
        self.test_cmd = test_cmd
        self.timeout = timeout
        self.reported: list[str] = []  # files the latest test report points at, first named first

    def execute(self, action: Action) -> Observation:
        handler = getattr(self, f"_{action.kind}")
        return handler(action)

    def run_tests(self) -> Observation:
        return self._shell(self.test_cmd)

    def _shell(self, command: str) -> Observation:
        result = self.runner.run(command, timeout=self.timeout)
        # in the head line, so test-output compaction and truncation never hide it
        head = (f"exit code {result.exit_code}" + (" (timed out)" if result.timed_out else "")
                + (" (memory cap reached: a process was killed)" if getattr(result, "memory_capped", False) else ""))
        limit = None
        # No quota can bound a host folder while a command runs, so the budget is checked after each one;
        # runners without a budget (test fakes) have no check_disk.
        check_disk = getattr(self.runner, "check_disk", None)
        if check_disk is not None and (usage := check_disk()).over:
            limit = f"resource limit: {usage.message}"
        return Observation(f"{head}\n{result.output}", result.exit_code == 0, result.exit_code, limit)

    def _bash(self, action: Action) -> Observation:
        return self._shell(action.arg)

    def report(self, run: Observation) -> str:
        """A test run as the model sees it: compacted, with where the first failure's calls returned from
        (one more sandboxed run of that test); `bash` with the test command shows everything."""
        head, _, output = run.text.partition("\n")
        returns = {}
        if not run.ok and (cmd := trace_command(output, self.test_cmd, self.root)) is not None:
            returns = parse_returns(self.runner.run(cmd, timeout=min(self.timeout, 30.0)).output)
        text = f"{head}\n{compact(output, self.test_cmd, self.root, returns)}"
        self.reported = list(dict.fromkeys(_REPORTED.findall(text)))
        return text

    def _test(self, action: Action) -> Observation:
        run = self.run_tests()
        return Observation(self.report(run), run.ok, run.exit_code, run.limit)

    def _submit(self, action: Action) -> Observation:
        return Observation("submitted", True)

    def _resolve(self, rel: str) -> Path:
        # Follow symlinks before checking: a link in the repo must not reach outside the workspace.
        path = (self.root / rel.lstrip("/")).resolve() if not rel.startswith(str(self.root)) else Path(rel).resolve()
        if path != self.root and self.root not in path.parents:
            raise PermissionError(f"{rel}: outside the workspace")
        return path

    def _load(self, rel: str) -> tuple[Path, str, str]:
        """(path, text, the name it goes by) of a regular file, opened without blocking (a FIFO must not hang
        the agent) and size-capped. A name that is not a file but points at one file (`date.py` for
        `isodate/isodates.py`, the one the traceback names) opens that file under its real name."""
        path = self._resolve(rel)
        if not path.exists() and (found := self.locate(rel)) is not None:
            path, rel = self._resolve(found), found
        try:
            data = read_regular(path, FILE_LIMIT)
        except FileRefused as exc:
            raise FileRefused(str(exc).replace(str(path), rel, 1)) from None
        return path, data.decode("utf-8", errors="replace"), rel

    def locate(self, rel: str) -> str | None:
        """The one workspace file a missing name most likely means, or None. A small model shortens paths
        (`html5.py` for `webcolors/_html5.py`) or names the module after its test file (`date.py` from
        `test_date.py`); an error alone it answers by sending the same action again. Candidates: files of
        the same suffix whose name equals the requested one (or the package it names), then whose stem
        contains it or is contained in it (leading underscores aside); where several match, those the
        latest test report names; where none does, the one file the report names."""
        want = Path(rel)
        stem = want.stem.lstrip("_").lower()
        if not stem or not want.suffix:
            return None
        files = []
        for top, dirs, names in os.walk(self.root):  # links not followed; hidden and cache folders skipped
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in ("__pycache__", "node_modules"))
            here = Path(top).relative_to(self.root)
            files += [(here / n).as_posix() for n in sorted(names) if n.endswith(want.suffix)]
            if len(files) >= MAX_LISTED:
                break
        tests = is_test_file(want)
        package = f"{want.stem}/__init__{want.suffix}"  # the module `inflection` may be inflection/__init__.py
        for matches in ([f for f in files if Path(f).name == want.name or f == package or f.endswith("/" + package)],
                        [f for f in files if is_test_file(Path(f)) == tests
                         and ((s := Path(f).stem.lstrip("_").lower()) and (stem in s or s in stem))]):
            if len(matches) > 1:
                matches = [f for f in self.reported if f in matches] or matches
            if len(matches) == 1:
                return matches[0]
            if matches:
                return None
        # no name matches at all (`bugs.py` from tests/test_bugs.py): the one source file the report names
        sources = [f for f in self.reported if f in files and is_test_file(Path(f)) == tests]
        return sources[0] if len(sources) == 1 else None

    def _read(self, action: Action) -> Observation:
        spec, start, end = action.arg, 1, None
        if ":" in spec and spec.rsplit(":", 1)[1].replace("-", "").isdigit():
            spec, rng = spec.rsplit(":", 1)
            lo, _, hi = rng.partition("-")
            start, end = max(int(lo or 1), 1), int(hi) if hi else None
            end = end if end is None or end >= start else None  # `102-21`: the window from 102, not nothing
        try:
            _, text, name = self._load(spec)
        except (OSError, FileRefused) as exc:
            return Observation(f"cannot read {spec}: {exc.strerror if getattr(exc, 'strerror', None) else exc}", False)
        note, spec = (f"({spec} is not a file: this is {name})\n" if name != spec else ""), name
        lines = text.splitlines()
        end = min(end or len(lines), start + READ_WINDOW - 1, len(lines))
        body = "\n".join(f"{i:4d} | {line}" for i, line in enumerate(lines[start - 1:end], start))
        more = f"\n... ({len(lines) - end} more lines; read {spec}:{end + 1})" if end < len(lines) else ""
        return Observation(f"{note}{spec} (lines {start}-{end} of {len(lines)})\n{body}{more}", True)

    def _edited(self, action: Action) -> tuple[Path, str, str | Observation, str]:
        """(file, its text, the text the edit would leave or why it cannot be made, the file's name); writes
        nothing."""
        try:
            path, text, name = self._load(action.arg)
        except (OSError, FileRefused) as exc:
            why = exc.strerror if getattr(exc, "strerror", None) else exc
            return Path(action.arg), "", Observation(f"cannot edit {action.arg}: {why}", False), action.arg
        new = self._replace_lines(text, action) if action.lines else self._replace_text(text, action)
        return path, text, new, name

    def changes_nothing(self, action: Action) -> bool:
        """An edit that would leave its file as it is (a refuted edit sent again, a line copied unchanged)."""
        if action.kind != "edit":
            return False
        _, text, new, _ = self._edited(action)
        return new == text

    def _edit(self, action: Action) -> Observation:
        path, text, new, name = self._edited(action)
        note = f" ({action.arg} is not a file: this is {name})" if name != action.arg else ""
        if isinstance(new, Observation):
            return Observation(new.text + note, False) if note else new
        if new == text:  # e.g. a refuted edit sent again: say so, or a small model takes it for progress
            where = f"lines {action.lines[0]}-{action.lines[1]}" if action.lines else "the REPLACE text"
            return Observation(f"no change: {where} of {name} already read so; the file is unchanged{note}", False)
        if path.suffix == ".py":
            try:
                ast.parse(new, filename=name)
            except SyntaxError as exc:
                # A small model often drops a line's indentation when it retypes it (`    return x` for a
                # method's `        return x`). Where the edit as sent cannot parse, the same text moved to the
                # indentation of the first line it replaces is made instead, if that parses, and said so.
                moved = _reindented(text, action) if action.lines else None
                if moved is None or not _parses(moved, name):
                    return Observation(f"edit refused: {name} would not parse (line {exc.lineno}: {exc.msg}); "
                                       f"the file is unchanged{note}", False)
                path.write_text(moved, encoding="utf-8")
                return Observation(f"edited {name} (re-indented to line {action.lines[0]}'s indentation){note}",
                                   True)
        path.write_text(new, encoding="utf-8")
        return Observation(f"edited {name}{note}", True)

    def _replace_text(self, text: str, action: Action) -> str | Observation:
        count = text.count(action.search) if action.search else 0
        if count == 0:
            return Observation(f"edit failed: the SEARCH text was not found in {action.arg} (copy it exactly, "
                               "including indentation; `read` the file first)", False)
        if count > 1:
            return Observation(f"edit failed: the SEARCH text occurs {count} times in {action.arg}; "
                               "include more surrounding lines so it is unique", False)
        return text.replace(action.search, action.replace, 1)

    def _replace_lines(self, text: str, action: Action) -> str | Observation:
        lines = text.splitlines(keepends=True)
        start, end = action.lines
        if end < start:
            return Observation(f"edit failed: line range {start}-{end} ends before it starts", False)
        if end > len(lines):
            return Observation(f"edit failed: {action.arg} has {len(lines)} lines, not {end}; `read` it first", False)
        new = [line + "\n" for line in action.replace.split("\n")] if action.replace else []
        return "".join(lines[:start - 1] + new + lines[end:])


def _indent(line: str) -> str:
    return line[:len(line) - len(line.lstrip())]


def _reindented(text: str, action: Action) -> str | None:
    """The file with a line-range edit's text shifted as a block so that its first line has the indentation
    of the first line it replaces; None where that cannot be said (a blank or tab-indented line, a block
    that would have to lose indentation it does not have)."""
    lines = text.splitlines(keepends=True)
    start, end = action.lines or (0, 0)
    body = action.replace.split("\n")
    first = next((l for l in body if l.strip()), None)
    if first is None or not 1 <= start <= len(lines) or not lines[start - 1].strip():
        return None
    want, have = _indent(lines[start - 1]), _indent(first)
    if want == have or "\t" in want + have:
        return None
    shift = len(want) - len(have)
    if any(l.strip() and len(_indent(l)) + shift < 0 for l in body):
        return None
    body = [(" " * shift + l if shift > 0 else l[-shift:]) if l.strip() else l for l in body]
    return "".join(lines[:start - 1] + [l + "\n" for l in body] + lines[end:])


def _parses(text: str, name: str) -> bool:
    try:
        ast.parse(text, filename=name)
    except SyntaxError:
        return False
    return True
