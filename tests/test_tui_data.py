"""The TUI's data layer (no UI): demo history, loaders, filtering, jobs through APScheduler's store."""

from __future__ import annotations

import re
import sqlite3
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from test_tui_support import demo_store, utc_clock

from agent.evolve import job_control as jobs_api
from agent.tui import demo_db, timefmt
from agent.tui.adapter_norms import NormCache
from agent.tui.overview_data import load_overview, moving_rate, skill_growth
from agent.tui.reader import Reader
from agent.tui.skills_data import arrange, load_detail, load_skills, provenance_trajectories
from agent.tui.trajectories_data import load_trajectories, load_trajectory
from agent.tui.widgets import charts
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


def add_heldout_rounds(store, run: str, rates: dict[int, tuple[float, float]], n: int = 24) -> None:
    """EvalResult rows as bench/bench_evolution.py's record_eval writes them: {round: (K=1, K=8)}."""
    from memory.models import EvalResult

    with store.session() as s:
        for rnd, (k1, k8) in rates.items():
            for metric, value in (("fix_rate_k1", k1), ("fix_rate_k8", k8)):
                s.add(EvalResult(run_id=f"bench-evolution:{run}:r{rnd}", mode="parametric", split="heldout",
                                 subtask="bug-fixing", metric=metric, value=value, n=n, base_model="m",
                                 details={"bench": "evolution", "run": run, "arm": "evolving", "round": rnd}))


def test_overview_reads_the_held_out_fix_rate_per_round_of_the_latest_curriculum_run(demo):
    reader = Reader(demo)
    assert load_overview(reader, NormCache(), with_jobs=False).heldout == []  # the demo has no curriculum run
    add_heldout_rounds(demo, "old", {0: (0.5, 0.9)})
    add_heldout_rounds(demo, "r1", {1: (0.125, 0.25), 0: (0.0833, 0.1667)})
    ov = load_overview(reader, NormCache(), with_jobs=False)
    assert ov.heldout_run == "r1"
    assert [(r.round, r.n, round(r.rates[1], 1), round(r.rates[8], 1)) for r in ov.heldout] == [
        (0, 24, 8.3, 16.7), (1, 24, 12.5, 25.0)]
    reader.close()


def add_gate_rollback(store, skill: str = "bad-skill") -> int:
    """What the accumulate gate writes when the latest fold lowered the held-out score: its two scores and a
    version equal to the fold's parent."""
    from agent.evolve import accumulate
    from memory import evolution as evo_repo
    from memory.models import EvalResult

    with store.session() as s:
        latest = evo_repo.ema_versions(s)[-1]
        parent = evo_repo.ema_version(s, latest.meta["parent_version"])
        gate = {"skill": skill, "skill_id": None, "version": latest.version, "metric": "ref_logprob",
                "baseline": -1.25, "candidate": -1.5, "tolerance": 0.0}
        for role, value in (("baseline", -1.25), ("candidate", -1.5)):
            s.add(EvalResult(run_id=accumulate.gate_run_id(latest.version), mode="parametric", split="heldout",
                             subtask="overall", metric="ref_logprob", value=value, n=12, base_model=latest.base_model,
                             details={"role": role, "gate": "ema"}))
        return accumulate._write_rollback(s, parent, latest, skill=skill, gate=gate).version


def test_overview_lists_the_gate_rollbacks_newest_first(demo):
    reader = Reader(demo)
    before = load_overview(reader, NormCache(), with_jobs=False)
    assert before.rollbacks == []  # the demo's gate never rolled back
    first = add_gate_rollback(demo, "bad-skill")
    second = add_gate_rollback(demo, "worse-skill")
    ov = load_overview(reader, NormCache(), with_jobs=False)
    assert [(r.version, r.folded_in, r.skill, r.metric, r.baseline, r.candidate) for r in ov.rollbacks] == [
        (second, first, "worse-skill", "ref_logprob", -1.25, -1.5), (first, first - 1, "bad-skill", "ref_logprob",
                                                                     -1.25, -1.5)]
    assert [p.version for p in ov.ema][-2:] == [first, second]
    assert ov.last_eval == before.last_eval  # the gate's log-probabilities are not the latest evaluation
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
    assert timefmt.date(None) == "—" and timefmt.clock(None) == "—"


