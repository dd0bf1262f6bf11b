"""The TUI's data layer (no UI): demo history, loaders, filtering, jobs through APScheduler's store."""

from __future__ import annotations

import sqlite3
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
from test_tui_support import demo_store

from agent.evolve import job_control as jobs_api
from agent.tui import demo_db, timefmt
from agent.tui.adapter_norms import NormCache
from agent.tui.overview_data import load_overview, moving_rate, skill_growth
from agent.tui.reader import Reader
from agent.tui.skills_data import arrange, load_detail, load_skills, provenance_trajectories
from agent.tui.trajectories_data import load_trajectories, load_trajectory
from memory.db import Store
from memory.errors import StoreError
from memory.models import Skill


@pytest.fixture
def demo(tmp_path):
    """A private copy: some tests write (jobs)."""
    with demo_store(tmp_path) as store:
        yield store


def test_demo_history_is_consistent(demo):
    reader = Reader(demo)
    ov = load_overview(reader, NormCache())
    assert ov.skills_by_source == {"seed": 12, "extracted": 16, "user": 3}
    # cumulative counts never fall and end at the current totals
    for src, series in ov.skill_series.items():
        assert series == sorted(series) and series[-1] == ov.skills_by_source[src]
    assert [p.version for p in ov.ema] == list(range(1, len(ov.ema) + 1))
    assert all(p.norm and p.norm > 0 for p in ov.ema)  # pruned versions keep their norm in meta
    assert {p.rank for p in ov.ema} <= {8, 16}
    assert ov.trajectories == 89 and 0 < ov.verified < ov.trajectories
    assert len(ov.success) == ov.trajectories  # every demo trajectory is finished
    assert [r.kind for r in ov.runs][0] == "cycle" and ov.runs[0].status == "running"
    assert ov.hypernet == "stage3-multiturn-r1"  # the rejected candidate is not the current hypernet
    assert ov.last_eval["parametric"] > ov.last_eval["icl"]
    assert {j.id for j in ov.jobs.jobs} == {"extract", "accumulate", "retrain", "compact"}
    reader.close()


def test_demo_refuses_existing_file_and_non_empty_store(demo, tmp_path):
    with pytest.raises(StoreError, match="already exists"):
        demo_db.build(tmp_path / "demo.db")
    with pytest.raises(StoreError, match="already holds skills"):
        demo_db.fill(demo)


def test_skill_growth_and_moving_rate():
    t0 = datetime(2026, 1, 1, 9, tzinfo=timezone.utc)
    later = t0 + timedelta(days=2, hours=3)
    times, series = skill_growth([("seed", t0), ("user", later), ("seed", t0), ("seed", t0 + timedelta(hours=1))])
    assert times == [t0, t0 + timedelta(hours=1), later]  # one point per moment a skill appeared
    assert series["seed"] == [2, 3, 3] and series["user"] == [0, 0, 1] and series["extracted"] == [0, 0, 0]
    rates = moving_rate([(t0, True), (t0, False), (t0, False), (t0, True)], window=2)
    assert [r for _, r in rates] == [100.0, 50.0, 0.0, 50.0]


def test_skills_search_and_sort(demo):
    rows = load_skills(Reader(demo))
    assert len(rows) == 31 and all(r.source in ("seed", "extracted", "user") for r in rows)
    commit = arrange(rows, "commit", "name", False)
    assert [r.name for r in commit] == ["commit-body-why-not-what", "commit-scope-from-path",
                                        "conventional-commit-subject", "small-diffs-per-commit"]
    # every word must match, anywhere in name, subtask, source or description
    assert [r.name for r in arrange(rows, "seed review", "name", False)] == ["review-checklist-security",
                                                                             "review-error-handling"]
    by_uses = arrange(rows, "", "uses", True)
    assert [r.uses for r in by_uses] == sorted((r.uses for r in rows), reverse=True)
    assert arrange(rows, "no such words", "name", False) == []


def test_skill_detail_markdown_adapter_and_trajectories(demo):
    reader, norms = Reader(demo), NormCache()
    rows = {r.name: r for r in load_skills(reader)}
    d = load_detail(reader, norms, rows["roman-numeral-subtractive-pairs"].id)
    assert d.version == 2 and d.versions == 2 and d.source == "extracted"
    assert d.markdown.startswith("```yaml\nname: roman-numeral-subtractive-pairs\n")
    assert "## Steps" in d.markdown and "Revision 2" in d.markdown
    assert d.adapter is not None and d.adapter.rank == 8 and d.adapter.error is None
    layers, modules, cells = d.adapter.norms.grid()
    assert layers == list(range(demo_db.LAYERS)) and modules == ["q_proj", "v_proj"]
    assert all(v > 0 for v in cells.values())
    relations = {t.relation for t in d.trajectories}
    assert {"produced", "supported", "used"} <= relations
    # computed once, then served from the cache by checksum
    assert norms.known(demo_sha(demo, d.adapter.id)) is d.adapter.norms


def demo_sha(store: Store, adapter_id: int) -> str:
    from memory.models import Adapter

    with store.session() as s:
        return s.get(Adapter, adapter_id).sha256


def test_provenance_shapes():
    produced, supported = provenance_trajectories([{"trajectory_id": 3}, {"trajectories": [5, 7, 9]}, None, {}])
    assert produced == {3, 5} and supported == {7, 9}


