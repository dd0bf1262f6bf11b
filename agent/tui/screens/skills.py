"""Skills: a searchable, sortable table and the highlighted skill's SKILL.md, adapter and trajectories."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.content import Content
from textual.timer import Timer
from textual.widgets import DataTable, Footer, Input, Markdown, Static, TabbedContent, TabPane

from agent.tui import timefmt
from agent.tui.screens.base import DataScreen
from agent.tui.screens.trajectory_view import TrajectoryViewer
from agent.tui.skills_data import COLUMNS, SkillDetail, SkillRow, arrange, load_detail, load_skills
from agent.tui.widgets.cells import plain, tinted
from agent.tui.widgets.heatmap import NormHeatmap

EMPTY = """\
No skills in this database yet.

  agent skills import PATH     add skills from SKILL.md folders
  agent solve REPO "TASK"      successful runs become extracted skills
"""
# numbers and dates read best largest / newest first
DESCENDING_FIRST = {"uses", "wins", "created"}
SEARCH_DELAY = 0.15  # seconds of quiet typing before the table is filtered
# fixed widths so that the table fits 80 columns; the detail pane's title shows a long name in full
WIDTHS = {"name": 24, "subtask": 16, "source": 9, "uses": 4, "wins": 4, "created": 10}
# the detail pane's tabs, each a key away: (key, pane id, title)
TABS = (("d", "tab-doc", "SKILL.md"), ("a", "tab-adapter", "Adapter"), ("t", "tab-trajs", "Trajectories"))
DETAIL_TABS = Binding.Group("Tabs")


class SkillsScreen(DataScreen):
    MODE = "skills"
    AUTO_FOCUS = "#skills"
    BINDINGS = [
        Binding("slash", "search", "Search"),
        Binding("s", "cycle_sort", "Sort"),
        Binding("r", "reverse_sort", "Reverse"),
        Binding("escape", "leave_search", "Table", show=False),
        *(Binding(key, f"show_tab('{pane}')", title, group=DETAIL_TABS, tooltip=f"the {title} tab")
          for key, pane, title in TABS),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[SkillRow] = []
        self.query_text = ""
        self.sort_key = "name"
        self.reverse = False
        self.detail_id: int | None = None
        self.search_timer: Timer | None = None

    def compose(self) -> ComposeResult:
        yield self.nav()
        with Horizontal(id="skills-split"):
            with Vertical(id="skills-left"):
                with Horizontal(id="skills-bar"):
                    yield Input(placeholder="/ search", id="search", compact=True)
                    yield Static("", id="skills-status")
                yield DataTable(id="skills", cursor_type="row", zebra_stripes=True)
                yield Static(EMPTY, id="skills-empty", classes="empty")
            with TabbedContent(id="skill-detail"):
                with TabPane(tab_title("tab-doc"), id="tab-doc"):
                    with VerticalScroll(id="doc-scroll"):
                        yield Markdown("", id="skill-doc")
                with TabPane(tab_title("tab-adapter"), id="tab-adapter"):
                    with VerticalScroll():
                        yield Static("", id="adapter-info")
                        yield NormHeatmap(id="adapter-map")
                with TabPane(tab_title("tab-trajs"), id="tab-trajs"):
                    yield DataTable(id="skill-trajs", cursor_type="row")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#skill-detail").border_title = "select a skill"
        t = self.query_one("#skills", DataTable)
        for key, label, _ in COLUMNS:
            t.add_column(label, key=key, width=WIDTHS.get(key))
        self.query_one("#skill-trajs", DataTable).add_columns("id", "how", "status", "✓", "started", "task")
        self.update_sort_title()

    def forget(self) -> None:
        self.rows, self.detail_id = [], None

    # --- list ------------------------------------------------------------------------------------
    def load(self) -> list[SkillRow]:
        return load_skills(self.tui.reader)

    def show(self, rows: list[SkillRow]) -> None:
        if rows == self.rows and self.query_one("#skills", DataTable).row_count:
            return  # nothing changed: keep the cursor and scroll where the user left them
        self.rows = rows
        self.set_class(not rows, "-empty")
        self.fill_table()

    def fill_table(self) -> None:
        t = self.query_one("#skills", DataTable)
        keep = None
        if t.row_count:
            keep = t.coordinate_to_cell_key(t.cursor_coordinate).row_key.value
        t.clear()
        shown = arrange(self.rows, self.query_text, self.sort_key, self.reverse)
        for r in shown:
            t.add_row(plain(r.name), plain(r.subtask), tinted(self.app, r.source), plain(r.uses), plain(r.wins),
                      plain(timefmt.date(r.created)), key=r.name)
        names = [r.name for r in shown]
        if keep in names:
            t.move_cursor(row=names.index(keep), animate=False)
        self.update_sort_title()
        if shown:
            self.open_detail(shown[t.cursor_row if keep in names else 0].id)

    def update_sort_title(self) -> None:
        arrow = "↓" if self.reverse else "↑"
        shown = len(arrange(self.rows, self.query_text, self.sort_key, self.reverse))
        self.query_one("#skills-status", Static).update(f"{shown}/{len(self.rows)} · {self.sort_key} {arrow}")

    def set_sort(self, key: str, reverse: bool | None = None) -> None:
        if reverse is None:
            reverse = (not self.reverse) if key == self.sort_key else key in DESCENDING_FIRST
        self.sort_key, self.reverse = key, reverse
        self.fill_table()

    def action_cycle_sort(self) -> None:
        keys = [k for k, _, _ in COLUMNS]
        nxt = keys[(keys.index(self.sort_key) + 1) % len(keys)]
        self.set_sort(nxt, nxt in DESCENDING_FIRST)

    def action_reverse_sort(self) -> None:
        self.set_sort(self.sort_key, not self.reverse)

    @on(DataTable.HeaderSelected, "#skills")
    def header_clicked(self, event: DataTable.HeaderSelected) -> None:
        self.set_sort(str(event.column_key.value))

    def action_search(self) -> None:
        self.query_one("#search", Input).focus()

    def action_leave_search(self) -> None:
        self.apply_search()
        self.query_one("#skills", DataTable).focus()

    @on(Input.Changed, "#search")
    def search_changed(self, event: Input.Changed) -> None:
        # filter once typing pauses, not on every key: each refill also reloads the highlighted skill
        self.query_text = event.value
        if self.search_timer is not None:
            self.search_timer.stop()
        self.search_timer = self.set_timer(SEARCH_DELAY, self.apply_search)

    def apply_search(self) -> None:
        if self.search_timer is not None:
            self.search_timer.stop()
            self.search_timer = None
            self.fill_table()

    @on(Input.Submitted, "#search")
    def search_done(self) -> None:
        self.apply_search()
        self.query_one("#skills", DataTable).focus()

    # --- detail ----------------------------------------------------------------------------------
    @on(DataTable.RowHighlighted, "#skills")
    def row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        row = next((r for r in self.rows if r.name == event.row_key.value), None)
        if row is not None:
            self.open_detail(row.id)

    @on(DataTable.RowSelected, "#skills")
    def row_selected(self) -> None:
        self.query_one("#doc-scroll").focus()

    def open_detail(self, skill_id: int) -> None:
        if skill_id == self.detail_id:
            return
        self.detail_id = skill_id
        reader, norms = self.tui.reader, self.tui.norms
        self.run_worker(lambda: load_detail(reader, norms, skill_id), thread=True, exclusive=True, group="detail",
                        exit_on_error=False)

    def show_detail(self, d: SkillDetail | None) -> None:
        if d is None or d.id != self.detail_id:
            return
        pane = self.query_one("#skill-detail")
        versions = f"v{d.version}" + (f" of {d.versions}" if d.versions > 1 else "")
        pane.border_title = f"{d.name} · {versions} · {d.source}"
        self.query_one("#skill-doc", Markdown).update(d.markdown)
        self.query_one("#adapter-info", Static).update(_adapter_text(d))
        self.query_one("#adapter-map", NormHeatmap).show(d.adapter.norms if d.adapter else None)
        t = self.query_one("#skill-trajs", DataTable)
        t.clear()
        for ref in d.trajectories:
            how = f"used ×{ref.weight:.2f}" if ref.relation == "used" and ref.weight else ref.relation
            t.add_row(plain(ref.id), plain(how), tinted(self.app, ref.status, "success" if ref.verified else None),
                      plain("✓" if ref.verified else "·"), plain(timefmt.stamp(ref.started)), plain(ref.task),
                      key=str(ref.id))
        if not d.trajectories:
            t.add_row("", plain("no trajectory used or produced this skill yet"), "", "", "", "")

    def action_show_tab(self, pane: str) -> None:
        self.query_one("#skill-detail", TabbedContent).active = pane

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        if action == "show_tab":  # no detail pane on an empty store
            return bool(self.rows)
        return True

    @on(DataTable.RowSelected, "#skill-trajs")
    def open_trajectory(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value:
            self.app.push_screen(TrajectoryViewer(int(event.row_key.value)))


def tab_title(pane: str) -> Content:
    """The tab's title led by its key, as the bar of screens on top shows theirs."""
    key, title = next((k, t) for k, p, t in TABS if p == pane)
    return Content.assemble((key, "bold"), f" {title}")


def _adapter_text(d: SkillDetail) -> Content:
    a = d.adapter
    if a is None:
        return Content("No adapter yet: `agent convert NAME` turns this skill into one.")
    lines = [f"adapter #{a.id} · rank {a.rank} · adapter size {a.size / 1024:.0f} KiB",
             f"for {a.base_model} · made by hypernet #{a.hypernet_id} · {timefmt.stamp(a.created)}"]
    if a.norms is not None:
        lines.append(f"‖ΔW‖_F total {a.norms.total:.3f} over {len(a.norms.per_module)} modules")
    if a.error:
        lines.append(f"cannot read this adapter: {a.error}")
    return Content("\n".join(lines))
