"""`agent skills`: the skill library in the store and on disk (Agent Skills folders, bundled files included)."""

from __future__ import annotations

from pathlib import Path
from typing import List

import typer

from agent.commands import DbOption, JsonOption
from agent.commands.output import console, emit_json, err_console, table
from memory import skills as skill_repo
from memory.db import Store
from memory.skillfile import SkillFolder, check_text, discover, escape_controls, read_skill

app = typer.Typer(help="Import, list, show, export, lint and seed skills (Agent Skills folders).",
                  no_args_is_help=True)


def _say(text: str, err: bool = False) -> None:
    """One line as it is: control characters escaped, no markup, never wrapped."""
    (err_console if err else console).print(escape_controls(text), markup=False, highlight=False, soft_wrap=True)


def read_folders(paths: list[Path], files: bool = True) -> list[SkillFolder]:
    """Every skill folder under the paths, read and checked; a path that is not there is one error (exit 2)."""
    found = [folder for path in paths for folder in discover(path)]
    return [read_skill(folder, files=files) for folder in found]


def _note(n: skill_repo.Note) -> dict:
    return {"name": n.name, "path": n.path, "reason": n.reason}


@app.command("import")
def import_(
    paths: List[Path] = typer.Argument(..., help="Skill folders, folders of skills, or repos (.agents/skills, .claude/skills, ...)."),
    source: str = typer.Option("user", help="seed | extracted | user"),
    db: DbOption = None,
    json: JsonOption = False,
) -> None:
    """Import every valid skill with its bundled files; report each refused one; exit 1 if any was refused.

    Unchanged skills are a no-op, changed ones become a new version. Each skill is written in its own
    transaction: a refused skill writes nothing and does not keep the others out.
    """
    folders = read_folders(paths)
    report = skill_repo.import_folders(Store(db), folders, source=source)
    if json:
        emit_json({
            "imported": [{"name": r.name, "action": r.action, "version": r.version, "files": r.files}
                         for r in report.imported],
            "refused": [_note(n) for n in report.refused],
            "warnings": [_note(n) for n in report.warnings],
        })
    else:
        for n in report.warnings:
            _say(f"warning: {n.name} ({n.path}): {n.reason}", err=True)
        for n in report.refused:
            _say(f"refused: {n.name} ({n.path}): {n.reason}", err=True)
        counts = {a: sum(r.action == a for r in report.imported) for a in ("added", "new-version", "unchanged")}
        files = sum(r.files for r in report.imported)
        _say(f"{len(folders)} skills: {counts['added']} added, {counts['new-version']} new versions, "
             f"{counts['unchanged']} unchanged, {len(report.refused)} refused ({files} bundled files)")
    if report.refused:
        raise typer.Exit(1)


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
        _say("no skills yet: `agent skills import PATH`, or `agent skills seed` for the shipped library")
    else:
        # skill text reaches the terminal only with its control characters escaped (no ANSI sequences)
        shown = [{k: escape_controls(v) if isinstance(v, str) else v for k, v in r.items()} for r in rows]
        table(shown, ["name", "version", "subtask", "split", "source", "uses", "wins"], title=f"{len(rows)} skills")


@app.command()
def show(name: str, db: DbOption = None, json: JsonOption = False) -> None:
    """Show one skill: its SKILL.md, its fields, its bundled files and its counters."""
    store = Store(db)
    with store.session() as s:
        row = skill_repo.get(s, name)
        doc = skill_repo.to_doc(row)
        data = skill_repo.summary(row) | {
            "license": doc.license, "compatibility": doc.compatibility, "allowed_tools": doc.allowed_tools,
            "metadata": doc.metadata, "skill_md": doc.render(),
            "files": [{"path": f.path, "bytes": f.blob.size, "sha256": f.sha256, "executable": f.executable}
                      for f in row.files],
        }
    if json:
        emit_json(data)
        return
    from rich.markdown import Markdown

    from rich.markup import escape

    # a SKILL.md body may hold control characters (ANSI escapes): shown as \xNN, never sent raw
    console.print(f"[bold]{escape(escape_controls(data['name']))}[/] v{data['version']}  "
                  f"{escape(escape_controls(data['subtask'] or ''))}  "
                  f"source={data['source']} uses={data['uses']} wins={data['wins']}")
    for key in ("license", "compatibility", "allowed_tools"):
        if data[key]:
            _say(f"{key.replace('_', '-')}: {' '.join(data[key].split())}")
    for f in data["files"]:
        _say(f"  {f['path']}  {f['bytes']:,} bytes{'  (executable)' if f['executable'] else ''}")
    console.print(Markdown(escape_controls(doc.body)))


