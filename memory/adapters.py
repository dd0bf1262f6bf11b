"""Adapter rows: safetensors bytes with their sha256, base model and shapes; nothing pickled."""

from __future__ import annotations

import hashlib
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from memory.errors import StoreError
from memory.models import Adapter

KINDS = ("skill", "merge", "ema", "import")


def add(session: Session, *, kind: str, blob: bytes, base_model: str, rank: int, targets: list[Any],
        shapes: dict[str, Any], skill_id: int | None = None, hypernet_id: int | None = None,
        cache_key: str | None = None, version: int | None = None, meta: dict[str, Any] | None = None) -> Adapter:
    if kind not in KINDS:
        raise StoreError(f"unknown adapter kind {kind!r}")
    row = Adapter(kind=kind, blob=blob, sha256=hashlib.sha256(blob).hexdigest(), base_model=base_model, rank=rank,
                  targets=targets, shapes=shapes, skill_id=skill_id, hypernet_id=hypernet_id, cache_key=cache_key,
                  version=version, meta=meta or {})
    session.add(row)
    session.flush()
    return row


def checked_blob(row: Adapter) -> bytes:
    """The stored bytes, refused if they no longer match their sha256."""
    if hashlib.sha256(row.blob).hexdigest() != row.sha256:
        raise StoreError(f"adapter {row.id} is corrupted: its bytes do not match the stored sha256")
    return row.blob


def get(session: Session, adapter_id: int) -> Adapter:
    row = session.get(Adapter, adapter_id)
    if row is None:
        raise StoreError(f"no adapter with id {adapter_id} (see `agent adapters list`)")
    return row


def cached(session: Session, cache_key: str) -> Adapter | None:
    return session.scalars(select(Adapter).where(Adapter.kind == "skill", Adapter.cache_key == cache_key)
                           .order_by(Adapter.id.desc())).first()


def latest_ema(session: Session, base_model: str) -> Adapter | None:
    return session.scalars(select(Adapter).where(Adapter.kind == "ema", Adapter.base_model == base_model)
                           .order_by(Adapter.version.desc())).first()


def policy_weight(contributors: list[dict[str, Any]]) -> float | None:
    """The policy adapter's weight among an EMA version's contributors when the version started from one
    (`agent adapters ema-init`), else None: such a version replaces the separate policy adapter in solves."""
    shares = [c["weight"] for c in contributors if c.get("policy")]
    return sum(shares) if shares else None


def policy_share(row: Adapter) -> float | None:
    return policy_weight((row.meta or {}).get("contributors") or [])


def next_ema_version(session: Session) -> int:
    return (session.scalar(select(func.max(Adapter.version)).where(Adapter.kind == "ema")) or 0) + 1


def listing(session: Session, kind: str | None = None, limit: int = 200) -> list[Adapter]:
    q = select(Adapter).order_by(Adapter.id.desc()).limit(limit)
    if kind:
        q = q.where(Adapter.kind == kind)
    return list(session.scalars(q))


def summary(row: Adapter) -> dict[str, Any]:
    return {
        "id": row.id,
        "kind": row.kind,
        "skill": row.skill.name if row.skill else (row.meta or {}).get("skill"),
        "version": row.version,
        "base_model": row.base_model,
        "hypernet_id": row.hypernet_id,
        "rank": row.rank,
        "targets": len(row.targets or []),
        "bytes": len(row.blob),
        "sha256": row.sha256,
        "meta": row.meta,
        "created_at": row.created_at.isoformat() if row.created_at else None,
    }
