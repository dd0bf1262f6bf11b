"""`agent data`: skill-exploitation training data from the seed library."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer

from agent.commands import EndpointKeyEnvOption, EndpointModelOption, EndpointOption, JsonOption, renamed
from agent.commands.output import console, emit_json, err_console, fail, table
from agent.runtime.endpoint import DEFAULT_KEY_ENV

app = typer.Typer(help="Synthesize skill-exploitation training data.", no_args_is_help=True)


def parse_stages(values: list[str]) -> tuple[int, ...]:
    """`--stage 1 --stage 3`, `--stage 2,3` or `--stage all` -> (1, 3), (2, 3), (1, 2, 3)."""
    stages: set[int] = set()
    for value in values:
        for part in value.split(","):
            part = part.strip().lower()
            if part == "all":
                stages |= {1, 2, 3}
            elif part in ("1", "2", "3"):
                stages.add(int(part))
            else:
                fail(f"unknown stage {part!r}: use 1, 2, 3 or all")
    return tuple(sorted(stages))


class Split(str, Enum):  # agent.synth.common.SPLITS (literal here: --help stays fast)
    train = "train"
    heldout = "heldout"


@app.command()
def synth(
    out: Path = typer.Option(..., "--out", help="Folder to write (created; refused if it exists unless --overwrite)."),
    stage: List[str] = typer.Option(["all"], "--stage",
                                    help="1 (self-supervised), 2 (single-turn), 3 (multi-turn, sandbox-verified) "
                                         "or all; repeatable."),
    n: int = typer.Option(4, "--n", min=1, help="Samples of each type per skill (stage 3: trajectories per bug skill)."),
    split: Split = typer.Option(Split.train, help="train (for training) or heldout (validation material)."),
    seed: int = typer.Option(0, help="Seed: the same seed writes byte-identical files."),
    library: Path = typer.Option(None, help="Skill library folder (default: the shipped seed library)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out folder."),
    endpoint: EndpointOption = None,
    endpoint_model: EndpointModelOption = None,
    endpoint_key_env: EndpointKeyEnvOption = DEFAULT_KEY_ENV,
    teacher_old: Optional[str] = typer.Option(None, "--teacher", hidden=True, help="Old name of --endpoint."),
    teacher_model_old: Optional[str] = typer.Option(None, "--teacher-model", hidden=True,
                                                    help="Old name of --endpoint-model."),
    json: JsonOption = False,
) -> None:
    """Write {split}-stage{N}.jsonl files and manifest.json (counts, discards, seed) to --out.

    --endpoint names a teacher (an OpenAI-compatible server) that rewrites task references; a rewrite is
    kept only where the skill's checker accepts it."""
    from agent.synth.build import synth as run_synth
    from agent.synth.teacher import Teacher

    stages = parse_stages(stage)
    teacher = renamed(endpoint, teacher_old, "--endpoint", "--teacher")
    teacher_model = renamed(endpoint_model, teacher_model_old, "--endpoint-model", "--teacher-model")
    if (teacher is None) != (teacher_model is None):
        fail("--endpoint and --endpoint-model go together (the teacher's URL and model name): give both or neither")
    if not out.parent.is_dir():
        fail(f"cannot write to {out}: folder {out.parent} does not exist")
    chosen = Teacher(teacher, teacher_model, key_env=endpoint_key_env) if teacher else None
    if chosen is not None:
        chosen.probe()  # before the first progress line: a refusal is the only line
    with console.status("synthesizing ..."):
        result = run_synth(library, stages=stages, n_per_skill=n, seed=seed, out_dir=out, split=split.value,
                           overwrite=overwrite, teacher=chosen)
    if json:
        emit_json({"out_dir": str(result.out_dir), "files": result.files, "manifest": result.manifest})
        return
    table([{"file": f, "samples": c} for f, c in result.files.items()], ["file", "samples"], title=str(out))
    if "stage3" in result.manifest:
        s3 = result.manifest["stage3"]
        console.print(f"stage 3: {s3['kept']} verified of {s3['trajectories_run']} trajectories run; "
                      f"discarded: {s3['unverified'] or 'none'}")
    if "teacher" in result.manifest:
        t = result.manifest["teacher"]
        console.print(f"teacher {t['model']}: {t['kept']} rewrites kept, {t['rejected']} rejected")


class Pool(str, Enum):
    train = "train"
    eval = "eval"


class Source(str, Enum):  # agent.tasks.make.SOURCES (literal here: --help stays fast)
    corpus = "corpus"
    packages = "packages"
    all = "all"


