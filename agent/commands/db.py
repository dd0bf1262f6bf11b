"""`agent db`: the store's schema."""

from __future__ import annotations

import typer

from agent.commands import DbOption, JsonOption
from agent.commands.output import console, emit_json
from memory import db as store_db

app = typer.Typer(help="Create or upgrade the database schema (Alembic migrations).", no_args_is_help=True)


@app.command()
def upgrade(db: DbOption = None, revision: str = typer.Argument("head", help="Target revision.")) -> None:
    """Upgrade the schema to REVISION (default: head)."""
    engine = store_db.make_engine(db)
    before = store_db.current_revision(engine)
    store_db.upgrade(engine, revision)
    after = store_db.current_revision(engine)
    console.print(f"{engine.url.render_as_string(hide_password=True)}: {before or 'empty'} -> {after}")


@app.command()
def downgrade(revision: str = typer.Argument(..., help="Target revision, or 'base' for empty."), db: DbOption = None) -> None:
    """Downgrade the schema to REVISION (destroys the data of dropped tables)."""
    engine = store_db.make_engine(db)
    store_db.downgrade(engine, revision)
    console.print(f"now at {store_db.current_revision(engine) or 'base'}")


@app.command()
def status(db: DbOption = None, json: JsonOption = False) -> None:
    """Show the schema revision of the database and of this code."""
    engine = store_db.make_engine(db)
    data = {
        "url": engine.url.render_as_string(hide_password=True),
        "current": store_db.current_revision(engine),
        "head": store_db.head_revision(engine),
    }
    store_db.check_not_newer(engine)
    if json:
        emit_json(data)
    else:
        console.print(f"{data['url']}: revision {data['current'] or 'none'} (code head {data['head']})")
