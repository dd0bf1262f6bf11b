"""What the Overview screen shows, read in one go from the store (in a worker thread)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, select

from agent.evolve.job_control import JobsSnapshot, read_jobs
from agent.tui.adapter_norms import NormCache
from agent.tui.reader import Reader
from agent.tui.timefmt import as_utc
from memory.models import Adapter, EvalResult, EvolutionRun, HypernetCheckpoint, Skill, Trajectory
from memory.skills import SOURCES

SUCCESS_WINDOW = 10  # trajectories per point of the moving success rate
EMA_POINTS = 200  # the most recent EMA versions charted
RUNS_SHOWN = 6
ROLLBACKS_SHOWN = 5


@dataclass(frozen=True)
class EmaPoint:
    version: int
    rank: int
    norm: float | None  # None: weights pruned by compaction and no norm recorded
    created: datetime


def ema_norm(s, norms: NormCache, adapter_id: int, sha256: str, meta: dict) -> float | None:
    """The accumulator records `total_norm` in each version's meta; older rows get it from their weights."""
    if isinstance(meta.get("total_norm"), (int, float)):
        return float(meta["total_norm"])
    if meta.get("pruned"):
        return None
    known = norms.known(sha256)
    if known is None:  # only blobs not seen before are read
        known = norms.compute(sha256, s.scalar(select(Adapter.blob).where(Adapter.id == adapter_id)))
    return known.total


@dataclass(frozen=True)
class GateRollback:
    """An EMA version the accumulate gate wrote to take a fold back out (meta.gate)."""
    version: int
    folded_in: int  # the version it undid
    skill: str | None
    metric: str
    baseline: float  # the held-out score before the fold
    candidate: float  # and with it
    created: datetime


@dataclass(frozen=True)
class RunRow:
    id: int
    kind: str
    status: str
    started: datetime
    seconds: float | None
    details: str


@dataclass(frozen=True)
class HeldoutRound:
    """One round of a curriculum run (bench/bench_evolution.py): the held-out fix rate of the store's agent."""
    round: int
    n: int
    rates: dict[int, float]  # K -> % of held-out tasks fixed within K attempts


@dataclass
class Overview:
    skills_by_source: dict[str, int] = field(default_factory=dict)
    # cumulative skill count per day, per source; days are UTC midnights
    skill_times: list[datetime] = field(default_factory=list)  # when skills first appeared
    skill_series: dict[str, list[int]] = field(default_factory=dict)
    trajectories: int = 0
    verified: int = 0
    success: list[tuple[datetime, float]] = field(default_factory=list)  # (finished or started, % verified)
    ema: list[EmaPoint] = field(default_factory=list)
    rollbacks: list[GateRollback] = field(default_factory=list)  # newest first
    runs: list[RunRow] = field(default_factory=list)
    hypernet: str | None = None
    last_eval: dict[str, float] = field(default_factory=dict)  # mode -> mean value of the latest eval run
    heldout_run: str | None = None  # the latest curriculum run whose rounds are in the store
    heldout: list[HeldoutRound] = field(default_factory=list)
    jobs: JobsSnapshot = field(default_factory=JobsSnapshot)

    @property
    def empty(self) -> bool:
        return not (sum(self.skills_by_source.values()) or self.trajectories or self.ema or self.runs)


def _details(d: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in (d or {}).items())


def skill_growth(first_seen: list[tuple[str, datetime]]) -> tuple[list[datetime], dict[str, list[int]]]:
    """Cumulative counts by source at each moment a skill first appeared.

    Moments rather than calendar days, so that a history of hours draws a line (and the chart's axis
    reads times of day) instead of collapsing into one point.
    """
    if not first_seen:
        return [], {}
    births = sorted((as_utc(t), src) for src, t in first_seen)
    per_moment: Counter = Counter(births)
    moments = sorted({t for t, _ in births})
    series = {}
    for src in SOURCES:
        total, out = 0, []
        for t in moments:
            total += per_moment[(t, src)]
            out.append(total)
        series[src] = out
    return moments, series


def moving_rate(outcomes: list[tuple[datetime, bool]], window: int = SUCCESS_WINDOW) -> list[tuple[datetime, float]]:
    out = []
    for i, (when, _) in enumerate(outcomes):
        chunk = outcomes[max(0, i - window + 1): i + 1]
        out.append((when, 100.0 * sum(v for _, v in chunk) / len(chunk)))
    return out


