"""The `agent` command: mounts each command group and turns bad input into one line + exit 2."""

from __future__ import annotations

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
    from agent.runtime.backends import EndpointError
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


# click's exception bases, from whichever click this Typer uses (its own vendored copy since 0.22)
_UsageError = typer.BadParameter.__base__
_ClickException = _UsageError.__base__


def main(argv: list[str] | None = None) -> None:
    from agent.commands.output import fail

    try:
        # not standalone: click's bad-usage errors come here, to be one line like every other bad input
        code = app(args=argv, prog_name="agent", standalone_mode=False)
    except _UsageError as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # the help is already printed
            raise SystemExit(exc.exit_code) from None
        where = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx is not None else ""
        fail(exc.format_message() + where, code=exc.exit_code)
    except _ClickException as exc:
        fail(exc.format_message(), code=exc.exit_code)
    except typer.Abort:
        fail("aborted", code=1)
    except user_errors() as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        fail("interrupted", code=130)
    # not standalone, typer.Exit(n) comes back as n; a command's own return value is not an exit code
    if isinstance(code, int) and not isinstance(code, bool) and code:
        raise SystemExit(code)


if __name__ == "__main__":
    main()
