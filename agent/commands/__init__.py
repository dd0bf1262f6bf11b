"""One module per `agent` command group; agent/cli.py mounts them."""

from typing import Annotated, Optional

import typer

DbOption = Annotated[
    Optional[str],
    typer.Option("--db", envvar="AGENT_DB_URL", help="SQLAlchemy URL or SQLite path (default ./skills.db)."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
ModelOption = Annotated[
    str,
    typer.Option("--model", "-m", help="smollm2-135m-instruct (embedded), a local model folder, or a Hugging Face id."),
]
# One set of endpoint options for every command that talks to an OpenAI-compatible server.
EndpointOption = Annotated[
    Optional[str],
    typer.Option("--endpoint", metavar="URL", help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1."),
]
EndpointModelOption = Annotated[Optional[str], typer.Option("--endpoint-model", metavar="NAME",
                                                            help="Model name at --endpoint.")]
EndpointKeyEnvOption = Annotated[str, typer.Option("--endpoint-key-env", metavar="VAR",
                                                   help="Environment variable holding the endpoint's key.")]


def renamed(value, old, name: str, old_name: str):
    """An option's value, given by its name or by its old (hidden) one, not both."""
    if value is not None and old is not None:
        from agent.commands.output import fail

        fail(f"{old_name} is the old name of {name}: give one of them")
    return value if value is not None else old
