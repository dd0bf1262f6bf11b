"""`agent policy`: the policy adapter that makes the embedded model act through the agent's interface."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from agent.commands import JsonOption, ModelOption
from agent.commands.output import console, emit_json, fail

app = typer.Typer(help="Train the policy adapter on verified trajectories (`agent data policy`).",
                  no_args_is_help=True)


@app.command("train")
def train_command(
    data: Path = typer.Option(..., "--data", help="A *-policy.jsonl file from `agent data policy`."),
    out: Path = typer.Option(..., "--out", help="PEFT adapter folder to write (report.json inside)."),
    epochs: float = typer.Option(2.0, "--epochs", min=0.01, help="Passes over the trajectories."),
    steps: Optional[int] = typer.Option(None, "--steps", min=1, help="Optimizer steps (default: from --epochs)."),
    lr: float = typer.Option(1e-3, "--lr", help="Peak learning rate (cosine schedule with warm-up)."),
    batch_size: int = typer.Option(8, "--batch-size", min=1),
    max_tokens: int = typer.Option(2048, "--max-tokens", min=64, help="Truncate trajectories to this many tokens."),
    rank: int = typer.Option(16, "--rank", min=1),
    seed: int = typer.Option(0, "--seed"),
    init: Optional[Path] = typer.Option(None, "--init", help="Continue from this policy adapter (PEFT folder, "
                                        "e.g. agent/data/policy-smollm2-135m) instead of from zero."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out folder."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar on stderr."),
    model: ModelOption = "smollm2-135m-instruct",
    json: JsonOption = False,
) -> None:
    """One LoRA over every linear layer, on assistant tokens of verified trajectories (GPU when present)."""
    from agent.learn.baselines import LoraOptions
    from agent.learn.policy import train_policy
    from agent.runtime.base_model import load_model
    from hypernet.trainstate import TrainingError

    opts = LoraOptions(steps=steps, epochs=epochs, lr=lr, batch_size=batch_size, max_tokens=max_tokens, seed=seed,
                       progress=progress)
    try:
        report = train_policy(load_model(model), data, out, opts, rank=rank, overwrite=overwrite, init=init)
    except TrainingError as exc:
        fail(str(exc))
    if json:
        emit_json({k: v for k, v in report.items() if k != "losses"})
        return
    val = f", held-out CE {report['val_loss']:.3f} (base {report['val_loss_base']:.3f})" if "val_loss" in report else ""
    console.print(f"policy LoRA: {report['steps']} steps, {report['tokens']} tokens in {report['seconds']:.0f} s "
                  f"on {report['device']}, loss {report['first_loss']:.3f} -> {report['final_loss']:.3f}{val} -> {out}")
