"""`agent eval`: adherence, token F1, BERTScore (and an optional LLM judge) per subtask, with no skill, in
context, as a generated LoRA, or under fixed PEFT baselines."""

from __future__ import annotations

from pathlib import Path
from typing import List

import typer

from agent.commands import DbOption, JsonOption, ModelOption
from agent.commands.output import console, emit_json, err_console, fail, table
from agent.runtime.base_model import DEFAULT_MODEL


def command(
    mode: List[str] = typer.Option(None, "--mode", help="none | icl | parametric | random (repeatable; default all)."),
    split: str = typer.Option("heldout", help="heldout | train skills."),
    subtask: str = typer.Option(None, help="Only this subtask."),
    n: int = typer.Option(1, min=1, help="Tasks per skill."),
    max_skills: int = typer.Option(None, min=1, help="At most this many skills per subtask (quick runs)."),
    seed: int = typer.Option(0, help="Task sampling seed."),
    model: ModelOption = DEFAULT_MODEL,
    hypernet: Path = typer.Option(None, help="Hypernetwork checkpoint (default: the shipped one, if any)."),
    max_new_tokens: int = typer.Option(200, min=8, help="Answer length limit."),
    batch_size: int = typer.Option(8, min=1, help="Answers decoded at once (a finished row takes the next at once)."),
    baseline: List[str] = typer.Option(None, "--baseline", help="LABEL=PATH (repeatable): an extra mode LABEL "
                                       "with a PEFT LoRA folder applied to every item, or a folder of PEFT "
                                       "folders named after skills (items of other skills are skipped)."),
    judge: str = typer.Option(None, "--judge", help="OpenAI-compatible endpoint URL for an LLM judge (1-10)."),
    judge_model: str = typer.Option(None, "--judge-model", help="Model name for --judge."),
    out: Path = typer.Option(Path("bench/results"), help="Folder for eval_<split>.json and .png."),
    forgetting: bool = typer.Option(False, "--forgetting", help="Instead: add the store's skill adapters one by "
                                    "one through the EMA (several β) and report how much of each earlier skill "
                                    "stays in the persistent adapter (adapter-space proxy)."),
    db: DbOption = None,
    json: JsonOption = False,
) -> None:
    """Evaluate skill following on the seed library's tasks; results go to the store and to --out."""
    from agent.learn.evaluate import (
        MODES,
        EvalReport,
        aggregate,
        evaluate,
        load_baseline,
        mode_order,
        new_run_id,
        record,
        skipped_counts,
        write_results,
    )
    from agent.runtime.base_model import load_model
    from agent.runtime.hypernet_loader import load as load_hypernet
    from agent.synth.eval_items import make_eval_items
    from memory.db import Store

    if forgetting:
        return forgetting_report(db, out, json)
    modes = list(mode) if mode else list(MODES)
    for m in modes:
        if m not in MODES:
            fail(f"unknown mode {m!r} (one of {', '.join(MODES)})")
    baseline_paths = parse_baselines(baseline or [])
    if split not in ("heldout", "train"):
        fail(f"unknown split {split!r} (heldout or train)")
    if not out.parent.is_dir():
        fail(f"cannot write results to {out}: folder {out.parent} does not exist")
    if bool(judge) != bool(judge_model):
        fail("--judge and --judge-model go together")
    items = make_eval_items(split=split, subtask=subtask, n=n, seed=seed)
    if max_skills:
        items = first_skills(items, max_skills)
    judge_client = None
    if judge:
        from agent.learn.judge import Judge

        judge_client = Judge(judge, judge_model)
        judge_client.check()  # unreachable: one-line error now, before an hour of generation
    store = Store(db)
    with err_console.status(f"loading {model} ..."):
        loaded = load_model(model)
    baselines = {label: load_baseline(label, path, loaded) for label, path in baseline_paths.items()}
    handle = load_hypernet(loaded, store, str(hypernet) if hypernet else None)
    if not handle.trained and any(m in ("parametric", "random") for m in modes):
        err_console.print("[yellow]hypernetwork: untrained (no checkpoint yet): parametric = base model[/]")
    skipped = skipped_counts(items, baselines)
    for label, count in skipped.items():
        if count:
            err_console.print(f"[yellow]baseline {label}: {count} of {len(items)} items skipped "
                              f"(no adapter for their skill)[/]")
    modes += list(baselines)
    total = len(items) * len(modes) - sum(skipped.values())
    from rich.progress import Progress

    with Progress(console=err_console, transient=True) as bar:
        job = bar.add_task("evaluating", total=total)
        results = evaluate(items, loaded, handle, modes, store, max_new_tokens, batch_size=batch_size,
                           baselines=baselines, judge=judge_client,
                           progress=lambda text: bar.update(job, advance=1, description=text[:50]))
    report = EvalReport(new_run_id(), loaded.name, handle.source, handle.trained, split, len(items),
                        aggregate(results), results, skipped,
                        {label: str(b.path) for label, b in baselines.items()}, judge_model)
    record(store, report, handle.checkpoint_id)
    json_path, png_path = write_results(report, out)
    if json:
        emit_json(report.to_dict())
        return
    rows = []
    for m in mode_order(report.table):
        for st, metrics in report.table[m].items():
            rows.append({"mode": m, "subtask": st, **metrics})
    columns = ["mode", "subtask", "n", "adherence", "check_score", "token_f1", "bertscore"]
    table(rows, columns + (["judge", "judge_missing"] if judge_client else []),
          title=f"eval {report.run_id}: {len(items)} tasks, {split} skills")
    console.print(f"wrote {json_path} and {png_path}")


