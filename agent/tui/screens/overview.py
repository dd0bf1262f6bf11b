"""Overview: how the agent's skills, persistent adapter and success rate have grown, and what runs next."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Grid, Vertical, VerticalScroll
from textual.content import Content
from textual.widgets import DataTable, Footer, Static

from agent.tui import timefmt
from agent.tui.overview_data import SUCCESS_WINDOW, Overview, load_overview
from agent.tui.screens.base import DataScreen
from agent.tui.widgets.cells import plain, tinted
from agent.tui.widgets.charts import ChartData, Series, TimeChart, VersionChart

EMPTY = """\
This database is empty: no skills, trajectories or adapters yet.

  agent skills import PATH      add skills from SKILL.md folders
  agent solve REPO "TASK"       let the agent work (trajectories, extracted skills)
  agent tui --demo demo.db      look around a demo database first
"""


class OverviewScreen(DataScreen):
    MODE = "overview"

    def compose(self) -> ComposeResult:
        yield self.nav()
        yield Static("loading…", id="summary")
        yield Static(EMPTY, id="overview-empty", classes="empty")
        with VerticalScroll(id="overview-body"):
            with Grid(id="overview-grid"):
                yield TimeChart("Skills over time", id="chart-skills", classes="panel")
                yield TimeChart(f"Solve rate (last {SUCCESS_WINDOW})", id="chart-success", classes="panel")
                yield VersionChart(id="chart-ema", classes="panel")
                with Vertical(id="overview-tables", classes="panel"):
                    yield DataTable(id="runs", cursor_type="none", show_cursor=False)
                    yield DataTable(id="jobs-mini", cursor_type="none", show_cursor=False)
                    yield DataTable(id="heldout", cursor_type="none", show_cursor=False)
                    yield DataTable(id="rollbacks", cursor_type="none", show_cursor=False)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#chart-ema").border_title = "EMA adapter by version"
        self.query_one("#overview-tables").border_title = "Evolution runs · jobs"
        runs = self.query_one("#runs", DataTable)
        runs.add_columns("run", "status", "started")
        jobs = self.query_one("#jobs-mini", DataTable)
        jobs.add_columns("job", "next run")
        self.query_one("#rollbacks", DataTable).add_columns("EMA rollback", "skill", "held-out before → with it")

    def load(self) -> Overview:
        return load_overview(self.tui.reader, self.tui.norms)

    def show(self, ov: Overview) -> None:
        self.set_class(ov.empty, "-empty")
        self.query_one("#summary", Static).update(self.summary(ov))
        if ov.empty:
            return
        times = ov.skill_times
        self.query_one("#chart-skills", TimeChart).show(ChartData(
            series=[Series(src, times, [float(v) for v in ov.skill_series[src]]) for src in ov.skill_series],
        ))
        self.query_one("#chart-success", TimeChart).show(ChartData(
            series=[Series("% verified", [w for w, _ in ov.success], [r for _, r in ov.success])],
            ylim=(0, 100), empty_text="no finished trajectories yet",
        ))
        ema = self.query_one("#chart-ema", VersionChart)
        ema.show(ChartData(
            series=[Series("‖ΔW‖", [p.version for p in ov.ema if p.norm is not None],
                           [p.norm for p in ov.ema if p.norm is not None]),
                    Series("rank", [p.version for p in ov.ema], [float(p.rank) for p in ov.ema], right_axis=True)],
            empty_text="no EMA versions yet",
        ))
        ema.border_title = "EMA adapter by version" + (f" · v{ov.ema[-1].version}" if ov.ema else "")
        now = self.tui.clock()
        runs = self.query_one("#runs", DataTable)
        runs.clear()
        for r in ov.runs:  # how long ago, like the jobs' "next run" below: this panel is a glance
            runs.add_row(plain(r.kind), tinted(self.app, r.status), plain(timefmt.relative(r.started, now)))
        if not ov.runs:
            runs.add_row(plain("no evolution runs yet"), "", "")
        jobs = self.query_one("#jobs-mini", DataTable)
        jobs.clear()
        for j in ov.jobs.jobs:
            jobs.add_row(plain(j.id), tinted(self.app, "paused") if j.paused else plain(timefmt.relative(j.next_run, now)))
        if not ov.jobs.jobs:
            jobs.add_row(plain(ov.jobs.error or "no scheduled jobs"), "")
        self.show_heldout(ov)
        self.show_rollbacks(ov)

    def show_rollbacks(self, ov: Overview) -> None:
        """Folds the accumulate gate took back out, newest first; hidden in a store without one."""
        table = self.query_one("#rollbacks", DataTable)
        table.display = bool(ov.rollbacks)
        table.clear()
        for r in ov.rollbacks:
            table.add_row(tinted(self.app, f"v{r.version} undid v{r.folded_in}", "error"), plain(r.skill or "?"),
                          plain(f"{r.metric} {r.baseline:.4g} → {r.candidate:.4g}"))

    def show_heldout(self, ov: Overview) -> None:
        """The held-out fix rate per round of the latest curriculum run; hidden in a store without one."""
        table = self.query_one("#heldout", DataTable)
        table.display = bool(ov.heldout)
        self.query_one("#overview-tables").border_title = "Evolution runs · jobs" + (
            f" · held-out fix rate, {ov.heldout_run}" if ov.heldout else "")
        table.clear(columns=True)
        if not ov.heldout:
            return
        ks = sorted({k for r in ov.heldout for k in r.rates})
        table.add_columns("round", *(f"held-out K={k}" for k in ks))
        for r in ov.heldout:
            table.add_row(plain(f"r{r.round} ({r.n} tasks)"),
                          *(plain(f"{r.rates[k]:.0f}%" if k in r.rates else "") for k in ks))

    def summary(self, ov: Overview) -> Content:
        """One line, most important first: a narrow terminal crops the end."""
        if ov.empty:
            return Content("")
        parts = [f"[b]{sum(ov.skills_by_source.values())}[/] skills",
                 f"[b]{ov.trajectories}[/] runs ([b]{ov.verified}[/] verified)"]
        if ov.ema:
            last = ov.ema[-1]
            norm = f" ‖ΔW‖ {last.norm:.2f}" if last.norm is not None else ""
            parts.append(f"EMA [b]v{last.version}[/] r{last.rank}{norm}")
        if ov.hypernet:
            parts.append(f"hypernet {ov.hypernet}")
        if ov.last_eval:
            parts.append("eval " + " ".join(f"{m} {v:.2f}" for m, v in sorted(ov.last_eval.items(),
                                                                           key=lambda kv: -kv[1])))
        return Content.from_markup(" · ".join(parts))
