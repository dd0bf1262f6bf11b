"""Job control for the CLI and the TUI: the scheduler's jobs, read from and steered through APScheduler's SQLAlchemyJobStore in the shared database.

Jobs live in APScheduler 3.x's default table `apscheduler_jobs`; their state is pickled by APScheduler,
so every read and change goes through its job store, never through our own unpickling. Changes are
written to the table: a running daemon reads its jobs from there each time it wakes up, so a pause
takes effect at once and a resumed or run-now job at the daemon's next wake-up.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.base import BaseScheduler
from sqlalchemy import and_, inspect, select

TABLE = "apscheduler_jobs"


class JobsError(RuntimeError):
    """A pause, resume or run-now that could not be done (shown to the user, not raised to the top)."""


class ViewerJobStore(SQLAlchemyJobStore):
    """APScheduler's store, minus one behaviour: it deletes jobs it cannot unpickle.

    A job a daemon wrote may name a function this process cannot import (another version, another
    virtualenv); a viewer must list that job as unreadable, not remove it from the daemon's schedule.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.unreadable: list[str] = []

    def _get_jobs(self, *conditions):
        jobs, self.unreadable = [], []
        q = select(self.jobs_t.c.id, self.jobs_t.c.job_state).order_by(self.jobs_t.c.next_run_time)
        if conditions:
            q = q.where(and_(*conditions))
        with self.engine.connect() as conn:
            for row in conn.execute(q):
                try:
                    jobs.append(self._reconstitute_job(row.job_state))
                except Exception:  # noqa: BLE001 - any unpickling failure means "cannot show this one"
                    logging.getLogger(__name__).debug("cannot restore job %s", row.id, exc_info=True)
                    self.unreadable.append(row.id)
        return jobs


def job_store(url: str) -> ViewerJobStore:
    options = {"connect_args": {"timeout": 30}} if url.startswith("sqlite") else {}
    return ViewerJobStore(url=url, engine_options=options)


@dataclass(frozen=True)
class JobInfo:
    id: str
    name: str
    trigger: str
    next_run: datetime | None  # None: paused
    func: str
    interval_s: float | None = None  # interval triggers (what the daemon schedules)

    @property
    def paused(self) -> bool:
        return self.next_run is None


@dataclass
class JobsSnapshot:
    has_table: bool = False
    jobs: list[JobInfo] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    error: str | None = None


def describe_trigger(trigger) -> str:
    """'every 30m' for interval triggers (what the daemon schedules); APScheduler's own text otherwise."""
    interval = getattr(trigger, "interval", None)
    if isinstance(interval, timedelta) and interval.total_seconds() > 0:
        seconds = interval.total_seconds()
        for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
            if seconds >= size and seconds % size == 0:
                return f"every {int(seconds // size)}{unit}"
        return f"every {seconds:g}s"
    return str(trigger)


def _interval_s(trigger) -> float | None:
    interval = getattr(trigger, "interval", None)
    return interval.total_seconds() if isinstance(interval, timedelta) else None


def read_jobs(url: str) -> JobsSnapshot:
    store = None
    try:
        store = job_store(url)
        if not inspect(store.engine).has_table(TABLE):
            return JobsSnapshot()
        jobs = store.get_all_jobs()
        return JobsSnapshot(True, [JobInfo(j.id, j.name, describe_trigger(j.trigger), j.next_run_time, j.func_ref, _interval_s(j.trigger))
                                   for j in jobs], list(store.unreadable))
    except Exception as exc:  # noqa: BLE001 - the Jobs screen shows why, the rest of the TUI goes on
        return JobsSnapshot(error=f"cannot read scheduled jobs: {exc}".splitlines()[0])
    finally:
        if store is not None:
            store.shutdown()


class EditingScheduler(BaseScheduler):
    """A scheduler with no main loop: it edits jobs in the store and can never run one.

    Not a paused BackgroundScheduler: APScheduler 3's loop processes due jobs once more while shutting
    down (the state check lets STOPPED through), which would advance a daemon's due jobs past their
    run time from inside the viewer.
    """

    def wakeup(self) -> None:
        pass  # nothing to wake: this scheduler has no loop

    def shutdown(self, wait: bool = True) -> None:
        super().shutdown(wait)  # abstract in APScheduler 3 only so subclasses stop their loop


def editing_scheduler(url: str) -> EditingScheduler:
    scheduler = EditingScheduler(jobstores={"default": job_store(url)}, timezone=timezone.utc)
    scheduler.start(paused=True)
    return scheduler


def _with_scheduler(url: str, job_id: str, change) -> str:
    """Run `change(scheduler)` against the shared store, then let go of it."""
    from apscheduler.jobstores.base import JobLookupError

    scheduler = editing_scheduler(url)
    try:
        return change(scheduler)
    except JobLookupError:
        raise JobsError(f"no job {job_id!r}: not scheduled yet (start `agent daemon` once to create it) "
                        "or removed by the daemon") from None
    except Exception as exc:  # noqa: BLE001 - e.g. a job whose function this process cannot import
        raise JobsError(f"{type(exc).__name__}: {exc}".splitlines()[0]) from None
    finally:
        scheduler.shutdown(wait=False)


def pause(url: str, job_id: str) -> str:
    def change(s) -> str:
        s.pause_job(job_id)
        return f"paused {job_id}"

    return _with_scheduler(url, job_id, change)


def resume(url: str, job_id: str) -> str:
    def change(s) -> str:
        job = s.resume_job(job_id)
        if job is None:  # APScheduler removes a job whose trigger has no future fire time
            return f"{job_id} had no future run time and was removed"
        return f"resumed {job_id}"

    return _with_scheduler(url, job_id, change)


def run_now(url: str, job_id: str) -> str:
    def change(s) -> str:
        s.modify_job(job_id, next_run_time=datetime.now(timezone.utc))
        return f"{job_id} is due now: the daemon runs it when it next wakes up"

    return _with_scheduler(url, job_id, change)
