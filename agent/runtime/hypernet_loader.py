"""Which hypernetwork converts skills: a checkpoint file, the shipped one, or a fresh untrained one."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from agent.runtime.base_model import LoadedModel
from hypernet.checkpoint import hypernet_from_bytes
from hypernet.config import HypernetConfig
from hypernet.hypernetwork import Hypernetwork
from memory import evolution as evo_repo
from memory.db import Store

# Trained checkpoints shipped inside the package, per built-in base model.
SHIPPED = {"smollm2-135m-instruct": Path(__file__).resolve().parents[1] / "data" / "hypernet-smollm2-135m.safetensors"}


@dataclass
class HypernetHandle:
    net: Hypernetwork
    ident: str  # part of the conversion cache key: changes whenever the weights do
    trained: bool
    checkpoint_id: int | None
    source: str


def register(store: Store, net: Hypernetwork, sha256: str, path: str | None, name: str) -> int:
    """The checkpoint's row (found by sha256, else added) so adapters can name their hypernetwork."""
    with store.session() as s:
        return evo_repo.checkpoint_by_sha(s, sha256, name=name, base_model=net.base_model_id,
                                          config=net.config.to_dict(), path=path, status="accepted").id


def load(loaded: LoadedModel, store: Store | None, checkpoint: str | None = None,
         config: HypernetConfig | None = None) -> HypernetHandle:
    path = Path(checkpoint) if checkpoint else SHIPPED.get(loaded.name)
    if path is not None and (checkpoint or path.is_file()):
        data = path.read_bytes() if path.is_file() else b""
        if not data:
            from hypernet.config import HypernetError

            raise HypernetError(f"hypernetwork checkpoint {path} does not exist")
        net = hypernet_from_bytes(data, base_model_id=loaded.name)
        sha = hashlib.sha256(data).hexdigest()
        cid = register(store, net, sha, str(path), path.stem) if store else None
        net.to(loaded.device)
        return HypernetHandle(net.eval(), f"ckpt-{sha[:16]}", True, cid, str(path))
    # No trained checkpoint: a seeded fresh one. Its B heads are zero, so its adapters change nothing.
    config = config or HypernetConfig()
    torch.manual_seed(0)
    net = Hypernetwork.for_model(loaded.model, config, base_model_id=loaded.name).to(loaded.device).eval()
    cfg_hash = hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True).encode()).hexdigest()[:12]
    return HypernetHandle(net, f"untrained-{cfg_hash}", False, None, "untrained (no checkpoint yet)")
