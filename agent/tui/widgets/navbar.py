"""The one-line bar of screens at the top: shows where you are, and is clickable."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.content import Content
from textual.widgets import Static

TABS = (("overview", "1", "Overview"), ("skills", "2", "Skills"), ("trajectories", "3", "Trajectories"),
        ("jobs", "4", "Jobs"))


def tabs_markup(current: str) -> Content:
    parts = []
    for mode, key, label in TABS:
        style = "bold reverse" if mode == current else "dim"
        parts.append(f"[@click=app.switch_mode('{mode}')][{style}] {key} {label} [/][/]")
    return Content.from_markup(" ".join(parts))


class NavBar(Horizontal):
    DEFAULT_CSS = """
    NavBar { height: 1; dock: top; background: $panel; }
    NavBar > #nav-tabs { width: 1fr; }
    NavBar > #nav-db { width: auto; color: $text-muted; padding: 0 1; }
    """

    def __init__(self, current: str, db_label: str) -> None:
        super().__init__()
        self.current = current
        self.db_label = db_label

    def compose(self) -> ComposeResult:
        yield Static(tabs_markup(self.current), id="nav-tabs")
        yield Static(Content(self.db_label), id="nav-db")
