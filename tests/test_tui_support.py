"""Shared by the test_tui_* modules (no tests here): one demo database per test process, copied per test.

A plain module rather than conftest fixtures (conftest.py belongs to the whole suite): the demo is
built once, then each test gets its own copy, since some tests write to it.
"""

from __future__ import annotations

import atexit
import io
import sqlite3
import shutil
import tempfile
import time
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Iterator

from agent.tui import demo_db
from memory.db import Store

SIZE = (80, 24)  # the terminal every pilot and snapshot test uses
# the real builder, taken before any test patches `demo_db.build` (test_cli_demo_builds_and_opens does, with
# a stand-in that copies the template: were the template built through the patched name, run alone that
# test would recurse until Python gives up)
BUILD = demo_db.build


@lru_cache(maxsize=1)
def demo_template() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="tui-demo-"))
    atexit.register(shutil.rmtree, folder, True)
    path = folder / "demo.db"
    BUILD(path)
    return path


def demo_copy(dest: Path) -> Path:
    shutil.copy(demo_template(), dest)
    return dest


@contextmanager
def demo_store(folder: Path) -> Iterator[Store]:
    store = Store(f"sqlite:///{demo_copy(folder / 'demo.db')}")
    try:
        yield store
    finally:
        store.close()


@contextmanager
def utc_clock(monkeypatch) -> Iterator[None]:
    """The TUI shows local time; tests pin the zone so text and snapshots do not depend on the machine."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    try:
        yield
    finally:
        monkeypatch.undo()
        time.tzset()


async def settle(pilot) -> None:
    """Let loads (thread workers) finish and their results land, including the loads those trigger."""
    for _ in range(2):
        await pilot.pause()
        await pilot.app.workers.wait_for_complete()
    await pilot.pause()


def squeeze_into_hours(path: Path, hours: float = 10.0) -> None:
    """Rewrite every timestamp of a demo database so that its 14 days of history fit in the `hours`
    before the demo's "now" (one local day when the zone is UTC), keeping the order of events."""
    anchor = demo_db.DEMO_ANCHOR.strftime("%Y-%m-%d %H:%M:%S")
    factor = hours / (24 * demo_db.DAYS)
    con = sqlite3.connect(path)
    tables = [t for t, in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    for table in tables:
        for column in [c[1] for c in con.execute(f"PRAGMA table_info({table})") if c[1].endswith("_at")]:
            con.execute(f"UPDATE {table} SET {column} = datetime(julianday(?) - (julianday(?) - julianday({column}))"
                        f" * ?) WHERE {column} IS NOT NULL", (anchor, anchor, factor))
    con.commit()
    con.close()


def screen_text(app) -> str:
    """What the terminal shows, as plain text (as App.export_screenshot draws it, without the SVG)."""
    from rich.console import Console

    width, height = app.size
    console = Console(width=width, height=height, file=io.StringIO(), record=True, legacy_windows=False,
                      safe_box=False)
    console.print(app.screen._compositor.render_update(full=True, screen_stack=app._background_screens))
    return console.export_text()
