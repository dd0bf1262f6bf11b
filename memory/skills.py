"""Skill rows: import from SKILL.md documents, versioning, listing, export."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from memory.errors import StoreError
from memory.models import Skill
from memory.skillfile import SkillDoc, write_skill_dir

SOURCES = ("seed", "extracted", "user")


@dataclass(frozen=True)
class ImportResult:
    name: str
    action: str  # added | unchanged | new-version
    version: int


def to_doc(row: Skill) -> SkillDoc:
    return SkillDoc(
        name=row.name,
        description=row.description,
        body=row.body,
        license=row.license,
        compatibility=row.compatibility,
        metadata=dict(row.meta or {}),
    )


def current(session: Session, name: str) -> Skill | None:
    return session.scalars(select(Skill).where(Skill.name == name, Skill.is_current.is_(True))).first()


def get(session: Session, name: str) -> Skill:
    row = current(session, name)
    if row is None:
        raise StoreError(f"no skill named {name!r} (see `agent skills list`)")
    return row


def upsert(session: Session, doc: SkillDoc, source: str = "user", provenance: dict | None = None) -> ImportResult:
    """Add a skill; an identical one is a no-op, a changed one becomes a new current version."""
    if source not in SOURCES:
        raise StoreError(f"unknown skill source {source!r} (one of {', '.join(SOURCES)})")
    old = current(session, doc.name)
    new_hash = doc.content_hash
    if old is not None and old.content_hash == new_hash and to_doc(old) == doc:
        return ImportResult(doc.name, "unchanged", old.version)
    version = 1
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
        meta=dict(doc.metadata),
        subtask=doc.subtask,
        source=source,
        provenance=provenance or {},
        content_hash=new_hash,
        # counters belong to the skill, not to one wording of it
        use_count=old.use_count if old else 0,
        win_count=old.win_count if old else 0,
    )
    session.add(row)
    session.flush()
    return ImportResult(doc.name, "added" if old is None else "new-version", version)


def list_current(session: Session, subtask: str | None = None, include_rejected: bool = False) -> list[Skill]:
    q = select(Skill).where(Skill.is_current.is_(True))
    if subtask:
        q = q.where(Skill.subtask == subtask)
    if not include_rejected:
        q = q.where(Skill.status == "active")
    return list(session.scalars(q.order_by(Skill.name)))


def versions(session: Session, name: str) -> list[Skill]:
    return list(session.scalars(select(Skill).where(Skill.name == name).order_by(Skill.version)))


def export(session: Session, out_dir: Path) -> list[Path]:
    if not out_dir.parent.exists():
        raise StoreError(f"cannot export to {out_dir}: folder {out_dir.parent} does not exist")
    out_dir.mkdir(exist_ok=True)
    return [write_skill_dir(to_doc(row), out_dir) for row in list_current(session)]


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