@app.command()
def policy(
    out: Path = typer.Option(..., "--out", help="Folder to write {pool}-policy.jsonl and policy-manifest.json to."),
    n: int = typer.Option(611, "--n", min=1, help="Bug tasks to draw (each gives up to one trajectory per route)."),
    pool: Pool = typer.Option(Pool.train, "--pool", help="train (training corpus modules) or eval (held out)."),
    source: Source = typer.Option(Source.corpus, "--source",
                                  help="Bug tasks from the bundled corpus, the pool's registry packages (fetched "
                                       "and validated on first use, see `agent data packages`) or all."),
    seed: int = typer.Option(0, help="Seed of the task draw and the routes."),
    workers: int = typer.Option(2, min=1, help="Sandboxes run at once."),
    focus_returned: Optional[int] = typer.Option(
        None, "--focus-returned", min=1, metavar="N",
        help="Also write {pool}-policy-focus.jsonl: N trajectories weighted to those whose fix is the line the "
             "report says the failing function returned from (a CPU fine-tune's data, see README)."),
    json: JsonOption = False,
) -> None:
    """Verified multi-turn bug-fixing trajectories through the agent's own interface (the policy's data)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from agent.synth.common import require_sandbox
    from agent.synth.policy import synth_policy

    if not out.parent.is_dir():
        fail(f"cannot write to {out}: folder {out.parent} does not exist")
    require_sandbox()
    with Progress(TextColumn("trajectories"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=err_console, transient=True) as bar:
        task = bar.add_task("run", total=None)
        manifest = synth_policy(out, n, seed, pool.value, workers=workers,
                                progress=lambda done, total: bar.update(task, completed=done, total=total),
                                source=source.value)
    if focus_returned:
        from agent.synth.policy import focus_returned as focus

        manifest["focus"] = focus(out / f"{pool.value}-policy.jsonl", out / f"{pool.value}-policy-focus.jsonl",
                                  focus_returned, seed)
    if json:
        emit_json(manifest)
        return
    console.print(f"{manifest['kept']} verified of {manifest['planned']} planned trajectories from "
                  f"{manifest['tasks']} tasks ({', '.join(manifest['modules'])}); discarded: "
                  f"{manifest['discarded'] or 'none'} -> {out}")


class PackagePool(str, Enum):  # agent.tasks.packages.POOLS
    train = "train"
    eval = "eval"
    all = "all"


@app.command()
def packages(
    pool: PackagePool = typer.Option(PackagePool.all, "--pool", help="train, eval (held out: benchmark only) or all."),
    cache: Optional[Path] = typer.Option(None, "--cache", help="Folder for sdists and package repos "
                                                               "(default: $AGENT_HOME/packages)."),
    max_mutants: int = typer.Option(30, "--max-mutants", min=1, help="Mutants kept per package."),
    max_tried: int = typer.Option(60, "--max-tried", min=1, help="Mutants run against the suite per package."),
    seed: int = typer.Option(0, help="Seed of the order mutants are tried in (make_tasks draws from seed 0)."),
    workers: int = typer.Option(1, min=1, help="Sandboxed suite runs at once."),
    json: JsonOption = False,
) -> None:
    """Build (or read from the cache) and list the bug tasks injected into pinned registry packages.

    Each package's sdist is fetched with pip, its suite run in the sandbox (a package whose tests fail or
    hang before any mutation is discarded with its reason), then mutants are kept where a test fails."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from agent.synth.common import require_sandbox
    from agent.tasks import packages as pk

    require_sandbox()
    chosen = pk.specs(pool.value)
    results = []
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err_console, transient=True) as bar:
        task = bar.add_task("packages", total=len(chosen))
        for spec in chosen:
            bar.update(task, description=f"{spec.name} {spec.version}")

            def tried(done: int, total: int, name: str = spec.name) -> None:
                bar.update(task, description=f"{name}: mutant {done}/{total}")

            results.append(pk.build(spec, cache=cache, seed=seed, max_mutants=max_mutants, max_tried=max_tried,
                                    workers=workers, progress=tried))
            bar.advance(task)
    rows = [r.summary() for r in results]
    if json:
        emit_json(rows)
        return
    table([{"package": r["package"], "version": r["version"], "pool": r["pool"],
            "tests": r["tests"] if r["status"] == "ok" else r["tests"] or "",
            "runtime": f"{r['seconds']:.1f} s" if r["seconds"] else "",
            "kept": r["kept"] if r["status"] == "ok" else "",
            "tried": r["tried"] if r["status"] == "ok" else "",
            "discarded": (", ".join(f"{k} {v}" for k, v in r["discarded"].items()) or "none")
            if r["status"] == "ok" else f"package: {r['reason']}"} for r in rows],
          ["package", "version", "pool", "tests", "runtime", "kept", "tried", "discarded"],
          title=f"package tasks ({pool.value})")
    kept = [r for r in rows if r["status"] == "ok"]
    console.print(f"{sum(r['kept'] for r in kept)} mutants kept from {len(kept)} of {len(rows)} packages; "
                  f"{len(rows) - len(kept)} packages discarded")
