"""`agent solve REPO TASK`: fix a repo's failing tests in a sandbox, with skills in the weights or the prompt."""

from __future__ import annotations

import contextlib
from enum import Enum
from pathlib import Path

import typer

from agent.commands import (DbOption, EndpointKeyEnvOption, EndpointModelOption, EndpointOption, JsonOption,
                            ModelOption)
from agent.commands.output import console, emit_json, err_console
from agent.runtime import loop
from agent.runtime.base_model import DEFAULT_MODEL
from agent.runtime.endpoint import DEFAULT_KEY_ENV
from agent.runtime.local_chat import BACKENDS
from agent.runtime.solve import MODES, SolveError, SolveRequest, solve_attempts

Backend = Enum("Backend", {b: b for b in BACKENDS}, type=str)
Mode = Enum("Mode", {m: m for m in MODES}, type=str)


def command(
    repo: Path = typer.Argument(..., help="The repository (or plain folder) to work on; it is only read."),
    task: str = typer.Argument(..., help='What to do, e.g. "fix the failing test".'),
    mode: Mode = typer.Option(Mode.parametric, help="parametric (skills as LoRA), icl (skills in the prompt) or "
                              "none."),
    model: ModelOption = DEFAULT_MODEL,
    endpoint: EndpointOption = None,
    endpoint_model: EndpointModelOption = None,
    endpoint_key_env: EndpointKeyEnvOption = DEFAULT_KEY_ENV,
    endpoint_adapter_dir: Path = typer.Option(None, "--endpoint-adapter-dir", metavar="DIR",
                                              help="Parametric mode over --endpoint: where the run's adapter is "
                                                   "written for the server to read by path (the server must see "
                                                   "it at the same path; default $AGENT_HOME/served-adapters)."),
    backend: Backend = typer.Option(None, "--backend", help="Local generation: llama (llama.cpp on the GGUF, "
                                    "grammar-constrained actions; default for the embedded model) or torch."),
    policy: str = typer.Option(None, "--policy", help="Policy adapter (PEFT folder), or none (default: the "
                               "shipped one for the embedded model)."),
    attempts: int = typer.Option(1, "--attempts", help="Generate and validate: up to K attempts (fresh "
                                 "workspace, another sampling seed each), stopping at the first verified."),
    seed: int = typer.Option(0, "--seed", help="Seed of the sampling attempts (attempt 1 is greedy)."),
    temperature: float = typer.Option(0.7, "--temperature", help="Sampling temperature of attempts 2..K."),
    hypernet: Path = typer.Option(None, help="Hypernetwork checkpoint (default: the shipped one, if any)."),
    skill_scale: float = typer.Option(None, "--skill-scale", min=0.0, help="Strength of the merged skill "
                                      "adapter (parametric; default 0.3 beneath a policy adapter, else 1)."),
    top_k: int = typer.Option(3, min=0, help="How many skills to retrieve."),
    test_cmd: str = typer.Option(None, help="The repo's test command (default: detected)."),
    python: str = typer.Option(None, help="Interpreter for the repo's tests (default: this one)."),
    max_steps: int = typer.Option(20, help="Step limit."),  # limits: checked by SolveRequest.validate, one line
    max_seconds: float = typer.Option(900.0, help="Wall-time limit."),
    max_tokens: int = typer.Option(200_000, help="Token limit."),
    max_new_tokens: int = typer.Option(256, min=8, help="Tokens per model reply (local model). Under the llama "
                                       "backend's action grammar, the room kept free: a reply runs to its block's "
                                       "end, since a cut one cannot parse."),
    resamples: int = typer.Option(loop.Limits.resamples, "--resamples", help="A reply that would change nothing "
                                  "(an edit leaving its file as it is, the previous action again) is sampled again "
                                  "up to N times before it acts (llama.cpp backend; 0: as sent)."),
    no_sandbox: bool = typer.Option(False, "--no-sandbox", help="Allow running without bubblewrap when it cannot start (DANGEROUS: host visible)."),
    unconfined_ok: bool = typer.Option(False, "--i-understand-commands-run-unconfined",
                                       help="Confirms --no-sandbox: the model's commands may then read and change "
                                            "what this user can (files, network, this process's environment)."),
    apply: bool = typer.Option(False, "--apply", help="Apply the resulting patch to REPO (refused on conflicts)."),
    db: DbOption = None,
    json: JsonOption = False,
) -> None:
    """Solve TASK in a sandboxed copy of REPO; prints the outcome, the diff and the trajectory id."""
    import sys

    from rich.markup import escape

    from agent.runtime import skill_context
    from memory.db import Store
    from memory.seed import ensure_seeded
    from memory.skillfile import escape_controls

    mode = mode.value
    request = SolveRequest(repo=repo.resolve(), task=task, mode=mode, model_name=endpoint_model or model,
                           test_cmd=test_cmd, python=python or sys.executable, sandbox=not no_sandbox, apply=apply,
                           limits=loop.Limits(steps=max_steps, seconds=max_seconds, tokens=max_tokens,
                                              resamples=resamples))
    request.validate()  # mode and task, before anything slow
    if attempts < 1:
        raise SolveError(f"--attempts must be at least 1 (got {attempts})")
    if policy not in (None, "none") and not Path(policy).is_dir():  # before the model load, not after
        raise SolveError(f"policy adapter {policy}: no such folder")
    if not repo.exists():
        raise SolveError(f"{repo}: no such folder")
    if endpoint and not endpoint_model:
        raise SolveError("--endpoint needs --endpoint-model")
    if endpoint_model and not endpoint:
        raise SolveError("--endpoint-model needs --endpoint")
    if endpoint_adapter_dir is not None and not (endpoint and mode == "parametric"):
        raise SolveError("--endpoint-adapter-dir is for --mode parametric with --endpoint")
    if not repo.is_dir():
        raise SolveError(f"{repo}: not a folder")
    if not test_cmd:
        from sandbox.testcmd import detect_test_command

        if not detect_test_command(repo, python or sys.executable):
            raise SolveError(f"{repo}: cannot detect how to run its tests (pytest, unittest, make test); "
                             "pass --test-cmd")
    if no_sandbox and not unconfined_ok:
        raise SolveError("--no-sandbox lets the model's commands run unconfined, with your rights over files, "
                         "network and this process's keys: add --i-understand-commands-run-unconfined to confirm")
    if no_sandbox:
        err_console.print("[bold red]WARNING: --no-sandbox: if bubblewrap cannot run, commands run UNCONFINED "
                          "(rlimits and a workspace copy only) and can see this machine[/]")
    # parametric mode over an endpoint: the local model makes the adapters, the server (vLLM) runs them
    served_parametric = bool(endpoint) and mode == "parametric"
    if not endpoint or served_parametric:
        from agent.runtime.base_model import resolve

        _, kind = resolve(model)  # an unknown model is one line, before the store or any progress line
    adapters: list = []
    if endpoint:
        from agent.runtime.endpoint import EndpointChat

        endpoint_chat = EndpointChat(endpoint, endpoint_model, key_env=endpoint_key_env)
        endpoint_chat.probe()  # before the store is opened or seeded: a refused endpoint leaves it unchanged
        if served_parametric:
            from agent.runtime import served_adapter

            served_adapter.probe(endpoint_chat)  # a server that cannot take adapters: one line, before set-up
    store = Store(db)
    ensure_seeded(store)
    say = err_console.print if json else console.print
    loaded = handle = in_ema = None
    if not endpoint or served_parametric:
        from agent.runtime.base_model import load_model
        from agent.runtime.local_chat import default_backend, load_policy

        first = " (first use: dequantizing the GGUF once, ~30 s)" if kind == "gguf" else ""
        with err_console.status(f"loading {model}{first} ..."):
            loaded = load_model(model)
            chosen = "endpoint" if endpoint else backend.value if backend else default_backend(loaded.name)
            in_ema = skill_context.ema_policy(store, loaded.name) if mode == "parametric" else None
            if in_ema is not None and policy not in (None, "none"):
                raise SolveError(f"EMA version {in_ema[0]} already holds a policy adapter (agent adapters ema-init): "
                                 "--policy would add a second one; drop --policy")
            policy_lora = None if in_ema is not None else load_policy(policy, loaded)
        if policy_lora is not None:
            adapters.append(policy_lora)
        held = f"in EMA v{in_ema[0]} at weight {in_ema[1]:.3g}" if in_ema else None
        say(f"[dim]backend {chosen}; policy adapter: "
            f"{held or ('none' if policy_lora is None else policy or 'shipped')}[/]")
        if mode == "parametric":
            from agent.runtime.hypernet_loader import load as load_hypernet

            with err_console.status("loading the hypernetwork ..."):
                handle = load_hypernet(loaded, store, str(hypernet) if hypernet else None)
            if not handle.trained:
                say("[yellow]hypernetwork: untrained (no checkpoint yet): generated adapters are zero, "
                    "so parametric mode behaves like no skills[/]")

    def on_step(i, action, obs):
        what = f"{action.kind} {action.arg[:60]!r}" if action else "format error"
        text = obs if isinstance(obs, str) else obs.text
        line = f"{what}: {text.strip().splitlines()[0][:100] if text.strip() else ''}"
        # model and command output: neither rich markup nor terminal escapes get through
        say(f"[bold]step {i}[/] {escape(escape_controls(line))}", markup=True, highlight=False)

    with err_console.status("retrieving skills ...") as status:
        if skill_scale is None:
            skill_scale = skill_context.SKILL_SCALE_UNDER_POLICY if adapters or in_ema else 1.0
        ctx, skill_lora = skill_context.build(
            store, mode, task, top_k, loaded, handle, skill_scale,
            on_convert=lambda name, i, n: status.update(f"skill {i} of {n} -> LoRA: {escape(name)} ..."))
    for s in ctx.active:
        say(f"skill {s['name']}  weight={s.get('weight')}  similarity={s.get('similarity', '')}")
    run_adapters = adapters + ([skill_lora] if skill_lora is not None else [])
    serving = contextlib.nullcontext((endpoint_chat if endpoint else None, None))
    if served_parametric and run_adapters:
        parts = ([{"name": "policy", "path": policy or "shipped", "max_rank": adapters[0].max_rank}]
                 if adapters else [])
        if skill_lora is not None:
            parts.append({"name": "skills", "scale": skill_scale, "max_rank": skill_lora.max_rank,
                          "adapters": [s.get("adapter_id") for s in ctx.active]})
        serving = served_adapter.serve_adapter(
            endpoint_chat, served_adapter.combine(run_adapters), endpoint_model, folder=endpoint_adapter_dir,
            parts=parts, warn=lambda line: err_console.print(f"[yellow]{escape(line)}[/]"))
    elif served_parametric:
        say("[dim]no adapter for this run (no policy adapter, no skills): the endpoint's base model answers[/]")

    def open_chat(k: int):
        if endpoint:
            return contextlib.nullcontext(run_chat)
        from agent.runtime.local_chat import open_local_chat

        say(f"[dim]starting the {chosen} backend ...[/]")
        return open_local_chat(loaded, run_adapters, backend=chosen,
                               max_new_tokens=max_new_tokens, seed=seed + k - 1,
                               temperature=0.0 if k == 1 else temperature)

    with serving as (run_chat, served):  # the endpoint's chat, under the run's adapter's name when one is served
        if served is not None:
            ctx.adapter = served.record()
            say(f"[dim]adapter loaded on {escape(endpoint)} as {served.name} (rank {served.max_rank}, "
                f"{served.modules} modules); unloaded when the run ends[/]")
        report = solve_attempts(request, store, open_chat, ctx, attempts,
                                on_attempt=lambda k: attempts > 1 and say(f"[bold]attempt {k} of {attempts}[/]"),
                                on_step=on_step, on_phase=lambda t: say(f"[dim]{t}[/]"))
    if json:
        emit_json(report.to_dict())
        return
    console.rule("outcome")
    console.print(f"status: {report.status}   tests before: {'pass' if report.tests_before['passed'] else 'FAIL'}"
                  f"   after: {'pass' if report.tests_after['passed'] else 'FAIL'}   verified: {report.verified}")
    if report.message:
        console.print(report.message, markup=False, highlight=False)
    if attempts > 1:
        console.print(f"attempt {report.attempt} of {attempts} {'won' if report.verified else 'was the last'}; "
                      f"trajectories {', '.join(map(str, report.attempts))}")
    console.print(f"trajectory {report.trajectory_id}: {report.steps} steps, {report.tokens} tokens, "
                  f"{report.seconds:.1f} s   (agent trajectories show {report.trajectory_id})")
    console.print(escape_controls(report.diff) or "(no changes)", markup=False, highlight=False)
    if report.applied:
        console.print(f"applied the patch to {repo}")
