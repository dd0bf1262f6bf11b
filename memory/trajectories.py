"""Trajectory rows: the agent's message list, saved one message at a time."""

from __future__ import annotations

import json
from typing import Any, Iterable

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from memory.errors import StoreError
from memory.models import Trajectory, TrajectoryStep, utcnow


def start(session: Session, *, task: str, repo: str, mode: str, model: str,
          active_skills: list[dict[str, Any]] | None = None) -> int:
    row = Trajectory(task=task, repo=repo, mode=mode, model=model, active_skills=active_skills or [])
    session.add(row)
    session.flush()
    return row.id


def add_step(session: Session, trajectory_id: int, idx: int, role: str, content: str,
             action: dict[str, Any] | None = None) -> None:
    session.add(TrajectoryStep(trajectory_id=trajectory_id, idx=idx, role=role, content=content, action=action))


def finish(session: Session, trajectory_id: int, *, status: str, outcome: dict[str, Any], verified: bool,
           tokens: int) -> None:
    row = get(session, trajectory_id)
    row.status = status
    row.outcome = outcome
    row.verified = verified
    row.tokens = tokens
    row.finished_at = utcnow()


def get(session: Session, trajectory_id: int) -> Trajectory:
    row = session.get(Trajectory, trajectory_id)
    if row is None:
        raise StoreError(f"no trajectory with id {trajectory_id} (see `agent trajectories list`)")
    return row


def recent(session: Session, limit: int = 50) -> list[Trajectory]:
    return list(session.scalars(select(Trajectory).order_by(Trajectory.id.desc()).limit(limit)))


def step_counts(session: Session, ids: Iterable[int]) -> dict[int, int]:
    q = (select(TrajectoryStep.trajectory_id, func.count())
         .where(TrajectoryStep.trajectory_id.in_(list(ids))).group_by(TrajectoryStep.trajectory_id))
    return dict(session.execute(q).all())


def summary(row: Trajectory, steps: int | None = None) -> dict[str, Any]:
    seconds = (row.finished_at - row.started_at).total_seconds() if row.finished_at and row.started_at else None
    return {
        "id": row.id,
        "task": row.task,
        "repo": row.repo,
        "mode": row.mode,
        "model": row.model,
        "status": row.status,
        "verified": row.verified,
        "steps": steps,
        "tokens": row.tokens,
        "seconds": round(seconds, 1) if seconds is not None else None,
        "active_skills": row.active_skills,
        "started_at": row.started_at.isoformat() if row.started_at else None,
    }


def to_chat_jsonl(row: Trajectory) -> str:
    """OpenAI chat format, one trajectory a line: usable as fine-tuning data."""
    messages = [{"role": s.role, "content": s.content} for s in row.steps]
    return json.dumps({"messages": messages, "metadata": {"id": row.id, "task": row.task, "status": row.status,
                                                          "verified": row.verified}}, ensure_ascii=False)
