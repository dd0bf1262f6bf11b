"""`agent hypernet`: train the hypernetwork in stages, list its checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from agent.commands import DbOption, JsonOption, ModelOption
from agent.commands.output import console, emit_json, err_console, fail, table
from agent.runtime.base_model import DEFAULT_MODEL
from memory.db import Store

app = typer.Typer(help="Train the skill→LoRA hypernetwork and list its checkpoints.", no_args_is_help=True)

STAGES = {"1": (1,), "2": (2,), "3": (3,), "all": (1, 2, 3)}


# options the training and baseline commands share
MaxTokensOption = typer.Option(512, "--max-tokens", min=8, help="Truncate samples to this many tokens.")
SeedOption = typer.Option(0, "--seed")
ThreadsOption = typer.Option(None, "--threads", min=1, help="CPU threads for torch (default: all).")
ProgressOption = typer.Option(True, "--progress/--no-progress", help="Show a progress bar on stderr.")


@app.command("train")
def train_command(
    stage: str = typer.Option("all", "--stage", help="1 (self-supervised), 2 (single-turn), 3 (multi-turn) or all."),
    data: Path = typer.Option(..., "--data", help="Folder of train-stage{N}.jsonl (+ manifest.json) from synth."),
    val_data: Optional[Path] = typer.Option(None, "--val-data", help="Folder of heldout-stage{N}.jsonl."),
    library: Optional[List[Path]] = typer.Option(None, "--library", help="Skill folder(s) (default: the seed library)."),
    replay_ratio: float = typer.Option(0.0, "--replay-ratio", min=0.0,
                                       help="Stages after the first: mix in R of the previous stage's samples "
                                            "per sample (rehearsal; 0: off)."),
    replay_data: Optional[Path] = typer.Option(None, "--replay-data",
                                               help="Folder of the previous stage's train file (default: --data)."),
    resume: bool = typer.Option(False, "--resume", help="Continue each stage exactly from its saved state."),
    steps: Optional[int] = typer.Option(None, "--steps", min=1, help="Optimizer steps per stage (default: --epochs)."),
    epochs: float = typer.Option(1.0, "--epochs", min=0.01, help="Passes over the data when --steps is not given."),
    out: Optional[Path] = typer.Option(None, "--out", help="Final checkpoint (stages write <stem>.stageN beside it)."),
    init: Optional[str] = typer.Option(None, "--init", help="Start from a checkpoint path, store id, or 'scratch'."),
    batch_size: int = typer.Option(4, "--batch-size", min=1, help="Samples per micro-batch (per device)."),
    grad_accum: int = typer.Option(1, "--grad-accum", min=1, help="Micro-batches per optimizer step."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Peak learning rate (cosine schedule with warm-up)."),
    kd_weight: Optional[float] = typer.Option(None, "--kd-weight", help="Context-distillation weight (stage 1: 0.5)."),
    max_tokens: int = MaxTokensOption,
    eval_every: int = typer.Option(100, "--eval-every", min=0, help="Validate every N steps (0: at the end only)."),
    save_every: int = typer.Option(50, "--save-every", min=0, help="Save the resumable state every N steps."),
    seed: int = SeedOption,
    rank: Optional[int] = typer.Option(None, "--rank", min=1, help="LoRA rank (new hypernetworks only)."),
    targets: Optional[str] = typer.Option(None, "--targets", help="Comma-separated modules, e.g. q_proj,v_proj."),
    save_dtype: str = typer.Option("float16", "--save-dtype", help="float16 | bfloat16 | float32 checkpoint."),
    mixed_precision: str = typer.Option("auto", "--mixed-precision", help="auto | no | bf16 | fp16."),
    threads: Optional[int] = ThreadsOption,
    progress: bool = ProgressOption,
    model: ModelOption = DEFAULT_MODEL,
    db: DbOption = None,
    json: JsonOption = False,
) -> None:
    """Train the hypernetwork: each stage starts from the previous one's checkpoint and is stored."""
    import torch
    from accelerate import PartialState

    from agent.learn.hypernet_runs import Replay, TrainOptions, run_training
    from agent.runtime.base_model import load_model
    from agent.synth.common import DEFAULT_LIBRARY
    from hypernet.config import HypernetConfig

    if stage not in STAGES:
        fail(f"--stage must be 1, 2, 3 or all, not {stage!r}")
    if threads:
        torch.set_num_threads(threads)
    hn_cfg = {}
    if rank is not None:
        hn_cfg.update(rank=rank, alpha=2.0 * rank)
    if targets:
        hn_cfg["target_modules"] = tuple(t.strip() for t in targets.split(",") if t.strip())
    # one process, or one per device (CPU processes without a GPU) under `accelerate launch` / `torchrun`
    procs = PartialState(cpu=not torch.cuda.is_available())
    with procs.main_process_first():  # the main process creates or upgrades the schema alone
        store = Store(db)
    with err_console.status(f"loading {model} ..."):
        loaded = load_model(model, device=str(procs.device))
    opts = TrainOptions(
        stages=STAGES[stage], data=data, val_data=val_data,
        libraries=tuple(library) if library else (DEFAULT_LIBRARY,), out=out, init=init, resume=resume,
        steps=steps, epochs=epochs, max_tokens=max_tokens, save_dtype=save_dtype,
        hypernet=HypernetConfig(**hn_cfg),
        train={"batch_size": batch_size, "grad_accum": grad_accum, "lr": lr, "kd_weight": kd_weight,
               "eval_every": eval_every, "save_every": save_every, "seed": seed, "mixed_precision": mixed_precision},
        progress=progress, replay=Replay(replay_ratio, replay_data, seed) if replay_ratio > 0 else None)
    outcomes = run_training(store, loaded, opts)
    if not procs.is_main_process:
        return
    rows = [{"stage": o.stage, "checkpoint_id": o.checkpoint_id, "parent_id": o.parent_id, "path": o.path,
             "sha256": o.sha256, "skipped": o.skipped, "metrics": o.metrics, "data": o.data} for o in outcomes]
    if json:
        emit_json({"out": str(opts.out) if opts.out else None, "stages": rows})
        return
    for r in rows:
        if r["skipped"]:
            console.print(f"stage {r['stage']}: skipped ({r['skipped']})")
            continue
        m = r["metrics"]
        val = "" if m.get("val_loss") is None else (f", val loss {m['val_loss']:.3f} (base "
                                                    f"{m.get('val_loss_base', float('nan')):.3f})")
        console.print(f"stage {r['stage']}: {m['steps']} steps, loss {m.get('first_loss', 0):.3f} -> "
                      f"{m.get('train_loss', 0):.3f}{val}, {m['tokens_per_s']} tokens/s -> checkpoint "
                      f"{r['checkpoint_id']} at {r['path']}")


