"""`agent eval`: adherence, token F1 and BERTScore per subtask, with no skill, in context, or as a LoRA."""

from __future__ import annotations

from pathlib import Path
from typing import List

import typer

from agent.commands import DbOption, JsonOption, ModelOption
from agent.models import DEFAULT_MODEL
from agent.output import console, emit_json, err_console, fail, table


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
    out: Path = typer.Option(Path("bench/results"), help="Folder for eval_<split>.json and .png."),
    forgetting: bool = typer.Option(False, "--forgetting", help="Instead: add the store's skill adapters one by "
                                    "one through the EMA (several β) and report how much of each earlier skill "
                                    "stays in the persistent adapter (adapter-space proxy)."),
    db: DbOption = None,
    json: JsonOption = False,
) -> None:
    """Evaluate skill following on the seed library's tasks; results go to the store and to --out."""
    from agent.evaluate import MODES, EvalReport, aggregate, evaluate, new_run_id, record, write_results
    from agent.hypernets import load as load_hypernet
    from agent.models import load_model
    from agent.synth import make_eval_items
    from memory.db import Store

    if forgetting:
        return forgetting_report(db, out, json)
    modes = list(mode) if mode else list(MODES)
    for m in modes:
        if m not in MODES:
            fail(f"unknown mode {m!r} (one of {', '.join(MODES)})")
    if split not in ("heldout", "train"):
        fail(f"unknown split {split!r} (heldout or train)")
    if not out.parent.is_dir():
        fail(f"cannot write results to {out}: folder {out.parent} does not exist")
    items = make_eval_items(split=split, subtask=subtask, n=n, seed=seed)
    if max_skills:
        kept, per = [], {}
        for it in items:
            names = per.setdefault(it.skill.subtask, [])
            if it.skill.name in names or len(names) < max_skills:
                if it.skill.name not in names:
                    names.append(it.skill.name)
                kept.append(it)
        items = kept
    store = Store(db)
    with err_console.status(f"loading {model} ..."):
        loaded = load_model(model)
    handle = load_hypernet(loaded, store, str(hypernet) if hypernet else None)
    if not handle.trained and any(m in ("parametric", "random") for m in modes):
        err_console.print("[yellow]hypernetwork: untrained (no checkpoint yet): parametric = base model[/]")
    from rich.progress import Progress

    with Progress(console=err_console, transient=True) as bar:
        job = bar.add_task("evaluating", total=len(items) * len(modes))
        results = evaluate(items, loaded, handle, modes, store, max_new_tokens,
                           progress=lambda text: bar.update(job, advance=1, description=text[:50]))
    report = EvalReport(new_run_id(), loaded.name, handle.source, handle.trained, split, len(items),
                        aggregate(results), results)
    record(store, report, handle.checkpoint_id)
    json_path, png_path = write_results(report, out)
    if json:
        emit_json(report.to_dict())
        return
    rows = []
    for m, per_subtask in report.table.items():
        for st, metrics in per_subtask.items():
            rows.append({"mode": m, "subtask": st, **metrics})
    table(rows, ["mode", "subtask", "n", "adherence", "check_score", "token_f1", "bertscore"],
          title=f"eval {report.run_id}: {len(items)} tasks, {split} skills")
    console.print(f"wrote {json_path} and {png_path}")


def forgetting_report(db: str | None, out: Path, as_json: bool) -> None:
    """`agent eval --forgetting`: the continual-learning curve on the adapters in the store."""
    import json as jsonlib

    from agent.forgetting import balance, default_strategies, from_store, measure, report
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
