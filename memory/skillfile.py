"""Agent Skills folders (agentskills.io): SKILL.md parsed and validated, the folder read whole, written back.

A skill is a folder `name/` holding `SKILL.md` (YAML frontmatter between `---` lines, then a markdown
body) and any bundled files beside it (`scripts/`, `references/`, `assets/`, `LICENSE.txt`, ...).

Validation is the specification's reference validator's: the frontmatter is read as `skills-ref` reads
it (strictyaml: every scalar a string, no flow style, anchors or duplicate keys) and checked by
`skills_ref.validator.validate_metadata`, so a skill is refused exactly when `agentskills validate`
refuses it, with its messages. On top of that, for the store's and the terminal's sake: UTF-8, size caps,
no NUL byte, no control characters in the frontmatter, no symlink followed.

The SKILL.md text is kept verbatim (`SkillDoc.raw`) so an imported skill exports byte for byte.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import stat
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import strictyaml
import yaml
from skills_ref import validator as spec

from memory.errors import SkillFormatError

MAX_NAME = spec.MAX_SKILL_NAME_LENGTH  # 64
MAX_DESCRIPTION = spec.MAX_DESCRIPTION_LENGTH  # 1024
MAX_COMPATIBILITY = spec.MAX_COMPATIBILITY_LENGTH  # 500
# A recipe is a page or two; anything this large is a mistake (or an attack on the encoder).
MAX_SKILL_BYTES = 256 * 1024
# Bundled files live in the database: generous for scripts, references and fonts, not for datasets.
MIB = 1024 * 1024
MAX_FILE_BYTES = 10 * MIB
MAX_BUNDLE_BYTES = 50 * MIB
MAX_BUNDLE_FILES = 1000
# C0 controls but tab, newline and carriage return; DEL; C1 (0x9b is a CSI on
# some terminals). Refused in frontmatter, escaped by escape_controls.
CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def escape_controls(text: str) -> str:
    """``text`` with control characters shown as ``\\xNN``, safe to print on a
    terminal (no ANSI sequence reaches it); tabs and newlines are kept."""
    return CONTROL_RE.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


@dataclass(frozen=True)
class SkillDoc:
    name: str
    description: str
    body: str
    license: str | None = None
    compatibility: str | None = None
    # the spec's string -> string map (a nested value is kept as its JSON text, with a warning)
    metadata: dict[str, str] = field(default_factory=dict)
    # the spec's space-delimited tool list, as written
    allowed_tools: str | None = None
    # the SKILL.md text this was parsed from; render() returns it unchanged while it still says the same
    raw: str | None = field(default=None, compare=False, repr=False)

    @property
    def subtask(self) -> str | None:
        return self.metadata.get("subtask")

    @property
    def content_hash(self) -> str:
        """Hash of what the hypernetwork reads; identical skills share adapters."""
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()

    @property
    def text(self) -> str:
        """The text a model sees for this skill (in context, or through the hypernetwork)."""
        return f"# {self.name}\n\n{self.description}\n\n{self.body.strip()}\n"

    def frontmatter(self) -> dict[str, object]:
        front: dict[str, object] = {"name": self.name, "description": self.description}
        if self.license is not None:
            front["license"] = self.license
        if self.compatibility is not None:
            front["compatibility"] = self.compatibility
        if self.allowed_tools is not None:
            front["allowed-tools"] = self.allowed_tools
        if self.metadata:
            front["metadata"] = dict(self.metadata)
        return front

    def render(self) -> str:
        """The SKILL.md text: the imported text verbatim, else the fields written out as YAML."""
        if self.raw is not None:
            try:
                if parse(self.raw) == self:
                    return self.raw
            except SkillFormatError:
                pass
        head = yaml.safe_dump(self.frontmatter(), sort_keys=False, allow_unicode=True, width=1000)
        return f"---\n{head}---\n{self.body}"


@dataclass(frozen=True)
class Checked:
    """A SKILL.md text read and checked: the document when valid, every error, and the warnings."""

    doc: SkillDoc | None
    name: str | None
    errors: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()


def check_text(text: str, folder_name: str | None = None) -> Checked:
    """Read a SKILL.md text as the reference validator does and check it; never raises."""
    if "\0" in text:
        return Checked(None, None, (f"contains a NUL byte (at character {text.index(chr(0))})",))
    # skills_ref.parser.parse_frontmatter, with its messages: the frontmatter is what lies between the
    # first two '---'; its own str() of metadata values (a nested map became a Python repr) is left out
    if not text.startswith("---"):
        return Checked(None, None, ("SKILL.md must start with YAML frontmatter (---)",))
    parts = text.split("---", 2)
    if len(parts) < 3:
        return Checked(None, None, ("SKILL.md frontmatter not properly closed with ---",))
    raw_front = parts[1]
    close = 3 + len(raw_front)
    line_start = text.rfind("\n", 0, close) + 1
    line_end = text.find("\n", close)
    line_end = len(text) if line_end < 0 else line_end
    first_line = text[: text.find("\n")] if "\n" in text else text
    if first_line.rstrip("\r\t ") != "---" or text[line_start:line_end].rstrip("\r\t ") != "---":
        line = text.count("\n", 0, close) + 1
        return Checked(None, None, (
            f"frontmatter: the '---' on line {line} is not a line of its own; the reference parser ends "
            "the frontmatter at the first '---' after the opening one",))
    body = text[line_end + 1 :]
    bad = CONTROL_RE.search(raw_front)
    if bad:
        line = text.count("\n", 0, 3 + bad.start()) + 1
        return Checked(None, None, (
            f"control character {escape_controls(bad.group())} in the frontmatter (line {line})",))
    try:
        front = strictyaml.load(raw_front).data
    except Exception as exc:  # strictyaml raises YAMLError, and an AttributeError on some characters
        return Checked(None, None, (f"Invalid YAML in frontmatter: {_yaml_problem(exc)}",))
    if not isinstance(front, dict):
        return Checked(None, None, ("SKILL.md frontmatter must be a YAML mapping",))

    name = front.get("name") if isinstance(front.get("name"), str) else None
    errors = spec.validate_metadata(front, Path(folder_name) if folder_name else None)
    if name is not None and len(name.strip()) > MAX_NAME >= len(unicodedata.normalize("NFKC", name.strip())):
        # the reference counts the NFKC form; the store keeps the name as written (a 64-character column)
        errors.append(f"Skill name '{name.strip()}' exceeds {MAX_NAME} character limit "
                      f"({len(name.strip())} chars before NFKC normalization)")
    if errors:
        return Checked(None, name.strip() if name else None, tuple(errors))

    warnings: list[str] = []
    metadata = _string_map(front.get("metadata"), warnings)
    doc = SkillDoc(
        # as skills_ref.read_properties returns them
        name=front["name"].strip(),
        description=front["description"].strip(),
        body=body,
        license=_as_text(front, "license", warnings),
        compatibility=front.get("compatibility"),
        metadata=metadata,
        allowed_tools=_allowed_tools(front.get("allowed-tools"), warnings),
        raw=text,
    )
    return Checked(doc, doc.name, (), tuple(warnings))


def _yaml_problem(exc: Exception) -> str:
    """strictyaml's message in one line: what is wrong and where (line of the SKILL.md)."""
    problem = getattr(exc, "problem", None)
    mark = getattr(exc, "problem_mark", None)
    if problem and mark is not None:
        return f"{problem} (line {mark.line + 1})"
    return " ".join(str(exc).split()) or type(exc).__name__