def test_trajectories_list_and_steps(demo):
    reader = Reader(demo)
    rows = load_trajectories(reader)
    assert [r.id for r in rows] == sorted((r.id for r in rows), reverse=True)
    d = load_trajectory(reader, rows[-1].id)
    assert d.steps[0].role == "system" and d.steps[1].role == "user"
    replies = [s for s in d.steps if s.role == "assistant"]
    assert replies and "```" in replies[0].content and replies[0].action["kind"] == "bash"
    assert d.row.steps == len(d.steps) and d.outcome["test_cmd"]
    assert load_trajectory(reader, 10**6) is None


def test_reads_do_not_wait_for_a_writer(demo):
    """A writer holding SQLite's write lock (as a daemon's transaction does) does not stall the viewer."""
    path = demo.engine.url.database
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("UPDATE skills SET use_count = use_count + 1")
    try:
        done = threading.Event()
        result = {}

        def read():
            result["rows"] = load_skills(Reader(demo))
            done.set()

        threading.Thread(target=read, daemon=True).start()
        assert done.wait(10), "the viewer's read waited on the writer's lock"
        assert len(result["rows"]) == 31
    finally:
        writer.execute("ROLLBACK")
        writer.close()


def test_reader_cannot_write(demo):
    from sqlalchemy.exc import OperationalError

    reader = Reader(demo)
    with pytest.raises(OperationalError, match="readonly|read-only|query_only"):
        with reader.session() as s:
            s.execute(Skill.__table__.delete())
    reader.close()


def url_of(store: Store) -> str:
    return store.engine.url.render_as_string(hide_password=False)


def test_jobs_pause_resume_run_now(demo):
    url = url_of(demo)
    snap = jobs_api.read_jobs(url)
    assert snap.has_table and not snap.error and len(snap.jobs) == 4
    by_id = {j.id: j for j in snap.jobs}
    assert by_id["compact"].paused and not by_id["extract"].paused
    assert by_id["extract"].trigger == "every 10m" and by_id["retrain"].trigger == "every 1d"

    assert "paused" in jobs_api.pause(url, "extract")
    assert {j.id: j for j in jobs_api.read_jobs(url).jobs}["extract"].paused

    before = datetime.now(timezone.utc)
    assert "resumed" in jobs_api.resume(url, "compact")
    resumed = {j.id: j for j in jobs_api.read_jobs(url).jobs}["compact"]
    assert resumed.next_run is not None and resumed.next_run > before

    jobs_api.run_now(url, "retrain")
    due = {j.id: j for j in jobs_api.read_jobs(url).jobs}["retrain"]
    assert abs((due.next_run - datetime.now(timezone.utc)).total_seconds()) < 60

    with pytest.raises(jobs_api.JobsError, match="no job 'nope'"):
        jobs_api.pause(url, "nope")


def test_editing_jobs_never_runs_or_advances_due_ones(demo):
    """APScheduler's BackgroundScheduler processes due jobs once while shutting down; ours has no loop."""
    url = url_of(demo)
    due_at = {j.id: j.next_run for j in jobs_api.read_jobs(url).jobs}
    assert due_at["extract"] < datetime.now(timezone.utc)  # the demo's jobs are due (anchored in 2026-11)
    jobs_api.pause(url, "compact")
    after = {j.id: j.next_run for j in jobs_api.read_jobs(url).jobs}
    assert after["extract"] == due_at["extract"]
    assert after["retrain"] == due_at["retrain"]
    assert not [t for t in threading.enumerate() if "APScheduler" in t.name]


def test_unreadable_jobs_are_listed_not_deleted(demo):
    import pickle

    url = url_of(demo)
    raw = sqlite3.connect(demo.engine.url.database)
    state = pickle.loads(raw.execute("SELECT job_state FROM apscheduler_jobs WHERE id='extract'").fetchone()[0])
    state["id"], state["func"] = "from-elsewhere", "no_such_module_here:job"
    raw.execute("INSERT INTO apscheduler_jobs VALUES (?, ?, ?)", ("from-elsewhere", time.time(), pickle.dumps(state)))
    raw.commit()
    snap = jobs_api.read_jobs(url)
    assert snap.unreadable == ["from-elsewhere"] and len(snap.jobs) == 4
    assert raw.execute("SELECT count(*) FROM apscheduler_jobs").fetchone()[0] == 5  # still there
    raw.close()


def test_jobs_without_table_and_with_bad_url(tmp_path):
    empty = tmp_path / "plain.db"
    sqlite3.connect(empty).close()
    assert jobs_api.read_jobs(f"sqlite:///{empty}") == jobs_api.JobsSnapshot()
    assert jobs_api.read_jobs("postgresql://nobody@127.0.0.1:1/none").error


def test_timefmt():
    now = datetime(2026, 1, 1, 12, tzinfo=timezone.utc)
    assert timefmt.duration(5) == "5s" and timefmt.duration(125) == "2m05s" and timefmt.duration(7500) == "2h05m"
    assert timefmt.duration(None) == "—" and timefmt.duration(90000) == "1d01h"
    assert timefmt.relative(now + timedelta(hours=2), now) == "in 2h00m"
    assert timefmt.relative(datetime(2026, 1, 1, 11, 59), now) == "1m00s ago"  # naive means UTC
    assert timefmt.stamp(None) == "—"
