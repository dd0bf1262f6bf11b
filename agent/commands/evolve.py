"""`agent evolve`, `agent daemon`, `agent submit` and `agent jobs`: the self-evolution loop."""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Callable, List, Optional

import typer

from agent.commands import DbOption, JsonOption
from agent.commands.output import console, emit_json, err_console, fail, table
from agent.commands.solve import Mode as SolveMode

jobs_app = typer.Typer(help="The scheduled jobs: extract, accumulate, retrain, compact.", no_args_is_help=True)

ConfigOption = typer.Option(None, "--config", help="Job config file (TOML or YAML; default ./agent.toml if present).")
ModelFlag = typer.Option(None, "--model", "-m", help="Base model (default: config [daemon] model, else the embedded one).")
HypernetFlag = typer.Option(None, "--hypernet", help="Hypernetwork checkpoint (default: newest accepted, else shipped).")
BetaFlag = typer.Option(None, "--beta", help="EMA β (default from the forgetting benchmark).")
# agent.evolve.context.WRITERS (literal here: --help stays fast; tests/test_cli_habits.py checks they agree)
Writer = Enum("Writer", {w: w for w in ("auto", "template", "local", "endpoint")}, type=str)
WriterFlag = typer.Option(None, "--writer", help="Skill writer (default auto: the endpoint if one is set, else "
                          "the local model).")
EndpointFlag = typer.Option(None, "--endpoint", help="OpenAI-compatible teacher endpoint that writes skills.")
EndpointModelFlag = typer.Option(None, "--endpoint-model", help="Model name at --endpoint.")
EndpointKeyEnvFlag = typer.Option(None, "--endpoint-key-env",
                                  help="Environment variable holding the endpoint key (default OPENAI_API_KEY).")
NoSandboxFlag = typer.Option(False, "--no-sandbox", help="Allow verification runs without bubblewrap (DANGEROUS).")
UnconfinedOkFlag = typer.Option(False, "--i-understand-commands-run-unconfined",
                                help="Confirms --no-sandbox: re-run tests and patches may then read and change "
                                     "what this user can.")
UNCONFINED_FLAG = "--i-understand-commands-run-unconfined"


def _config(config: Optional[Path], intervals: list[str] | None = None, **settings):
    from agent.evolve.scheduler import ConfigError, load_config

    try:
        return load_config(config, intervals, settings)
    except ConfigError as exc:
        fail(str(exc))


@dataclass(frozen=True)
class EvolveOptions:
    """The options every evolution command shares: where the config is, which model and hypernetwork, and
    the job settings that beat the config."""

    config: Optional[Path]
    model: Optional[str]
    hypernet: Optional[Path]
    beta: Optional[float]
    writer: Optional[Writer]
    endpoint: Optional[str]
    endpoint_model: Optional[str]
    endpoint_key_env: Optional[str]
    no_sandbox: bool
    unconfined_ok: bool

    def load(self, db, intervals: list[str] | None = None, writes_skills: bool = True):
        """(config, EvolveContext) for these options; the skill writer's endpoint is probed first when the
        command will write skills."""
        from agent.evolve.context import EvolveContext
        from agent.runtime.base_model import DEFAULT_MODEL
        from memory.db import Store

        if self.no_sandbox and not self.unconfined_ok:
            fail(f"--no-sandbox lets model-written code run unconfined, with your rights: add {UNCONFINED_FLAG} "
                 "to confirm")
        cfg = _config(self.config, intervals, beta=self.beta, writer=self.writer and self.writer.value,
                      endpoint=self.endpoint,
                      endpoint_model=self.endpoint_model, endpoint_key_env=self.endpoint_key_env,
                      allow_unconfined=True if self.no_sandbox else None)
        st = cfg.settings
        if writes_skills and (st.writer == "endpoint" or (st.writer == "auto" and st.endpoint and st.endpoint_model)):
            from agent.runtime.endpoint import EndpointChat

            # the skill writer's endpoint: a refusal is one line now, not an error in the middle of a cycle
            EndpointChat(st.endpoint, st.endpoint_model, key_env=st.endpoint_key_env).probe()
        ctx = EvolveContext(Store(db), cfg.settings, model_name=self.model or cfg.model or DEFAULT_MODEL,
                            hypernet_path=str(self.hypernet) if self.hypernet else cfg.hypernet)
        return cfg, ctx


