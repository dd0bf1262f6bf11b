"""Shared by the test_tui_* modules (no tests here): one demo database per test process, copied per test.

A plain module rather than conftest fixtures (conftest.py belongs to the whole suite): the demo is
built once, then each test gets its own copy, since some tests write to it.
"""

from __future__ import annotations

import atexit
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


@lru_cache(maxsize=1)
def demo_template() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="tui-demo-"))
    atexit.register(shutil.rmtree, folder, True)
    path = folder / "demo.db"
    demo_db.build(path)
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
