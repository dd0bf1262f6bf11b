"""The TUI driven with Textual's pilot over a demo database: every screen, search, sort, a skill, a trajectory."""

from __future__ import annotations

import asyncio
import re
import sqlite3

import pytest
from textual.widgets import DataTable, Footer, Markdown, Static, TabbedContent

from agent.tui import demo_db
from agent.tui.app import AgentTui
from memory.db import Store
from test_tui_support import SIZE, demo_copy, demo_store, screen_text, settle, squeeze_into_hours, utc_clock



@pytest.fixture
def store(tmp_path):
    with demo_store(tmp_path) as s:
        yield s


@pytest.fixture
def utc(monkeypatch):
    with utc_clock(monkeypatch):
        yield


def make_app(store: Store, **kwargs) -> AgentTui:
    return AgentTui(store, refresh_every=kwargs.pop("refresh_every", None), clock=lambda: demo_db.DEMO_ANCHOR, **kwargs)


def text_of(widget: Static) -> str:
    return str(widget.render())


def run(coro):
    return asyncio.run(coro)


def test_overview_navigation_viewer_jobs_help(store, utc):
    async def go():
        app = make_app(store)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            assert app.current_mode == "overview"
            summary = text_of(app.screen.query_one("#summary", Static))
            assert summary.startswith("31 skills · 89 runs (50 verified) · EMA v20 r16")
            runs = app.screen.query_one("#runs", DataTable)
            assert runs.row_count == 6 and str(runs.get_row_at(0)[0]) == "cycle"
            jobs = app.screen.query_one("#jobs-mini", DataTable)
            assert [str(jobs.get_row_at(i)[1]) for i in range(jobs.row_count)] == [
                "in 4m00s", "in 17m00s", "in 15h00m", "paused"]
            assert not app.screen.has_class("-empty")
            assert not app.screen.query_one("#heldout", DataTable).display  # no curriculum run in the demo
            assert not app.screen.query_one("#rollbacks", DataTable).display  # nor a gate rollback

            for key, mode in (("2", "skills"), ("1", "overview")):  # 3 and 4 follow below
                await pilot.press(key)
                await settle(pilot)
                assert app.current_mode == mode
            await pilot.click("#nav-tabs", offset=(16, 0))  # the bar on top is clickable: "2 Skills"
            await settle(pilot)
            assert app.current_mode == "skills"

            await pilot.press("3")
            await settle(pilot)
            table = app.screen.query_one("#trajs", DataTable)
            assert table.row_count == 89 and str(table.get_row_at(0)[0]) == "89"
            await pilot.press("down", "enter")
            await settle(pilot)
            viewer = app.screen
            assert type(viewer).__name__ == "TrajectoryViewer" and viewer.trajectory_id == 88
            steps = viewer.detail.steps
            assert viewer.index == 0 and "system · message 1/" in text_of(viewer.query_one("#step-meta", Static))
            await pilot.press("n", "right", "l")
            assert viewer.index == 3
            meta = text_of(viewer.query_one("#step-meta", Static))
            assert f"{steps[3].role} · message 4/{len(steps)}" in meta
            await pilot.press("p")
            assert viewer.index == 2 and steps[2].role == "assistant"
            assert "action: bash" in text_of(viewer.query_one("#step-meta", Static))
            assert "```bash" in viewer.query_one("#step-md", Markdown).source
            await pilot.press("o")
            assert viewer.index == len(steps)  # the outcome page
            outcome = viewer.query_one("#step-md", Markdown).source
            assert "Tests after: pass" in outcome and "```diff" in outcome and "Skill extraction" in outcome
            await pilot.press("n")  # past the end stays on the end
            assert viewer.index == len(steps)
            await pilot.press("home")
            assert viewer.index == 0
            await pilot.press("escape")
            assert app.screen.query_one("#trajs", DataTable).cursor_row == 1

            await pilot.press("4")
            await settle(pilot)
            table = app.screen.query_one("#jobs", DataTable)

            def states():
                return {str(table.get_row_at(i)[0]): str(table.get_row_at(i)[1]) for i in range(table.row_count)}

            assert states() == {"extract": "in 4m00s", "accumulate": "in 17m00s", "retrain": "in 15h00m",
                                "compact": "paused"}
            await pilot.press("p")  # the cursor is on evolve-cycle
            await settle(pilot)
            assert states()["extract"] == "paused"
            await pilot.press("r")
            await settle(pilot)
            assert states()["extract"].startswith("in ")
            await pilot.press("x")
            await settle(pilot)
            assert any("due now" in str(n.message) for n in app._notifications)

            await pilot.press("question_mark")
            assert type(app.screen).__name__ == "HelpScreen"
            await pilot.press("escape")
            assert type(app.screen).__name__ == "JobsScreen"
            dark = app.theme
            await pilot.press("ctrl+t")
            await settle(pilot)
            assert app.theme != dark
            await pilot.press("q")
        assert app.return_code == 0

    run(go())


