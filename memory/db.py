"""Opening the store: engine set-up, schema upgrades through Alembic, sessions.

Any SQLAlchemy URL works; SQLite (the default, `skills.db`) gets WAL, a busy
timeout and foreign keys so a daemon, a solve and the TUI can share one file.
"""

from __future__ import annotations

import os
import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.exc import ArgumentError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from memory.errors import SchemaTooNewError, StoreError

DEFAULT_URL = "sqlite:///skills.db"
MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
BUSY_TIMEOUT_MS = 30_000


def resolve_url(url: str | None) -> str:
    """--db beats AGENT_DB_URL beats ./skills.db; a bare path means a SQLite file."""
    url = url or os.environ.get("AGENT_DB_URL") or DEFAULT_URL
    if "://" not in url:
        url = f"sqlite:///{url}"
    return url


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()
    dbapi_conn.isolation_level = None  # no implicit BEGIN from the driver


def make_engine(url: str | None = None) -> Engine:
    url = resolve_url(url)
    try:
        if url.startswith("sqlite"):
            path = url.split(":///", 1)[-1]
            if path and path != ":memory:" and not path.startswith("file:"):
                file = Path(path).expanduser().resolve()
                if not file.parent.is_dir():
                    raise StoreError(f"cannot open database {url}: folder {file.parent} does not exist")
                check_sqlite_file(file)
            engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000})
            event.listen(engine, "connect", _sqlite_pragmas)
            # SQLAlchemy's recipe for pysqlite: we start transactions ourselves, with BEGIN IMMEDIATE,
            # so the write lock is taken up front and waits on busy_timeout; a deferred BEGIN that
            # upgrades to a write later fails with "database is locked" when another writer got in first.
            event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
        else:
            engine = create_engine(url, pool_pre_ping=True)
        with engine.connect():
            pass
    except StoreError:
        raise
    except (ArgumentError, SQLAlchemyError, ImportError) as exc:
        raise StoreError(f"cannot open database {url}: {_first_line(exc)}") from None
    return engine


def check_sqlite_file(path: Path) -> None:
    """Refuse a damaged SQLite file before anything writes to it.

    ``PRAGMA quick_check`` on a read-only connection (opening normally would
    switch on WAL, a write); a file that does not exist yet is fine.
    """
    if not path.exists():
        return
    fix = f"restore it from a backup, or salvage it with: sqlite3 {path} .recover | sqlite3 recovered.db"
    try:
        conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_MS / 1000)
        try:
            rows = conn.execute("PRAGMA quick_check").fetchall()
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:  # "file is not a database", "malformed", ...
        raise StoreError(f"database {path} is damaged ({_first_line(exc)}); {fix}") from None
    if rows != [("ok",)]:
        lines = [ln for row in rows for ln in str(row[0]).splitlines() if ln.strip() and not ln.startswith("***")]
        first = lines[0] if lines else "quick_check failed"
        raise StoreError(f"database {path} is damaged ({first}); {fix}")


def _first_line(exc: Exception) -> str:
    text = str(getattr(exc, "orig", None) or exc)
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__


def alembic_config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False).replace("%", "%%"))
    return cfg


def head_revision(engine: Engine) -> str:
    return ScriptDirectory.from_config(alembic_config(engine)).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def check_not_newer(engine: Engine) -> None:
    rev = current_revision(engine)
    script = ScriptDirectory.from_config(alembic_config(engine))
    known = {s.revision for s in script.walk_revisions()}
    if rev is not None and rev not in known:
        raise SchemaTooNewError(
            f"database schema revision {rev!r} is newer than this code knows (head {script.get_current_head()!r});"
            " upgrade parametric-skills"
        )


def _migrate(engine: Engine, step: Callable[[Config], None]) -> None:
    """Run one Alembic command in one transaction.

    On SQLite, with foreign keys off around it: a migration that changes a column rebuilds the table
    (copy, drop, rename), and dropping `skills` with foreign keys on would run the ON DELETE actions of
    the tables that point at it (adapters.skill_id set to NULL). This is SQLite's own procedure for
    schema changes: foreign keys off outside the transaction, `foreign_key_check` before the commit.
    """
    check_not_newer(engine)
    cfg = alembic_config(engine)
    with engine.connect() as conn:
        sqlite = engine.dialect.name == "sqlite"
        if sqlite:  # on the driver's connection: a PRAGMA inside a transaction is ignored
            conn.connection.driver_connection.execute("PRAGMA foreign_keys=OFF")
        try:
            with conn.begin():
                cfg.attributes["connection"] = conn
                step(cfg)
                if sqlite:
                    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                    if broken:
                        raise StoreError(f"migration left {len(broken)} broken foreign keys (first: {broken[0]}); "
                                         "rolled back")
        finally:
            if sqlite:
                conn.connection.driver_connection.execute("PRAGMA foreign_keys=ON")


def upgrade(engine: Engine, revision: str = "head") -> None:
    _migrate(engine, lambda cfg: command.upgrade(cfg, revision))


def downgrade(engine: Engine, revision: str) -> None:
    _migrate(engine, lambda cfg: command.downgrade(cfg, revision))


class Store:
    """An engine plus a session factory, with the schema at head."""

    def __init__(self, url: str | None = None, auto_upgrade: bool = True) -> None:
        self.engine = make_engine(url)
        self.url = self.engine.url.render_as_string(hide_password=True)
        try:
            if auto_upgrade and current_revision(self.engine) != head_revision(self.engine):
                upgrade(self.engine)
            else:
                check_not_newer(self.engine)
        except OperationalError as exc:
            raise StoreError(f"cannot use database {self.url}: {_first_line(exc)}") from None
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A unit of work: committed on success, rolled back on any error."""
        with self._sessions() as s:
            try:
                yield s
                s.commit()
            except BaseException:
                s.rollback()
                raise

    def table_names(self) -> list[str]:
        return inspect(self.engine).get_table_names()

    def close(self) -> None:
        self.engine.dispose()
