"""The schema exists only through Alembic: up to head, down to empty, refusing newer databases."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect, text

from memory import db as store_db
from memory.errors import SchemaTooNewError, StoreError
from memory.models import Base

TABLES = {"skills", "adapters", "trajectories", "trajectory_steps", "hypernet_checkpoints", "eval_results",
          "evolution_runs", "skill_blobs", "skill_files"}


def test_upgrade_to_head_and_down_to_base(db_url):
    engine = store_db.make_engine(db_url)
    assert store_db.current_revision(engine) is None
    store_db.upgrade(engine)
    assert store_db.current_revision(engine) == store_db.head_revision(engine)
    assert TABLES <= set(inspect(engine).get_table_names())
    store_db.downgrade(engine, "base")
    assert store_db.current_revision(engine) is None
    assert not TABLES & set(inspect(engine).get_table_names())
    store_db.upgrade(engine)
    assert TABLES <= set(inspect(engine).get_table_names())


def test_migrations_match_models(db_url):
    """Autogenerate against head finds nothing to do: models and migrations agree."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    engine = store_db.make_engine(db_url)
    store_db.upgrade(engine)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_store_auto_upgrades_on_first_use(db_url):
    store = store_db.Store(db_url)
    assert TABLES <= set(store.table_names())


def test_sqlite_runs_with_wal_busy_timeout_and_foreign_keys(sqlite_url):
    store = store_db.Store(sqlite_url)
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == store_db.BUSY_TIMEOUT_MS


def test_database_from_newer_schema_is_refused_untouched(db_url):
    engine = store_db.make_engine(db_url)
    store_db.upgrade(engine)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'ffff_future'"))
    with pytest.raises(SchemaTooNewError, match="newer than this code"):
        store_db.Store(db_url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == "ffff_future"


@pytest.mark.parametrize("url", ["sqlite:////no/such/folder/skills.db", "nosuchdialect://x/y",
                                 "postgresql+psycopg2://nobody@127.0.0.1:1/none"])
def test_unopenable_url_is_a_clear_error(url):
    with pytest.raises(StoreError, match="cannot open database"):
        store_db.make_engine(url)


def test_bare_path_means_sqlite(tmp_path, monkeypatch):
    monkeypatch.delenv("AGENT_DB_URL", raising=False)
    assert store_db.resolve_url(str(tmp_path / "a.db")) == f"sqlite:///{tmp_path / 'a.db'}"
    monkeypatch.setenv("AGENT_DB_URL", "sqlite:///env.db")
    assert store_db.resolve_url(None) == "sqlite:///env.db"


def test_corrupt_sqlite_file_is_refused_untouched(tmp_path):
    import hashlib

    from memory.db import Store

    path = tmp_path / "skills.db"
    store = Store(f"sqlite:///{path}")
    with store.engine.begin() as conn:  # enough rows for several pages
        conn.exec_driver_sql("CREATE TABLE filler (x TEXT)")
        for i in range(200):
            conn.exec_driver_sql("INSERT INTO filler VALUES (?)", (f"{i}" * 200,))
    store.close()
    data = bytearray(path.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    data[page * 2 : page * 2 + 64] = b"\xff" * 64  # trash the third page
    path.write_bytes(bytes(data))
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(StoreError) as err:
        Store(f"sqlite:///{path}")
    message = str(err.value)
    assert "\n" not in message and str(path) in message and "damaged" in message and ".recover" in message
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    path.write_bytes(b"not a database at all" * 100)
    with pytest.raises(StoreError, match="damaged"):
        Store(f"sqlite:///{path}")


def test_upgrade_that_rebuilds_skills_keeps_what_points_at_them(db_url):
    """0003 changes a column of `skills`, which SQLite does by rebuilding the table; with foreign keys on,
    dropping the old table would set adapters.skill_id to NULL. Migrations run with them off there."""
    engine = store_db.make_engine(db_url)
    store_db.upgrade(engine, "0002")
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO skills (id, name, version, is_current, description, body, license, meta, source, status,"
            " provenance, content_hash, use_count, win_count, created_at, updated_at) VALUES (7, 'kept', 1, :t,"
            " 'd', 'b', 'MIT', '{}', 'user', 'active', '{}', 'h', 3, 2, :now, :now)"),
            {"t": True, "now": "2026-01-01 00:00:00"})
        conn.execute(text(
            "INSERT INTO adapters (id, kind, skill_id, base_model, rank, targets, shapes, blob, sha256, meta,"
            " created_at) VALUES (1, 'skill', 7, 'm', 4, '[]', '{}', :blob, 's', '{}', :now)"),
            {"blob": b"\x00\x01", "now": "2026-01-01 00:00:00"})
    store_db.upgrade(engine)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT skill_id FROM adapters")).scalar() == 7
        assert conn.execute(text("SELECT name, license, use_count FROM skills")).one() == ("kept", "MIT", 3)
        if engine.dialect.name == "sqlite":
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1  # switched back on
    long_licence = "L" * 2000  # the spec sets no length; VARCHAR(256) refused this on PostgreSQL
    with engine.begin() as conn:
        conn.execute(text("UPDATE skills SET license = :l"), {"l": long_licence})
