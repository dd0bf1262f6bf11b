"""Exceptions raised by the sandbox package (all derive from SandboxError)."""

from __future__ import annotations


class SandboxError(RuntimeError):
    """Base class: anything the sandbox refuses or fails to do."""


class WorkspaceError(SandboxError):
    """Creating, diffing or applying a workspace failed."""


class SourceNotFound(WorkspaceError):
    """The folder to copy does not exist."""


class SourceNotADirectory(WorkspaceError):
    """The path to copy exists but is not a folder."""


class SourceNotReadable(WorkspaceError):
    """The folder (or a file in it) cannot be read by this process."""


class DiffError(WorkspaceError):
    """The workspace's changes could not be computed; the message is one line."""


class PatchConflict(WorkspaceError):
    """The workspace patch does not apply cleanly; the target was left unchanged."""


class PatchRefused(WorkspaceError):
    """The patch would create or change a symlink pointing outside the target; nothing was changed."""


class SandboxUnavailable(SandboxError):
    """bubblewrap cannot run here and unconfined execution was not allowed."""


class InterpreterError(SandboxError):
    """The Python interpreter meant for the sandbox cannot be used."""
