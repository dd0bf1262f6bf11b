"""Job config (file + flags, checked at start-up), the persistent job store, the daemon and its queue."""

from __future__ import annotations

import json
import threading
import time

import pytest

from agent.evolve import scheduler as sched
from agent.evolve.daemon import Daemon, SolveOutcome
from memory import evolution as evo_repo
from memory import queue as queue_repo
from memory.models import Trajectory
from tests.test_evolve_fakes import add_trajectory, fake_context

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("text,seconds", [("30s", 30), ("10m", 600), ("1h30m", 5400), ("2d", 172800), (45, 45),
                                          ("1.5h", 5400), ("90", 90)])
def test_intervals(text, seconds):
    assert sched.parse_interval(text) == seconds


@pytest.mark.parametrize("bad", ["soon", "0s", "-5m", "10x", "m10", True, "400d", ""])
def test_bad_intervals(bad):
    with pytest.raises(sched.ConfigError, match="invalid interval"):
        sched.parse_interval(bad)


def test_config_file_and_flags(tmp_path):
    toml = tmp_path / "agent.toml"
    toml.write_text('[jobs]\nextract = "5m"\nretrain = { interval = "12h", enabled = false }\n'
                    '[evolve]\nbeta = 0.75\nsources = ["extracted", "user"]\n[daemon]\npoll = "1s"\nmodel = "m"\n')
    cfg = sched.load_config(toml, ["compact=1d"], {"writer": "template", "beta": None})
    assert cfg.jobs["extract"].interval_s == 300 and not cfg.jobs["retrain"].enabled
    assert cfg.jobs["compact"].interval_s == 86400 and cfg.jobs["accumulate"].interval_s == 1800
    assert cfg.settings.beta == 0.75 and cfg.settings.sources == ("extracted", "user")
    assert cfg.settings.writer == "template" and cfg.poll_s == 1 and cfg.model == "m"
    yaml = tmp_path / "agent.yaml"
    yaml.write_text("jobs:\n  accumulate: 2h\nevolve:\n  keep_last: 5\n")
    cfg = sched.load_config(yaml)
    assert cfg.jobs["accumulate"].interval_s == 7200 and cfg.settings.keep_last == 5


@pytest.mark.parametrize("body,match", [
    ('[jobs]\nextract = "soon"\n', "invalid interval for job extract 'soon'"),
    ('[jobs]\nfetch = "1h"\n', "unknown job 'fetch'"),
    ('[jobs]\nextract = { every = "1h" }\n', "unknown key 'every'"),
    ('[jobz]\n', "unknown section 'jobz'"),
    ('[evolve]\nbeta = 1.5\n', "beta must be in"),
    ('[evolve]\nbeta = "high"\n', "is not a float"),
    ('[evolve]\nwarp = 1\n', "unknown setting 'warp'"),
    ('jobs = [', "not valid TOML"),
])
def test_bad_config_is_one_line_exit_2(cli, tmp_path, body, match):
    path = tmp_path / "agent.toml"
    path.write_text(body)
    db = f"sqlite:///{tmp_path / 's.db'}"
    for args in (["daemon"], ["evolve"], ["jobs", "list"]):
        r = cli(*args, "--config", str(path), "--db", db)
        assert r.code == 2 and match in r.err, (args, r.err)
        assert len(r.err.strip().splitlines()) == 1 and "Traceback" not in r.err


def test_bad_flags_exit_2(cli, tmp_path):
    db = f"sqlite:///{tmp_path / 's.db'}"
    r = cli("daemon", "--interval", "extract=soon", "--db", db)
    assert r.code == 2 and "invalid interval" in r.err
    r = cli("daemon", "--interval", "fetch=1m", "--db", db)
    assert r.code == 2 and "unknown job 'fetch'" in r.err
    r = cli("daemon", "--config", str(tmp_path / "none.toml"), "--db", db)
    assert r.code == 2 and "does not exist" in r.err
    r = cli("jobs", "run", "fetch", "--db", db)
    assert r.code == 2 and "unknown job" in r.err
    r = cli("evolve", "--skip", "fetch", "--db", db)
    assert r.code == 2 and "unknown step" in r.err
    r = cli("jobs", "pause", "extract", "--db", db)
    assert r.code == 2 and "not scheduled yet" in r.err
    r = cli("submit", str(tmp_path / "nope"), "fix", "--db", db)
    assert r.code == 2 and "no such folder" in r.err


def next_runs(store):
    return {r.name: (r.state, r.next_run) for r in sched.list_jobs(store)}


def test_job_store_survives_restarts_and_keeps_pauses(store, tmp_path, cli):
    cfg = sched.load_config(None, ["extract=1h", "accumulate=2h", "retrain=1d", "compact=7d"])
    d = Daemon(fake_context(store, tmp_path), cfg)
    assert set(d.start().values()) == {"added"}
    d.shutdown()
    first = next_runs(store)
    assert all(state == "scheduled" and nxt is not None for state, nxt in first.values())
    d = Daemon(fake_context(store, tmp_path), cfg)  # restart: same jobs, same next run times
    assert set(d.start().values()) == {"kept"}
    d.shutdown()
    assert next_runs(store) == first
    assert cli("jobs", "pause", "retrain", "--db", store.url).code == 0
    listed = {r["name"]: r for r in json.loads(cli("jobs", "list", "--db", store.url, "--json").out)}
    assert listed["retrain"]["state"] == "paused" and listed["extract"]["interval"] == "1h"
    cfg2 = sched.load_config(None, ["extract=30m", "accumulate=2h", "retrain=1d",
                                    "compact=7d"])
    cfg2.jobs["compact"] = sched.JobSpec("compact", 604800, enabled=False)
    d = Daemon(fake_context(store, tmp_path), cfg2)
    actions = d.start()
    d.shutdown()
    assert actions == {"compact": "removed", "extract": "updated", "accumulate": "kept", "retrain": "kept (paused)"}
    now = next_runs(store)
    assert now["retrain"] == ("paused", None) and now["compact"][0] == "not scheduled"
    assert now["accumulate"] == first["accumulate"] and now["extract"] != first["extract"]
    r = cli("jobs", "resume", "retrain", "--db", store.url)
    assert r.code == 0 and "next run" in r.out
    assert next_runs(store)["retrain"][0] == "scheduled"