@app.command("list")
def list_(db: DbOption = None, json: JsonOption = False) -> None:
    """Hypernetwork checkpoints in the store, newest first."""
    from agent.learn.hypernet_runs import list_checkpoints

    rows = list_checkpoints(Store(db))
    if json:
        emit_json(rows)
    elif not rows:
        console.print("no hypernetwork checkpoints yet: `agent hypernet train --data DIR`")
    else:
        for r in rows:
            for key in ("val_loss", "train_loss"):
                r[key] = None if r[key] is None else f"{r[key]:.3f}"
        table(rows, ["id", "name", "stage", "parent_id", "status", "steps", "train_loss", "val_loss", "base_model"])


baseline_app = typer.Typer(help="LoRA baselines for the hypernetwork: multi-task LoRA and per-skill oracles.",
                           no_args_is_help=True)
app.add_typer(baseline_app, name="baseline")


def _lora_options(steps: Optional[int], epochs: Optional[float], default_epochs: float, lr: float, batch_size: int,
                  max_tokens: int, seed: int, progress: bool, threads: Optional[int]):
    import torch

    from agent.learn.baselines import LoraOptions

    if steps is not None and epochs is not None:
        fail("give --steps or --epochs, not both")
    if threads:
        torch.set_num_threads(threads)
    return LoraOptions(steps=steps, epochs=default_epochs if epochs is None else epochs, lr=lr,
                       batch_size=batch_size, max_tokens=max_tokens, seed=seed, progress=progress)


def _load(model: str):
    from agent.runtime.base_model import load_model

    with err_console.status(f"loading {model} ..."):
        return load_model(model)


