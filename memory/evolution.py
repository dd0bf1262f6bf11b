"""Bookkeeping of the self-evolution loop: job runs, EMA versions, pending work, hypernet checkpoints.

Pure SQL: what the agent's jobs claim and mark. Each job marks an item in the same transaction that writes
its result, so these queries are also how an interrupted job finds where to resume.
"""

from __future__ import annotations

import os
import socket
from datetime import datetime, timedelta
from typing import Any, Callable, Iterable

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from memory.errors import StoreError
from memory.models import Adapter, EvolutionRun, HypernetCheckpoint, Skill, Trajectory, utcnow

RUN_KINDS = ("extract", "accumulate", "retrain", "compact", "cycle")
ABANDONED_AFTER = timedelta(hours=6)  # a trajectory "running" this long belongs to a dead solve


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def worker_alive(worker: str) -> bool:
    """Whether host:pid names a live process; another host's worker counts as alive (we cannot tell)."""
    host, _, pid = worker.rpartition(":")
    if host != socket.gethostname():
        return True
    try:
        pid_i = int(pid)
        os.kill(pid_i, 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    try:  # a zombie (killed, not yet reaped) is not alive
        with open(f"/proc/{pid_i}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


# --- job runs -------------------------------------------------------------------------------------

def start_run(session: Session, kind: str, details: dict[str, Any] | None = None) -> int:
    if kind not in RUN_KINDS:
        raise StoreError(f"unknown evolution run kind {kind!r}")
    row = EvolutionRun(kind=kind, status="running", details={"worker": worker_id(), **(details or {})})
    session.add(row)
    session.flush()
    return row.id


def finish_run(session: Session, run_id: int, status: str, details: dict[str, Any]) -> None:
    row = session.get(EvolutionRun, run_id)
    if row is None:
        raise StoreError(f"no evolution run {run_id}")
    row.status, row.finished_at = status, utcnow()
    row.details = {**(row.details or {}), **details}


def recover_runs(session: Session, is_alive: Callable[[str], bool] = worker_alive) -> list[int]:
    """Runs left 'running' by a dead process become 'interrupted' (their work items stay claimable)."""
    fixed = []
    for row in session.scalars(select(EvolutionRun).where(EvolutionRun.status == "running")):
        worker = (row.details or {}).get("worker")
        if worker and is_alive(worker):
            continue
        row.status, row.finished_at = "interrupted", utcnow()
        row.details = {**(row.details or {}), "error": "the process running it stopped before it finished"}
        fixed.append(row.id)
    return fixed


def recent_runs(session: Session, kind: str | None = None, limit: int = 50) -> list[EvolutionRun]:
    q = select(EvolutionRun).order_by(EvolutionRun.id.desc()).limit(limit)
    if kind:
        q = q.where(EvolutionRun.kind == kind)
    return list(session.scalars(q))


# --- pending work ---------------------------------------------------------------------------------

def pending_trajectories(session: Session, limit: int = 20, now: datetime | None = None,
                         up_to: int | None = None) -> list[Trajectory]:
    """Finished trajectories extraction has not looked at, plus ones abandoned while running (ids <= up_to)."""
    now = now or utcnow()
    q = (select(Trajectory).where(Trajectory.extraction == "pending")
         .where((Trajectory.status != "running") | (Trajectory.started_at < now - ABANDONED_AFTER))
         .order_by(Trajectory.id).limit(limit))
    if up_to is not None:
        q = q.where(Trajectory.id <= up_to)
    return list(session.scalars(q))


def pending_skills(session: Session, sources: Iterable[str], limit: int = 50,
                   up_to: int | None = None) -> list[Skill]:
    """Current, active skills of these sources that no EMA version has folded in yet (ids <= up_to)."""
    q = (select(Skill).where(Skill.is_current.is_(True), Skill.status == "active", Skill.ema_version.is_(None),
                             Skill.source.in_(list(sources)))
         .order_by(Skill.id).limit(limit))
    if up_to is not None:
        q = q.where(Skill.id <= up_to)
    return list(session.scalars(q))


def last_ids(session: Session) -> tuple[int, int]:
    """The newest trajectory and skill ids: a job run's snapshot of its work, so that a steady stream of new
    rows cannot keep one job running forever while the others (one worker) wait behind it."""
    return (session.scalar(select(func.max(Trajectory.id))) or 0, session.scalar(select(func.max(Skill.id))) or 0)


# --- EMA versions ---------------------------------------------------------------------------------

def ema_versions(session: Session, base_model: str | None = None) -> list[Adapter]:
    q = select(Adapter).where(Adapter.kind == "ema").order_by(Adapter.version)
    if base_model:
        q = q.where(Adapter.base_model == base_model)
    return list(session.scalars(q))


def ema_version(session: Session, version: int) -> Adapter:
    row = session.scalars(select(Adapter).where(Adapter.kind == "ema", Adapter.version == version)).first()
    if row is None:
        latest = session.scalar(select(func.max(Adapter.version)).where(Adapter.kind == "ema"))
        hint = f"versions are 1..{latest}" if latest else "there are no EMA versions yet (`agent evolve`)"
        raise StoreError(f"no EMA version {version}: {hint}")
    return row


def skills_of_version(session: Session, version: int) -> list[Skill]:
    return list(session.scalars(select(Skill).where(Skill.ema_version == version).order_by(Skill.id)))


# --- hypernetwork checkpoints ---------------------------------------------------------------------

def checkpoint_by_sha(session: Session, sha256: str, **new_fields: Any) -> HypernetCheckpoint:
    """The row of the checkpoint file with this sha256, added with `new_fields` if there is none: a file is
    registered once, whoever trains, loads or gates it."""
    row = session.scalars(select(HypernetCheckpoint).where(HypernetCheckpoint.sha256 == sha256)).first()
    if row is None:
        row = HypernetCheckpoint(sha256=sha256, **new_fields)
        session.add(row)
        session.flush()
    return row


def latest_accepted(session: Session, base_model: str) -> HypernetCheckpoint | None:
    return session.scalars(select(HypernetCheckpoint)
                           .where(HypernetCheckpoint.base_model == base_model,
                                  HypernetCheckpoint.status == "accepted")
                           .order_by(HypernetCheckpoint.id.desc())).first()


def candidates(session: Session, base_model: str) -> list[HypernetCheckpoint]:
    return list(session.scalars(select(HypernetCheckpoint)
                                .where(HypernetCheckpoint.base_model == base_model,
                                       HypernetCheckpoint.status == "candidate")
                                .order_by(HypernetCheckpoint.id)))


def training_watermark(session: Session, base_model: str) -> dict[str, int]:
    """The newest trajectory and skill ids any retrain (kept or not) has already trained on."""
    marks = {"trajectory_id": 0, "skill_id": 0}
    rows = session.scalars(select(HypernetCheckpoint).where(HypernetCheckpoint.base_model == base_model))
    for row in rows:
        seen = (row.config or {}).get("trained_on") or {}
        for key in marks:
            marks[key] = max(marks[key], int(seen.get(key) or 0))
    return marks


def skill_trajectories_before(session: Session, trajectory_id: int) -> list[int]:
    """Verified trajectories older than `trajectory_id` that extraction drew a skill from (retrain's replay pool)."""
    rows = session.execute(select(Trajectory.id, Trajectory.extraction_info).where(
        Trajectory.verified.is_(True), Trajectory.id < trajectory_id).order_by(Trajectory.id))
    return [tid for tid, info in rows if (info or {}).get("skill")]


def new_training_data(session: Session, since: dict[str, int]) -> dict[str, list[int]]:
    """Verified trajectories and active extracted skills newer than the watermark."""
    trajs = session.scalars(select(Trajectory.id).where(Trajectory.verified.is_(True),
                                                        Trajectory.id > since["trajectory_id"]).order_by(Trajectory.id))
    skills = session.scalars(select(Skill.id).where(Skill.source == "extracted", Skill.status == "active",
                                                    Skill.id > since["skill_id"]).order_by(Skill.id))
    return {"trajectory_ids": list(trajs), "skill_ids": list(skills)}
