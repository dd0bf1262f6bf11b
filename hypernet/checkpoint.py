"""Hypernetwork checkpoints: the learned parts (aggregator + generator) as one safetensors file.

The config, target list, hidden size and base model id live in the safetensors header, so a
checkpoint rebuilds its Hypernetwork without the base model and refuses to load for another one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from safetensors.torch import save as st_save

from .config import HypernetConfig, HypernetError
from .hypernetwork import Hypernetwork
from .lora import read_safetensors
from .targets import Target
from .trainstate import atomic_write

FORMAT = "parametric-skills-hypernet/1"
_HEADER_KEY = "parametric_skills_hypernet"


def hypernet_to_bytes(hn: Hypernetwork) -> bytes:
    header = {"format": FORMAT, "config": hn.config.to_dict(), "base_model": hn.base_model_id,
              "hidden_size": hn.hidden_size, "targets": [t.to_dict() for t in hn.targets]}
    tensors = {k: v.detach().cpu().contiguous() for k, v in hn.state_dict().items()}
    return st_save(tensors, metadata={_HEADER_KEY: json.dumps(header, sort_keys=True)})


def hypernet_from_bytes(data: bytes, base_model_id: str | None = None) -> Hypernetwork:
    """Rebuild a Hypernetwork; with `base_model_id`, a checkpoint trained for another base is refused."""
    header, tensors = read_safetensors(data, _HEADER_KEY, "hypernetwork checkpoint")
    if header.get("format") != FORMAT:
        raise HypernetError(f"not a hypernetwork checkpoint (format {header.get('format')!r})")
    if base_model_id is not None and header.get("base_model") != base_model_id:
        raise HypernetError(f"checkpoint was trained for base model {header.get('base_model')!r}, "
                            f"not {base_model_id!r}")
    try:
        config = HypernetConfig.from_dict(header["config"])
        targets = [Target.from_dict(t) for t in header["targets"]]
        hn = Hypernetwork(config, targets, int(header["hidden_size"]), str(header["base_model"]))
    except (KeyError, TypeError) as e:
        raise HypernetError(f"checkpoint header is incomplete: {e}") from e
    try:
        hn.load_state_dict(tensors, strict=True)
    except RuntimeError as e:  # missing/unexpected keys or shape mismatches
        raise HypernetError(f"checkpoint tensors do not fit its config: {e}") from e
    return hn


def save_hypernet(hn: Hypernetwork, path: str | os.PathLike) -> Path:
    """Write atomically: a half-written checkpoint never replaces a good one."""
    return atomic_write(path, hypernet_to_bytes(hn))


def load_hypernet(path: str | os.PathLike, base_model_id: str | None = None) -> Hypernetwork:
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise HypernetError(f"cannot read hypernetwork checkpoint {path}: {e}") from e
    return hypernet_from_bytes(data, base_model_id)