_SHARED = [("config", Optional[Path], ConfigOption), ("model", Optional[str], ModelFlag),
           ("hypernet", Optional[Path], HypernetFlag), ("beta", Optional[float], BetaFlag),
           ("writer", Optional[Writer], WriterFlag), ("endpoint", Optional[str], EndpointFlag),
           ("endpoint_model", Optional[str], EndpointModelFlag),
           ("endpoint_key_env", Optional[str], EndpointKeyEnvFlag), ("no_sandbox", bool, NoSandboxFlag),
           ("unconfined_ok", bool, UnconfinedOkFlag)]


def with_evolve_options(command: Callable) -> Callable:
    """Give a command the shared options (after its own) and hand them to it as one `opts: EvolveOptions`.

    Written here because Typer has no option groups; the wrapper only rewrites the signature Typer reads."""
    own = [p for p in inspect.signature(command).parameters.values() if p.name != "opts"]
    shared = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=kind)
              for name, kind, default in _SHARED]

    @functools.wraps(command)
    def wrapper(**kwargs):
        opts = EvolveOptions(**{name: kwargs.pop(name) for name, _, _ in _SHARED})
        return command(opts=opts, **kwargs)

    wrapper.__signature__ = inspect.Signature(own + shared)
    return wrapper


def _fold_verdict(g: dict) -> str:
    """The EMA gate's verdict on one fold, one line."""
    text = f"  EMA v{g['version']}" + (f" ({g['skill']})" if g.get("skill") else "") + f": {g['status']}"
    if "rollback" in g:
        text += f" as v{g['rollback']}"
    if "metric" in g:
        text += f", held-out {g['metric']} {g['candidate']:.4g} with it vs {g['baseline']:.4g} before"
    if g.get("reason"):
        text += f" ({g['reason']})"
    return text


def _print_report(report) -> None:
    d = report.details
    line = f"{report.name}: {report.status} (run {report.run_id})"
    if "counts" in d:
        line += "  " + ", ".join(f"{k}={v}" for k, v in d["counts"].items())
    if report.name == "accumulate":
        line += f"  folded={len(d.get('folded', []))}" + (f" errors={len(d['errors'])}" if d.get("errors") else "")
        for f in d.get("folded", []):
            console.print(f"  EMA v{f['version']} <- {f['skill']} (truncation {f['max_rel_error']:.3g})")
    for key in ("skipped", "error"):
        if d.get(key):
            line += f"  {key}: {d[key]}"
    for g in d.get("gated", []) or []:
        if report.name == "accumulate":
            console.print(_fold_verdict(g), markup=False, highlight=False)
        else:
            console.print(f"  checkpoint {g['candidate']}: {g['status']} ({g.get('reason', '')})")
    console.print(line, markup=False, highlight=False)


@with_evolve_options
def evolve_command(
    opts: EvolveOptions,
    skip: List[str] = typer.Option(None, "--skip", help="Step to leave out (repeatable): extract, accumulate, retrain, compact."),
    db: DbOption = None,
    json: JsonOption = False,
) -> None:
    """Run one full self-evolution cycle now: extract → accumulate → retrain (gated) → compact."""
    from agent.evolve.context import JOB_NAMES
    from agent.evolve.cycle import run_cycle

    for name in skip or []:
        if name not in JOB_NAMES:
            fail(f"unknown step {name!r} to skip (steps: {', '.join(JOB_NAMES)})")
    _, ctx = opts.load(db, writes_skills="extract" not in (skip or []))
    report = run_cycle(ctx, tuple(skip or ()))
    if json:
        emit_json(report.to_dict())
    else:
        for step in report.steps:
            _print_report(step)
        console.print(f"cycle {report.run_id}: {report.status}")
    if report.status == "failed":
        raise typer.Exit(1)


@with_evolve_options
def daemon_command(
    opts: EvolveOptions,
    interval: List[str] = typer.Option(None, "--interval", help="NAME=INTERVAL, e.g. extract=5m (repeatable; beats the config)."),
    poll: Optional[str] = typer.Option(None, "--poll", help="How often to check the queue, e.g. 2s."),
    db: DbOption = None,
) -> None:
    """Run the scheduled jobs and the queue of submitted tasks until Ctrl-C / SIGTERM (stops after the current step)."""
    import logging

    from agent.evolve.daemon import Daemon
    from agent.evolve.scheduler import ConfigError, parse_interval
    from memory.seed import ensure_seeded

    cfg, ctx = opts.load(db, list(interval or []))
    if poll is not None:
        try:
            cfg.poll_s = parse_interval(poll, "--poll")
        except ConfigError as exc:
            fail(str(exc))
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ensure_seeded(ctx.store)
    say = lambda text: err_console.print(text, markup=False, highlight=False)  # noqa: E731
    say(f"agent daemon: {ctx.store.url}, model {ctx.model_name}, config {cfg.source}; Ctrl-C stops")
    Daemon(ctx, cfg, say=say).run()


