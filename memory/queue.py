"""The task queue: `agent submit` adds rows, `agent daemon` claims and runs them one at a time.

A claim (queued -> running, with the worker's host:pid) is one transaction, and so is the result, so two
daemons never run the same task and a daemon killed mid-task leaves a row that `requeue_dead` returns.
"""

from __future__ import annotations

from typing import Any, Callable

from sqlalchemy import select
from sqlalchemy.orm import Session

from memory.errors import StoreError
from memory.models import QueuedTask, utcnow

STATUSES = ("queued", "running", "done", "failed", "cancelled")
MAX_ATTEMPTS = 3  # a task that kills its daemon three times is failed, not retried forever


def submit(session: Session, *, repo: str, task: str, options: dict[str, Any] | None = None) -> int:
    if not task.strip():
        raise StoreError('the task is empty: say what to do, e.g. "fix the failing test"')
    row = QueuedTask(repo=repo, task=task, options=options or {}, status="queued")
    session.add(row)
    session.flush()
    return row.id


def claim_next(session: Session, worker: str) -> QueuedTask | None:
    """The oldest queued task, now marked running by `worker` (commit to make the claim visible)."""
    q = select(QueuedTask).where(QueuedTask.status == "queued").order_by(QueuedTask.id).limit(1)
    row = session.scalars(q.with_for_update(skip_locked=True)).first()
    if row is None:
        return None
    row.status, row.worker, row.started_at = "running", worker, utcnow()
    row.attempts = (row.attempts or 0) + 1
    session.flush()
    return row


def finish(session: Session, task_id: int, *, status: str, trajectory_id: int | None = None,
           error: str | None = None) -> None:
    if status not in STATUSES:
        raise StoreError(f"unknown task status {status!r}")
    row = get(session, task_id)
    row.status, row.trajectory_id, row.error, row.finished_at = status, trajectory_id, error, utcnow()
    if status == "queued":  # handed back (daemon stopping): not finished
        row.worker, row.finished_at = None, None


def requeue_dead(session: Session, is_alive: Callable[[str], bool]) -> list[int]:
    """Running tasks whose worker process is gone go back to the queue (or fail after MAX_ATTEMPTS)."""
    moved = []
    for row in session.scalars(select(QueuedTask).where(QueuedTask.status == "running")):
        if row.worker and is_alive(row.worker):
            continue
        if (row.attempts or 0) >= MAX_ATTEMPTS:
            row.status, row.finished_at = "failed", utcnow()
            row.error = f"its daemon died {row.attempts} times while running it"
        else:
            row.status, row.worker = "queued", None
        moved.append(row.id)
    return moved


def get(session: Session, task_id: int) -> QueuedTask:
    row = session.get(QueuedTask, task_id)
    if row is None:
        raise StoreError(f"no queued task with id {task_id}")
    return row


def listing(session: Session, status: str | None = None, limit: int = 100) -> list[QueuedTask]:
    q = select(QueuedTask).order_by(QueuedTask.id.desc()).limit(limit)
    if status:
        q = q.where(QueuedTask.status == status)
    return list(session.scalars(q))


def summary(row: QueuedTask) -> dict[str, Any]:
    return {"id": row.id, "repo": row.repo, "task": row.task, "status": row.status, "worker": row.worker,
            "trajectory_id": row.trajectory_id, "error": row.error, "attempts": row.attempts,
            "options": row.options,
            "created_at": row.created_at.isoformat() if row.created_at else None}
