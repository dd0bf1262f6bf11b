"""The resumable training state: weights, optimizer, step, RNG states, history, as one safetensors file.

Tensors go in the safetensors body, everything else in one JSON header, so nothing is pickled and a
damaged file is refused with a clear error. Written atomically: temp file, fsync, rename.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save as st_save
from torch import Tensor

from .config import HypernetError
from .lora import read_safetensors

FORMAT = "parametric-skills-train-state/1"
_HEADER_KEY = "parametric_skills_train_state"


class TrainingError(HypernetError):
    """Refused training input: wrong data, base model or tokenizer, damaged state, a batch that does not fit."""


def atomic_write(path: str | os.PathLike, data: bytes) -> Path:
    """Write bytes so that a crash at any point leaves the previous file whole."""
    path = Path(path)
    if not path.parent.is_dir():
        raise TrainingError(f"cannot write {path}: parent folder {path.parent} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


@dataclass
class TrainState:
    step: int
    model: dict[str, Tensor]  # hypernetwork state_dict, full precision
    optimizer: dict[str, Any]  # torch optimizer state_dict
    rng: dict[str, Any]
    header: dict[str, Any] = field(default_factory=dict)  # hypernet header, run identity, train config, history


# --- RNG -------------------------------------------------------------------------------------------
def capture_rng() -> dict[str, Any]:
    rng: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    try:
        import numpy as np

        rng["numpy"] = np.random.get_state()
    except ImportError:
        pass
    return rng


def restore_rng(rng: dict[str, Any]) -> None:
    torch.set_rng_state(rng["torch"])
    random.setstate(rng["python"])
    if "cuda" in rng and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(rng["cuda"])
    if "numpy" in rng:
        import numpy as np

        np.random.set_state(rng["numpy"])


def _rng_split(rng: dict[str, Any]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    tensors = {"rng.torch": rng["torch"]}
    meta: dict[str, Any] = {"python": [rng["python"][0], list(rng["python"][1]), rng["python"][2]]}
    for i, s in enumerate(rng.get("cuda", [])):
        tensors[f"rng.cuda.{i}"] = s
    meta["n_cuda"] = len(rng.get("cuda", []))
    if "numpy" in rng:
        name, keys, pos, has_gauss, cached = rng["numpy"]
        tensors["rng.numpy"] = torch.from_numpy(keys.astype("int64"))
        meta["numpy"] = [name, int(pos), int(has_gauss), float(cached)]
    return tensors, meta


def _rng_join(tensors: dict[str, Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    version, state, gauss = meta["python"]
    rng: dict[str, Any] = {"torch": tensors["rng.torch"], "python": (version, tuple(state), gauss)}
    if meta.get("n_cuda"):
        rng["cuda"] = [tensors[f"rng.cuda.{i}"] for i in range(meta["n_cuda"])]
    if "numpy" in meta:
        import numpy as np

        name, pos, has_gauss, cached = meta["numpy"]
        rng["numpy"] = (name, tensors["rng.numpy"].numpy().astype(np.uint32), pos, has_gauss, cached)
    return rng


# --- (de)serialisation -----------------------------------------------------------------------------
def state_to_bytes(state: TrainState) -> bytes:
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in state.model.items()}
    opt_meta: dict[str, Any] = {"param_groups": state.optimizer["param_groups"], "state": {}}
    for idx, entry in state.optimizer["state"].items():
        plain = {}
        for key, value in entry.items():
            if isinstance(value, Tensor):
                tensors[f"optim.{idx}.{key}"] = value.detach().cpu().contiguous()
            else:
                plain[key] = value
        opt_meta["state"][str(idx)] = {"tensors": [k for k, v in entry.items() if isinstance(v, Tensor)],
                                       "plain": plain}
    rng_tensors, rng_meta = _rng_split(state.rng)
    tensors.update(rng_tensors)
    header = {"format": FORMAT, "step": state.step, "optimizer": opt_meta, "rng": rng_meta, **state.header}
    return st_save(tensors, metadata={_HEADER_KEY: json.dumps(header, sort_keys=True)})


def state_from_bytes(data: bytes) -> TrainState:
    try:
        header, tensors = read_safetensors(data, _HEADER_KEY, "training state")
    except HypernetError as e:
        raise TrainingError(str(e)) from None
    if header.get("format") != FORMAT:
        raise TrainingError(f"not a training state file (format {header.get('format')!r})")
    try:
        model = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
        opt_meta = header.pop("optimizer")
        opt_state = {}
        for idx, entry in opt_meta["state"].items():
            opt_state[int(idx)] = {**entry["plain"], **{k: tensors[f"optim.{idx}.{k}"] for k in entry["tensors"]}}
        optimizer = {"state": opt_state, "param_groups": opt_meta["param_groups"]}
        rng = _rng_join(tensors, header.pop("rng"))
        step = int(header.pop("step"))
    except (KeyError, TypeError, ValueError) as e:
        raise TrainingError(f"training state is incomplete or damaged: missing {e}") from None
    header.pop("format")
    return TrainState(step, model, optimizer, rng, header)


def save_state(state: TrainState, path: str | os.PathLike) -> Path:
    return atomic_write(path, state_to_bytes(state))


def load_state(path: str | os.PathLike) -> TrainState:
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise TrainingError(f"cannot read training state {path}: {e}") from None
    return state_from_bytes(data)
