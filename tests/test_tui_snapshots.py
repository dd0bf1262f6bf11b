"""Snapshots of the main screens on the demo database at 80×24 (pytest-textual-snapshot's snap_compare).

Deterministic by construction: the demo has fixed timestamps, the app's clock is pinned to the demo's
"now", the time zone is UTC, live refresh is off, and every load has landed before the picture.
Update after an intended change with `pytest tests/test_tui_snapshots.py --snapshot-update`, then look
at the SVGs under tests/__snapshots__/.
"""

from __future__ import annotations

import pytest
from textual.widgets import TabbedContent

from agent.tui import demo_db
from agent.tui.app import AgentTui
from test_tui_support import SIZE, demo_store, settle, utc_clock


@pytest.fixture
def app(tmp_path, monkeypatch):
    with utc_clock(monkeypatch), demo_store(tmp_path) as store:
        yield lambda **kw: AgentTui(store, refresh_every=None, clock=lambda: demo_db.DEMO_ANCHOR, **kw)


def test_overview(snap_compare, app):
    assert snap_compare(app(), terminal_size=SIZE, run_before=settle)


def test_skill_detail_light_theme(snap_compare, app):
    async def open_skill(pilot):
        await pilot.press("2")
        await settle(pilot)
        await pilot.press("slash", *"roman", "enter")
        await settle(pilot)
        pilot.app.screen.query_one("#skill-detail", TabbedContent).active = "tab-adapter"
        await settle(pilot)

    assert snap_compare(app(theme="textual-light"), terminal_size=SIZE, run_before=open_skill)


def test_trajectory_viewer(snap_compare, app):
    async def open_trajectory(pilot):
        await pilot.press("3")
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        await pilot.press("n", "n")

    assert snap_compare(app(), terminal_size=SIZE, run_before=open_trajectory)


def test_jobs(snap_compare, app):
    async def jobs(pilot):
        await pilot.press("4")
        await settle(pilot)

    assert snap_compare(app(), terminal_size=SIZE, run_before=jobs)
