"""Which skills fit a task: cosine similarity of sentence embeddings over name + description."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from agent.runtime.embed import embed


@dataclass(frozen=True)
class Retrieved:
    name: str
    similarity: float
    weight: float


def skill_key(name: str, description: str) -> str:
    return f"{name.replace('-', ' ')}: {description}"


def top_k(task: str, skills: list[tuple[str, str]], k: int = 3, temperature: float = 0.05) -> list[Retrieved]:
    """The k most similar skills, with merge weights = softmax(similarity / temperature) over those k."""
    if not skills or k <= 0:
        return []
    vecs = embed([task] + [skill_key(n, d) for n, d in skills])
    sims = (vecs[1:] @ vecs[0]).tolist()
    order = sorted(range(len(skills)), key=lambda i: -sims[i])[:k]
    chosen = torch.tensor([sims[i] for i in order])
    weights = torch.softmax(chosen / temperature, dim=0).tolist()
    return [Retrieved(skills[i][0], round(sims[i], 4), round(w, 4)) for i, w in zip(order, weights)]
