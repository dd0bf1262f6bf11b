"""The `agent tui` application: four screens over one store, refreshed in the background."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from textual.app import App
from textual.binding import Binding

from agent.tui.adapter_norms import NormCache
from agent.tui.reader import Reader
from agent.tui.screens.base import DataScreen
from agent.tui.screens.help import HelpScreen
from agent.tui.screens.jobs import JobsScreen
from agent.tui.screens.overview import OverviewScreen
from agent.tui.screens.skills import SkillsScreen
from agent.tui.screens.trajectories import TrajectoriesScreen
from memory.db import Store

SCREENS = Binding.Group("Screens", compact=True)
REFRESH_SECONDS = 5.0


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def db_label(store: Store) -> str:
    url = store.engine.url
    if url.get_backend_name() == "sqlite" and url.database:
        return Path(url.database).name
    return store.url


class AgentTui(App):
    CSS_PATH = "tui.tcss"
    TITLE = "parametric-skills"
    MODES = {
        "overview": OverviewScreen,
        "skills": SkillsScreen,
        "trajectories": TrajectoriesScreen,
        "jobs": JobsScreen,
    }
    DEFAULT_MODE = "overview"
    # below 110 columns the Skills screen stacks its table over the detail pane
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (110, "-wide")]
    BINDINGS = [
        Binding("1", "switch_mode('overview')", "Overview", group=SCREENS),
        Binding("2", "switch_mode('skills')", "Skills", group=SCREENS),
        Binding("3", "switch_mode('trajectories')", "Trajectories", group=SCREENS),
        Binding("4", "switch_mode('jobs')", "Jobs", group=SCREENS),
        Binding("question_mark,f1", "help", "Help", key_display="?"),
        Binding("ctrl+r", "reload", "Refresh", show=False),
        Binding("ctrl+t", "toggle_dark", "Theme", show=False),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(self, store: Store, *, refresh_every: float | None = REFRESH_SECONDS,
                 clock: Callable[[], datetime] = utc_now, theme: str | None = None) -> None:
        """`refresh_every=None` turns live refresh off and `clock` fixes "now": tests use both."""
        super().__init__()
        self.store = store
        self.reader = Reader(store)
        self.norms = NormCache()
        self.clock = clock
        self.refresh_every = refresh_every
        self.db_label = db_label(store)
        if theme:
            self.theme = theme

    def on_mount(self) -> None:
        if self.refresh_every:
            self.set_interval(self.refresh_every, self.action_reload)

    def action_reload(self) -> None:
        if isinstance(self.screen, DataScreen):
            self.screen.reload()

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def on_unmount(self) -> None:
        self.reader.close()