def submit_command(
    repo: Path = typer.Argument(..., help="The repository to work on (it is only read)."),
    task: str = typer.Argument(..., help='What to do, e.g. "fix the failing test".'),
    mode: SolveMode = typer.Option(SolveMode.parametric, help="parametric, icl or none."),
    test_cmd: Optional[str] = typer.Option(None, help="The repo's test command (default: detected)."),
    max_steps: int = typer.Option(20, help="Step limit."),
    top_k: int = typer.Option(3, min=0, help="How many skills to retrieve."),
    no_sandbox: bool = typer.Option(False, "--no-sandbox", hidden=True,
                                    help="Refused: queued tasks always run sandboxed."),
    db: DbOption = None,
    json: JsonOption = False,
) -> None:
    """Queue TASK on REPO for `agent daemon` to solve."""
    from memory import queue as queue_repo
    from memory.db import Store

    mode = mode.value
    if not repo.is_dir():
        fail(f"{repo}: no such folder")
    if not task.strip():
        fail('the task is empty: say what to do, e.g. "fix the failing test"')
    if max_steps < 1:
        fail(f"--max-steps must be at least 1, got {max_steps}")
    if no_sandbox:
        fail("queued tasks always run in the sandbox (the daemon refuses no_sandbox): "
             "run `agent solve --no-sandbox` yourself instead")
    options = {"mode": mode, "test_cmd": test_cmd, "max_steps": max_steps, "top_k": top_k}
    store = Store(db)
    with store.session() as s:
        task_id = queue_repo.submit(s, repo=str(repo.resolve()), task=task, options=options)
        queued = len(queue_repo.listing(s, "queued"))
    if json:
        emit_json({"task_id": task_id, "queued": queued})
    else:
        console.print(f"queued task {task_id} ({queued} waiting); `agent daemon` runs it")


@jobs_app.command("list")
def jobs_list(config: Optional[Path] = ConfigOption, db: DbOption = None, json: JsonOption = False) -> None:
    """The jobs: interval, next run (or paused), and the last run's status."""
    from agent.evolve.scheduler import list_jobs
    from memory.db import Store

    cfg = _config(config)
    rows = [r.to_dict() for r in list_jobs(Store(db), cfg)]
    if json:
        emit_json(rows)
    else:
        table(rows, ["name", "interval", "state", "next_run", "last_status", "last_finished"])


@jobs_app.command("run")
@with_evolve_options
def jobs_run(
    opts: EvolveOptions,
    name: str = typer.Argument(..., help="extract | accumulate | retrain | compact"),
    db: DbOption = None,
    json: JsonOption = False,
) -> None:
    """Run one job now, in this process (safe alongside a running daemon: work is claimed per item)."""
    from agent.evolve.context import JOB_NAMES
    from agent.evolve.cycle import run_job

    if name not in JOB_NAMES:
        fail(f"unknown job {name!r} (jobs: {', '.join(JOB_NAMES)})")
    report = run_job(opts.load(db, writes_skills=name == "extract")[1], name)
    emit_json(report.to_dict()) if json else _print_report(report)
    if report.status == "failed":
        raise typer.Exit(1)


@jobs_app.command("pause")
def jobs_pause(name: str = typer.Argument(..., help="The job to pause."), db: DbOption = None) -> None:
    """Pause a scheduled job (a running daemon sees it at its next poll)."""
    from agent.evolve.scheduler import ConfigError, pause
    from memory.db import Store

    try:
        pause(Store(db), name)
    except ConfigError as exc:
        fail(str(exc))
    console.print(f"paused {name}")


@jobs_app.command("resume")
def jobs_resume(name: str = typer.Argument(..., help="The job to resume."), db: DbOption = None) -> None:
    """Resume a paused job; it next runs one interval from now."""
    from agent.evolve.scheduler import ConfigError, resume
    from memory.db import Store

    try:
        nxt = resume(Store(db), name)
    except ConfigError as exc:
        fail(str(exc))
    console.print(f"resumed {name}; next run {nxt.isoformat() if nxt else 'none'}")