@app.command()
def export(
    out: Path = typer.Argument(..., help="Folder to write name/ folders into (SKILL.md and bundled files)."),
    names: List[str] = typer.Argument(None, help="Only these skills (default: every current skill)."),
    db: DbOption = None,
    json: JsonOption = False,
) -> None:
    """Export skills as Agent Skills folders: the imported SKILL.md text and bundled files, byte for byte."""
    store = Store(db)
    with store.session() as s:
        paths = skill_repo.export(s, out, names or None)
    if json:
        emit_json({"out": str(out), "skills": [str(p.parent) for p in paths]})
    else:
        _say(f"wrote {len(paths)} skills to {out}")


def _spec_check_store(db: str | None) -> list[tuple[str, str, list[str], list[str]]]:
    """The stored skills' SKILL.md texts through the spec validator (their files passed at import)."""
    store = Store(db)
    with store.session() as s:
        rows = [(r.name, skill_repo.to_doc(r).render()) for r in skill_repo.list_current(s)]
    checked = [(name, check_text(text, folder_name=name)) for name, text in rows]
    return [(name, f"store:{name}", list(c.errors), list(c.warnings)) for name, c in checked]


@app.command()
def lint(
    paths: List[Path] = typer.Argument(None, help="Skill folders to lint (default: the current skills in the store)."),
    library: bool = typer.Option(False, "--library", help="The training library's checks instead: a subtask, "
                                 "a split, a parsable checks spec and a procedure the checks can grade."),
    db: DbOption = None,
    json: JsonOption = False,
) -> None:
    """Validate skills against the Agent Skills spec (as `skills-ref` does); exit 1 when any is invalid.

    Folders are checked whole, as `agent skills import` would: SKILL.md, and bundled files against the
    size caps (symlinks are reported, never followed). Warnings (nested metadata, a skipped symlink) do
    not fail the lint.
    """
    if library:
        _lint_library(paths, db, json)
        return
    if paths:
        results = [(f.name, str(f.path), list(f.errors), list(f.warnings)) for f in read_folders(paths)]
    else:
        results = _spec_check_store(db)
    invalid = {name: errors for name, _, errors, _ in results if errors}
    warned = {name: warnings for name, _, _, warnings in results if warnings}
    if json:
        emit_json({"skills": len(results), "invalid": invalid, "warnings": warned})
    else:
        for name, where, errors, warnings in results:
            for e in errors:
                _say(f"{name} ({where}): {e}")
            for w in warnings:
                _say(f"{name} ({where}): warning: {w}")
        _say(f"{len(results)} skills, {len(invalid)} invalid, {len(warned)} with warnings")
    if invalid:
        raise typer.Exit(1)


def _lint_library(paths: list[Path] | None, db: str | None, json: bool) -> None:
    """Report skills without a checker, a split or a usable procedure; exit 1 when any has problems."""
    from agent.checks.lint import lint as lint_doc

    if paths:
        problems = {f.name: (lint_doc(f.doc) if f.ok and f.doc else list(f.errors))
                    for f in read_folders(paths, files=False)}
    else:
        store = Store(db)
        with store.session() as s:
            docs = [skill_repo.to_doc(r) for r in skill_repo.list_current(s)]
        problems = {d.name: lint_doc(d) for d in docs}
    bad = {k: v for k, v in problems.items() if v}
    if json:
        emit_json({"skills": len(problems), "problems": bad})
    else:
        for name, items in bad.items():
            for p in items:
                _say(f"{name}: {p}")
        _say(f"{len(problems)} skills, {len(bad)} with problems")
    if bad:
        raise typer.Exit(1)


@app.command()
def seed(db: DbOption = None, json: JsonOption = False) -> None:
    """Import the shipped skill library (memory/library/); `agent solve` does this itself on an empty store.

    Missing skills are added and seed skills updated to the shipped text; a skill of the same name that
    came from elsewhere (imported, extracted) is kept.
    """
    from memory.seed import seed as seed_library

    results = seed_library(Store(db))
    if json:
        emit_json([{"name": r.name, "action": r.action, "version": r.version} for r in results])
        return
    counts = {a: sum(r.action == a for r in results) for a in ("added", "new-version", "unchanged", "kept")}
    _say(f"{len(results)} seed skills: {counts['added']} added, {counts['new-version']} new versions, "
         f"{counts['unchanged']} unchanged, {counts['kept']} kept (same name from elsewhere)")