def _summary(r: dict) -> str:
    return (f"{r['steps']} steps, {r['tokens']} tokens in {r['seconds']:.0f} s ({r['tokens_per_s']} tokens/s), "
            f"loss {r['first_loss']:.3f} -> {r['final_loss']:.3f}")


@baseline_app.command("multitask")
def multitask_command(
    data: Path = typer.Option(..., "--data", help="Folder of train-stage2.jsonl (all training skills)."),
    out: Path = typer.Option(..., "--out", help="PEFT adapter folder to write (report.json inside)."),
    val_data: Optional[Path] = typer.Option(None, "--val-data", help="Folder of heldout-stage2.jsonl: val loss."),
    steps: Optional[int] = typer.Option(None, "--steps", min=1, help="Optimizer steps (default: --epochs)."),
    epochs: Optional[float] = typer.Option(None, "--epochs", min=0.01, help="Passes over the data (default 1)."),
    lr: float = typer.Option(5e-4, "--lr", help="Peak learning rate (cosine schedule with warm-up)."),
    batch_size: int = typer.Option(4, "--batch-size", min=1),
    max_tokens: int = MaxTokensOption,
    seed: int = SeedOption,
    threads: Optional[int] = ThreadsOption,
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out folder."),
    progress: bool = ProgressOption,
    model: ModelOption = DEFAULT_MODEL,
    json: JsonOption = False,
) -> None:
    """One LoRA trained on every training skill's samples, with no skill in context."""
    from agent.learn.baselines import run_multitask

    opts = _lora_options(steps, epochs, 1.0, lr, batch_size, max_tokens, seed, progress, threads)
    report = run_multitask(_load(model), data, out, opts, val_data=val_data, overwrite=overwrite)
    if json:
        emit_json({k: v for k, v in report.items() if k != "losses"})
        return
    val = f", held-out val loss {report['val_loss']:.3f} (base {report['val_loss_base']:.3f})" \
        if "val_loss" in report else ""
    console.print(f"multi-task LoRA: {_summary(report)}{val} -> {out}")


@baseline_app.command("oracle")
def oracle_command(
    data: Path = typer.Option(..., "--data", help="Folder of heldout-stage2.jsonl (else train-stage2.jsonl)."),
    out: Path = typer.Option(..., "--out", help="Folder for <skill>/ PEFT adapters and report.json."),
    skill: Optional[List[str]] = typer.Option(None, "--skill", help="Skill to train an oracle for (repeatable)."),
    all_: bool = typer.Option(False, "--all", help="Every skill of the data file."),
    steps: Optional[int] = typer.Option(None, "--steps", min=1, help="Optimizer steps per skill (default: --epochs)."),
    epochs: Optional[float] = typer.Option(None, "--epochs", min=0.01, help="Passes over a skill's data (default 6)."),
    lr: float = typer.Option(2e-3, "--lr", help="Peak learning rate (cosine schedule with warm-up)."),
    # 2 rows a batch: a skill's short QA rows and long task rows pair up by length instead of padding
    batch_size: int = typer.Option(2, "--batch-size", min=1),
    max_tokens: int = MaxTokensOption,
    seed: int = SeedOption,
    threads: Optional[int] = ThreadsOption,
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing <out>/<skill> folders."),
    progress: bool = ProgressOption,
    model: ModelOption = DEFAULT_MODEL,
    json: JsonOption = False,
) -> None:
    """Per-skill "oracle" LoRAs, each fine-tuned on that skill's own samples, timed."""
    from agent.learn.baselines import run_oracle

    if bool(skill) == all_:
        fail("name the skills with --skill NAME (repeatable) or pass --all, not both")
    opts = _lora_options(steps, epochs, 6.0, lr, batch_size, max_tokens, seed, progress, threads)
    summary = run_oracle(_load(model), data, None if all_ else skill, out, opts, overwrite=overwrite)
    names = list(dict.fromkeys(skill)) if skill else list(summary.get("skills", {}))
    if json:
        emit_json({**summary, "trained": names})
        return
    for name in names:
        r = summary["skills"][name]
        console.print(f"oracle {name}: {_summary(r)}, {r['seconds_to_adapter']:.1f} s to the adapter -> {out / name}")
