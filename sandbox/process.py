"""Process plumbing for one sandboxed command: exit detection without
reaping, group kill, namespace-teardown wait, and the output pump."""

from __future__ import annotations

import json
import os
import select
import selectors
import signal
import subprocess
import time
from collections.abc import Callable

from sandbox.output import OutputCap

_CHUNK = 64 * 1024
_POLL_S = 0.1
# After the command exits, how long output from leftovers is still read.
_DRAIN_S = 1.0


def _has_exited(pid: int) -> bool:
    """True once ``pid`` is a zombie; WNOWAIT leaves it unreaped so its
    process-group id cannot be reused before we kill the group."""
    try:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True
    return info is not None


def _open_pidfd(pid: int) -> int | None:
    """A descriptor that becomes readable when ``pid`` exits (Linux >= 5.3)."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


class NamespaceInit:
    """Learns the PID-namespace init's host pid from bwrap's --info-fd.

    A pidfd on that init becomes readable only after the kernel has killed and
    reaped every other process in the namespace, so waiting on it proves that
    nothing the command started is still running.
    """

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        self._buf = b""
        self._pidfd: int | None = None
        self.done = False

    def close_write_end(self) -> None:
        if self.write_fd >= 0:
            os.close(self.write_fd)
            self.write_fd = -1

    def on_readable(self) -> None:
        try:
            chunk = os.read(self.read_fd, 4096)
        except BlockingIOError:
            return
        self._buf += chunk
        try:
            pid = int(json.loads(self._buf)["child-pid"])
        except (ValueError, KeyError, TypeError):
            self.done = not chunk  # EOF without usable JSON: nothing to watch
            return
        self.done = True
        try:
            self._pidfd = os.pidfd_open(pid)
        except (AttributeError, OSError):
            self._pidfd = None  # already gone (or no pidfd support)

    def wait_gone(self, timeout: float) -> None:
        if not self.done:
            self.on_readable()  # the JSON is written before the command starts
        if self._pidfd is not None:
            select.select([self._pidfd], [], [], timeout)

    def close(self) -> None:
        self.close_write_end()
        for fd in (self.read_fd, self._pidfd):
            if fd is not None and fd >= 0:
                os.close(fd)
        self.read_fd, self._pidfd = -1, None


def kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def pump(
    proc: subprocess.Popen[bytes],
    cap: OutputCap,
    deadline: float,
    kill: Callable[[], None],
    init: NamespaceInit | None = None,
) -> bool:
    """Capture output until the command has exited and its pipe is drained.

    Returns True if the deadline came first (``kill`` has then been called).
    Once the command exits, ``kill`` removes whatever it left running; output
    is then read for at most _DRAIN_S more, in case something that escaped
    (only possible unconfined) still holds the pipe open.
    """
    assert proc.stdout is not None
    out = proc.stdout.fileno()
    pidfd = _open_pidfd(proc.pid)
    eof = exited = False
    drain_until: float | None = None
    with selectors.DefaultSelector() as sel:
        sel.register(out, selectors.EVENT_READ)
        if pidfd is not None:
            sel.register(pidfd, selectors.EVENT_READ)
        if init is not None:
            sel.register(init.read_fd, selectors.EVENT_READ)
        try:
            while not (eof and exited):
                now = time.monotonic()
                if now >= deadline:
                    kill()
                    return True
                if drain_until is not None and now >= drain_until:
                    break
                wait = deadline - now if drain_until is None else min(deadline, drain_until) - now
                if pidfd is None and not exited:
                    wait = min(wait, 0.01 if eof else _POLL_S)  # no pidfd: poll for exit
                for key, _ in sel.select(wait):
                    if init is not None and key.fd == init.read_fd:
                        init.on_readable()
                        if init.done:
                            sel.unregister(key.fd)
                    elif key.fd == out:
                        chunk = os.read(out, _CHUNK)
                        if chunk:
                            cap.feed(chunk)
                        else:
                            eof = True
                            sel.unregister(out)
                    else:
                        exited = True
                        sel.unregister(key.fd)
                if pidfd is None and not exited:
                    exited = _has_exited(proc.pid)
                if exited and not eof and drain_until is None:
                    kill()
                    drain_until = time.monotonic() + _DRAIN_S
        finally:
            if pidfd is not None:
                os.close(pidfd)
    return False
