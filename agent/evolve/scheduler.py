"""Scheduled jobs: the config file, and APScheduler 3 with its job store in the agent's own database.

Config (TOML, or YAML by suffix; `./agent.toml` when present, or `--config`):

    [jobs]
    extract = "10m"                                # shorthand for { interval = "10m" }
    accumulate = { interval = "30m" }
    retrain = { interval = "24h", enabled = false }
    compact = "7d"

    [evolve]                                       # EvolveSettings fields
    beta = 0.9
    writer = "auto"

    [daemon]
    model = "smollm2-135m-instruct"
    hypernet = "path/to/checkpoint.safetensors"
    poll = "2s"                                    # how often the queue and the job store are checked

Every value is checked when the config is loaded (a bad interval or an unknown job is a ConfigError,
one line naming the file), so a daemon never starts with a schedule it cannot run.

Jobs are stored in `apscheduler_jobs` (APScheduler's SQLAlchemyJobStore over the store's engine) with
id = job name and the function `agent.evolve.scheduler:fire`, so their next run times survive restarts; a job
whose interval is unchanged keeps its next run time and its paused state across restarts.
"""

from __future__ import annotations

import logging
import re
import tomllib
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from agent.evolve import job_control
from agent.evolve.context import JOB_NAMES, EvolveContext, EvolveSettings, SettingsError
from agent.evolve.cycle import run_job
from memory.db import Store

log = logging.getLogger(__name__)

TABLE = "apscheduler_jobs"
FUNC_REF = "agent.evolve.scheduler:fire"
DEFAULT_CONFIG = Path("agent.toml")
DEFAULT_INTERVALS = {"extract": "10m", "accumulate": "30m", "retrain": "24h", "compact": "7d"}
MIN_INTERVAL_S = 1.0
MAX_INTERVAL_S = 366 * 86400.0
_UNITS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}


class ConfigError(ValueError):
    """A job config that cannot run: reported at start-up, one line, exit 2."""


# --- config ---------------------------------------------------------------------------------------------

def parse_interval(value: Any, what: str = "interval") -> float:
    """'90s', '10m', '1h30m', '2d' or a number of seconds -> seconds."""
    if isinstance(value, bool):
        raise ConfigError(f"invalid {what} {value!r}: use e.g. 30s, 10m, 2h or 1d")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        text = str(value).strip().lower().replace(" ", "")
        parts = re.findall(r"(\d+(?:\.\d+)?)([dhms])", text)
        if re.fullmatch(r"\d+(?:\.\d+)?", text):
            seconds = float(text)
        elif parts and "".join(n + u for n, u in parts) == text:
            seconds = sum(float(n) * _UNITS[u] for n, u in parts)
        else:
            raise ConfigError(f"invalid {what} {value!r}: use e.g. 30s, 10m, 2h or 1d")
    if not (MIN_INTERVAL_S <= seconds <= MAX_INTERVAL_S):
        raise ConfigError(f"invalid {what} {value!r}: must be between 1s and 366d")
    return seconds


def format_interval(seconds: float) -> str:
    for unit, size in _UNITS.items():
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


@dataclass(frozen=True)
class JobSpec:
    name: str
    interval_s: float
    enabled: bool = True


@dataclass
class DaemonConfig:
    jobs: dict[str, JobSpec]
    settings: EvolveSettings = field(default_factory=EvolveSettings)
    poll_s: float = 2.0
    model: str | None = None
    hypernet: str | None = None
    source: str = "defaults"

    @property
    def enabled(self) -> list[JobSpec]:
        return [j for j in self.jobs.values() if j.enabled]


def _read(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror or exc}") from None
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            data = tomllib.loads(text)
    except Exception as exc:  # noqa: BLE001 - tomllib / yaml errors: one line naming the file
        raise ConfigError(f"{path}: not valid {'YAML' if path.suffix in ('.yaml', '.yml') else 'TOML'} "
                          f"({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the config must be a table/mapping")
    return data


