"""`agent eval`: adherence, token F1, BERTScore (and an optional LLM judge) per subtask, with no skill, in
context, as a generated LoRA, or under fixed PEFT baselines."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer

from agent.commands import (DbOption, EndpointKeyEnvOption, EndpointModelOption, EndpointOption, JsonOption,
                            ModelOption, renamed)
from agent.commands.output import console, emit_json, err_console, fail, table
from agent.runtime.base_model import DEFAULT_MODEL
from agent.runtime.endpoint import DEFAULT_KEY_ENV

# per request at --generate-endpoint: vLLM's CPU build prefills ~15 tokens/s under an adapter (README), and
# --batch-size requests in flight queue behind one another there; the judge's 120 s would cut them off
GENERATE_TIMEOUT = 600.0

# the names of agent.learn.evaluate.MODES and agent.synth.common.SPLITS (kept literal here: importing those
# rooms would load torch for `--help`); tests/test_cli_habits.py checks they agree
EvalMode = Enum("EvalMode", {m: m for m in ("none", "icl", "parametric", "random")}, type=str)
Split = Enum("Split", {m: m for m in ("heldout", "train")}, type=str)


def command(
    mode: List[EvalMode] = typer.Option(None, "--mode", help="Repeatable; default all four."),
    split: Split = typer.Option(Split.heldout, help="Skills to evaluate on."),
    subtask: str = typer.Option(None, help="Only this subtask."),
    n: int = typer.Option(1, min=1, help="Tasks per skill."),
    max_skills: int = typer.Option(None, min=1, help="At most this many skills per subtask (quick runs)."),
    seed: int = typer.Option(0, help="Task sampling seed."),
    model: ModelOption = DEFAULT_MODEL,
    hypernet: Path = typer.Option(None, help="Hypernetwork checkpoint (default: the shipped one, if any)."),
    max_new_tokens: int = typer.Option(200, min=8, help="Answer length limit."),
    # agent.learn.generation.BATCH_SIZE, as a literal: importing it would load transformers for every command
    batch_size: int = typer.Option(32, min=1, help="Answers decoded at once (a finished row takes the next "
                                   "at once; 32 rows ran 1.4x faster than 8 on 2 CPU cores, in 3.4 GB of memory "
                                   "instead of 1.9); with --generate-endpoint, requests in flight."),
    baseline: List[str] = typer.Option(None, "--baseline", help="LABEL=PATH (repeatable): an extra mode LABEL "
                                       "with a PEFT LoRA folder applied to every item, or a folder of PEFT "
                                       "folders named after skills (items of other skills are skipped)."),
    endpoint: EndpointOption = None,
    endpoint_model: EndpointModelOption = None,
    endpoint_key_env: EndpointKeyEnvOption = DEFAULT_KEY_ENV,
    generate_endpoint: Optional[str] = typer.Option(
        None, "--generate-endpoint", metavar="URL", help="Generate the answers on this OpenAI-compatible server "
        "instead of here (vLLM started with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True --enable-lora for the modes "
        "with an adapter: each is made here, loaded there once for its answers, then unloaded)."),
    generate_model: Optional[str] = typer.Option(None, "--generate-model", metavar="NAME",
                                                 help="Model name at --generate-endpoint: the same base as --model."),
    generate_key_env: str = typer.Option(DEFAULT_KEY_ENV, "--generate-key-env", metavar="VAR",
                                         help="Environment variable holding --generate-endpoint's key."),
    generate_adapter_dir: Path = typer.Option(None, "--generate-adapter-dir", metavar="DIR",
                                              help="Where adapters are written for --generate-endpoint to read by "
                                                   "path (it must see the same path; default "
                                                   "$AGENT_HOME/served-adapters)."),
    judge_old: Optional[str] = typer.Option(None, "--judge", hidden=True, help="Old name of --endpoint."),
    judge_model_old: Optional[str] = typer.Option(None, "--judge-model", hidden=True,
                                                  help="Old name of --endpoint-model."),
    out: Path = typer.Option(None, help="Folder for eval_<split>.json (and .png with matplotlib); default: a new "
                             "folder per run, $AGENT_HOME/eval/RUN_ID."),
    forgetting: bool = typer.Option(False, "--forgetting", help="Instead: add the store's skill adapters one by "
                                    "one through the EMA (several β) and report how much of each earlier skill "
                                    "stays in the persistent adapter (adapter-space proxy)."),
    db: DbOption = None,
    json: JsonOption = False,
) -> None:
    """Evaluate skill following on the seed library's tasks; results go to the store and to --out.

    --endpoint names an LLM judge (an OpenAI-compatible server) that also scores each answer 1-10;
    --generate-endpoint a server (vLLM) that generates the answers, under the adapters made here."""
    from agent.learn.evaluate import (
        MODES,
        EvalReport,
        aggregate,
        differences,
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

    from agent.runtime.base_model import resolve

    run_id = new_run_id()
    if out is not None and not out.parent.is_dir():
        fail(f"cannot write results to {out}: folder {out.parent} does not exist")
    if forgetting:
        return forgetting_report(db, out, json, run_id)
    modes = [m.value for m in mode] if mode else list(MODES)
    baseline_paths = parse_baselines(baseline or [])
    endpoint = renamed(endpoint, judge_old, "--endpoint", "--judge")
    endpoint_model = renamed(endpoint_model, judge_model_old, "--endpoint-model", "--judge-model")
    if bool(endpoint) != bool(endpoint_model):
        fail("--endpoint and --endpoint-model go together (the judge's URL and model name)")
    if bool(generate_endpoint) != bool(generate_model):
        fail("--generate-endpoint and --generate-model go together (the server's URL and its name for --model)")
    if generate_adapter_dir is not None and not generate_endpoint:
        fail("--generate-adapter-dir is for --generate-endpoint")
    items = make_eval_items(split=split.value, subtask=subtask, n=n, seed=seed)
    if max_skills:
        items = first_skills(items, max_skills)
    resolve(model)  # an unknown model: one line, before anything is written
    judge_client = None
    if endpoint:
        from agent.learn.judge import Judge

        judge_client = Judge(endpoint, endpoint_model, key_env=endpoint_key_env)
        judge_client.check()  # unreachable: one-line error now, before an hour of generation
    served = None
    if generate_endpoint:  # probed before the store, the model and the output folder, as the judge
        served = served_generation(generate_endpoint, generate_model, generate_key_env, generate_adapter_dir,
                                   adapters=bool(baseline_paths) or any(m in ("parametric", "random") for m in modes))
    store = Store(db)
    with err_console.status(f"loading {model} ..."):
        loaded = load_model(model)
    baselines = {label: load_baseline(label, path, loaded) for label, path in baseline_paths.items()}
    with err_console.status("loading the hypernetwork ..."):
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

    if not err_console.is_terminal:
        where = f" on {served.chat.url}" if served else ""
        err_console.print(f"evaluating {total} answers ({len(items)} tasks x {len(modes)} modes){where} ...")
    with Progress(console=err_console, transient=True, disable=not err_console.is_terminal) as bar:
        job = bar.add_task("evaluating", total=total)
        results = evaluate(items, loaded, handle, modes, store, max_new_tokens, batch_size=batch_size,
                           baselines=baselines, judge=judge_client, served=served,
                           progress=lambda text: bar.update(job, advance=1, description=text[:50]))
    report = EvalReport(run_id, loaded.name, handle.source, handle.trained, split.value, len(items),
                        aggregate(results), results, skipped,
                        {label: str(b.path) for label, b in baselines.items()}, endpoint_model,
                        served.record() if served else None, differences(results))
    record(store, report, handle.checkpoint_id)
    json_path, png_path = write_results(report, out or run_folder(run_id))
    if json:
        emit_json(report.to_dict() | {"results": str(json_path)})
        return
    rows = []
    for m in mode_order(report.table):
        for st, metrics in report.table[m].items():
            lo, hi = metrics["check_score_ci95"]
            rows.append({"mode": m, "subtask": st, **metrics, "check 95% CI": f"{lo:.1f}-{hi:.1f}"})
    columns = ["mode", "subtask", "n", "adherence", "check_score", "check 95% CI", "token_f1", "bertscore"]
    table(rows, columns + (["judge", "judge_missing"] if judge_client else []),
          title=f"eval {report.run_id}: {len(items)} tasks, {split.value} skills")
    for pair, d in report.differences.items():
        lo, hi = d["ci95"]
        console.print(f"{pair}: {d['check_score']:+.1f} check points (95% CI {lo:+.1f} to {hi:+.1f}, "
                      f"{d['n']} items, bootstrap over skills)", markup=False, highlight=False)
    if served:
        console.print(f"answers from {served.chat.url} ({served.chat.model}); {len(served.adapters)} adapters "
                      "loaded there one at a time and unloaded", markup=False, highlight=False)
    console.print(f"wrote {json_path}" + (f" and {png_path}" if png_path else
                                          " (no chart: pip install matplotlib for eval_<split>.png)"))


def served_generation(url: str, model: str, key_env: str, folder: Path | None, adapters: bool):
    """The server that generates the answers (agent.learn.evaluate.ServedGeneration), probed: reachable,
    serving `model`, and, when a mode needs an adapter, able to load adapters at run time."""
    import os

    from rich.markup import escape

    from agent.learn.evaluate import ServedGeneration
    from agent.runtime import served_adapter
    from agent.runtime.endpoint import EndpointChat

    if key_env != DEFAULT_KEY_ENV and not os.environ.get(key_env):  # EndpointChat would name --endpoint-key-env
        fail(f"--generate-key-env {key_env}: that environment variable is not set")
    chat = EndpointChat(url, model, key_env=key_env, timeout=GENERATE_TIMEOUT)
    chat.probe()
    if adapters:
        served_adapter.probe(chat)
    return ServedGeneration(chat, folder, warn=lambda line: err_console.print(f"[yellow]{escape(line)}[/]"))


def run_folder(run_id: str) -> Path:
    """A new folder per run under $AGENT_HOME/eval: an earlier run's results are never overwritten, and it
    works from any directory."""
    from agent.runtime.base_model import agent_home

    folder = agent_home() / "eval" / run_id
    folder.mkdir(parents=True, exist_ok=False)  # the run id is time + random: a clash is a bug, not a retry
    return folder


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


def forgetting_report(db: str | None, out: Path | None, as_json: bool, run_id: str) -> None:
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
    if out is None:
        out = run_folder(run_id)
    elif not out.is_dir():
        fail(f"cannot write results to {out}: not a folder")
    (out / "forgetting_store.json").write_text(jsonlib.dumps(data, indent=2))
    if as_json:
        emit_json(data)
        return
    table([{"strategy": k, "balance": v, "final mean cosine":
            round(sum(data["curves"][k]["final"]["cosine"]) / len(skills), 4)} for k, v in data["balance"].items()],
          ["strategy", "balance", "final mean cosine"], title=f"forgetting over {len(skills)} skills")
