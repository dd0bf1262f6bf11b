"""`agent convert` and `agent adapters`: skills to LoRA, and the adapters in the store."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import List

import typer

from agent.commands import DbOption, JsonOption, ModelOption
from agent.commands.output import console, emit_json, err_console, fail, table
from agent.runtime.adapter_export import FORMATS
from agent.runtime.base_model import DEFAULT_MODEL
from memory.db import Store

app = typer.Typer(help="List, show, export, import and merge stored LoRA adapters.", no_args_is_help=True)
Format = Enum("Format", {f: f for f in FORMATS}, type=str)


def _check_out(out: Path) -> None:
    """Before any work: the export folder must be new (or empty) in a folder that exists."""
    if not out.parent.is_dir():
        fail(f"cannot export to {out}: folder {out.parent} does not exist")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        fail(f"{out} already exists and is not an empty folder: give a new one")


def convert_command(
    skill: str = typer.Argument(..., help="A skill name in the store, or a path to a skill folder / SKILL.md."),
    out: Path = typer.Option(None, "--out", help="Also export the adapter as a PEFT folder here (new or empty)."),
    model: ModelOption = DEFAULT_MODEL,
    hypernet: Path = typer.Option(None, help="Hypernetwork checkpoint (default: the shipped one, if any)."),
    db: DbOption = None,
    json: JsonOption = False,
) -> None:
    """Turn one skill into a LoRA adapter in one hypernetwork pass (cached by content + hypernetwork)."""
    from agent.runtime.base_model import load_model
    from agent.runtime.hypernet_loader import load as load_hypernet
    from agent.runtime.skill_adapters import convert_skill
    from agent.runtime.adapter_export import export_adapter
    from memory import skills as skill_repo
    from memory.skillfile import discover, read_skill_dir

    if out is not None:
        _check_out(out)
    store = Store(db)
    path = Path(skill)
    skill_id = None
    if path.exists():
        folders = discover(path)
        if len(folders) != 1:
            fail(f"{path} holds {len(folders)} skills: convert one at a time")
        doc = read_skill_dir(folders[0])
    else:
        with store.session() as s:
            row = skill_repo.get(s, skill)
            doc, skill_id = skill_repo.to_doc(row), row.id
    with err_console.status(f"loading {model} ..."):
        loaded = load_model(model)
    handle = load_hypernet(loaded, store, str(hypernet) if hypernet else None)
    conv = convert_skill(store, loaded, handle, doc, skill_id)
    if out is not None:
        export_adapter(store, conv.adapter_id, out, "peft")
    data = {
        "skill": doc.name,
        "adapter_id": conv.adapter_id,
        "cached": conv.cached,
        "hypernet": handle.source,
        "trained_hypernet": handle.trained,
        "rank": conv.lora.max_rank,
        "targets": len(conv.lora.targets),
        "sha256": conv.lora.sha256,
        "timings_ms": None if conv.timings is None else {
            "tokens": conv.timings.n_tokens, "chunks": conv.timings.n_chunks,
            "encode": round(conv.timings.encode_ms, 1), "generate": round(conv.timings.generate_ms, 2)},
        "exported_to": str(out) if out else None,
    }
    if json:
        emit_json(data)
        return
    if not handle.trained:
        console.print("[yellow]hypernetwork: untrained (no checkpoint yet): the adapter is exactly zero[/]")
    t = data["timings_ms"]
    timing = "cached" if t is None else f"encode {t['encode']} ms ({t['tokens']} tokens), generate {t['generate']} ms"
    console.print(f"{doc.name} -> adapter {conv.adapter_id}: rank {data['rank']} on {data['targets']} modules; {timing}")
    if out:
        console.print(f"PEFT adapter folder: {out}")


@app.command("list")
def list_(kind: str = typer.Option(None, help="skill | merge | ema | import"), db: DbOption = None,
          json: JsonOption = False) -> None:
    """Stored adapters, newest first."""
    from memory import adapters as adapter_repo

    store = Store(db)
    with store.session() as s:
        rows = [adapter_repo.summary(r) for r in adapter_repo.listing(s, kind)]
    if json:
        emit_json(rows)
    elif not rows:
        console.print("no adapters yet: `agent convert SKILL`")
    else:
        table(rows, ["id", "kind", "skill", "version", "rank", "targets", "bytes", "base_model"])


def _norms(adapter_id: int, store: Store) -> dict[str, float]:
    from agent.runtime.skill_adapters import load_lora
    from hypernet.norms import delta_norms

    return delta_norms(load_lora(store, adapter_id))


@app.command()
def show(adapter_id: int, db: DbOption = None, json: JsonOption = False) -> None:
    """One adapter: metadata and the Frobenius norm of ΔW per module (checks its sha256)."""
    from memory import adapters as adapter_repo

    store = Store(db)
    with store.session() as s:
        data = adapter_repo.summary(adapter_repo.get(s, adapter_id))
    norms = _norms(adapter_id, store)
    data["norms"] = norms
    data["total_norm"] = sum(v * v for v in norms.values()) ** 0.5
    if json:
        emit_json(data)
        return
    table([{"field": k, "value": v} for k, v in data.items() if k != "norms"], ["field", "value"],
          title=f"adapter {adapter_id}")
    table([{"module": k, "norm": f"{v:.4g}"} for k, v in norms.items()], ["module", "norm"])


@app.command()
def export(
    adapter_id: int = typer.Argument(..., help="The adapter's id (`agent adapters list`)."),
    out: Path = typer.Argument(..., help="A new (or empty) folder to write."),
    format: Format = typer.Option("peft", "--format", help="peft: adapter_config.json + adapter_model.safetensors "
                                  "(transformers, vLLM); gguf: adapter.gguf (llama.cpp, Ollama)."),
    base_gguf: Path = typer.Option(None, help="gguf: the base model's GGUF (default: the embedded model's own)."),
    db: DbOption = None,
    json: JsonOption = False,
) -> None:
    """Write an adapter as a folder that servers load as it is, with a model card (README.md): the skill,
    hypernetwork, base model (its hub id), rank per module and the server flags it needs."""
    from agent.runtime.adapter_export import export_adapter

    _check_out(out)
    data = export_adapter(Store(db), adapter_id, out, format.value, base_gguf)
    emit_json(data) if json else console.print(
        f"wrote {format.value.upper()} adapter {adapter_id} to {out}: {', '.join(data['files'])} (see README.md)")


@app.command("import")
def import_(folder: Path = typer.Argument(..., help="A PEFT LoRA folder."),
            base_model: str = typer.Option(DEFAULT_MODEL, help="The base model it belongs to."),
            db: DbOption = None, json: JsonOption = False) -> None:
    """Import a PEFT LoRA folder as an adapter (scaling folded into the factors), checked against the base
    model: layers, modules, shapes and finite values, so a wrong adapter fails now rather than at use."""
    from agent.runtime.base_model import load_model, resolve
    from agent.runtime.skill_adapters import store_lora
    from hypernet.peft_io import base_targets, import_peft, model_targets

    location, kind = resolve(base_model)
    if kind == "gguf":  # the embedded model's config lives in its GGUF: load (and cache) it once
        with err_console.status(f"loading {base_model} ..."):
            base = model_targets(load_model(base_model).model)
    else:
        base = base_targets(location)  # from the config alone, no weights read
    lora = import_peft(folder, base_model=base_model, base=base)
    aid = store_lora(Store(db), lora, "import", meta={"from": str(folder)})
    emit_json({"adapter_id": aid}) if json else console.print(f"imported {folder} as adapter {aid}")


@app.command()
def merge(
    ids: List[int] = typer.Argument(..., help="Adapter ids to merge."),
    weight: List[float] = typer.Option(None, "--weight", "-w", help="One weight per adapter (default: equal)."),
    max_rank: int = typer.Option(None, min=1, help="Recompress to at most this rank."),
    method: str = typer.Option("auto", help="Recompression: exact (optimal truncation), randomized (fast for "
                               "many adapters, near-optimal) or auto (randomized only where it pays)."),
    db: DbOption = None,
    json: JsonOption = False,
) -> None:
    """Merge adapters exactly by rank concatenation: ΔW = Σ wᵢ Bᵢ Aᵢ (optionally recompressed)."""
    from agent.runtime.skill_adapters import load_lora, store_lora
    from hypernet.merge import METHODS
    from hypernet.merge import merge as merge_loras

    weights = list(weight) if weight else [1.0 / len(ids)] * len(ids)
    if len(weights) != len(ids):
        fail(f"{len(ids)} adapters but {len(weights)} weights")
    if method not in METHODS:
        fail(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    store = Store(db)
    merged, report = merge_loras([load_lora(store, i) for i in ids], weights, max_rank=max_rank, method=method)
    methods = sorted(set(report.methods.values()))  # what "auto" chose; empty without --max-rank
    aid = store_lora(store, merged, "merge", meta={"inputs": list(ids), "weights": weights, "max_rank": max_rank,
                                                   "method": methods, "max_rel_error": report.max_rel_error})
    data = {"adapter_id": aid, "rank": merged.max_rank, "max_rel_truncation_error": report.max_rel_error,
            "method": methods}
    emit_json(data) if json else console.print(
        f"merged {list(ids)} -> adapter {aid}: rank {data['rank']}, truncation error {report.max_rel_error:.3g}")


@app.command()
def diff(
    old: int = typer.Argument(..., help="An EMA version (see `agent adapters list --kind ema`)."),
    new: int = typer.Argument(None, help="Another EMA version (default: the one after OLD)."),
    db: DbOption = None,
    json: JsonOption = False,
) -> None:
    """Compare two EMA versions: norms, ‖ΔW_new − ΔW_old‖, cosine, which skills came, went or were reweighted,
    and the held-out scores of a fold the gate rolled back."""
    from agent.evolve.accumulate import diff as diff_versions

    data = diff_versions(Store(db), old, old + 1 if new is None else new).to_dict()
    if json:
        emit_json(data)
        return
    table([{"": side, **{k: data[side][k] for k in ("version", "op", "skill", "beta", "updates", "rank",
                                                      "total_norm", "max_rel_error", "skills", "policy", "pruned")}}
           for side in ("old", "new")],
          ["", "version", "op", "skill", "beta", "updates", "rank", "total_norm", "max_rel_error", "skills", "policy",
           "pruned"])
    for side in ("old", "new"):
        g = data[side]["gate"]
        if g:
            console.print(f"v{data[side]['version']}: the gate rolled back {g['skill']} (folded in v{g['version']}): "
                          f"held-out {g['metric']} {g['candidate']:.4g} with it vs {g['baseline']:.4g} before")
    if data["diff_norm"] is not None:
        console.print(f"‖ΔW_new − ΔW_old‖ = {data['diff_norm']:.4g}   cosine = {data['cosine']:.4f}")
    else:
        console.print("weights of a pruned version are gone: comparing stored norms only")
    console.print(f"skills added: {', '.join(data['added']) or '-'}   removed: {', '.join(data['removed']) or '-'}")
    if data["reweighted"]:
        table(data["reweighted"], ["skill", "old", "new"], title="EMA weights")
    if data["modules"]:
        table(data["modules"], ["module", "old", "new", "change"], title="largest norm changes")


@app.command()
def rollback(version: int = typer.Argument(..., help="The EMA version to return to."), db: DbOption = None,
             json: JsonOption = False) -> None:
    """Make a new EMA version equal to VERSION (history is never rewritten)."""
    from agent.evolve.accumulate import rollback as rollback_to

    info = rollback_to(Store(db), version)
    emit_json(info.row()) if json else console.print(
        f"EMA version {info.version} = version {version} ({info.row()['skills']} skills, norm {info.total_norm})")


@app.command("ema-init")
def ema_init(
    policy: str = typer.Option(None, "--policy", help="Policy adapter (PEFT folder; default: the shipped one)."),
    model: ModelOption = DEFAULT_MODEL,
    db: DbOption = None,
    json: JsonOption = False,
) -> None:
    """Start the persistent adapter from the policy adapter: EMA version 1 = the policy, skills then fold in
    beneath it (each fold scales it by β) and parametric solves take the policy from the EMA instead of as a
    separate adapter. Only for a store with no EMA version yet."""
    from agent.evolve.accumulate import start_from_policy
    from agent.runtime.base_model import load_model
    from agent.runtime.local_chat import SHIPPED_POLICY, load_policy

    if policy == "none":
        fail("--policy none: there is no policy to start from")
    if policy is not None and not Path(policy).is_dir():
        fail(f"policy adapter {policy}: no such folder")
    from memory import adapters as adapter_repo

    store = Store(db)
    with store.session() as s:  # before the model load: a store that already has an EMA is one line
        latest = adapter_repo.latest_ema(s, model)
        if latest is not None:
            fail(f"the persistent adapter already exists (EMA version {latest.version}): "
                 "a policy can only be its start")
    with err_console.status(f"loading {model} ..."):
        loaded = load_model(model)
    lora = load_policy(policy, loaded)
    if lora is None:
        fail(f"no policy adapter ships for {model}: pass --policy FOLDER")
    source = policy or str(SHIPPED_POLICY[loaded.name])
    info = start_from_policy(store, lora, source)
    data = {**info.row(), "adapter_id": info.adapter_id, "source": source}
    emit_json(data) if json else console.print(
        f"EMA version {info.version} = the policy adapter {source} (rank {info.rank}); "
        "parametric solves now take the policy from the persistent adapter")
