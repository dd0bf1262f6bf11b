"""One SQLite file, three processes at once: the daemon (scheduler jobs + task queue), an `agent solve`-like
writer and a TUI-like reader. No "database is locked", no lost write, and the daemon stops cleanly on SIGTERM.

EVOLVE_CONCURRENCY_SECONDS sets how long the writer and reader run (default 15; the long version is
EVOLVE_CONCURRENCY_SECONDS=300).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from memory import evolution as evo_repo
from memory import queue as queue_repo
from memory.db import Store
from memory.models import Skill, Trajectory

ROOT = Path(__file__).resolve().parent.parent
SECONDS = float(os.environ.get("EVOLVE_CONCURRENCY_SECONDS", "15"))


def child(call: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", f"from tests.test_evolve_fakes import *; {call}"], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_daemon_writer_and_reader_share_the_database(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    store = Store(url)
    reports = {k: str(tmp_path / f"{k}.json") for k in ("daemon", "writer", "reader")}
    daemon = child(f"concurrency_daemon({url!r}, {str(tmp_path)!r}, {reports['daemon']!r})")
    writer = child(f"concurrency_writer({url!r}, {SECONDS}, {reports['writer']!r})")
    reader = child(f"concurrency_reader({url!r}, {SECONDS}, {reports['reader']!r})")
    try:
        assert daemon.stdout.readline().strip() == "ready", daemon.stderr.read()
        for p in (writer, reader):
            _, err = p.communicate(timeout=SECONDS + 120)
            assert p.returncode == 0, err[-3000:]
        time.sleep(1.5)  # let the daemon's jobs see the last writes
    finally:
        daemon.send_signal(signal.SIGTERM)
        _, derr = daemon.communicate(timeout=120)
    assert daemon.returncode == 0, derr[-3000:]
    assert "locked" not in derr

    w = json.loads(Path(reports["writer"]).read_text())
    r = json.loads(Path(reports["reader"]).read_text())
    d = json.loads(Path(reports["daemon"]).read_text())
    assert w["errors"] == [] and r["errors"] == []
    assert len(w["trajectories"]) >= 5 and r["reads"] >= 20
    assert d["said"][-1] == "stopped"
    with store.session() as s:
        # no lost write: every trajectory the writer made is there with every step and its outcome
        for tid, n in w["trajectories"].items():
            row = s.get(Trajectory, int(tid))
            assert row is not None and len(row.steps) == n and row.status == "submitted"
        assert {sk.name for sk in s.query(Skill)} >= set(w["skills"])
        tasks = {t.id: t for t in queue_repo.listing(s, limit=10_000)}
        assert set(w["tasks"]) <= set(tasks)
        assert all(t.status in ("done", "queued") for t in tasks.values())  # none left claimed
        assert {t.id for t in tasks.values() if t.status == "done"} == set(d["solved"])
        runs = evo_repo.recent_runs(s, limit=10_000)
        assert not [(x.kind, x.details) for x in runs if x.status in ("failed", "running")]
        ok = {x.kind for x in runs if x.status == "ok"}
        assert {"extract", "accumulate", "retrain", "compact"} <= ok, ok
        versions = [a.version for a in evo_repo.ema_versions(s)]
        assert versions == list(range(1, len(versions) + 1)) and versions
