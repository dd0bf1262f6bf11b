"""What each action does: shell and tests in the sandbox, read and edit on the workspace files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from agent.runtime.actions import Action

READ_LIMIT_LINES = 200


class CommandRunner(Protocol):
    """The part of sandbox.Sandbox the agent uses."""

    def run(self, command: str, timeout: float): ...


@dataclass(frozen=True)
class Observation:
    text: str
    ok: bool
    exit_code: int | None = None


class Tools:
    def __init__(self, workspace: Path, runner: CommandRunner, test_cmd: str, timeout: float = 60.0) -> None:
        self.root = workspace.resolve()
        self.runner = runner
        self.test_cmd = test_cmd
        self.timeout = timeout

    def execute(self, action: Action) -> Observation:
        handler = getattr(self, f"_{action.kind}")
        return handler(action)

    def run_tests(self) -> Observation:
        return self._shell(self.test_cmd)

    def _shell(self, command: str) -> Observation:
        result = self.runner.run(command, timeout=self.timeout)
        head = f"exit code {result.exit_code}" + (" (timed out)" if result.timed_out else "")
        return Observation(f"{head}\n{result.output}", result.exit_code == 0, result.exit_code)

    def _bash(self, action: Action) -> Observation:
        return self._shell(action.arg)

    def _test(self, action: Action) -> Observation:
        return self.run_tests()

    def _submit(self, action: Action) -> Observation:
        return Observation("submitted", True)

    def _resolve(self, rel: str) -> Path:
        # Follow symlinks before checking: a link in the repo must not reach outside the workspace.
        path = (self.root / rel.lstrip("/")).resolve() if not rel.startswith(str(self.root)) else Path(rel).resolve()
        if path != self.root and self.root not in path.parents:
            raise PermissionError(f"{rel}: outside the workspace")
        return path

    def _read(self, action: Action) -> Observation:
        spec, start, end = action.arg, 1, None
        if ":" in spec and spec.rsplit(":", 1)[1].replace("-", "").isdigit():
            spec, rng = spec.rsplit(":", 1)
            lo, _, hi = rng.partition("-")
            start, end = int(lo or 1), int(hi) if hi else None
        try:
            path = self._resolve(spec)
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        except (OSError, PermissionError) as exc:
            return Observation(f"cannot read {spec}: {exc.strerror if isinstance(exc, OSError) and exc.strerror else exc}", False)
        end = min(end or len(lines), start + READ_LIMIT_LINES - 1)
        body = "\n".join(f"{i:4d} | {line}" for i, line in enumerate(lines[start - 1:end], start))
        more = f"\n... ({len(lines) - end} more lines; read {spec}:{end + 1}-)" if end < len(lines) else ""
        return Observation(f"{spec} (lines {start}-{end} of {len(lines)})\n{body}{more}", True)

    def _edit(self, action: Action) -> Observation:
        try:
            path = self._resolve(action.arg)
            text = path.read_text(encoding="utf-8")
        except (OSError, PermissionError) as exc:
            return Observation(f"cannot edit {action.arg}: {exc}", False)
        count = text.count(action.search) if action.search else 0
        if count == 0:
            return Observation(f"edit failed: the SEARCH text was not found in {action.arg} (copy it exactly, "
                               "including indentation; `read` the file first)", False)
        if count > 1:
            return Observation(f"edit failed: the SEARCH text occurs {count} times in {action.arg}; "
                               "include more surrounding lines so it is unique", False)
        path.write_text(text.replace(action.search, action.replace, 1), encoding="utf-8")
        return Observation(f"edited {action.arg}", True)
