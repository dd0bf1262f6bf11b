"""Skill → adapter through the hypernetwork, cached in the store by skill content + hypernetwork."""

from __future__ import annotations

from dataclasses import dataclass

from agent.runtime.base_model import LoadedModel
from agent.runtime.hypernet_loader import HypernetHandle
from hypernet.convert import ConvertTimings, convert
from hypernet.lora import LoraWeights
from memory import adapters as adapter_repo
from memory.db import Store
from memory.skillfile import SkillDoc


@dataclass
class SkillAdapter:
    """A skill's adapter as the hypernetwork made it (or the store had it cached)."""

    lora: LoraWeights
    adapter_id: int | None
    cached: bool
    timings: ConvertTimings | None


def describe(lora: LoraWeights) -> dict:
    return {
        "rank": lora.max_rank,
        "targets": [t.to_dict() for t in lora.targets],
        "shapes": {t.key: [t.in_features, t.out_features] for t in lora.targets},
    }


def store_lora(store: Store, lora: LoraWeights, kind: str, **fields) -> int:
    info = describe(lora)
    blob = lora.to_safetensors_bytes()
    with store.session() as s:
        row = adapter_repo.add(s, kind=kind, blob=blob, base_model=lora.base_model, rank=info["rank"],
                               targets=info["targets"], shapes=info["shapes"], **fields)
        return row.id


def load_lora(store: Store, adapter_id: int) -> LoraWeights:
    with store.session() as s:
        row = adapter_repo.get(s, adapter_id)
        return LoraWeights.from_safetensors_bytes(adapter_repo.checked_blob(row), expected_sha256=row.sha256)


def convert_skill(store: Store | None, loaded: LoadedModel, handle: HypernetHandle, doc: SkillDoc,
                  skill_id: int | None = None) -> SkillAdapter:
    key = f"{doc.content_hash}:{handle.ident}"
    if store is not None:
        with store.session() as s:
            row = adapter_repo.cached(s, key)
            if row is not None and row.base_model == loaded.name:
                lora = LoraWeights.from_safetensors_bytes(adapter_repo.checked_blob(row), expected_sha256=row.sha256)
                return SkillAdapter(lora, row.id, True, None)
    lora, timings = convert(handle.net, loaded.model, loaded.tokenizer, doc.text)
    lora = lora.replace(lora.factors, {**lora.metadata, "skill": doc.name, "hypernet": handle.ident})
    adapter_id = None
    if store is not None:
        adapter_id = store_lora(store, lora, "skill", skill_id=skill_id, hypernet_id=handle.checkpoint_id,
                                cache_key=key, meta={"skill": doc.name, "trained_hypernet": handle.trained})
    return SkillAdapter(lora, adapter_id, False, timings)
