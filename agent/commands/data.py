"""`agent data`: skill-exploitation training data from the seed library."""

from __future__ import annotations

from pathlib import Path
from typing import List

import typer

from agent.commands import JsonOption
from agent.output import console, emit_json, fail, table

app = typer.Typer(help="Synthesize skill-exploitation training data.", no_args_is_help=True)


@app.command()
def synth(
    out: Path = typer.Option(..., "--out", help="Folder to write (created; refused if it exists unless --overwrite)."),
    stage: List[int] = typer.Option([1, 2], "--stage", help="1 (self-supervised) and/or 2 (single-turn); repeatable."),
    n: int = typer.Option(4, "--n", min=1, help="Samples of each type per skill."),
    split: str = typer.Option("train", help="train (for training) or heldout (validation material)."),
    seed: int = typer.Option(0, help="Seed: the same seed writes byte-identical files."),
    library: Path = typer.Option(None, help="Skill library folder (default: the shipped seed library)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out folder."),
    json: JsonOption = False,
) -> None:
    """Write {split}-stage{N}.jsonl files and manifest.json (counts, discards, seed) to --out."""
    from agent.synth import synth as run_synth

    if not out.parent.is_dir():
        fail(f"cannot write to {out}: folder {out.parent} does not exist")
    with console.status("synthesizing ..."):
        result = run_synth(library, stages=stage, n_per_skill=n, seed=seed, out_dir=out, split=split,
                           overwrite=overwrite)
    if json:
        emit_json({"out_dir": str(result.out_dir), "files": result.files, "manifest": result.manifest})
        return
    table([{"file": f, "samples": c} for f, c in result.files.items()], ["file", "samples"], title=str(out))
