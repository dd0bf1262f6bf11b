"""Shared fixtures: databases (SQLite always, PostgreSQL when AGENT_TEST_PG_URL is set) and the CLI."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import pytest

PG_URL = os.environ.get("AGENT_TEST_PG_URL")


@functools.cache
def _worker_pg_url(url: str) -> str:
    """Under pytest-xdist (`make test` runs 2 workers) each worker gets a database of its own on the server,
    made on first use, since every test drops and recreates the public schema."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not worker:
        return url
    base = make_url(url)
    name = f"{base.database}_{worker}"
    engine = create_engine(base.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        if not conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).first():
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return base.set(database=name).render_as_string(hide_password=False)


def _reset_pg(url: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path) -> str:
    """A fresh, empty database URL of each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'skills.db'}"
    if not PG_URL:
        pytest.skip("AGENT_TEST_PG_URL not set (.ci/run starts a PostgreSQL server)")
    url = _worker_pg_url(PG_URL)
    _reset_pg(url)
    return url


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'skills.db'}"


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys, monkeypatch, tmp_path):
    """Run `agent ARGS...` in-process; returns exit code, stdout, stderr."""
    from agent.cli import main

    monkeypatch.setenv("COLUMNS", "200")
    for var in ("HF_HUB_DISABLE_PROGRESS_BARS", "TQDM_DISABLE"):  # main() sets them: undone after the test
        monkeypatch.setenv(var, os.environ.get(var, "1"))

    def run(*args: str) -> CliResult:
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


@pytest.fixture
def one_thread():
    """Tiny QR/SVD/matmuls: extra torch threads only contend on a shared 2-core machine."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def store(db_url):
    """A fresh store on SQLite, and on PostgreSQL when AGENT_TEST_PG_URL is set."""
    from memory.db import Store

    return Store(db_url)