def parse_baselines(specs: list[str]) -> dict[str, Path]:
    """LABEL=PATH options; labels become mode names, so they must be new, distinct and plain."""
    import re

    from agent.learn.evaluate import MODES

    found: dict[str, Path] = {}
    for spec in specs:
        label, sep, path = spec.partition("=")
        if not sep or not path:
            fail(f"--baseline {spec!r}: expected LABEL=PATH")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,15}", label):  # the store's mode column is 16 wide
            fail(f"--baseline label {label!r}: use up to 16 letters, digits, '_', '.', '-'")
        if label in MODES or label in found:
            fail(f"--baseline label {label!r} is already a mode")
        if not Path(path).exists():
            fail(f"--baseline {label}: {path} does not exist")
        found[label] = Path(path)
    return found


def first_skills(items: list, max_skills: int) -> list:
    """Items of at most `max_skills` skills per subtask (quick runs)."""
    kept, per = [], {}
    for it in items:
        names = per.setdefault(it.skill.subtask, [])
        if it.skill.name in names or len(names) < max_skills:
            if it.skill.name not in names:
                names.append(it.skill.name)
            kept.append(it)
    return kept


def forgetting_report(db: str | None, out: Path, as_json: bool) -> None:
    """`agent eval --forgetting`: the continual-learning curve on the adapters in the store."""
    import json as jsonlib

    from agent.learn.forgetting import balance, default_strategies, from_store, measure, report
    from memory.db import Store

    skills = from_store(Store(db))
    if len(skills) < 2:
        fail("--forgetting needs at least 2 converted skills in the store (`agent convert NAME`); "
             "bench/bench_forgetting.py measures on synthetic adapters")
    curves = measure(skills, default_strategies())
    data = {"skills": len(skills), "curves": report(curves),
            "balance": {c.strategy.name: round(balance(c), 4) for c in curves}}
    if not out.is_dir():
        fail(f"cannot write results to {out}: not a folder")
    (out / "forgetting_store.json").write_text(jsonlib.dumps(data, indent=2))
    if as_json:
        emit_json(data)
        return
    table([{"strategy": k, "balance": v, "final mean cosine":
            round(sum(data["curves"][k]["final"]["cosine"]) / len(skills), 4)} for k, v in data["balance"].items()],
          ["strategy", "balance", "final mean cosine"], title=f"forgetting over {len(skills)} skills")
