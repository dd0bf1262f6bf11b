"""Jobs: what the scheduler daemon will run next, with pause, resume and run-now."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import DataTable, Footer, Static

from agent.evolve import job_control as jobs_api
from agent.evolve.job_control import JobsSnapshot
from agent.tui import timefmt
from agent.tui.reader import Reader
from agent.tui.screens.base import DataScreen
from agent.tui.widgets.cells import plain, tinted
from memory.models import EvolutionRun

NO_TABLE = """\
No daemon has scheduled jobs in this database yet.

  agent daemon      start one: it schedules extract, accumulate, retrain, compact

Its jobs then appear here with their next run time and last result,
and you can pause, resume or run them now from this screen.
"""


def last_runs(reader: Reader) -> dict[str, tuple[str, datetime | None]]:
    """The latest evolution run of each kind: a daemon job's id is the kind of run it records."""
    with reader.session() as s:
        rows = s.execute(select(EvolutionRun.kind, EvolutionRun.status, EvolutionRun.finished_at)
                         .order_by(EvolutionRun.started_at.desc(), EvolutionRun.id.desc()).limit(500)).all()
    last: dict[str, tuple[str, datetime | None]] = {}
    for kind, status, finished in rows:
        last.setdefault(kind, (status, finished))
    return last


class JobsScreen(DataScreen):
    MODE = "jobs"
    BINDINGS = [
        Binding("p", "change('pause')", "Pause"),
        Binding("r", "change('resume')", "Resume"),
        Binding("x", "change('run_now')", "Run now"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.snapshot = JobsSnapshot()

    def compose(self) -> ComposeResult:
        yield self.nav()
        with Vertical(id="jobs-box"):
            yield DataTable(id="jobs", cursor_type="row", zebra_stripes=True)
            yield Static("", id="jobs-note")
        yield Static(NO_TABLE, id="jobs-empty", classes="empty")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        t = self.query_one("#jobs", DataTable)
        # "last" rather than "last run": two full timestamps and all six columns fit 80 columns
        for key in ("job", "next in", "next run", "trigger", "last", "finished"):
            t.add_column(key, key=key)

    def load(self) -> tuple[JobsSnapshot, dict[str, tuple[str, datetime | None]]]:
        return jobs_api.read_jobs(self.tui.reader.url), last_runs(self.tui.reader)

    def show(self, data: tuple[JobsSnapshot, dict[str, tuple[str, datetime | None]]]) -> None:
        snap, last = data
        self.snapshot = snap
        # the table exists in every migrated store; no jobs in it means no daemon has scheduled any
        empty = not snap.jobs and not snap.unreadable and not snap.error
        self.set_class(empty, "-empty")
        t = self.query_one("#jobs", DataTable)
        keep = t.coordinate_to_cell_key(t.cursor_coordinate).row_key.value if t.row_count else None
        t.clear()
        now = self.tui.clock()
        for j in snap.jobs:
            status, finished = last.get(j.id, ("", None))
            # a paused job has no next run: the one column says which, or how soon
            when = tinted(self.app, "paused") if j.paused else tinted(self.app, timefmt.relative(j.next_run, now),
                                                                      "success")
            t.add_row(plain(j.id), when, plain(timefmt.stamp(j.next_run)), plain(j.trigger),
                      tinted(self.app, status) if status else plain("—"), plain(timefmt.stamp(finished)), key=j.id)
        ids = [j.id for j in snap.jobs]
        if keep in ids:
            t.move_cursor(row=ids.index(keep), animate=False)
        notes = []
        if snap.error:
            notes.append(snap.error)
        if snap.unreadable:
            notes.append(f"{len(snap.unreadable)} job(s) this version cannot read (left untouched): "
                         + ", ".join(snap.unreadable))
        notes.append("p pause · r resume · x run now: changes go to the database, where a running daemon "
                     "picks them up at its next poll (every few seconds).")
        self.query_one("#jobs-note", Static).update("\n".join(notes))
        self.query_one("#jobs-box").border_title = f"{len(snap.jobs)} scheduled jobs"

    def action_change(self, what: str) -> None:
        t = self.query_one("#jobs", DataTable)
        if not t.row_count:
            self.notify("no job selected", severity="warning")
            return
        job_id = t.coordinate_to_cell_key(t.cursor_coordinate).row_key.value
        url, change = self.tui.reader.url, getattr(jobs_api, what)
        self.run_worker(lambda: change(url, job_id), thread=True, group="change", exit_on_error=False)

    def show_change(self, message: str) -> None:
        self.notify(message)
        self.reload()

    def on_worker_state_changed(self, event) -> None:
        # a refused change (job gone, function not importable) is its own message; DataScreen's handler
        # (which Textual also calls, walking the MRO) would call it a failed read
        if event.worker.group == "change" and isinstance(event.worker.error, jobs_api.JobsError):
            self.notify(str(event.worker.error), severity="error", timeout=6)
            event.prevent_default()
