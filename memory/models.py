"""The store's tables, as SQLAlchemy 2.x typed models.

The schema changes only through Alembic (`migrations/`); these classes are what
the code reads and writes. Tensors are stored as safetensors bytes, never pickled.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    Unicode,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class Skill(Base):
    """One version of a skill; a changed SKILL.md adds a version, the old one stays."""

    __tablename__ = "skills"
    __table_args__ = (
        UniqueConstraint("name", "version", name="uq_skills_name_version"),
        Index("ix_skills_name_current", "name", "is_current"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer, default=1)
    is_current: Mapped[bool] = mapped_column(default=True)
    description: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    # the Agent Skills fields: license has no length limit in the spec, compatibility at most 500 characters
    license: Mapped[str | None] = mapped_column(Text)
    compatibility: Mapped[str | None] = mapped_column(String(500))
    allowed_tools: Mapped[str | None] = mapped_column(Text)
    # the spec's metadata: a string -> string map
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # the SKILL.md text as imported, exported verbatim; NULL for skills written by code (rendered on export)
    skill_md: Mapped[str | None] = mapped_column(Text)
    subtask: Mapped[str | None] = mapped_column(String(32), index=True)
    # seed | extracted | user
    source: Mapped[str] = mapped_column(String(16), default="user")
    # active | rejected (extraction candidates that failed the linter keep their reason here)
    status: Mapped[str] = mapped_column(String(16), default="active")
    status_reason: Mapped[str | None] = mapped_column(Text)
    provenance: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    content_hash: Mapped[str] = mapped_column(String(64), index=True)
    use_count: Mapped[int] = mapped_column(Integer, default=0)
    win_count: Mapped[int] = mapped_column(Integer, default=0)
    # the EMA version that folded this row in (set in the same transaction that writes that version)
    ema_version: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)

    adapters: Mapped[list[Adapter]] = relationship(back_populates="skill")
    files: Mapped[list[SkillFile]] = relationship(back_populates="skill", order_by="SkillFile.path",
                                                  cascade="all, delete-orphan")


class SkillBlob(Base):
    """The bytes of a bundled file, stored once however many skills and versions hold them."""

    __tablename__ = "skill_blobs"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(Integer)
    # loaded only when the bytes are needed (export), not when a listing asks for sizes
    data: Mapped[bytes] = mapped_column(LargeBinary, deferred=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class SkillFile(Base):
    """A file of a skill version's folder besides SKILL.md (scripts/, references, assets, a licence)."""

    __tablename__ = "skill_files"
    __table_args__ = (UniqueConstraint("skill_id", "path", name="uq_skill_files_skill_path"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    skill_id: Mapped[int] = mapped_column(ForeignKey("skills.id", ondelete="CASCADE"))
    # relative to the skill folder, POSIX separators
    path: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(ForeignKey("skill_blobs.sha256"), index=True)
    executable: Mapped[bool] = mapped_column(default=False)

    skill: Mapped[Skill] = relationship(back_populates="files")
    blob: Mapped[SkillBlob] = relationship()


class HypernetCheckpoint(Base):
    __tablename__ = "hypernet_checkpoints"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    base_model: Mapped[str] = mapped_column(String(256))
    stage: Mapped[str | None] = mapped_column(String(16))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("hypernet_checkpoints.id", ondelete="SET NULL"))
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    data_manifest_hash: Mapped[str | None] = mapped_column(String(64))
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # where the weights live (a file path) and their checksum; large blobs stay on disk
    path: Mapped[str | None] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    # candidate | accepted | rejected (the retrain gate's verdict)
    status: Mapped[str] = mapped_column(String(16), default="accepted")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Adapter(Base):
    """LoRA factors for one base model: a skill's, a merge's, or a version of the EMA."""

    __tablename__ = "adapters"
    __table_args__ = (
        Index("ix_adapters_cache", "cache_key"),
        UniqueConstraint("kind", "version", name="uq_adapters_kind_version"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # skill | merge | ema | import
    kind: Mapped[str] = mapped_column(String(16))
    skill_id: Mapped[int | None] = mapped_column(ForeignKey("skills.id", ondelete="SET NULL"))
    hypernet_id: Mapped[int | None] = mapped_column(ForeignKey("hypernet_checkpoints.id", ondelete="SET NULL"))
    base_model: Mapped[str] = mapped_column(String(256))
    # skill content hash + hypernet identity: the conversion cache key
    cache_key: Mapped[str | None] = mapped_column(String(160))
    rank: Mapped[int] = mapped_column(Integer)
    targets: Mapped[list[Any]] = mapped_column(JSON, default=list)
    shapes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    blob: Mapped[bytes] = mapped_column(LargeBinary)
    sha256: Mapped[str] = mapped_column(String(64))
    # EMA versions count 1, 2, ...; other kinds leave it empty
    version: Mapped[int | None] = mapped_column(Integer)
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    skill: Mapped[Skill | None] = relationship(back_populates="adapters")


class Trajectory(Base):
    __tablename__ = "trajectories"

    id: Mapped[int] = mapped_column(primary_key=True)
    task: Mapped[str] = mapped_column(Text)
    repo: Mapped[str] = mapped_column(Text)
    mode: Mapped[str] = mapped_column(String(16))
    model: Mapped[str] = mapped_column(String(256))
    # running | submitted | failed | error | stopped
    status: Mapped[str] = mapped_column(String(16), default="running")
    # tests before/after, exit reasons, the final diff
    outcome: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    verified: Mapped[bool] = mapped_column(default=False)
    # pending | extracted | skipped: whether skill extraction has looked at it
    extraction: Mapped[str] = mapped_column(String(16), default="pending")
    # what extraction did: ADD/EDIT/AGREE and the skill, or why it skipped (written with `extraction`)
    extraction_info: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    active_skills: Mapped[list[Any]] = mapped_column(JSON, default=list)
    tokens: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    steps: Mapped[list[TrajectoryStep]] = relationship(
        back_populates="trajectory", order_by="TrajectoryStep.idx", cascade="all, delete-orphan"
    )


class TrajectoryStep(Base):
    """One message of the trajectory's linear message list."""

    __tablename__ = "trajectory_steps"
    __table_args__ = (UniqueConstraint("trajectory_id", "idx", name="uq_steps_traj_idx"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    trajectory_id: Mapped[int] = mapped_column(ForeignKey("trajectories.id", ondelete="CASCADE"))
    idx: Mapped[int] = mapped_column(Integer)
    role: Mapped[str] = mapped_column(String(16))
    content: Mapped[str] = mapped_column(Text)
    action: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    trajectory: Mapped[Trajectory] = relationship(back_populates="steps")


class EvalResult(Base):
    __tablename__ = "eval_results"

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[str] = mapped_column(String(64), index=True)
    mode: Mapped[str] = mapped_column(String(16))
    split: Mapped[str] = mapped_column(String(16))
    subtask: Mapped[str] = mapped_column(String(32))
    metric: Mapped[str] = mapped_column(String(32))
    value: Mapped[float] = mapped_column(Float)
    n: Mapped[int] = mapped_column(Integer)
    base_model: Mapped[str] = mapped_column(String(256))
    hypernet_id: Mapped[int | None] = mapped_column(ForeignKey("hypernet_checkpoints.id", ondelete="SET NULL"))
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class EvolutionRun(Base):
    __tablename__ = "evolution_runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    # extract | accumulate | retrain | compact | cycle
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default="running")
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class QueuedTask(Base):
    """A task submitted with `agent submit`, run by `agent daemon`."""

    __tablename__ = "task_queue"

    id: Mapped[int] = mapped_column(primary_key=True)
    repo: Mapped[str] = mapped_column(Text)
    task: Mapped[str] = mapped_column(Text)
    # solve options: mode, test_cmd, limits ...
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # queued | running | done | failed | cancelled
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    # host:pid of the daemon that claimed it, so a restart can requeue work of a dead daemon
    worker: Mapped[str | None] = mapped_column(String(128))
    trajectory_id: Mapped[int | None] = mapped_column(ForeignKey("trajectories.id", ondelete="SET NULL"))
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


# APScheduler 3's SQLAlchemyJobStore table, declared here (same columns as the job store builds) so the
# schema stays under Alembic and autogenerate does not want to drop it. Job state is APScheduler's pickle.
apscheduler_jobs = Table(
    "apscheduler_jobs",
    Base.metadata,
    Column("id", Unicode(191), primary_key=True),
    Column("next_run_time", Float(25), index=True),
    Column("job_state", LargeBinary, nullable=False),
)
