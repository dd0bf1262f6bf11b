"""The `agent` command: mounts each command group and turns bad input into one line + exit 2."""

from __future__ import annotations

import typer

from agent.commands import adapters, db, model, skills, solve, trajectories

app = typer.Typer(
    name="agent",
    help="parametric-skills: a coding agent whose skills become LoRA adapters through a hypernetwork.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(skills.app, name="skills")
app.add_typer(model.app, name="model")
app.add_typer(db.app, name="db")
app.add_typer(trajectories.app, name="trajectories")
app.command("solve")(solve.command)
app.command("convert")(adapters.convert_command)
app.add_typer(adapters.app, name="adapters")
# Other command groups register below, one import + one line each.
from agent.commands import evaluation  # noqa: E402

app.command("eval")(evaluation.command)


def user_errors() -> tuple[type[BaseException], ...]:
    """Every package's bad-input error; imported lazily so `--help` stays fast."""
    from agent.backends import EndpointError
    from agent.embed import EmbedderError
    from agent.models import ModelError
    from agent.solve import SolveError
    from memory.errors import StoreError

    errors: list[type[BaseException]] = [StoreError, ModelError, EndpointError, EmbedderError, SolveError]
    try:
        from hypernet.config import HypernetError

        errors.append(HypernetError)
    except ImportError:
        pass
    try:
        from agent.synth import SynthError

        errors.append(SynthError)
    except ImportError:
        pass
    try:
        from sandbox.errors import SandboxError

        errors.append(SandboxError)
    except ImportError:
        pass
    return tuple(errors)


def main(argv: list[str] | None = None) -> None:
    from agent.output import fail

    try:
        app(args=argv, prog_name="agent")
    except user_errors() as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        fail("interrupted", code=130)


if __name__ == "__main__":
    main()
