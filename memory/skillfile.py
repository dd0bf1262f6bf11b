"""SKILL.md in the Agent Skills format: parse, validate, write.

A skill is a folder `name/` holding `SKILL.md`: YAML frontmatter between `---`
lines, then a markdown body. The body is kept byte-for-byte so that export
round-trips exactly; only the frontmatter is re-rendered.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from memory.errors import SkillFormatError

NAME_RE = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
MAX_NAME = 64
MAX_DESCRIPTION = 1024
# A recipe is a page or two; anything this large is a mistake (or an attack on the encoder).
MAX_SKILL_BYTES = 256 * 1024
OPTIONAL_FIELDS = ("license", "compatibility", "metadata")
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
    metadata: dict[str, str] = field(default_factory=dict)

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

    def render(self) -> str:
        front: dict[str, object] = {"name": self.name, "description": self.description}
        if self.license:
            front["license"] = self.license
        if self.compatibility:
            front["compatibility"] = self.compatibility
        if self.metadata:
            front["metadata"] = dict(self.metadata)
        head = yaml.safe_dump(front, sort_keys=False, allow_unicode=True, width=1000)
        return f"---\n{head}---\n{self.body}"


def validate(doc: SkillDoc, folder_name: str | None = None) -> SkillDoc:
    if not NAME_RE.match(doc.name) or len(doc.name) > MAX_NAME:
        raise SkillFormatError(
            f"skill name {doc.name!r} must be 1-{MAX_NAME} chars of a-z, 0-9 and single hyphens"
        )
    if folder_name is not None and folder_name != doc.name:
        raise SkillFormatError(f"skill name {doc.name!r} does not match its folder {folder_name!r}")
    if not doc.description.strip() or len(doc.description) > MAX_DESCRIPTION:
        raise SkillFormatError(
            f"skill {doc.name!r}: description must be 1-{MAX_DESCRIPTION} characters"
        )
    if not doc.body.strip():
        raise SkillFormatError(f"skill {doc.name!r}: the body is empty")
    return doc


def parse(text: str, folder_name: str | None = None, where: str = "SKILL.md") -> SkillDoc:
    """Parse and validate; NUL anywhere, and control characters in the
    frontmatter (they end up in names and listings), are refused."""
    if "\0" in text:
        raise SkillFormatError(f"{where}: contains a NUL byte (at character {text.index(chr(0))})")
    if not text.startswith("---"):
        raise SkillFormatError(f"{where}: missing YAML frontmatter (must start with '---')")
    first_nl = text.find("\n")
    end = text.find("\n---", first_nl)
    if first_nl < 0 or end < 0:
        raise SkillFormatError(f"{where}: frontmatter is not closed by a '---' line")
    raw = text[first_nl + 1 : end + 1]
    bad = CONTROL_RE.search(raw)
    if bad:
        line = text.count("\n", 0, first_nl + 1 + bad.start()) + 1
        raise SkillFormatError(
            f"{where}: control character {escape_controls(bad.group())} in the frontmatter (line {line})"
        )
    after = text.find("\n", end + 4)
    body = "" if after < 0 else text[after + 1 :]
    try:
        front = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise SkillFormatError(f"{where}: broken YAML frontmatter ({str(exc).splitlines()[0]})") from None
    if not isinstance(front, dict):
        raise SkillFormatError(f"{where}: frontmatter must be a YAML mapping")
    for key in ("name", "description"):
        if not isinstance(front.get(key), str):
            raise SkillFormatError(f"{where}: frontmatter field {key!r} is missing or not a string")
    metadata = front.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise SkillFormatError(f"{where}: 'metadata' must be a mapping of strings")
    doc = SkillDoc(
        name=front["name"],
        description=front["description"],
        body=body,
        license=_opt_str(front, "license", where),
        compatibility=_opt_str(front, "compatibility", where),
        metadata={str(k): str(v) for k, v in metadata.items()},
    )
    return validate(doc, folder_name)


def _opt_str(front: dict, key: str, where: str) -> str | None:
    value = front.get(key)
    if value is not None and not isinstance(value, str):
        raise SkillFormatError(f"{where}: {key!r} must be a string")
    return value


def read_skill_dir(folder: Path) -> SkillDoc:
    """Read `folder/SKILL.md`; the folder name must equal the skill name."""
    path = folder / "SKILL.md"
    if not path.is_file():
        raise SkillFormatError(f"{folder}: no SKILL.md found")
    try:
        size = path.stat().st_size
        if size > MAX_SKILL_BYTES:
            raise SkillFormatError(f"{path}: {size} bytes is over the {MAX_SKILL_BYTES}-byte limit")
        data = path.read_bytes()
    except PermissionError:
        raise SkillFormatError(f"{path}: not readable (permission denied)") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SkillFormatError(f"{path}: not UTF-8 (byte {exc.start})") from None
    return parse(text, folder_name=folder.resolve().name if folder.name in ('', '.', '..') else folder.name, where=str(path))


def write_skill_dir(doc: SkillDoc, root: Path) -> Path:
    folder = root / doc.name
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "SKILL.md"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(doc.render(), encoding="utf-8", newline="")
    tmp.replace(path)
    return path


DISCOVERY_DIRS = (".agents/skills", ".claude/skills", ".opencode/skills", "skills")


def discover(path: Path) -> list[Path]:
    """Skill folders under PATH: a skill folder itself, a folder of them, or a repo's skill dirs."""
    if not path.exists():
        raise SkillFormatError(f"{path}: no such file or folder")
    if not path.is_dir():
        if path.name == "SKILL.md":
            return [path.parent]
        raise SkillFormatError(f"{path}: not a folder (give a skill folder or a folder of skills)")
    try:
        if (path / "SKILL.md").is_file():
            return [path]
        found: list[Path] = []
        for sub in DISCOVERY_DIRS:
            base = path / sub
            if base.is_dir():
                found += sorted(p for p in base.iterdir() if (p / "SKILL.md").is_file())
        if not found:
            found = sorted(p for p in path.iterdir() if (p / "SKILL.md").is_file())
    except PermissionError:
        raise SkillFormatError(f"{path}: not readable (permission denied)") from None
    if not found:
        raise SkillFormatError(f"{path}: no skills found (no */SKILL.md here or in {', '.join(DISCOVERY_DIRS)})")
    return found
