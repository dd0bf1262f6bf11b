"""Removal of temporary folders on every exit path.

Three layers, because no single one covers everything:
- callers use context managers (normal exit, exceptions, KeyboardInterrupt);
- a registry emptied by ``atexit`` (objects that were never closed);
- SIGTERM/SIGHUP handlers (those signals kill Python without running atexit).
kill -9 cannot be caught, so folders are named ``<prefix><pid>-<random>`` and
``sweep_stale`` removes those whose owning process is gone.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import stat
import sys
import tempfile
import threading
from pathlib import Path
from types import FrameType

_lock = threading.Lock()
_live: set[Path] = set()
_atexit_installed = False
_signals_installed = False
_HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def temp_root() -> Path:
    """Where sandbox folders are created ($TMPDIR or the system default)."""
    return Path(tempfile.gettempdir())


def make_owned_dir(prefix: str, root: Path | None = None) -> Path:
    """Create ``root/<prefix><pid>-<random>`` and register it for cleanup."""
    install_handlers()
    base = root if root is not None else temp_root()
    base.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=base))
    register(path)
    return path


def register(path: Path) -> None:
    with _lock:
        _live.add(path)


def unregister(path: Path) -> None:
    with _lock:
        _live.discard(path)


def remove_tree(path: Path) -> None:
    """rmtree that also copes with read-only folders left by sandboxed code."""

    def fix_and_retry(func, p, _exc) -> None:  # type: ignore[no-untyped-def]
        parent = os.path.dirname(p)
        try:
            os.chmod(parent, stat.S_IRWXU)
            if os.path.isdir(p) and not os.path.islink(p):
                os.chmod(p, stat.S_IRWXU)
            func(p)
        except FileNotFoundError:
            pass

    if not os.path.lexists(path):
        return
    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=fix_and_retry)
    else:  # pragma: no cover - depends on the running Python
        shutil.rmtree(path, onerror=fix_and_retry)


def discard(path: Path) -> None:
    """Remove a registered folder now; never raises (used on exit paths)."""
    try:
        remove_tree(path)
    except OSError:
        pass
    unregister(path)


def cleanup_all() -> None:
    with _lock:
        paths = list(_live)
    for path in paths:
        discard(path)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def owner_pid(name: str, prefix: str) -> int | None:
    """The pid encoded in a folder name made by ``make_owned_dir``."""
    if not name.startswith(prefix):
        return None
    head = name[len(prefix):].split("-", 1)[0]
    return int(head) if head.isdigit() else None


def sweep_stale(prefix: str, root: Path | None = None) -> list[Path]:
    """Remove folders left behind by processes that died without cleaning up."""
    base = root if root is not None else temp_root()
    removed: list[Path] = []
    try:
        entries = list(os.scandir(base))
    except OSError:
        return removed
    for entry in entries:
        pid = owner_pid(entry.name, prefix)
        if pid is None or pid == os.getpid() or _pid_alive(pid):
            continue
        try:
            if entry.stat(follow_symlinks=False).st_uid != os.getuid():
                continue
            remove_tree(Path(entry.path))
            removed.append(Path(entry.path))
        except OSError:
            continue
    return removed


def _on_signal(signum: int, _frame: FrameType | None) -> None:
    cleanup_all()
    # Die from the same signal so the exit status still tells what happened.
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def install_handlers() -> None:
    """atexit always; signal handlers only where nobody installed their own."""
    global _atexit_installed, _signals_installed
    if not _atexit_installed:
        _atexit_installed = True
        atexit.register(cleanup_all)
    # Handlers can only be set from the main thread; retry on a later call.
    if _signals_installed or threading.current_thread() is not threading.main_thread():
        return
    _signals_installed = True
    for signum in _HANDLED_SIGNALS:
        try:
            if signal.getsignal(signum) == signal.SIG_DFL:
                signal.signal(signum, _on_signal)
        except (ValueError, OSError):  # pragma: no cover - exotic embeddings
            pass
