"""DataTable cells: plain text (never Rich markup: a task like "fix [b]" must show as typed) in theme colours.

DataTable renders Rich objects, which cannot refer to theme variables, so colours are resolved from the
current theme when the cell is made; screens rebuild their rows when the theme changes.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import App
from textual.color import Color
from textual.content import Content

STATUS_COLOURS = {
    # trajectories
    "submitted": "", "running": "warning", "step_limit": "error", "time_limit": "error", "token_limit": "error",
    "format_errors": "error", "loop": "error", "resource_limit": "error", "failed": "error", "error": "error",
    "stopped": "warning",
    # evolution runs
    "done": "success", "ok": "success", "succeeded": "success", "accepted": "success", "interrupted": "error",
    "rejected": "error",
    # skill sources
    "seed": "", "extracted": "success", "user": "accent",
    # jobs
    "paused": "warning", "scheduled": "success",
}


def plain(value: object) -> Text:
    return Text(str(value), no_wrap=True, overflow="ellipsis", end="")


def tinted(app: App, value: object, colour: str | None = None) -> Text:
    """`colour` is a theme variable name (success, warning, ...); by default looked up from the value."""
    name = STATUS_COLOURS.get(str(value), "") if colour is None else colour
    text = plain(value)
    if name and name in app.theme_variables:
        text.stylize(Color.parse(app.theme_variables[name]).hex)
    return text


def status_content(status: str, verified: bool) -> Content:
    """The status in the colour of its outcome, for Static text (theme variables resolve at render time)."""
    style = "$success" if verified else "$warning" if status == "running" else "$error" if status != "submitted" else ""
    return Content.styled(status, style) if style else Content(status)
