"""Skills for one task: retrieve the top-k, then put them in the prompt (icl) or in the weights (parametric).

Parametric: each skill's adapter (cached) and the persistent EMA adapter are merged by rank
concatenation, skills weighted by retrieval similarity, the EMA with weight 1.
"""

from __future__ import annotations

from collections.abc import Callable

from agent.runtime.base_model import LoadedModel
from agent.runtime.hypernet_loader import HypernetHandle
from agent.runtime.retrieval import top_k
from agent.runtime.skill_adapters import convert_skill
from agent.runtime.solve import SkillContext
from hypernet.lora import LoraWeights
from hypernet.merge import merge
from memory import adapters as adapter_repo
from memory import skills as skill_repo
from memory.db import Store

MAX_ACTIVE_RANK = 64
# The merged skill adapter's strength beneath a policy adapter. The hypernetwork learned its adapters on a bare
# base model; at full strength they pull the policy off its action format (held-out fix rate 0 % at 1.0, 16 %
# at 0.3: bench/results/solve_heldout*.json), so beneath a policy they act at this scale.
SKILL_SCALE_UNDER_POLICY = 0.3


def retrieve(store: Store, task: str, k: int):
    with store.session() as s:
        rows = skill_repo.list_current(s)
        pool = [(r.name, r.description) for r in rows]
        by_name = {r.name: (r.id, skill_repo.to_doc(r)) for r in rows}
    return [(hit, *by_name[hit.name]) for hit in top_k(task, pool, k)]


def ema_policy(store: Store, base_model: str) -> tuple[int, float] | None:
    """(version, the policy's weight in it) when the latest EMA version started from the policy adapter: a
    parametric solve then takes the policy from there, not as a separate adapter (it would count twice)."""
    with store.session() as s:
        ema = adapter_repo.latest_ema(s, base_model)
        share = adapter_repo.policy_share(ema) if ema is not None else None
        return (ema.version, share) if share is not None else None


def build(store: Store, mode: str, task: str, k: int, loaded: LoadedModel | None = None,
          handle: HypernetHandle | None = None, scale: float = 1.0,
          on_convert: Callable[[str, int, int], None] | None = None) -> tuple[SkillContext, LoraWeights | None]:
    """`on_convert(name, i, n)` is told before the i-th of n skills goes through the hypernetwork (progress)."""
    if mode == "none" or k <= 0:
        return SkillContext(), None
    hits = retrieve(store, task, k)
    active = [{"name": h.name, "similarity": h.similarity, "weight": h.weight} for h, _, _ in hits]
    if mode == "icl":
        text = "\n\n".join(doc.text for _, _, doc in hits)
        return SkillContext(active, f"Follow these skills:\n\n{text}" if hits else ""), None
    assert loaded is not None and handle is not None, "parametric mode needs a local model and a hypernetwork"
    # `scale` goes into the merge weights: the skills always take it, the EMA too unless it holds the policy
    # (`agent adapters ema-init`), which acts at the strength it was trained at, as a separate policy would
    loras, weights = [], []
    for i, ((hit, skill_id, doc), entry) in enumerate(zip(hits, active), 1):
        if on_convert is not None:
            on_convert(hit.name, i, len(hits))
        conv = convert_skill(store, loaded, handle, doc, skill_id)
        entry["adapter_id"] = conv.adapter_id
        loras.append(conv.lora)
        weights.append(hit.weight * scale)
        if scale != 1.0:
            entry["scale"] = scale
    with store.session() as s:
        ema = adapter_repo.latest_ema(s, loaded.name)
        ema_id, ema_version, policy = (ema.id, ema.version, adapter_repo.policy_share(ema)) if ema else (None,) * 3
    if ema_id is not None:
        from agent.runtime.skill_adapters import load_lora

        ema_scale = 1.0 if policy is not None else scale
        loras.append(load_lora(store, ema_id))
        weights.append(ema_scale)
        entry = {"name": f"ema-v{ema_version}", "adapter_id": ema_id, "weight": 1.0}
        if policy is not None:
            entry["policy"] = round(policy, 6)
        if ema_scale != 1.0:
            entry["scale"] = ema_scale
        active.append(entry)
    if not loras:
        return SkillContext(active), None
    merged, _ = merge(loras, weights, max_rank=MAX_ACTIVE_RANK)
    return SkillContext(active), merged

