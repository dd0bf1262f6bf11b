"""Which folders a Python interpreter needs, so only those are made visible."""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
from dataclasses import dataclass

from sandbox.errors import InterpreterError

# Asked of the interpreter itself; -I keeps user site-packages and PYTHON*
# variables out, as they will be inside the sandbox.
_PROBE = (
    "import json, site, sys; print(json.dumps({"
    "'executable': sys.executable, 'prefix': sys.prefix, 'base_prefix': sys.base_prefix, "
    "'exec_prefix': sys.exec_prefix, 'base_exec_prefix': sys.base_exec_prefix, "
    "'site_packages': list(getattr(site, 'getsitepackages', lambda: [])()), "
    "'version': '%d.%d.%d' % sys.version_info[:3]}))"
)


@dataclass(frozen=True)
class PythonInstall:
    """Facts about one interpreter, as reported by the interpreter."""

    executable: str  # as named (not resolved: a venv's bin/python must stay one)
    real_executable: str
    prefix: str
    base_prefix: str
    exec_prefix: str
    base_exec_prefix: str
    site_packages: tuple[str, ...]
    version: str

    @property
    def is_venv(self) -> bool:
        return self.prefix != self.base_prefix

    @property
    def bin_dir(self) -> str:
        return os.path.dirname(self.executable)

    def mount_paths(self, covered: tuple[str, ...] = ()) -> list[str]:
        """Folders to bind read-only: prefixes, site-packages, executable dirs.

        Paths inside ``covered`` (already-bound system folders) or inside
        another chosen path are dropped, so each tree is bound once.
        """
        candidates = [
            self.prefix, self.exec_prefix, self.base_prefix, self.base_exec_prefix,
            *self.site_packages, os.path.dirname(self.real_executable), self.bin_dir,
        ]
        paths = sorted({os.path.normpath(p) for p in candidates if p and os.path.isdir(p)}, key=lambda p: (len(p), p))
        chosen: list[str] = []
        for path in paths:
            real = os.path.realpath(path)
            if any(_within(path, c) or _within(real, c) for c in (*covered, *chosen)):
                continue
            chosen.append(path)
        return chosen


def _within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def resolve_executable(python: str) -> str:
    """Absolute path of ``python`` (a path or a name on PATH); symlinks kept."""
    found = python if os.sep in python else shutil.which(python)
    if not found or not os.path.isfile(found) or not os.access(found, os.X_OK):
        raise InterpreterError(f"Python interpreter not found or not executable: {python}")
    return os.path.abspath(found)


@functools.lru_cache(maxsize=16)
def probe_python(python: str) -> PythonInstall:
    """Run the interpreter once on the host to learn its installation layout."""
    exe = resolve_executable(python)
    try:
        proc = subprocess.run(
            [exe, "-I", "-c", _PROBE], capture_output=True, text=True, timeout=60,
            stdin=subprocess.DEVNULL, cwd="/",
        )
        info = json.loads(proc.stdout)
    except (OSError, subprocess.TimeoutExpired, json.JSONDecodeError) as exc:
        raise InterpreterError(f"cannot query Python interpreter {exe}: {exc}") from exc
    return PythonInstall(
        executable=exe,
        real_executable=os.path.realpath(exe),
        prefix=info["prefix"],
        base_prefix=info["base_prefix"],
        exec_prefix=info["exec_prefix"],
        base_exec_prefix=info["base_exec_prefix"],
        site_packages=tuple(info["site_packages"]),
        version=info["version"],
    )