def _json(value: object) -> str:
    return json.dumps(value, ensure_ascii=False)


def _string_map(value: object, warnings: list[str]) -> dict[str, str]:
    if value is None or value == "":
        return {}
    if not isinstance(value, dict):
        warnings.append("metadata is not a mapping (the spec: a map from string keys to string values); "
                        "not stored as fields, kept in the SKILL.md text")
        return {}
    out: dict[str, str] = {}
    for key, item in value.items():
        if isinstance(item, str):
            out[str(key)] = item
        else:
            kind = "a mapping" if isinstance(item, dict) else "a list"
            warnings.append(f"metadata.{key} is {kind}, not a string (the spec's metadata maps strings to "
                            "strings); stored as JSON text, the SKILL.md kept as written")
            out[str(key)] = _json(item)
    return out


def _as_text(front: dict, key: str, warnings: list[str]) -> str | None:
    value = front.get(key)
    if value is None or isinstance(value, str):
        return value
    warnings.append(f"{key} is not a string; stored as JSON text, the SKILL.md kept as written")
    return _json(value)


def _allowed_tools(value: object, warnings: list[str]) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        warnings.append("allowed-tools is a list (the spec: one space-delimited string); stored joined "
                        "by spaces, the SKILL.md kept as written")
        return " ".join(value)
    warnings.append("allowed-tools is not a string; stored as JSON text, the SKILL.md kept as written")
    return _json(value)


def validate(doc: SkillDoc, folder_name: str | None = None) -> SkillDoc:
    """The reference validator on a document built in code (a written or extracted skill)."""
    front = doc.frontmatter()
    bad = CONTROL_RE.search(f"{doc.name}{doc.description}")
    errors = spec.validate_metadata(front, Path(folder_name) if folder_name else None)
    if bad:
        errors.append(f"control character {escape_controls(bad.group())} in the name or description")
    if errors:
        raise SkillFormatError(f"skill {escape_controls(doc.name)!r}: {'; '.join(errors)}")
    return doc


