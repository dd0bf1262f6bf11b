"""Read-only sessions for the TUI's background workers.

The Store starts every SQLite transaction with BEGIN IMMEDIATE (the write lock), which is right for
writers but would make each refresh of a viewer queue behind a daemon's writes, and hold them up in
turn. With WAL, plain reads need no lock at all, so SQLite files get their own engine here.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session

from memory.db import BUSY_TIMEOUT_MS, Store


def _read_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA query_only=ON")  # a viewer must never write by accident
    cur.close()


class Reader:
    def __init__(self, store: Store) -> None:
        self.store = store
        url = store.engine.url
        self.url = url.render_as_string(hide_password=False)
        self._own: Engine | None = None
        if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
            self._own = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000})
            event.listen(self._own, "connect", _read_pragmas)
        self.engine = self._own or store.engine

    @contextmanager
    def session(self) -> Iterator[Session]:
        with Session(self.engine, expire_on_commit=False) as s:
            try:
                yield s
            finally:
                s.rollback()

    def close(self) -> None:
        if self._own is not None:
            self._own.dispose()
