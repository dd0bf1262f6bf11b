"""`agent skills`: the skill library in the store and on disk."""

from __future__ import annotations

from pathlib import Path
from typing import List

import typer

from agent.commands import DbOption, JsonOption
from agent.commands.output import console, emit_json, table
from memory import skills as skill_repo
from memory.db import Store
from memory.skillfile import SkillDoc, discover, escape_controls, read_skill_dir

app = typer.Typer(help="Import, list, show, export and lint skills (Agent Skills folders).", no_args_is_help=True)


def load_docs(paths: list[Path]) -> list[SkillDoc]:
    """Parse everything before writing anything, so one bad skill leaves the store unchanged."""
    docs: dict[str, SkillDoc] = {}
    for path in paths:
        for folder in discover(path):
            doc = read_skill_dir(folder)
            docs[doc.name] = doc
    return list(docs.values())


@app.command("import")
def import_(
    paths: List[Path] = typer.Argument(..., help="Skill folders, folders of skills, or repos (.agents/skills, .claude/skills, ...)."),
    source: str = typer.Option("user", help="seed | extracted | user"),
    db: DbOption = None,
    json: JsonOption = False,
) -> None:
    """Import skills; unchanged ones are a no-op, changed ones become a new version."""
    docs = load_docs(paths)
    store = Store(db)
    with store.session() as s:
        results = [skill_repo.upsert(s, d, source=source) for d in docs]
    rows = [{"name": r.name, "action": r.action, "version": r.version} for r in results]
    if json:
        emit_json(rows)
        return
    counts = {a: sum(r["action"] == a for r in rows) for a in ("added", "new-version", "unchanged")}
    console.print(f"{len(rows)} skills: {counts['added']} added, {counts['new-version']} new versions, "
                  f"{counts['unchanged']} unchanged")


@app.command("list")
def list_(
    subtask: str = typer.Option(None, help="Only this subtask."),
    db: DbOption = None,
    json: JsonOption = False,
) -> None:
    """List the current version of every skill."""
    store = Store(db)
    with store.session() as s:
        rows = [skill_repo.summary(r) for r in skill_repo.list_current(s, subtask=subtask)]
    if json:
        emit_json(rows)
    elif not rows:
        console.print("no skills yet: `agent skills import PATH` or `agent skills seed`")
    else:
        # skill text reaches the terminal only with its control characters escaped (no ANSI sequences)
        shown = [{k: escape_controls(v) if isinstance(v, str) else v for k, v in r.items()} for r in rows]
        table(shown, ["name", "version", "subtask", "split", "source", "uses", "wins"], title=f"{len(rows)} skills")


@app.command()
def show(name: str, db: DbOption = None, json: JsonOption = False) -> None:
    """Show one skill: its SKILL.md and its counters."""
    store = Store(db)
    with store.session() as s:
        row = skill_repo.get(s, name)
        data = skill_repo.summary(row) | {"skill_md": skill_repo.to_doc(row).render()}
    if json:
        emit_json(data)
    else:
        from rich.markdown import Markdown

        from rich.markup import escape

        # a SKILL.md body may hold control characters (ANSI escapes): shown as \xNN, never sent raw
        console.print(f"[bold]{escape(escape_controls(data['name']))}[/] v{data['version']}  "
                      f"{escape(escape_controls(data['subtask'] or ''))}  "
                      f"source={data['source']} uses={data['uses']} wins={data['wins']}")
        console.print(Markdown(escape_controls(data["skill_md"].split("---\n", 2)[-1])))


@app.command()
def export(out: Path = typer.Argument(..., help="Folder to write name/SKILL.md folders into."), db: DbOption = None) -> None:
    """Export the current skills as Agent Skills folders."""
    store = Store(db)
    with store.session() as s:
        paths = skill_repo.export(s, out)
    console.print(f"wrote {len(paths)} skills to {out}")


@app.command()
def lint(
    paths: List[Path] = typer.Argument(None, help="Skill folders to lint (default: the current skills in the store)."),
    db: DbOption = None,
    json: JsonOption = False,
) -> None:
    """Report skills without a checker, a split or a usable procedure; exit 1 when any has problems."""
    from agent.checks.lint import lint as lint_doc

    if paths:
        docs = load_docs(paths)
    else:
        store = Store(db)
        with store.session() as s:
            docs = [skill_repo.to_doc(r) for r in skill_repo.list_current(s)]
    problems = {d.name: lint_doc(d) for d in docs}
    bad = {k: v for k, v in problems.items() if v}
    if json:
        emit_json({"skills": len(docs), "problems": bad})
    else:
        for name, items in bad.items():
            for p in items:
                console.print(escape_controls(f"{name}: {p}"), markup=False)
        console.print(f"{len(docs)} skills, {len(bad)} with problems")
    if bad:
        raise typer.Exit(1)