def parse(text: str, folder_name: str | None = None, where: str = "SKILL.md") -> SkillDoc:
    """Parse and validate one SKILL.md text; every error, joined on one line."""
    checked = check_text(text, folder_name)
    if checked.errors:
        raise SkillFormatError(f"{where}: {'; '.join(checked.errors)}")
    assert checked.doc is not None
    return checked.doc


@dataclass(frozen=True)
class BundledFile:
    """A file of the skill folder besides SKILL.md."""

    path: str  # relative, POSIX separators
    data: bytes = field(repr=False)
    executable: bool = False

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass(frozen=True)
class SkillFolder:
    """A skill folder as read: its SKILL.md, its bundled files, and what stands in the way of importing it."""

    path: Path
    name: str  # the frontmatter's name when it could be read, else the folder's
    doc: SkillDoc | None
    files: tuple[BundledFile, ...] = ()
    errors: tuple[str, ...] = ()  # any error: the skill is refused
    warnings: tuple[str, ...] = ()  # reported; the skill is imported (a skipped symlink, nested metadata)

    @property
    def ok(self) -> bool:
        return self.doc is not None and not self.errors


def _folder_name(folder: Path) -> str:
    return folder.resolve().name if folder.name in ("", ".", "..") else folder.name


def _open_regular(path: Path) -> int:
    """A descriptor on a regular file, never through a symlink and never blocking on a FIFO."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file")
    return fd


def _read_capped(path: Path, cap: int) -> tuple[bytes, int, bool]:
    """(bytes, mode, over the cap): reads at most cap + 1 bytes."""
    fd = _open_regular(path)
    try:
        mode = os.fstat(fd).st_mode
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(cap + 1)
    finally:
        os.close(fd)
    return data, mode, len(data) > cap


def read_skill(folder: Path, files: bool = True) -> SkillFolder:
    """Read and check a skill folder; never raises for what is in it (errors are in the result)."""
    skill_md = folder / "SKILL.md"
    fallback = _folder_name(folder)
    if skill_md.is_symlink():
        return SkillFolder(folder, fallback, None, errors=("SKILL.md is a symlink (symlinks are not followed)",))
    if not skill_md.exists():
        return SkillFolder(folder, fallback, None, errors=("Missing required file: SKILL.md",))
    try:
        data, _, over = _read_capped(skill_md, MAX_SKILL_BYTES)
    except PermissionError:
        return SkillFolder(folder, fallback, None, errors=("SKILL.md: not readable (permission denied)",))
    except OSError as exc:
        return SkillFolder(folder, fallback, None, errors=(f"SKILL.md: cannot read ({exc.strerror or exc})",))
    if over:
        size = skill_md.stat().st_size
        return SkillFolder(folder, fallback, None, errors=(
            f"SKILL.md: {size:,} bytes is over the {MAX_SKILL_BYTES:,}-byte limit",))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return SkillFolder(folder, fallback, None, errors=(f"SKILL.md: not UTF-8 (byte {exc.start})",))
    checked = check_text(text, fallback)
    errors, warnings = list(checked.errors), list(checked.warnings)
    bundle: list[BundledFile] = []
    if files:
        bundle = read_bundle(folder, errors, warnings)
    return SkillFolder(folder, checked.name or fallback, checked.doc if not errors else None,
                       tuple(bundle), tuple(errors), tuple(warnings))


def read_bundle(folder: Path, errors: list[str], warnings: list[str]) -> list[BundledFile]:
    """Every regular file under the folder but SKILL.md, sorted by path; appends to errors and warnings.

    Symlinks (to files or folders) are never followed: they are reported and not stored, so a skill
    cannot carry ~/.ssh into the store. A file over the per-file cap, a folder over the per-skill caps,
    an unreadable file or a name that is not UTF-8 is an error: the skill would be stored incomplete.
    """
    found: list[BundledFile] = []
    total = 0

    def walk(directory: Path, prefix: str) -> None:
        nonlocal total
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except PermissionError:
            errors.append(f"{prefix or './'}: folder not readable (permission denied)")
            return
        for entry in entries:
            rel = prefix + entry.name
            if not prefix and entry.name == "SKILL.md":
                continue
            try:
                rel.encode("utf-8")
            except UnicodeEncodeError:
                errors.append(f"{rel.encode('utf-8', 'surrogateescape')!r}: file name is not UTF-8")
                continue
            if entry.is_symlink():
                warnings.append(f"{rel}: symlink, not followed (not stored)")
            elif entry.is_dir(follow_symlinks=False):
                walk(Path(entry.path), rel + "/")
            elif not entry.is_file(follow_symlinks=False):
                warnings.append(f"{rel}: not a regular file (not stored)")
            elif len(found) >= MAX_BUNDLE_FILES:
                errors.append(f"more than {MAX_BUNDLE_FILES} bundled files (the cap per skill)")
                raise _Stop
            else:
                try:
                    data, mode, over = _read_capped(Path(entry.path), MAX_FILE_BYTES)
                except PermissionError:
                    errors.append(f"{rel}: not readable (permission denied)")
                    continue
                except OSError as exc:
                    errors.append(f"{rel}: cannot read ({exc.strerror or exc})")
                    continue
                if over:
                    size = entry.stat(follow_symlinks=False).st_size
                    errors.append(f"{rel}: {size:,} bytes is over the {_size(MAX_FILE_BYTES)} cap per bundled file")
                    continue
                total += len(data)
                if total > MAX_BUNDLE_BYTES:
                    errors.append(f"bundled files over the {_size(MAX_BUNDLE_BYTES)} cap per skill (reached at {rel})")
                    raise _Stop
                found.append(BundledFile(rel, data, bool(mode & stat.S_IXUSR)))

    try:
        walk(folder, "")
    except _Stop:
        pass
    return found


def _size(n: int) -> str:
    return f"{n // MIB} MiB" if n % MIB == 0 else f"{n:,}-byte"


class _Stop(Exception):
    """A per-skill cap was reached: stop reading the folder."""


def read_skill_dir(folder: Path) -> SkillDoc:
    """Read and validate `folder/SKILL.md` alone (the library and training read skills this way)."""
    result = read_skill(folder, files=False)
    if result.errors:
        raise SkillFormatError(f"{folder / 'SKILL.md'}: {'; '.join(result.errors)}")
    assert result.doc is not None
    return result.doc


def _safe_target(folder: Path, rel: str) -> Path:
    """`folder/rel`, refusing anything that could land outside the folder (a path from the store)."""
    parts = PurePosixPath(rel).parts
    if not parts or PurePosixPath(rel).is_absolute() or any(p in ("", ".", "..") for p in parts):
        raise SkillFormatError(f"refusing to write bundled file {rel!r}: not a plain relative path")
    target = folder
    for part in parts[:-1]:
        target = target / part
        if target.is_symlink():
            raise SkillFormatError(f"refusing to write under {target}: it is a symlink")
        target.mkdir(exist_ok=True)
    return target / parts[-1]


def _write_atomic(path: Path, data: bytes, executable: bool = False) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o777 if executable else 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)  # replaces a symlink at `path` itself, never what it points to


def write_skill_dir(doc: SkillDoc, root: Path, files: tuple[BundledFile, ...] | list[BundledFile] = ()) -> Path:
    """Write `root/name/SKILL.md` and the bundled files; returns the SKILL.md path."""
    folder = root / doc.name
    if folder.is_symlink():
        raise SkillFormatError(f"refusing to write into {folder}: it is a symlink")
    folder.mkdir(parents=True, exist_ok=True)
    for f in files:
        _write_atomic(_safe_target(folder, f.path), f.data, f.executable)
    path = folder / "SKILL.md"
    _write_atomic(path, doc.render().encode("utf-8"))
    return path


DISCOVERY_DIRS = (".agents/skills", ".claude/skills", ".opencode/skills", "skills")


def _has_skill_md(folder: Path) -> bool:
    # a symlinked SKILL.md is found (and refused with a reason by read_skill), not silently passed over
    return (folder / "SKILL.md").is_file() or (folder / "SKILL.md").is_symlink()


def discover(path: Path) -> list[Path]:
    """Skill folders under PATH: a skill folder itself, a folder of them, or a repo's skill dirs."""
    if not path.exists():
        raise SkillFormatError(f"{path}: no such file or folder")
    if not path.is_dir():
        if path.name == "SKILL.md":
            return [path.parent]
        raise SkillFormatError(f"{path}: not a folder (give a skill folder or a folder of skills)")
    try:
        if _has_skill_md(path):
            return [path]
        found: list[Path] = []
        for sub in DISCOVERY_DIRS:
            base = path / sub
            if base.is_dir():
                found += sorted(p for p in base.iterdir() if _has_skill_md(p))
        if not found:
            found = sorted(p for p in path.iterdir() if _has_skill_md(p))
    except PermissionError:
        raise SkillFormatError(f"{path}: not readable (permission denied)") from None
    if not found:
        raise SkillFormatError(f"{path}: no skills found (no */SKILL.md here or in {', '.join(DISCOVERY_DIRS)})")
    return found
