"""Isolated command execution for the agent: workspace copies, bubblewrap,
resource limits and capped output. Depends on the stdlib and git only."""

from sandbox.bwrap import bwrap_works, find_bwrap
from sandbox.errors import (
    DiffError,
    InterpreterError,
    PatchConflict,
    SandboxError,
    SandboxUnavailable,
    SourceNotADirectory,
    SourceNotFound,
    SourceNotReadable,
    WorkspaceError,
)
from sandbox.limits import Limits
from sandbox.runner import CommandResult, Sandbox
from sandbox.testcmd import detect_test_command
from sandbox.workspace import Workspace

__all__ = [
    "CommandResult",
    "DiffError",
    "InterpreterError",
    "Limits",
    "PatchConflict",
    "Sandbox",
    "SandboxError",
    "SandboxUnavailable",
    "SourceNotADirectory",
    "SourceNotFound",
    "SourceNotReadable",
    "Workspace",
    "WorkspaceError",
    "bwrap_works",
    "detect_test_command",
    "find_bwrap",
]