def test_one_date_format_in_local_time(monkeypatch):
    with utc_clock(monkeypatch):
        moment = datetime(2026, 11, 20, 23, 30)  # naive: UTC, as SQLite hands it back
        assert timefmt.stamp(moment) == "2026-11-20 23:30"
        assert (timefmt.date(moment), timefmt.clock(moment)) == ("2026-11-20", "23:30")  # its two halves
        monkeypatch.setenv("TZ", "Asia/Kolkata")  # +05:30: the next day there
        time.tzset()
        assert timefmt.stamp(moment) == "2026-11-21 05:00" and timefmt.date(moment) == "2026-11-21"


def test_no_date_formatted_outside_timefmt():
    """One helper for every date on screen: no other TUI module formats a date itself."""
    tui = Path(timefmt.__file__).parent
    formatting = re.compile(r"strftime|isoformat|date_form|%[ymdHM]")
    offenders = {str(p.relative_to(tui)) for p in tui.rglob("*.py") if p.name != "timefmt.py"
                 for line in p.read_text().splitlines() if formatting.search(line)}
    assert offenders == {"demo_db.py"}  # the demo writes an ISO time into adapter metadata, not onto a screen


@pytest.mark.parametrize("zone", ["UTC", "America/New_York"])
def test_time_axis_reads_times_of_day_within_a_day_and_dates_across_days(monkeypatch, zone):
    with utc_clock(monkeypatch):
        monkeypatch.setenv("TZ", zone)
        time.tzset()
        start = datetime(2026, 11, 20, 15, 10, tzinfo=timezone.utc)  # 10:10 in New York: the same day there
        clock_label, date_label = re.compile(r"\d{2}:\d{2}"), re.compile(r"\d{4}-\d{2}-\d{2}")

        def check(axis, label, width):
            assert axis.labels and all(label.fullmatch(lab) for lab in axis.labels), axis
            assert axis.ticks == sorted(axis.ticks) and all(axis.lo <= t <= axis.hi for t in axis.ticks)
            span = len(axis.labels) * len(axis.labels[0]) + (len(axis.labels) - 1) * charts.TICK_GAP
            assert span <= width  # the labels fit side by side
            # each tick sits on a round local time: a label is its tick's own moment, in local time
            assert [label.search(timefmt.stamp(datetime.fromtimestamp(t, timezone.utc))).group()
                    for t in axis.ticks] == axis.labels

        # a store whose history spans one day: hours and minutes, the day named once
        hours = [start + timedelta(minutes=m) for m in (0, 35, 170, 400)]
        axis = charts.time_axis(hours, 30)
        check(axis, clock_label, 30)
        assert len(set(axis.labels)) == len(axis.labels) > 1
        assert axis.note == timefmt.date(start) and axis.lo == start.timestamp()
        # a single moment: the hour around it, never a zero-width axis
        axis = charts.time_axis([start, start], 30)
        check(axis, clock_label, 30)
        assert axis.hi - axis.lo == 3600 and axis.note == timefmt.date(start)
        # minutes apart: ticks a few minutes apart, still times of day
        axis = charts.time_axis([start, start + timedelta(minutes=7)], 40)
        check(axis, clock_label, 40)
        # within 24 hours but over midnight: times of day, both days named
        axis = charts.time_axis([start, start + timedelta(hours=20)], 40)
        check(axis, clock_label, 40)
        assert axis.note == f"{timefmt.date(start)} – {timefmt.date(start + timedelta(hours=20))}"
        # across days: dates on local midnights, no note
        for days, width in ((2, 30), (14, 28), (14, 60), (200, 40)):
            axis = charts.time_axis([start + timedelta(days=d) for d in range(days + 1)], width)
            check(axis, date_label, width)
            assert axis.note == "" and len(set(axis.labels)) == len(axis.labels)
            assert all(datetime.fromtimestamp(t).time() == datetime.min.time() for t in axis.ticks)