def test_skills_search_sort_and_detail(store, utc):
    async def go():
        app = make_app(store)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("2")
            await settle(pilot)
            table = app.screen.query_one("#skills", DataTable)
            assert app.focused is table and table.row_count == 31
            assert str(table.get_row_at(0)[0]) == "bisect-by-test"

            await pilot.press("slash", *"commit", "enter")
            await settle(pilot)
            assert app.focused is table
            assert [str(table.get_row_at(i)[0]) for i in range(table.row_count)] == [
                "commit-body-why-not-what", "commit-scope-from-path", "conventional-commit-subject",
                "small-diffs-per-commit"]
            assert "4/31" in text_of(app.screen.query_one("#skills-status", Static))

            await pilot.press("s", "s", "s")  # name -> subtask -> source -> uses (largest first)
            await settle(pilot)
            uses = [int(str(table.get_row_at(i)[3])) for i in range(table.row_count)]
            assert uses == sorted(uses, reverse=True)
            assert "uses ↓" in text_of(app.screen.query_one("#skills-status", Static))
            await pilot.press("r")
            uses = [int(str(table.get_row_at(i)[3])) for i in range(table.row_count)]
            assert uses == sorted(uses)

            # open a skill: its SKILL.md, adapter heat map and trajectories
            await pilot.press("slash", *"roman", "enter")
            await settle(pilot)
            assert table.row_count == 1
            detail = app.screen.query_one("#skill-detail", TabbedContent)
            assert detail.border_title == "roman-numeral-subtractive-pairs · v2 of 2 · extracted"
            doc = app.screen.query_one("#skill-doc", Markdown)
            assert "Revision 2" in doc.source
            await pilot.press("enter")
            assert app.focused.id == "doc-scroll"

            detail.active = "tab-adapter"
            await settle(pilot)
            info = text_of(app.screen.query_one("#adapter-info", Static))
            assert "rank 8" in info and "‖ΔW‖_F total" in info
            # the size is the adapter's, said so; the hypernet that made it is on its own line, sizeless
            assert "adapter #51 · rank 8 · adapter size 46 KiB" in info
            assert "made by hypernet #3 · 2026-11-19 07:12" in info and "KiB" not in info.splitlines()[1]
            heat = text_of(app.screen.query_one("#adapter-map", Static))
            assert heat.splitlines()[0].split() == ["layer", "q_proj", "v_proj", "total"]
            assert len(heat.splitlines()) == 1 + demo_db.LAYERS

            detail.active = "tab-trajs"
            await settle(pilot)
            trajs = app.screen.query_one("#skill-trajs", DataTable)
            how = [str(trajs.get_row_at(i)[1]) for i in range(trajs.row_count)]
            assert "supported" in how and "produced" in how and any(h.startswith("used ×") for h in how)
            trajs.focus()
            await pilot.press("enter")  # opens that trajectory in the step viewer
            await settle(pilot)
            assert type(app.screen).__name__ == "TrajectoryViewer"
            await pilot.press("escape")
            assert type(app.screen).__name__ == "SkillsScreen"

            # clicking a header sorts by it
            await pilot.press("slash", "backspace", "escape")
            await settle(pilot)
            assert table.row_count == 31
            await pilot.click("#skills", offset=(27, 0))  # "Subtask" header
            await settle(pilot)
            assert "subtask ↑" in text_of(app.screen.query_one("#skills-status", Static))

    run(go())


