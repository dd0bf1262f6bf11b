"""A per-run writable copy of the user's repository.

Layout of one workspace folder ``$TMPDIR/parametric-skills-ws-<pid>-<rand>/``:

- ``repo/``: the copy the sandbox sees (bound read-write). For a git source it
  is a full clone (``--no-hardlinks``: a hard-linked object file could be
  rewritten from inside the sandbox, corrupting the user's store) with the
  user's uncommitted and untracked files copied over and committed as the
  starting point, so ``git diff`` inside shows only the agent's own changes.
- ``shadow.git`` + ``shadow.index``: a host-only git dir used to compute the
  patch. Sandboxed code can rewrite ``repo/.git/config`` (filters, fsmonitor,
  external diff...); running host git with that config would execute its
  programs unconfined, so host-side git never reads ``repo/.git``'s config.
  Its objects are copies of the clone's (not hard links: those share the
  inode, which sandboxed code could rewrite), so the starting point survives
  ``rm -rf .git``, ``git gc`` or overwritten objects inside the sandbox.

The user's repository is only ever read (clone, diff-index, ls-files), with
optional locks disabled, so its ``.git`` is unchanged even if we are killed.

Callers: once sandboxed code has run, do not run host git with
``repo/.git`` (``git -C ws.path ...``); use ``diff()`` / ``apply_to()``.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path
from types import TracebackType

from sandbox import cleanup
from sandbox.errors import (
    DiffError,
    PatchConflict,
    PatchRefused,
    SourceNotADirectory,
    SourceNotFound,
    SourceNotReadable,
    WorkspaceError,
)
from sandbox.gitcmd import IDENTITY, git_out, run_git, split_z

WS_PREFIX = "parametric-skills-ws-"
START_MESSAGE = "parametric-skills: starting point (HEAD + uncommitted changes)"

# Not copied from non-git folders: VCS data, environments, caches. Folders
# holding a pyvenv.cfg (virtualenvs under any name) are skipped as well.
SKIP_NAMES = frozenset(
    {".git", ".hg", ".svn", ".venv", "__pycache__", "node_modules", ".tox", ".nox",
     ".mypy_cache", ".pytest_cache", ".ruff_cache"}
)


def check_source(source: str | os.PathLike[str]) -> Path:
    """Validate the folder to copy; raise a specific WorkspaceError if unusable."""
    path = Path(source).expanduser()
    if not path.exists():
        raise SourceNotFound(f"workspace source does not exist: {path}")
    if not path.is_dir():
        raise SourceNotADirectory(f"workspace source is not a directory: {path}")
    if not os.access(path, os.R_OK | os.X_OK):
        raise SourceNotReadable(f"workspace source is not readable: {path}")
    return path.resolve()


class Workspace:
    """A writable copy of a repository; use as a context manager."""

    def __init__(self, *, source: Path, root: Path, base_commit: str, from_git: bool) -> None:
        self.source = source
        self.root = root
        self.base_commit = base_commit
        self.from_git = from_git
        self.closed = False

    @property
    def path(self) -> Path:
        """The working tree: what the sandbox binds read-write."""
        return self.root / "repo"

    # -- creation ---------------------------------------------------------

    @classmethod
    def create(cls, source: str | os.PathLike[str], *, temp_root: Path | None = None) -> Workspace:
        src = check_source(source)
        cleanup.sweep_stale(WS_PREFIX, temp_root)
        root = cleanup.make_owned_dir(WS_PREFIX, temp_root)
        try:
            dst = root / "repo"
            from_git = (src / ".git").exists()
            if from_git:
                _clone_with_changes(src, dst)
            else:
                _copy_tree(src, dst)
                _init_repo(dst)
            base = _commit_start(dst)
            _make_shadow(root, dst)
            return cls(source=src, root=root, base_commit=base, from_git=from_git)
        except BaseException:
            # Includes KeyboardInterrupt halfway through a large copy.
            cleanup.discard(root)
            raise

    # -- results ----------------------------------------------------------

    def diff_bytes(self) -> bytes:
        """The patch from the starting point to the current tree (git, --binary).

        Raises DiffError, with a one-line message, whatever the sandbox left.
        """
        self._check_open()
        env = self._shadow_env()
        try:
            run_git(["add", "-A", "--", "."], cwd=self.path, env=env)
            return run_git(
                ["diff", "--cached", "--binary", "--full-index", "--no-color", "--no-ext-diff",
                 "--no-textconv", "--src-prefix=a/", "--dst-prefix=b/", "-M", self.base_commit, "--"],
                cwd=self.path,
                env=env,
            ).stdout
        except (WorkspaceError, OSError) as exc:
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
            detail = " / ".join(lines[:2])[:300] or type(exc).__name__
            raise DiffError(f"could not compute the workspace's changes: {detail}") from None

    def diff(self) -> str:
        """``diff_bytes`` as text; undecodable bytes survive as surrogate escapes."""
        return self.diff_bytes().decode("utf-8", errors="surrogateescape")

    def apply_to(self, target: str | os.PathLike[str] | None = None) -> None:
        """Apply the patch to ``target`` (default: the source) or change nothing.

        ``git apply --check`` runs first; on any conflict PatchConflict is raised
        and the target is untouched. Only the working tree is changed (no index).
        A symlink the patch creates or changes must point inside the target,
        else PatchRefused (git apply itself never writes through a symlink).
        """
        dest = check_source(target if target is not None else self.source)
        patch = self.diff_bytes()
        if not patch.strip():
            return
        for rel, link in self._changed_symlinks():
            if _points_outside(dest, rel, link):
                raise PatchRefused(
                    f"refusing to apply: symlink {rel} would point outside {dest} ({link}); nothing was changed"
                )
        # Stop git from finding an enclosing repository: in a subfolder of one,
        # patch paths would be taken relative to that repository's top.
        env = {"GIT_CEILING_DIRECTORIES": str(dest.parent)}
        with tempfile.NamedTemporaryFile(prefix="parametric-skills-", suffix=".patch") as fh:
            fh.write(patch)
            fh.flush()
            args = ["apply", "--binary", "--whitespace=nowarn"]
            probe = run_git([*args, "--check", fh.name], cwd=dest, env=env, check=False)
            if probe.returncode != 0:
                detail = probe.stderr.decode(errors="replace").strip()
                raise PatchConflict(f"workspace changes do not apply to {dest}; nothing was changed:\n{detail}")
            run_git([*args, fh.name], cwd=dest, env=env)

    # -- lifetime -----------------------------------------------------------

    def cleanup(self) -> None:
        if not self.closed:
            self.closed = True
            cleanup.discard(self.root)

    def __enter__(self) -> Workspace:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()

    def __repr__(self) -> str:
        return f"Workspace(source={str(self.source)!r}, path={str(self.path)!r}, closed={self.closed})"

    def _check_open(self) -> None:
        if self.closed:
            raise WorkspaceError(f"workspace {self.root} was already cleaned up")

    def _changed_symlinks(self) -> list[tuple[str, str]]:
        """(path, link target) of each symlink the patch creates or changes (index as left by diff_bytes)."""
        env = self._shadow_env()
        raw = run_git(["diff", "--cached", "--raw", "-z", "--no-abbrev", "--no-renames", self.base_commit, "--"],
                      cwd=self.path, env=env).stdout
        fields = raw.split(b"\0")
        found = []
        for head, path in zip(fields[0::2], fields[1::2]):
            parts = head.decode(errors="replace").lstrip(":").split()
            if len(parts) >= 4 and parts[1] == "120000":
                link = run_git(["cat-file", "blob", parts[3]], cwd=self.path, env=env).stdout
                found.append((os.fsdecode(path), os.fsdecode(link)))
        return found

    def _shadow_env(self) -> dict[str, str]:
        return {
            "GIT_DIR": str(self.root / "shadow.git"),
            "GIT_WORK_TREE": str(self.path),
            "GIT_INDEX_FILE": str(self.root / "shadow.index"),
        }


def _points_outside(dest: Path, rel: str, link: str) -> bool:
    """Whether a link at ``dest/rel`` to ``link`` leaves ``dest``: absolute,
    climbing out by '..', or through a link already in ``dest`` that does."""
    if os.path.isabs(link):
        return True
    lexical = os.path.normpath(os.path.join(os.path.dirname(rel), link))
    if lexical == ".." or lexical.startswith("../"):
        return True
    root = os.path.realpath(dest)
    resolved = os.path.realpath(os.path.join(root, lexical))
    return resolved != root and not resolved.startswith(root + os.sep)


# -- helpers (host side, before any sandboxed code has run) -----------------


def _clone_with_changes(src: Path, dst: Path) -> None:
    # A broken .git must fail here, not send git up to an enclosing repository.
    env = {"GIT_CEILING_DIRECTORIES": str(src.parent)}
    head = run_git(["rev-parse", "--verify", "-q", "HEAD^{commit}"], cwd=src, env=env, check=False)
    if head.returncode != 0:
        # No commit yet: copy what git would track (tracked + untracked, not ignored).
        listing = run_git(["ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=src, env=env)
        dst.mkdir()
        _copy_paths(src, dst, split_z(listing.stdout))
        _init_repo(dst)
        return
    sha = head.stdout.decode().strip()
    run_git(["clone", "--no-hardlinks", "--no-checkout", "--quiet", "--", str(src), str(dst)], cwd=dst.parent)
    branch = run_git(["symbolic-ref", "--quiet", "--short", "HEAD"], cwd=src, env=env, check=False)
    name = branch.stdout.decode().strip()
    checkout = ["checkout", "-q", "-B", name, sha] if branch.returncode == 0 and name else ["checkout", "-q", "--detach", sha]
    run_git(checkout, cwd=dst)
    # Plumbing only: diff-index never rewrites the user's index (stat-dirty
    # files may be listed although unchanged; copying them is harmless).
    changed = run_git(
        ["diff-index", "-z", "--name-only", "--no-renames", "--ignore-submodules=all", "HEAD", "--"],
        cwd=src,
        env=env,
    )
    untracked = run_git(["ls-files", "-z", "--others", "--exclude-standard"], cwd=src, env=env)
    _copy_paths(src, dst, split_z(changed.stdout) + split_z(untracked.stdout))


def _copy_paths(src: Path, dst: Path, rel_paths: list[str]) -> None:
    """Make each path in dst byte-identical to src (or absent, if gone there)."""
    for rel in dict.fromkeys(rel_paths):
        s, d = src / rel, dst / rel
        if os.path.lexists(d):
            if d.is_dir() and not d.is_symlink():
                shutil.rmtree(d)
            else:
                d.unlink()
        if not os.path.lexists(s):
            continue  # deleted in the user's tree
        mode = os.lstat(s).st_mode
        if stat.S_ISDIR(mode):
            continue  # a submodule or nested repository: not supported
        d.parent.mkdir(parents=True, exist_ok=True)
        try:
            if stat.S_ISLNK(mode):
                os.symlink(os.readlink(s), d)  # copied as a link, never followed
            elif stat.S_ISREG(mode):
                shutil.copy2(s, d)
        except PermissionError as exc:
            raise SourceNotReadable(f"cannot read {s}: {exc}") from exc


def _ignore(folder: str, names: list[str]) -> set[str]:
    skipped = set()
    for name in names:
        full = os.path.join(folder, name)
        try:
            mode = os.lstat(full).st_mode
        except OSError:
            continue
        if name in SKIP_NAMES:
            skipped.add(name)
        elif stat.S_ISDIR(mode) and os.path.exists(os.path.join(full, "pyvenv.cfg")):
            skipped.add(name)
        elif not (stat.S_ISDIR(mode) or stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
            skipped.add(name)  # sockets, FIFOs (copying a FIFO would block), devices
    return skipped


def _copy_tree(src: Path, dst: Path) -> None:
    try:
        shutil.copytree(src, dst, symlinks=True, ignore=_ignore)
    except shutil.Error as exc:
        problems = exc.args[0] if exc.args else []
        shown = "; ".join(f"{p[0]}: {p[2]}" for p in problems[:3]) if isinstance(problems, list) else str(exc)
        raise SourceNotReadable(f"could not copy {src}: {shown}") from exc
    except PermissionError as exc:
        raise SourceNotReadable(f"could not copy {src}: {exc}") from exc


def _init_repo(dst: Path) -> None:
    run_git(["init", "-q"], cwd=dst)


def _commit_start(dst: Path) -> str:
    # HOME is empty inside the sandbox: give commits made there an author.
    run_git(["config", "user.name", IDENTITY["GIT_AUTHOR_NAME"]], cwd=dst)
    run_git(["config", "user.email", IDENTITY["GIT_AUTHOR_EMAIL"]], cwd=dst)
    run_git(["add", "-A", "--", "."], cwd=dst)
    run_git(["commit", "-q", "--allow-empty", "--no-verify", "-m", START_MESSAGE], cwd=dst, env=IDENTITY)
    return git_out(["rev-parse", "HEAD"], cwd=dst)


def _copy_objects(src: Path, dst: Path) -> None:
    """Copy every object file into the shadow store (before any command runs)."""
    for folder, _dirs, files in os.walk(src):
        target = dst / os.path.relpath(folder, src)
        target.mkdir(parents=True, exist_ok=True)
        for name in files:
            if not os.path.lexists(target / name):
                shutil.copyfile(os.path.join(folder, name), target / name)


def _make_shadow(root: Path, dst: Path) -> None:
    shadow = root / "shadow.git"
    run_git(["init", "-q", "--bare", str(shadow)], cwd=root)
    _copy_objects(dst / ".git" / "objects", shadow / "objects")
    index = dst / ".git" / "index"
    env = {"GIT_DIR": str(shadow), "GIT_WORK_TREE": str(dst), "GIT_INDEX_FILE": str(root / "shadow.index")}
    base = git_out(["rev-parse", "HEAD"], cwd=dst)
    if index.exists() and not any(p.name.startswith("sharedindex.") for p in (dst / ".git").iterdir()):
        # The clone's fresh index carries stat data, so the first diff only
        # rehashes files that changed instead of the whole tree.
        shutil.copyfile(index, root / "shadow.index")
    else:
        run_git(["read-tree", base], cwd=dst, env=env)
