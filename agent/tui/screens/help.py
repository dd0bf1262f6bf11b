"""The help screen: every key, per screen, over whatever screen you were on."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Static

SECTIONS = [
    ("Everywhere", [
        ("1 2 3 4", "Overview, Skills, Trajectories, Jobs"),
        ("", "(or click a name in the top bar)"),
        ("? f1", "this help"),
        ("ctrl+r", "refresh now (screens refresh every few seconds)"),
        ("ctrl+t", "light / dark theme; ctrl+p: every theme"),
        ("tab", "next pane"),
        ("q", "quit"),
    ]),
    ("Skills", [
        ("/", "search name, subtask, source, description"),
        ("enter esc", "from the search back to the table"),
        ("s r", "next sort column / reverse (or click a header)"),
        ("↑ ↓", "highlight a skill: SKILL.md, adapter norms and"),
        ("", "trajectories show in the detail pane"),
        ("enter", "into the detail pane; tab on to its tabs"),
        ("d a t", "detail tab: SKILL.md / Adapter / Trajectories"),
    ]),
    ("Trajectories", [
        ("enter", "step through the selected trajectory"),
        ("n → p ←", "next / previous message"),
        ("g G", "first / last page; o: the outcome (tests, diff)"),
        ("esc", "back to the list"),
    ]),
    ("Jobs", [
        ("p r x", "pause / resume / run now the selected job"),
    ]),
]
NOTE = ("Jobs are the scheduler daemon's, kept in this database; changes\n"
        "made here are written there, and a running daemon picks them up at\nits next poll.")


def help_content() -> Content:
    lines: list[Content] = []
    for title, keys in SECTIONS:
        lines.append(Content.styled(title, "bold $accent"))
        for key, what in keys:
            lines.append(Content.assemble((f"  {key:<10} ", "bold"), what))
        lines.append(Content(""))
    lines.append(Content(NOTE))
    return Content("\n").join(lines)


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark,f1", "dismiss", "Close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-box"):
            yield Static(help_content())

    def on_mount(self) -> None:
        box = self.query_one("#help-box")
        box.border_title = "Keys"
        box.border_subtitle = "esc to close"
        box.focus()
