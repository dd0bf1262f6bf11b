"""Continual-learning measurement: after each new skill, how much of the earlier skills does the
persistent adapter still hold?

Skills are added one by one through the EMA (a few β) and, for comparison, merged without EMA (plain sum
and mean of all skills so far, recompressed to the same rank cap). After each addition t every skill
i ≤ t is scored against the persistent adapter P_t.

The default score is an ADAPTER-SPACE PROXY, not adherence: it says how much of a skill's weight update
survives in P, not whether the model still follows the skill.
  cosine     ⟨ΔW_i, ΔW_P⟩ / (‖ΔW_i‖ ‖ΔW_P‖), summed over target modules (direction kept)
  retention  ⟨ΔW_i, ΔW_P⟩ / ‖ΔW_i‖²  (the coefficient of skill i in P: 1 for the sum, 1/t for the mean,
             (1−β)β^(t−i) for the EMA, before truncation and interference)
Both come from the factors alone, ⟨B₁A₁, B₂A₂⟩_F = tr((B₁ᵀB₂)(A₂A₁ᵀ)), r×r products, never out×in.
An adherence-based measurement plugs in as `scorer(persistent, skill_index, skill) -> float`.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import torch

from hypernet.ema import ema_update
from hypernet.lora import LoraWeights
from hypernet.merge import merge
from hypernet.norms import cosine, norm, retention
from hypernet.targets import Target

Scorer = Callable[[LoraWeights, int, LoraWeights], float]


SCORERS: dict[str, Scorer] = {
    "cosine": lambda p, i, s: cosine(s, p),
    "retention": lambda p, i, s: retention(s, p),
}


# --- strategies ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Strategy:
    name: str
    kind: str  # ema | sum | mean
    beta: float | None = None


def default_strategies(betas: Sequence[float] = (0.5, 0.7, 0.8, 0.9, 0.95)) -> list[Strategy]:
    return [Strategy(f"ema-{b:g}", "ema", b) for b in betas] + [Strategy("sum", "sum"), Strategy("mean", "mean")]


@dataclass
class Step:
    t: int  # skills added so far
    scores: dict[str, list[float]]  # metric -> score of skill 0..t-1
    rank: int
    trunc_error: float
    norm: float

    def summary(self, metric: str) -> dict[str, float]:
        s = self.scores[metric]
        earlier = s[:-1]
        return {"newest": s[-1], "oldest": s[0], "mean_all": sum(s) / len(s),
                "mean_earlier": sum(earlier) / len(earlier) if earlier else float("nan")}


@dataclass
class Curve:
    strategy: Strategy
    steps: list[Step] = field(default_factory=list)

    def final(self, metric: str) -> list[float]:
        return self.steps[-1].scores[metric]


def measure(skills: Sequence[LoraWeights], strategies: Sequence[Strategy], max_rank: int = 64,
            scorers: dict[str, Scorer] | None = None) -> list[Curve]:
    """Add the skills one by one under each strategy and score every earlier skill after each addition."""
    scorers = scorers or SCORERS
    curves = []
    for strat in strategies:
        curve, persistent = Curve(strat), None
        for t in range(1, len(skills) + 1):
            if strat.kind == "ema":
                persistent, info = ema_update(persistent, skills[t - 1], strat.beta, max_rank=max_rank)
                err = info.max_rel_error
            else:  # recomputed from all skills so far: needs every skill adapter kept, unlike the EMA
                w = 1.0 if strat.kind == "sum" else 1.0 / t
                persistent, report = merge(skills[:t], [w] * t, max_rank=max_rank)
                err = report.max_rel_error
            scores = {m: [fn(persistent, i, skills[i]) for i in range(t)] for m, fn in scorers.items()}
            curve.steps.append(Step(t, scores, persistent.max_rank, err, norm(persistent)))
        curves.append(curve)
    return curves


# --- choosing β --------------------------------------------------------------------------------------------

def balance(curve: Curve, metric: str = "cosine", window: int = 5) -> float:
    """Mean over additions of min(newest skill's score, mean score of the last `window` earlier skills).

    Plasticity (the newest skill is in P) against stability (the recent library is still in P): a β
    near 0 keeps only the newest, a β near 1 freezes on the first skills; the minimum punishes both.
    """
    vals = []
    for step in curve.steps[1:]:
        s = step.scores[metric]
        recent = s[-1 - window:-1]
        vals.append(min(s[-1], sum(recent) / len(recent)))
    return sum(vals) / len(vals) if vals else float("nan")


def choose_beta(curves: Sequence[Curve], metric: str = "cosine", window: int = 5) -> tuple[float, dict[str, float]]:
    scored = {c.strategy.name: balance(c, metric, window) for c in curves}
    ema = [c for c in curves if c.strategy.kind == "ema"]
    best = max(ema, key=lambda c: scored[c.strategy.name])
    return float(best.strategy.beta), scored


# --- synthetic skills (no trained hypernetwork needed) ---------------------------------------------------

def synthetic_targets(layers: int = 4, hidden: int = 576, kv: int = 192) -> list[Target]:
    """q/v projections shaped like SmolLM2-135M's (hidden 576, 3 KV heads of 64)."""
    out = []
    for layer in range(layers):
        out.append(Target(layer, "q_proj", f"model.layers.{layer}.self_attn.q_proj", hidden, hidden))
        out.append(Target(layer, "v_proj", f"model.layers.{layer}.self_attn.v_proj", hidden, kv))
    return out


def synthetic_skills(n: int, targets: Sequence[Target], rank: int = 8, shared: float = 0.3, seed: int = 0,
                     blocks: int = 12, per_skill: int = 3, base_model: str = "synthetic") -> list[LoraWeights]:
    """n random adapters built like skills made of shared building blocks.

    Each skill's ΔW is √shared·(sum of `per_skill` of `blocks` common rank-2 components, the skill's "rules")
    plus √(1−shared)·(a private rank-`rank` part), each part at unit Frobenius norm per target, times a
    per-skill strength. shared=0 gives unrelated skills (ΔW near orthogonal); higher values, related ones.
    """
    gen = torch.Generator().manual_seed(seed)
    rng = random.Random(seed)

    def unit(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = float(torch.linalg.matrix_norm(b @ a))
        return a / math.sqrt(n), b / math.sqrt(n)

    pool = {t.key: [unit(torch.randn(2, t.in_features, generator=gen), torch.randn(t.out_features, 2, generator=gen))
                    for _ in range(blocks)] for t in targets}
    skills = []
    for _ in range(n):
        chosen = rng.sample(range(blocks), per_skill)
        strength = rng.uniform(0.7, 1.3)  # skills differ in strength, as generated adapters do
        factors = {}
        for t in targets:
            a_own, b_own = unit(torch.randn(rank, t.in_features, generator=gen),
                                torch.randn(t.out_features, rank, generator=gen))
            parts_a = [math.sqrt(1 - shared) * a_own] + [math.sqrt(shared / per_skill) * pool[t.key][j][0] for j in chosen]
            parts_b = [b_own] + [pool[t.key][j][1] for j in chosen]
            factors[t.key] = (torch.cat(parts_a) * strength, torch.cat(parts_b, dim=1))
        skills.append(LoraWeights(base_model, tuple(targets), factors))
    return skills


def from_store(store, base_model: str | None = None, limit: int = 30) -> list[LoraWeights]:
    """The store's skill adapters, oldest first (one per skill: its newest conversion), to measure on real
    hypernetwork outputs instead of synthetic ones."""
    from sqlalchemy import select

    from memory.adapters import checked_blob
    from memory.models import Adapter

    with store.session() as s:
        q = select(Adapter).where(Adapter.kind == "skill", Adapter.skill_id.is_not(None)).order_by(Adapter.id.desc())
        if base_model:
            q = q.where(Adapter.base_model == base_model)
        newest: dict[int, Adapter] = {}
        for row in s.scalars(q):
            newest.setdefault(row.skill_id, row)
        rows = sorted(newest.values(), key=lambda r: r.id)[:limit]
        return [LoraWeights.from_safetensors_bytes(checked_blob(r), expected_sha256=r.sha256) for r in rows]


def report(curves: Sequence[Curve], metrics: Sequence[str] = ("cosine", "retention")) -> dict:
    """JSON-ready: per strategy, per step, the summary of each metric plus rank, truncation error, norm."""
    out = {}
    for c in curves:
        out[c.strategy.name] = {
            "strategy": asdict(c.strategy),
            "steps": [{"t": s.t, "rank": s.rank, "trunc_error": round(s.trunc_error, 5), "norm": round(s.norm, 5),
                       **{m: {k: round(v, 5) for k, v in s.summary(m).items()} for m in metrics if m in s.scores}}
                      for s in c.steps],
            "final": {m: [round(v, 5) for v in c.final(m)] for m in metrics if m in c.steps[-1].scores},
        }
    return out