def test_live_refresh_picks_up_new_rows(store, utc):
    async def go():
        app = make_app(store, refresh_every=0.2)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("3")
            await settle(pilot)
            table = app.screen.query_one("#trajs", DataTable)
            assert table.row_count == 89
            con = sqlite3.connect(store.engine.url.database)
            con.execute("INSERT INTO trajectories (task, repo, mode, model, status, outcome, verified, extraction,"
                        " active_skills, tokens, started_at) VALUES ('new task', 'r', 'none', 'm', 'running', '{}',"
                        " 0, 'pending', '[]', 0, '2026-11-20 11:59:00')")
            con.commit()
            con.close()
            for _ in range(30):
                await pilot.pause(0.1)
                if table.row_count == 90:
                    break
            assert table.row_count == 90 and str(table.get_row_at(0)[1]) == "running"

    run(go())


def test_empty_database_shows_empty_states(tmp_path, utc):
    store = Store(f"sqlite:///{tmp_path / 'empty.db'}")

    async def go():
        app = make_app(store)
        async with app.run_test(size=SIZE) as pilot:
            for key, empty_id in (("1", "#overview-empty"), ("2", "#skills-empty"), ("3", "#trajs-empty"),
                                  ("4", "#jobs-empty")):
                await pilot.press(key)
                await settle(pilot)
                assert app.screen.has_class("-empty"), key
                box = app.screen.query_one(empty_id, Static)
                assert box.display and box.region.height > 0
            assert "No daemon has scheduled jobs" in text_of(app.screen.query_one("#jobs-empty", Static))

    try:
        run(go())
    finally:
        store.close()


def chart_labels(app, chart_id: str) -> tuple[str, list[str]]:
    """A time chart's title and the labels under its x axis."""
    chart = app.screen.query_one(chart_id)
    rows = chart.render().plain.splitlines()
    frame = next(i for i, row in enumerate(rows) if "└" in row)
    return chart.border_title, rows[frame + 1].split()  # the row below the └──┬── line


def test_time_axis_of_a_one_day_store_and_a_multi_day_one(tmp_path, utc):
    async def labels(store):
        app = make_app(store)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            return [chart_labels(app, c) for c in ("#chart-skills", "#chart-success")]

    with demo_store(tmp_path) as store:  # 14 days
        for title, ticks in run(labels(store)):
            assert "·" not in title and len(ticks) >= 2
            assert all(re.fullmatch(r"2026-11-\d\d", t) for t in ticks), ticks

    one_day = tmp_path / "one-day"
    one_day.mkdir()
    with demo_store(one_day) as store:
        squeeze_into_hours(store.engine.url.database, hours=10)  # all of it between 02:00 and 12:00 UTC
        for title, ticks in run(labels(store)):
            assert title.endswith(" · 2026-11-20")  # the day, once
            assert len(ticks) >= 3 and len(set(ticks)) == len(ticks)  # not the same date repeated
            assert all(re.fullmatch(r"(0[2-9]|1[01]):\d\d", t) for t in ticks), ticks


def test_skill_detail_tabs_by_key(store, utc):
    async def go():
        app = make_app(store)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("2")
            await settle(pilot)
            detail = app.screen.query_one("#skill-detail", TabbedContent)
            assert detail.active == "tab-doc"
            footer = screen_text(app).splitlines()[-1]
            assert "d a t Tabs" in footer  # the keys are in the footer ...
            assert "d SKILL.md  a Adapter  t Trajectories" in screen_text(app)  # ... and on the tabs
            for key, pane in (("a", "tab-adapter"), ("t", "tab-trajs"), ("d", "tab-doc"), ("t", "tab-trajs")):
                await pilot.press(key)
                await settle(pilot)
                assert detail.active == pane, key
            assert app.screen.query_one("#skill-trajs", DataTable).row_count > 0
            await pilot.press("enter")  # into the detail pane, then a tab key still switches
            await pilot.press("a")
            assert detail.active == "tab-adapter"
            # typing in the search types letters, it does not switch tabs
            await pilot.press("slash", *"data")
            assert app.screen.query_one("#search").value == "data" and detail.active == "tab-adapter"
            assert app.screen.query_one(Footer).display

    run(go())


