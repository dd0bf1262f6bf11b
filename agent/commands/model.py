"""`agent model`: the base model."""

from __future__ import annotations

import typer

from agent.commands import JsonOption, ModelOption
from agent.commands.output import console, emit_json, table
from agent.runtime.base_model import DEFAULT_MODEL, load_model, resolve

app = typer.Typer(help="Inspect the base model.", no_args_is_help=True)


@app.command()
def info(
    model: ModelOption = DEFAULT_MODEL,
    device: str = typer.Option(None, help="cpu, cuda, cuda:1 ... (default: cuda when present)."),
    json: JsonOption = False,
) -> None:
    """Load the model (caching the embedded one on first use) and print its shape and load time."""
    resolve(model)  # an unknown model is the one line, before any progress line
    with console.status(f"loading {model} ..."):
        loaded = load_model(model, device=device)
    data = loaded.info()
    if json:
        emit_json(data)
    else:
        table([{"field": k, "value": v} for k, v in data.items()], ["field", "value"], title="model")
