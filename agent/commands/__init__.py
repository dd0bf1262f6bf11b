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
