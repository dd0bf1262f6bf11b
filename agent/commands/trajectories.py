"""`agent trajectories`: what the agent did, step by step."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path

import typer

from agent.commands import DbOption, JsonOption
from agent.commands.output import console, emit_json, fail, table
from memory import trajectories as traj_repo
from memory.db import Store
from memory.skillfile import escape_controls

app = typer.Typer(help="List, show and export agent trajectories.", no_args_is_help=True)


class Format(str, Enum):
    jsonl = "jsonl"


@app.command("list")
def list_(limit: int = typer.Option(50, min=1), db: DbOption = None, json: JsonOption = False) -> None:
    """The most recent trajectories."""
    store = Store(db)
    with store.session() as s:
        rows = traj_repo.recent(s, limit)
        counts = traj_repo.step_counts(s, [r.id for r in rows])
        data = [traj_repo.summary(r, counts.get(r.id, 0)) for r in rows]
    if json:
        emit_json(data)
    elif not data:
        console.print("no trajectories yet: `agent solve REPO TASK`")
    else:
        for d in data:
            d["task"] = d["task"][:40]
        table(data, ["id", "status", "verified", "mode", "steps", "tokens", "seconds", "task"])


@app.command()
def show(trajectory_id: int, db: DbOption = None, json: JsonOption = False) -> None:
    """Every message of one trajectory."""
    store = Store(db)
    with store.session() as s:
        row = traj_repo.get(s, trajectory_id)
        data = traj_repo.summary(row, len(row.steps)) | {
            "outcome": row.outcome,
            "messages": [{"idx": st.idx, "role": st.role, "content": st.content, "action": st.action}
                         for st in row.steps],
        }
    if json:
        emit_json(data)
        return
    console.print(f"[bold]trajectory {data['id']}[/] {data['status']} verified={data['verified']} "
                  f"mode={data['mode']} steps={data['steps']} tokens={data['tokens']}")
    for m in data["messages"]:
        console.rule(f"{m['idx']} {m['role']}")
        # model replies and command output (and icl skill text): control characters shown, never sent raw
        console.print(escape_controls(m["content"]), markup=False, highlight=False)


@app.command()
def export(
    out: Path = typer.Option(None, "--out", "-o", help="File to write (default: stdout)."),
    fmt: Format = typer.Option(Format.jsonl, "--format", help="jsonl: OpenAI chat format, one trajectory a line."),
    verified_only: bool = typer.Option(False, "--verified-only", help="Only trajectories whose tests pass after."),
    db: DbOption = None,
) -> None:
    """Export trajectories as OpenAI chat-format JSONL (usable as training data)."""
    if out is not None and not out.parent.is_dir():
        fail(f"cannot write {out}: folder {out.parent} does not exist")
    store = Store(db)
    with store.session() as s:
        rows = [r for r in traj_repo.recent(s, limit=10**9) if r.verified or not verified_only]
        lines = [traj_repo.to_chat_jsonl(r) for r in reversed(rows)]
    text = "".join(line + "\n" for line in lines)
    if out is None:
        sys.stdout.write(text)
    else:
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(out)
        console.print(f"wrote {len(lines)} trajectories to {out}")