def _section(data: dict, name: str, where: str) -> dict:
    value = data.get(name) or {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: [{name}] must be a table")
    return value


def load_config(path: Path | None = None, intervals: list[str] | None = None,
                settings: dict[str, Any] | None = None) -> DaemonConfig:
    """The config file (explicit, or ./agent.toml if present) + `--interval NAME=SPEC` flags + setting flags."""
    data: dict[str, Any] = {}
    where = "defaults"
    if path is not None:
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        data, where = _read(path), str(path)
    elif DEFAULT_CONFIG.is_file():
        data, where = _read(DEFAULT_CONFIG), str(DEFAULT_CONFIG)
    unknown = set(data) - {"jobs", "evolve", "daemon"}
    if unknown:
        raise ConfigError(f"{where}: unknown section {sorted(unknown)[0]!r} (sections: jobs, evolve, daemon)")
    raw_jobs = dict(_section(data, "jobs", where))
    for flag in intervals or []:
        name, sep, spec = flag.partition("=")
        if not sep:
            raise ConfigError(f"--interval {flag!r}: use NAME=INTERVAL, e.g. extract=10m")
        raw_jobs[name.strip()] = spec.strip()
    jobs = {}
    for name in JOB_NAMES:
        jobs[name] = JobSpec(name, parse_interval(DEFAULT_INTERVALS[name]))
    for name, spec in raw_jobs.items():
        if name not in JOB_NAMES:
            raise ConfigError(f"{where}: unknown job {name!r} (jobs: {', '.join(JOB_NAMES)})")
        if isinstance(spec, dict):
            extra = set(spec) - {"interval", "enabled"}
            if extra:
                raise ConfigError(f"{where}: job {name}: unknown key {sorted(extra)[0]!r} (interval, enabled)")
            enabled = spec.get("enabled", True)
            if not isinstance(enabled, bool):
                raise ConfigError(f"{where}: job {name}: enabled must be true or false")
            seconds = parse_interval(spec.get("interval", DEFAULT_INTERVALS[name]), f"interval for job {name}")
        else:
            enabled, seconds = True, parse_interval(spec, f"interval for job {name}")
        jobs[name] = JobSpec(name, seconds, enabled)
    daemon = _section(data, "daemon", where)
    extra = set(daemon) - {"model", "hypernet", "poll"}
    if extra:
        raise ConfigError(f"{where}: [daemon] unknown key {sorted(extra)[0]!r} (model, hypernet, poll)")
    for key in ("model", "hypernet"):
        if daemon.get(key) is not None and not isinstance(daemon[key], str):
            raise ConfigError(f"{where}: [daemon] {key} must be a string")
    poll = parse_interval(daemon.get("poll", 2), "[daemon] poll") if "poll" in daemon else 2.0
    try:
        evolve = {**_section(data, "evolve", where), **{k: v for k, v in (settings or {}).items() if v is not None}}
        st = EvolveSettings.from_mapping(evolve, where=f"{where} [evolve]")
    except SettingsError as exc:
        raise ConfigError(str(exc)) from None
    return DaemonConfig(jobs, st, poll, daemon.get("model"), daemon.get("hypernet"), where)


# --- APScheduler -------------------------------------------------------------------------------------------

class SharedEngineJobStore(SQLAlchemyJobStore):
    """APScheduler's SQLAlchemy job store on the store's own engine (WAL, busy timeout, BEGIN IMMEDIATE).

    Its shutdown would dispose the engine, which the rest of the process is still using: skip that.
    """

    def shutdown(self) -> None:
        pass


def make_scheduler(store: Store) -> BackgroundScheduler:
    # one worker: jobs run one after another (they share the model, and a step is the unit a stop waits for)
    return BackgroundScheduler(
        jobstores={"default": SharedEngineJobStore(engine=store.engine, tablename=TABLE)},
        executors={"default": ThreadPoolExecutor(max_workers=1)},
        # a job missed while the daemon was down runs once at start-up, however late
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        timezone=timezone.utc,
    )


def sync_jobs(scheduler: BackgroundScheduler, config: DaemonConfig) -> dict[str, str]:
    """Make the stored jobs match the config; unchanged jobs keep their next run time and paused state."""
    actions: dict[str, str] = {}
    wanted = {j.name: j for j in config.enabled}
    for job in scheduler.get_jobs():
        if job.id not in wanted:
            scheduler.remove_job(job.id)
            actions[job.id] = "removed"
    for name, spec in wanted.items():
        job = scheduler.get_job(name)
        interval = timedelta(seconds=spec.interval_s)
        if job is not None and job.func_ref == FUNC_REF and tuple(job.args) == (name,) and \
                isinstance(job.trigger, IntervalTrigger) and job.trigger.interval == interval:
            actions[name] = "kept" if job.next_run_time else "kept (paused)"
            continue
        paused = job is not None and job.next_run_time is None
        scheduler.add_job(FUNC_REF, trigger=IntervalTrigger(seconds=spec.interval_s, timezone=timezone.utc),
                          id=name, name=name, args=[name], replace_existing=True)
        if paused:
            scheduler.pause_job(name)
        actions[name] = "added" if job is None else "updated"
    return actions


# The context `fire` runs jobs with: set by the daemon that owns the running scheduler.
_active: EvolveContext | None = None
_on_report: Callable[[Any], None] | None = None


def activate(ctx: EvolveContext | None, on_report: Callable[[Any], None] | None = None) -> None:
    global _active, _on_report
    _active, _on_report = ctx, on_report


def fire(name: str) -> None:
    """What APScheduler calls (by reference, so stored jobs survive restarts): run job `name` now."""
    ctx = _active
    if ctx is None:
        log.warning("job %s fired with no active daemon context: skipped", name)
        return
    if ctx.stopping():
        return
    report = run_job(ctx, name)
    if _on_report is not None:
        _on_report(report)


# --- jobs as the CLI sees them ------------------------------------------------------------------------------

@dataclass(frozen=True)
class JobRow:
    name: str
    interval: str | None
    next_run: datetime | None
    state: str  # scheduled | paused | not scheduled | disabled
    last_status: str | None = None
    last_finished: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "interval": self.interval, "state": self.state,
                "next_run": self.next_run.isoformat() if self.next_run else None, "last_status": self.last_status,
                "last_finished": self.last_finished.isoformat() if self.last_finished else None}


