"""`agent tui`: browse the store live: skills, adapters, trajectories, scheduled jobs."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import typer

from agent.commands import DbOption
from agent.commands.output import err_console, fail


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not WIDTHxHEIGHT (e.g. 120x34)") from None
    if w < 40 or h < 12:
        raise typer.BadParameter("the TUI needs at least 40x12")
    return w, h


def command(
    db: DbOption = None,
    demo: Path = typer.Option(None, "--demo", metavar="PATH",
                              help="Write a demo database with two weeks of history to PATH (a new file) and open it."),
    refresh: float = typer.Option(5.0, "--refresh", min=0.0, help="Seconds between live refreshes (0: only on ctrl+r)."),
    screenshot: Path = typer.Option(None, "--screenshot", metavar="SVG",
                                    help="Write an SVG of the overview and exit instead of opening the UI."),
    size: str = typer.Option("120x34", "--size", help="Terminal size for --screenshot, WIDTHxHEIGHT."),
    theme: str = typer.Option(None, "--theme", help="A Textual theme, e.g. textual-light (ctrl+p lists them)."),
) -> None:
    """Browse the store in a terminal UI: skills, adapter growth, trajectories, scheduled jobs."""
    from memory.db import Store

    if demo is not None and db is not None:
        fail("give --db or --demo, not both")
    if screenshot is not None and not screenshot.parent.is_dir():
        fail(f"cannot write {screenshot}: folder {screenshot.parent} does not exist")
    shot_size = _size(size) if screenshot is not None else None
    if demo is not None:
        from agent.tui import demo_db
        with err_console.status(f"writing demo database {demo} ..."):
            # anchored at the current minute, so "next run in 2h" is about today
            demo_db.build(demo, anchor=datetime.now(timezone.utc).replace(second=0, microsecond=0))
        db = str(demo)
    # open (and check) the store before the UI starts: a bad URL or a too-new schema is one line and exit 2
    store = Store(db)
    from agent.tui.app import AgentTui

    try:
        app = AgentTui(store, refresh_every=refresh or None)
        if theme:
            if theme not in app.available_themes:
                fail(f"unknown theme {theme!r} (one of {', '.join(sorted(app.available_themes))})")
            app.theme = theme
        if screenshot is None:
            app.run()
        else:
            app.run(headless=True, size=shot_size, auto_pilot=_save_overview(screenshot))
            err_console.print(f"wrote {screenshot}")
    finally:
        store.close()


def _save_overview(path: Path):
    async def pilot(p) -> None:
        for _ in range(4):  # loads run in worker threads; wait until they (and what they start) land
            await p.pause()
            await p.app.workers.wait_for_complete()
        await p.pause()
        p.app.save_screenshot(path.name, path=str(path.parent))
        p.app.exit()

    return pilot