def heldout_rounds(s) -> tuple[str | None, list[HeldoutRound]]:
    """The held-out fix rate per round of the latest curriculum run recorded in this store (EvalResult rows
    with split "heldout", metric fix_rate_kK and the round in details)."""
    rows = s.execute(select(EvalResult.metric, EvalResult.value, EvalResult.n, EvalResult.details)
                     .where(EvalResult.split == "heldout", EvalResult.subtask == "bug-fixing",
                            EvalResult.metric.like("fix_rate_k%"))
                     .order_by(EvalResult.created_at, EvalResult.id)).all()
    runs = [(d or {}).get("run") for *_, d in rows]
    latest = next((r for r in reversed(runs) if r), None)
    by_round: dict[int, HeldoutRound] = {}
    for (metric, value, n, d), run in zip(rows, runs):
        k, rnd = metric.removeprefix("fix_rate_k"), (d or {}).get("round")
        if run != latest or not k.isdigit() or not isinstance(rnd, int):
            continue
        row = by_round.setdefault(rnd, HeldoutRound(rnd, int(n or 0), {}))
        row.rates[int(k)] = 100.0 * float(value)
    return latest, [by_round[r] for r in sorted(by_round)]


def load_overview(reader: Reader, norms: NormCache, with_jobs: bool = True) -> Overview:
    ov = Overview()
    with reader.session() as s:
        # a skill's birth is its first version; its source is the current version's
        births = dict(s.execute(select(Skill.name, func.min(Skill.created_at)).group_by(Skill.name)).all())
        current = s.execute(select(Skill.name, Skill.source).where(Skill.is_current.is_(True),
                                                                     Skill.status == "active")).all()
        ov.skills_by_source = {src: 0 for src in SOURCES} | Counter(src for _, src in current)
        ov.skill_times, ov.skill_series = skill_growth([(src, births[name]) for name, src in current])

        done = s.execute(select(Trajectory.started_at, Trajectory.finished_at, Trajectory.verified)
                         .where(Trajectory.status != "running").order_by(Trajectory.started_at)).all()
        ov.trajectories = s.scalar(select(func.count(Trajectory.id))) or 0
        ov.verified = sum(bool(v) for _, _, v in done)
        ov.success = moving_rate([(as_utc(f or st), bool(v)) for st, f, v in done])

        emas = s.execute(select(Adapter.id, Adapter.version, Adapter.rank, Adapter.sha256, Adapter.created_at,
                                Adapter.meta)
                         .where(Adapter.kind == "ema").order_by(Adapter.version.desc()).limit(EMA_POINTS)).all()
        for aid, version, rank, sha, created, meta in reversed(emas):
            ov.ema.append(EmaPoint(version or 0, rank, ema_norm(s, norms, aid, sha, meta or {}), as_utc(created)))
        for _, version, _, _, created, meta in emas:
            g = (meta or {}).get("gate")
            if g and len(ov.rollbacks) < ROLLBACKS_SHOWN:
                ov.rollbacks.append(GateRollback(version or 0, int(g["version"]), g.get("skill"), str(g["metric"]),
                                                 float(g["baseline"]), float(g["candidate"]), as_utc(created)))

        runs = s.scalars(select(EvolutionRun).order_by(EvolutionRun.started_at.desc(), EvolutionRun.id.desc())
                         .limit(RUNS_SHOWN)).all()
        for r in runs:
            secs = (as_utc(r.finished_at) - as_utc(r.started_at)).total_seconds() if r.finished_at else None
            ov.runs.append(RunRow(r.id, r.kind, r.status, as_utc(r.started_at), secs, _details(r.details)))

        ov.hypernet = s.scalar(select(HypernetCheckpoint.name).where(HypernetCheckpoint.status == "accepted")
                               .order_by(HypernetCheckpoint.created_at.desc(), HypernetCheckpoint.id.desc())
                               .limit(1))
        # (the accumulate gate's scores are log-probabilities of one EMA version: not an eval to sum up here)
        last_run = s.scalar(select(EvalResult.run_id).where(EvalResult.run_id.not_like("ema-gate-v%"))
                            .order_by(EvalResult.created_at.desc(), EvalResult.id.desc()).limit(1))
        if last_run is not None:
            rows = s.execute(select(EvalResult.mode, func.avg(EvalResult.value))
                             .where(EvalResult.run_id == last_run).group_by(EvalResult.mode)).all()
            ov.last_eval = {mode: float(v) for mode, v in rows}
        ov.heldout_run, ov.heldout = heldout_rounds(s)
    if with_jobs:
        ov.jobs = read_jobs(reader.url)
    return ov
