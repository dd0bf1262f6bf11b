"""The Trajectories screen's data: the list, and one trajectory's messages for the step viewer."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from agent.tui.reader import Reader
from agent.tui.timefmt import as_utc
from memory.models import Trajectory, TrajectoryStep

LIST_LIMIT = 1000


@dataclass(frozen=True)
class TrajectoryRow:
    id: int
    status: str
    verified: bool
    mode: str
    steps: int
    tokens: int
    seconds: float | None
    started: datetime
    task: str


@dataclass(frozen=True)
class Step:
    idx: int
    role: str
    content: str
    action: dict[str, Any] | None
    created: datetime | None


@dataclass
class TrajectoryDetail:
    row: TrajectoryRow
    repo: str
    model: str
    outcome: dict[str, Any]
    active_skills: list[Any]
    extraction: str = "pending"
    extraction_info: dict[str, Any] | None = None
    steps: list[Step] = field(default_factory=list)


def _row(t: Trajectory, steps: int) -> TrajectoryRow:
    started, finished = as_utc(t.started_at), as_utc(t.finished_at)
    seconds = (finished - started).total_seconds() if started and finished else None
    return TrajectoryRow(t.id, t.status, bool(t.verified), t.mode, steps, t.tokens or 0, seconds, started, t.task)


def load_trajectories(reader: Reader, limit: int = LIST_LIMIT) -> list[TrajectoryRow]:
    with reader.session() as s:
        rows = s.scalars(select(Trajectory).order_by(Trajectory.id.desc()).limit(limit)).all()
        counts = dict(s.execute(select(TrajectoryStep.trajectory_id, func.count())
                                .where(TrajectoryStep.trajectory_id.in_([r.id for r in rows]))
                                .group_by(TrajectoryStep.trajectory_id)).all())
        return [_row(r, counts.get(r.id, 0)) for r in rows]


def load_trajectory(reader: Reader, trajectory_id: int) -> TrajectoryDetail | None:
    with reader.session() as s:
        t = s.get(Trajectory, trajectory_id)
        if t is None:
            return None
        steps = [Step(st.idx, st.role, st.content, st.action, as_utc(st.created_at)) for st in t.steps]
        return TrajectoryDetail(_row(t, len(steps)), t.repo, t.model, dict(t.outcome or {}),
                                list(t.active_skills or []), t.extraction or "pending",
                                getattr(t, "extraction_info", None), steps)
