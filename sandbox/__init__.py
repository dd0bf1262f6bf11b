"""Isolated command execution for the agent: workspace copies, bubblewrap,
resource limits and capped output. Depends on the stdlib and git only (and,
when run as root, util-linux's setpriv)."""

from sandbox.bwrap import bwrap_works, find_bwrap
from sandbox.errors import (
    DiffError,
    InterpreterError,
    PatchConflict,
    PatchRefused,
    SandboxError,
    SandboxUnavailable,
    SourceNotADirectory,
    SourceNotFound,
    SourceNotReadable,
    WorkspaceError,
)
from sandbox.disk import DiskUsage, check_disk_budget
from sandbox.files import FileRefused, read_regular
from sandbox.limits import Limits
from sandbox.output import cap_text
from sandbox.runner import CommandResult, Sandbox
from sandbox.testcmd import detect_test_command
from sandbox.workspace import Workspace

__all__ = [
    "CommandResult",
    "DiffError",
    "DiskUsage",
    "FileRefused",
    "InterpreterError",
    "Limits",
    "PatchConflict",
    "PatchRefused",
    "Sandbox",
    "SandboxError",
    "SandboxUnavailable",
    "SourceNotADirectory",
    "SourceNotFound",
    "SourceNotReadable",
    "Workspace",
    "WorkspaceError",
    "bwrap_works",
    "cap_text",
    "check_disk_budget",
    "detect_test_command",
    "find_bwrap",
    "read_regular",
]
