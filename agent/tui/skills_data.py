"""The Skills screen's data: the table's rows, filtering and sorting, and one skill's detail."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, select

from agent.tui.adapter_norms import AdapterNorms, NormCache
from agent.tui.reader import Reader
from agent.tui.timefmt import as_utc
from memory.models import Adapter, Skill, Trajectory
from memory.skills import to_doc


@dataclass(frozen=True)
class SkillRow:
    id: int
    name: str
    subtask: str
    source: str
    uses: int
    wins: int
    created: datetime  # the first version's: when the skill appeared
    version: int
    description: str


# the table's columns: key, label, sort key
COLUMNS = (
    ("name", "Name", lambda r: r.name),
    ("subtask", "Subtask", lambda r: (r.subtask, r.name)),
    ("source", "Source", lambda r: (r.source, r.name)),
    ("uses", "Uses", lambda r: (r.uses, r.name)),
    ("wins", "Wins", lambda r: (r.wins, r.name)),
    ("created", "Created", lambda r: (r.created, r.name)),
)
SORT_KEYS = {key: fn for key, _, fn in COLUMNS}


def load_skills(reader: Reader) -> list[SkillRow]:
    with reader.session() as s:
        births = dict(s.execute(select(Skill.name, func.min(Skill.created_at)).group_by(Skill.name)).all())
        rows = s.scalars(select(Skill).where(Skill.is_current.is_(True), Skill.status == "active")
                         .order_by(Skill.name)).all()
        return [SkillRow(r.id, r.name, r.subtask or "", r.source, r.use_count, r.win_count,
                         as_utc(births.get(r.name, r.created_at)), r.version, r.description) for r in rows]


def matches(row: SkillRow, query: str) -> bool:
    """Every word of the query appears in the name, subtask, source or description."""
    hay = f"{row.name} {row.subtask} {row.source} {row.description}".lower()
    return all(word in hay for word in query.lower().split())


def arrange(rows: list[SkillRow], query: str, sort_key: str, reverse: bool) -> list[SkillRow]:
    return sorted((r for r in rows if matches(r, query)), key=SORT_KEYS[sort_key], reverse=reverse)


@dataclass(frozen=True)
class AdapterInfo:
    id: int
    rank: int
    base_model: str
    hypernet_id: int | None
    created: datetime
    size: int
    norms: AdapterNorms | None
    error: str | None = None


@dataclass(frozen=True)
class TrajectoryRef:
    id: int
    relation: str  # used | produced | supported
    status: str
    verified: bool
    started: datetime
    task: str
    weight: float | None = None


@dataclass
class SkillDetail:
    id: int
    name: str
    version: int
    versions: int
    source: str
    status: str
    markdown: str
    adapter: AdapterInfo | None = None
    trajectories: list[TrajectoryRef] = field(default_factory=list)


def skill_markdown(row: Skill) -> str:
    """SKILL.md as written, with the YAML frontmatter shown as a code block (Markdown would mangle it)."""
    text = to_doc(row).render()
    if text.startswith("---\n"):
        front, sep, body = text[4:].partition("---\n")
        if sep:
            return f"```yaml\n{front}```\n\n{body}"
    return text


def provenance_trajectories(provenances: list[dict | None]) -> tuple[set[int], set[int]]:
    """Trajectories that produced a skill, and those that later supported (re-derived) it.

    Provenance is {"trajectory_id": N}, or extraction's {"trajectories": [first, later, ...]}.
    """
    produced: set[int] = set()
    supported: set[int] = set()
    for p in provenances:
        if not isinstance(p, dict):
            continue
        if isinstance(p.get("trajectory_id"), int):
            produced.add(p["trajectory_id"])
        ids = [i for i in p.get("trajectories") or [] if isinstance(i, int)]
        if ids:
            produced.add(ids[0])
            supported.update(ids[1:])
    return produced, supported - produced


def load_detail(reader: Reader, norms: NormCache, skill_id: int) -> SkillDetail | None:
    with reader.session() as s:
        row = s.get(Skill, skill_id)
        if row is None:
            return None
        versions = s.execute(select(Skill.id, Skill.provenance).where(Skill.name == row.name)).all()
        ids = [vid for vid, _ in versions]
        detail = SkillDetail(row.id, row.name, row.version, len(versions), row.source, row.status,
                             skill_markdown(row))

        # the newest adapter made from any version of this skill
        ad = s.scalars(select(Adapter).where(Adapter.skill_id.in_(ids), Adapter.kind == "skill")
                       .order_by(Adapter.id.desc()).limit(1)).first()
        if ad is not None:
            known, error = norms.known(ad.sha256), None
            if known is None:
                try:
                    known = norms.compute(ad.sha256, ad.blob)
                except Exception as exc:  # noqa: BLE001 - a damaged blob is shown, not fatal
                    error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            detail.adapter = AdapterInfo(ad.id, ad.rank, ad.base_model, ad.hypernet_id, as_utc(ad.created_at),
                                         len(ad.blob), known, error)

        produced, supported = provenance_trajectories([p for _, p in versions])
        # active_skills is a JSON list; filtering it in Python keeps this portable across SQL backends
        trajs = s.execute(select(Trajectory.id, Trajectory.status, Trajectory.verified, Trajectory.started_at,
                                 Trajectory.task, Trajectory.active_skills).order_by(Trajectory.id.desc())).all()
        for tid, status, verified, started, task, active in trajs:
            relation = "produced" if tid in produced else "supported" if tid in supported else None
            if relation:
                detail.trajectories.append(TrajectoryRef(tid, relation, status, verified, as_utc(started), task))
            for entry in active or []:
                if isinstance(entry, dict) and entry.get("name") == row.name:
                    detail.trajectories.append(TrajectoryRef(tid, "used", status, verified, as_utc(started), task,
                                                             entry.get("weight")))
                    break
        return detail
