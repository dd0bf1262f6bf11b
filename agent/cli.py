"""The `agent` command: mounts each command group and turns bad input into one line + exit 2."""

from __future__ import annotations

import os

import typer

from agent.commands import adapters, data, db, evaluation, evolve, model, policy, skills, solve, trajectories, tui
from agent.commands import hypernet as hypernet_cmd

app = typer.Typer(
    name="agent",
    help="parametric-skills: a coding agent whose skills become LoRA adapters through a hypernetwork.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
# the main job and what it produces
app.command("solve")(solve.command)
app.add_typer(trajectories.app, name="trajectories")
# skills and their adapters
app.add_typer(skills.app, name="skills")
app.command("convert")(adapters.convert_command)
app.add_typer(adapters.app, name="adapters")
# learning: data, training, evaluation, self-evolution
app.add_typer(data.app, name="data")
app.add_typer(policy.app, name="policy")
app.add_typer(hypernet_cmd.app, name="hypernet")
app.command("eval")(evaluation.command)
app.command("evolve")(evolve.evolve_command)
app.command("daemon")(evolve.daemon_command)
app.command("submit")(evolve.submit_command)
app.add_typer(evolve.jobs_app, name="jobs")
# looking at it all
app.command("tui")(tui.command)
app.add_typer(model.app, name="model")
app.add_typer(db.app, name="db")


def user_errors() -> tuple[type[BaseException], ...]:
    """Every package's bad-input error; imported lazily so `--help` stays fast."""
    from agent.runtime.endpoint import EndpointError
    from agent.runtime.embed import EmbedderError
    from agent.runtime.local_chat import BackendError
    from agent.runtime.base_model import ModelError
    from agent.runtime.solve import RunFailed, SolveError
    from memory.errors import StoreError

    errors: list[type[BaseException]] = [StoreError, ModelError, EndpointError, EmbedderError, SolveError,
                                         RunFailed, BackendError]
    try:
        from hypernet.config import HypernetError

        errors.append(HypernetError)
    except ImportError:
        pass
    try:
        from hypernet.gguf_io import GGUFLoraError

        errors.append(GGUFLoraError)
    except ImportError:
        pass
    try:
        from hypernet.trainstate import TrainingError

        errors.append(TrainingError)
    except ImportError:
        pass
    try:
        from agent.synth.common import SynthError

        errors.append(SynthError)
    except ImportError:
        pass
    try:
        from sandbox.errors import SandboxError

        errors.append(SandboxError)
    except ImportError:
        pass
    return tuple(errors)


def quiet_libraries() -> None:
    """rich is the one progress library: no bars from huggingface_hub / transformers (read at their import) nor
    from tqdm (transformers' one-time GGUF dequantization); a user who sets these variables wins."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")


def main(argv: list[str] | None = None) -> None:
    from agent.commands.output import err_console, fail

    try:  # typer >= 0.20 carries its own copy of click
        from typer._click import exceptions as click_errors
    except ImportError:
        from click import exceptions as click_errors

    quiet_libraries()
    try:
        # not standalone: a usage error comes back here and becomes one line, not Click's five-line box
        code = app(args=argv, prog_name="agent", standalone_mode=False)
    except click_errors.NoArgsIsHelpError as exc:
        exc.ctx.get_help()  # Typer prints its help itself
        raise SystemExit(exc.exit_code) from None
    except click_errors.UsageError as exc:
        message = exc.format_message().replace("Value error, ", "")  # Typer's wording for a bad choice
        hint = f" (see {exc.ctx.command_path} --help)" if exc.ctx is not None else ""
        fail(message + hint, code=exc.exit_code)
    except click_errors.ClickException as exc:
        fail(exc.format_message(), code=exc.exit_code)
    except typer.Abort:
        err_console.print("aborted", highlight=False)
        raise SystemExit(1) from None
    except user_errors() as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        fail("interrupted", code=130)
    # not standalone, typer.Exit(n) comes back as n; a command's own return value is not an exit code
    if isinstance(code, int) and not isinstance(code, bool) and code:
        raise SystemExit(code)


if __name__ == "__main__":
    main()