def test_daemon_runs_due_jobs_and_queued_tasks_then_stops(store, tmp_path, cli):
    tid = add_trajectory(store)
    repo = tmp_path / "repo"
    repo.mkdir()
    r = cli("submit", str(repo), "fix the failing test", "--mode", "none", "--db", store.url, "--json")
    assert r.code == 0 and json.loads(r.out)["queued"] == 1
    solved = []

    def solver(ctx, item):
        solved.append(item)
        return SolveOutcome(add_trajectory(ctx.store), "submitted", True)

    cfg = sched.load_config(None, ["extract=1s", "accumulate=1s", "retrain=1d", "compact=7d"])
    cfg.poll_s = 0.2
    said = []
    d = Daemon(fake_context(store, tmp_path), cfg, solver=solver, say=said.append)
    t = threading.Thread(target=d.run, kwargs={"install_signals": False})
    t.start()
    # wait for the run rows themselves: an EMA version is committed before its accumulate run is marked ok,
    # and a job that sees the daemon stopping ends as "stopped" (a loaded machine stopped it in between once)
    deadline = time.time() + 120
    while time.time() < deadline:
        with store.session() as s:
            ok = {r.kind for r in evo_repo.recent_runs(s) if r.status == "ok"}
            done = s.get(Trajectory, tid).extraction == "extracted" and evo_repo.ema_versions(s)
            if done and {"extract", "accumulate"} <= ok and queue_repo.listing(s, "done"):
                break
        time.sleep(0.3)
    d.stop()
    t.join(30)
    assert not t.is_alive() and said[-1] == "stopped"
    assert [i.task for i in solved] == ["fix the failing test"] and solved[0].options["mode"] == "none"
    with store.session() as s:
        (task,) = queue_repo.listing(s)
        assert task.status == "done" and task.trajectory_id is not None
        kinds = {r.kind for r in evo_repo.recent_runs(s) if r.status == "ok"}
        assert {"extract", "accumulate"} <= kinds
        assert not [r for r in evo_repo.recent_runs(s) if r.status == "running"]


def test_jobs_run_from_the_command_line(cli, store):
    r = cli("jobs", "run", "compact", "--db", store.url, "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["status"] == "ok"
    r = cli("jobs", "run", "retrain", "--db", store.url)
    assert r.code == 0 and "no new training data" in r.out
    with store.session() as s:
        assert [x.kind for x in evo_repo.recent_runs(s)] == ["retrain", "compact"]


def test_stop_during_a_task_requeues_it(store, tmp_path):
    from agent.evolve.daemon import make_solver

    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "a.py").write_text("x = 1\n")
    with store.session() as s:
        queue_repo.submit(s, repo=str(repo), task="look around", options={"mode": "none", "test_cmd": "true"})
    ctx = fake_context(store, tmp_path)

    class StopsAfterOneStep:  # the operator presses Ctrl-C while the model thinks about step 1
        def chat(self, messages):
            ctx.stop_event.set()
            return "```bash\nls\n```", 5

    d = Daemon(ctx, sched.load_config(None, []), solver=make_solver(lambda c, item: StopsAfterOneStep()))
    assert d.step()
    with store.session() as s:
        (task,) = queue_repo.listing(s)
        assert task.status == "queued" and task.worker is None and task.attempts == 1
        (traj,) = s.query(Trajectory).all()
        assert [st.role for st in traj.steps][-1] == "user"  # the step that ran is kept
        assert not traj.verified


def test_no_sandbox_never_enters_or_leaves_the_queue(cli, store, tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    for args in (["--no-sandbox"], ["--max-steps", "0"]):
        r = cli("submit", str(repo), "fix", *args, "--db", store.url)
        assert r.code == 2 and len(r.err.strip().splitlines()) == 1, r.err
    assert "always run in the sandbox" in cli("submit", str(repo), "fix", "--no-sandbox", "--db", store.url).err
    r = cli("submit", str(repo), "fix", "--mode", "none", "--db", store.url, "--json")
    assert r.code == 0
    with store.session() as s:
        (queued,) = queue_repo.listing(s)
        assert "no_sandbox" not in queued.options
        # written by anyone who can reach the queue, not by `agent submit`
        hostile = queue_repo.submit(s, repo=str(repo), task="read the keys", options={"no_sandbox": True})
        s.delete(queued)
    ran = []
    d = Daemon(fake_context(store, tmp_path), sched.load_config(None, []),
               solver=lambda ctx, item: ran.append(item) or SolveOutcome(None, "submitted", False))
    assert d.step()
    assert ran == []  # nothing was run
    with store.session() as s:
        (task,) = queue_repo.listing(s)
        assert task.id == hostile and task.status == "failed" and "no_sandbox" in task.error
        assert not s.query(Trajectory).all()


def test_evolve_no_sandbox_needs_the_confirmation_flag(cli, store):
    r = cli("jobs", "run", "compact", "--no-sandbox", "--db", store.url)
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1 and "--i-understand-commands-run-unconfined" in r.err
    r = cli("jobs", "run", "compact", "--no-sandbox", "--i-understand-commands-run-unconfined", "--db", store.url)
    assert r.code == 0, r.err
