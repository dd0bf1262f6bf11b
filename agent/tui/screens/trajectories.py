"""Trajectories: every agent run with its outcome; Enter steps through one."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import DataTable, Footer, Static

from agent.tui import timefmt
from agent.tui.screens.base import DataScreen
from agent.tui.screens.trajectory_view import TrajectoryViewer
from agent.tui.trajectories_data import TrajectoryRow, load_trajectories
from agent.tui.widgets.cells import plain, tinted

EMPTY = """\
No trajectories yet: every `agent solve` run is recorded here, message by message.

  agent solve REPO "TASK"
"""


class TrajectoriesScreen(DataScreen):
    MODE = "trajectories"
    # priority: the table's own (hidden) enter binding would otherwise keep "Open" out of the footer
    BINDINGS = [Binding("enter", "open", "Open", priority=True)]

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[TrajectoryRow] = []

    def compose(self) -> ComposeResult:
        yield self.nav()
        with Vertical(id="trajs-box"):
            yield DataTable(id="trajs", cursor_type="row", zebra_stripes=True)
            yield Static(EMPTY, id="trajs-empty", classes="empty")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        t = self.query_one("#trajs", DataTable)
        t.add_column("id", key="id")
        t.add_column("status", key="status")
        t.add_column("✓", key="verified")
        t.add_column("mode", key="mode")
        t.add_column("steps", key="steps")
        t.add_column("time", key="time")
        t.add_column("started", key="started")
        t.add_column("task", key="task")

    def forget(self) -> None:
        self.rows = []

    def load(self) -> list[TrajectoryRow]:
        return load_trajectories(self.tui.reader)

    def show(self, rows: list[TrajectoryRow]) -> None:
        if rows == self.rows and self.query_one("#trajs", DataTable).row_count:
            return
        self.rows = rows
        self.set_class(not rows, "-empty")
        t = self.query_one("#trajs", DataTable)
        keep = t.coordinate_to_cell_key(t.cursor_coordinate).row_key.value if t.row_count else None
        t.clear()
        for r in rows:
            t.add_row(plain(r.id), tinted(self.app, r.status, "success" if r.verified else None),
                      plain("✓" if r.verified else "·"), plain(r.mode), plain(r.steps), plain(timefmt.duration(r.seconds)),
                      plain(timefmt.stamp(r.started)), plain(r.task), key=str(r.id))
        keys = [str(r.id) for r in rows]
        if keep in keys:
            t.move_cursor(row=keys.index(keep), animate=False)
        verified = sum(r.verified for r in rows)
        self.query_one("#trajs-box").border_title = f"{len(rows)} trajectories · {verified} verified"

    def action_open(self) -> None:
        t = self.query_one("#trajs", DataTable)
        if t.row_count:
            self.open(t.coordinate_to_cell_key(t.cursor_coordinate).row_key.value)

    @on(DataTable.RowSelected, "#trajs")
    def row_selected(self, event: DataTable.RowSelected) -> None:
        self.open(event.row_key.value)

    def open(self, key: str | None) -> None:
        if key:
            self.app.push_screen(TrajectoryViewer(int(key)))
