"""Skill rows: import from SKILL.md documents and their bundled files, versioning, listing, export."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.orm import Session

from memory.db import Store
from memory.errors import StoreError
from memory.models import Skill, SkillBlob, SkillFile
from memory.skillfile import BundledFile, SkillDoc, SkillFolder, write_skill_dir

SOURCES = ("seed", "extracted", "user")


@dataclass(frozen=True)
class ImportResult:
    name: str
    action: str  # added | unchanged | new-version
    version: int
    files: int = 0  # bundled files the version holds


@dataclass(frozen=True)
class Note:
    """A refused skill, or a warning about an imported one: which skill, where, and why."""

    name: str
    path: str
    reason: str


@dataclass(frozen=True)
class ImportReport:
    imported: list[ImportResult]
    refused: list[Note]
    warnings: list[Note]


def to_doc(row: Skill) -> SkillDoc:
    return SkillDoc(
        name=row.name,
        description=row.description,
        body=row.body,
        license=row.license,
        compatibility=row.compatibility,
        metadata=dict(row.meta or {}),
        allowed_tools=row.allowed_tools,
        raw=row.skill_md,
    )


def bundled_files(row: Skill) -> list[BundledFile]:
    return [BundledFile(f.path, f.blob.data, f.executable) for f in row.files]


def _file_keys(files) -> set[tuple[str, str, bool]]:
    return {(f.path, f.sha256, bool(f.executable)) for f in files}


def current(session: Session, name: str) -> Skill | None:
    return session.scalars(select(Skill).where(Skill.name == name, Skill.is_current.is_(True))).first()


def get(session: Session, name: str) -> Skill:
    row = current(session, name)
    if row is None:
        raise StoreError(f"no skill named {name!r} (see `agent skills list`)")
    return row


def upsert(session: Session, doc: SkillDoc, source: str = "user", provenance: dict | None = None,
           files: list[BundledFile] | tuple[BundledFile, ...] | None = None) -> ImportResult:
    """Add a skill; an identical one is a no-op, a changed one becomes a new current version.

    `files` are the skill folder's other files; None keeps the current version's files (a skill
    rewritten by code keeps its scripts), an empty list means the folder holds SKILL.md alone.
    """
    if source not in SOURCES:
        raise StoreError(f"unknown skill source {source!r} (one of {', '.join(SOURCES)})")
    old = current(session, doc.name)
    new_hash = doc.content_hash
    same_files = files is None or (old is not None and _file_keys(old.files) == _file_keys(files))
    if (old is not None and old.content_hash == new_hash and to_doc(old) == doc and same_files
            and old.skill_md == doc.raw):
        return ImportResult(doc.name, "unchanged", old.version, len(old.files))
    version = 1
    carried = bundled_files(old) if old is not None and files is None else []
    if old is not None:
        old.is_current = False
        version = old.version + 1
        session.flush()
    row = Skill(
        name=doc.name,
        version=version,
        is_current=True,
        description=doc.description,
        body=doc.body,
        license=doc.license,
        compatibility=doc.compatibility,
        allowed_tools=doc.allowed_tools,
        meta=dict(doc.metadata),
        skill_md=doc.raw,
        subtask=doc.subtask,
        source=source,
        provenance=provenance or {},
        content_hash=new_hash,
        # counters belong to the skill, not to one wording of it
        use_count=old.use_count if old else 0,
        win_count=old.win_count if old else 0,
    )
    for f in (carried if files is None else files):
        row.files.append(SkillFile(path=f.path, blob=_blob(session, f), executable=f.executable))
    session.add(row)
    session.flush()
    return ImportResult(doc.name, "added" if old is None else "new-version", version, len(row.files))


def _blob(session: Session, f: BundledFile) -> SkillBlob:
    """The stored bytes for a file: the existing row when the same content is already there."""
    digest = f.sha256
    blob = session.get(SkillBlob, digest)
    if blob is None:
        blob = SkillBlob(sha256=digest, size=len(f.data), data=f.data)
        session.add(blob)
    return blob


def import_folders(store: Store, folders: list[SkillFolder], source: str = "user") -> ImportReport:
    """Import every valid skill, each in its own transaction; refuse the others with the reason.

    A refused skill writes nothing, and a skill whose write fails is rolled back alone: the store never
    holds half a skill, and one bad skill does not keep the others out.
    """
    if source not in SOURCES:
        raise StoreError(f"unknown skill source {source!r} (one of {', '.join(SOURCES)})")
    imported: list[ImportResult] = []
    refused: list[Note] = []
    warnings: list[Note] = []
    seen: dict[str, Path] = {}
    for folder in folders:
        where = str(folder.path)
        warnings += [Note(folder.name, where, w) for w in folder.warnings]
        if not folder.ok:
            refused.append(Note(folder.name, where, "; ".join(folder.errors)))
            continue
        assert folder.doc is not None
        if folder.name in seen:
            refused.append(Note(folder.name, where, f"a skill of this name is already imported from {seen[folder.name]}"))
            continue
        seen[folder.name] = folder.path
        try:
            with store.session() as s:
                imported.append(upsert(s, folder.doc, source=source, files=folder.files))
        except (IntegrityError, DataError) as exc:  # the database refused this skill's values
            refused.append(Note(folder.name, where, f"the database refused it: {_first_line(exc)}"))
    return ImportReport(imported, refused, warnings)


def _first_line(exc: Exception) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def list_current(session: Session, subtask: str | None = None, include_rejected: bool = False) -> list[Skill]:
    q = select(Skill).where(Skill.is_current.is_(True))
    if subtask:
        q = q.where(Skill.subtask == subtask)
    if not include_rejected:
        q = q.where(Skill.status == "active")
    return list(session.scalars(q.order_by(Skill.name)))


def versions(session: Session, name: str) -> list[Skill]:
    return list(session.scalars(select(Skill).where(Skill.name == name).order_by(Skill.version)))


def export(session: Session, out_dir: Path, names: list[str] | None = None) -> list[Path]:
    """Write the current skills (or those named) as Agent Skills folders, bundled files included."""
    if not out_dir.parent.exists():
        raise StoreError(f"cannot export to {out_dir}: folder {out_dir.parent} does not exist")
    rows = [get(session, n) for n in names] if names else list_current(session)
    try:
        out_dir.mkdir(exist_ok=True)
        return [write_skill_dir(to_doc(row), out_dir, bundled_files(row)) for row in rows]
    except OSError as exc:  # a file where a folder should be, a full disk, no permission
        raise StoreError(f"cannot export to {out_dir}: {exc.strerror or exc} ({exc.filename})") from None


def summary(row: Skill) -> dict:
    return {
        "name": row.name,
        "version": row.version,
        "description": row.description,
        "subtask": row.subtask,
        "split": (row.meta or {}).get("split"),
        "source": row.source,
        "status": row.status,
        "uses": row.use_count,
        "wins": row.win_count,
        "content_hash": row.content_hash,
        "created_at": row.created_at.isoformat() if row.created_at else None,
    }