def test_every_date_on_screen_has_the_one_format(store, utc):
    """Dates read 2026-11-20, moments 2026-11-20 12:04, on every screen; nothing else looks like a date."""
    full = re.compile(r"\b\d{4}-\d{2}-\d{2}(?: \d{2}:\d{2})?\b")
    date_like = re.compile(r"\b\d{1,4}-\d{1,2}(?:-\d{1,4})?\b|\b\d{1,2}:\d{2}\b")  # 11-20, 26-11-07, 08:47

    async def go():
        app = make_app(store)
        seen: dict[str, list[str]] = {}
        async with app.run_test(size=SIZE) as pilot:
            async def look(name, *keys):
                await pilot.press(*keys)
                await settle(pilot)
                text = screen_text(app)
                seen[name] = [m.group() for m in full.finditer(text)]
                assert not date_like.findall(full.sub("", text)), (name, text)

            await look("overview")
            await look("skills", "2")
            await look("adapter", "a")
            await look("skill trajectories", "t")
            await look("trajectories", "3")
            await look("viewer", "enter")
            await look("jobs", "escape", "4")
        return seen

    seen = run(go())
    for name in ("overview", "skills", "adapter", "skill trajectories", "trajectories", "viewer", "jobs"):
        assert seen[name], name  # each screen shows dates (the overview's on its axes), all in the one format
    assert {len(d) for d in seen["skills"]} == {10}  # the created column: dates
    assert {len(d) for d in seen["jobs"]} == {16} and any(len(d) == 16 for d in seen["adapter"])  # moments


# --- the command ----------------------------------------------------------------------------------

def test_cli_errors_before_the_ui(cli, tmp_path, monkeypatch):
    started = []
    monkeypatch.setattr(AgentTui, "run", lambda self, **kw: started.append(self))

    r = cli("tui", "--db", f"sqlite:///{tmp_path}/missing/dir/x.db")
    assert r.code == 2 and "does not exist" in r.err and r.err.count("\n") == 1

    newer = tmp_path / "newer.db"
    Store(f"sqlite:///{newer}").close()
    con = sqlite3.connect(newer)
    con.execute("UPDATE alembic_version SET version_num = '9999_from_the_future'")
    con.commit()
    con.close()
    r = cli("tui", "--db", str(newer))
    assert r.code == 2 and "newer than this code knows" in r.err

    existing = tmp_path / "exists.db"
    existing.write_bytes(b"")
    r = cli("tui", "--demo", str(existing))
    assert r.code == 2 and "already exists" in r.err
    assert started == []

    r = cli("tui", "--db", str(newer.with_name("fresh.db")), "--refresh", "0")
    assert r.code == 0 and len(started) == 1 and started[0].refresh_every is None


def test_cli_demo_builds_and_opens(cli, tmp_path, monkeypatch):
    """The wiring only (test_tui_data covers the demo's content): --demo PATH writes PATH, then opens it."""
    opened = []
    monkeypatch.setattr(AgentTui, "run", lambda self, **kw: opened.append(self.db_label))
    monkeypatch.setattr(demo_db, "build", lambda path, anchor=None: demo_copy(path))
    r = cli("tui", "--demo", str(tmp_path / "demo.db"))
    assert r.code == 0 and opened == ["demo.db"]
    assert (tmp_path / "demo.db").stat().st_size > 100_000


def test_overview_shows_the_held_out_fix_rate_per_round(store, utc):
    from test_tui_data import add_heldout_rounds

    add_heldout_rounds(store, "r1", {0: (0.0833, 0.1667), 1: (0.125, 0.25)})

    async def go():
        app = make_app(store)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            table = app.screen.query_one("#heldout", DataTable)
            assert table.display and table.row_count == 2
            assert [str(c.label) for c in table.columns.values()] == ["round", "held-out K=1", "held-out K=8"]
            assert [str(x) for x in table.get_row_at(1)] == ["r1 (24 tasks)", "12%", "25%"]
            assert "held-out fix rate, r1" in str(app.screen.query_one("#overview-tables").border_title)

    run(go())


def test_overview_shows_the_gate_rollbacks(store, utc):
    from test_tui_data import add_gate_rollback

    version = add_gate_rollback(store, "bad-skill")

    async def go():
        app = make_app(store)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            table = app.screen.query_one("#rollbacks", DataTable)
            assert table.display and table.row_count == 1
            assert [str(x) for x in table.get_row_at(0)] == [f"v{version} undid v{version - 1}", "bad-skill",
                                                             "ref_logprob -1.25 → -1.5"]

    run(go())