def list_jobs(store: Store, config: DaemonConfig | None = None) -> list[JobRow]:
    from memory import evolution as evo_repo

    snapshot = job_control.read_jobs(store.url)
    if snapshot.error:
        raise ConfigError(snapshot.error)
    stored = {j.id: j for j in snapshot.jobs}
    with store.session() as s:
        last = {}
        for run in evo_repo.recent_runs(s, limit=200):
            last.setdefault(run.kind, run)
    rows = []
    for name in JOB_NAMES:
        job, run = stored.get(name), last.get(name)
        spec = config.jobs.get(name) if config else None
        if job is not None:
            interval = format_interval(job.interval_s) if job.interval_s else job.trigger
            state, nxt = ("scheduled", job.next_run) if job.next_run else ("paused", None)
        else:
            interval = format_interval(spec.interval_s) if spec else None
            state = "disabled" if spec and not spec.enabled else "not scheduled"
            nxt = None
        rows.append(JobRow(name, interval, nxt, state, run.status if run else None,
                           run.finished_at if run else None))
    return rows


def _check_name(name: str) -> None:
    if name not in JOB_NAMES:
        raise ConfigError(f"unknown job {name!r} (jobs: {', '.join(JOB_NAMES)})")


def _control(change: Callable[[str, str], str], store: Store, name: str) -> None:
    _check_name(name)
    try:
        change(store.url, name)
    except job_control.JobsError as exc:
        raise ConfigError(str(exc)) from None


def pause(store: Store, name: str) -> None:
    _control(job_control.pause, store, name)


def resume(store: Store, name: str) -> datetime | None:
    _control(job_control.resume, store, name)
    job = next((j for j in job_control.read_jobs(store.url).jobs if j.id == name), None)
    return job.next_run if job else None
