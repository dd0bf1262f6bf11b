"""Standard PEFT LoRA folders (adapter_config.json + adapter_model.safetensors), both ways.

Export sets lora_alpha = r for every module (through rank_pattern/alpha_pattern, since merged adapters
have per-target ranks) and use_rslora = False, so PEFT's scaling is exactly 1 and ΔW = B @ A as stored.
r and lora_alpha (the most common rank) are equal too, so a loader that ignores the patterns and applies
one alpha/r to the whole adapter also gets a scaling of 1.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .config import HypernetError
from .lora import LoraWeights
from .targets import Target, find_targets

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
_PREFIX = "base_model.model."


def peft_config_dict(lora: LoraWeights, base_model_id: str | None = None) -> dict:
    ranks = {t.path: lora.ranks[t.key] for t in lora.targets}
    common = max(set(ranks.values()), key=list(ranks.values()).count)
    return {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": lora.base_model if base_model_id is None else base_model_id,
        "r": common,
        "lora_alpha": common,
        "rank_pattern": ranks,
        "alpha_pattern": dict(ranks),  # alpha = r per module: scaling exactly 1
        "use_rslora": False,
        "target_modules": sorted(ranks),
        "lora_dropout": 0.0,
        "bias": "none",
        "fan_in_fan_out": False,
        "use_dora": False,
        "init_lora_weights": True,
        "inference_mode": True,
        "modules_to_save": None,
    }


def export_peft(lora: LoraWeights, folder: str | os.PathLike, overwrite: bool = False, *,
                base_model_id: str | None = None) -> Path:
    """Write `lora` as a PEFT adapter folder, atomically (temp folder in the same parent, then rename).

    ``base_model_id`` is what adapter_config.json names as the base (default: ``lora.base_model``): give
    what transformers can load (a hub id or a folder), or AutoPeftModelForCausalLM cannot find the base.
    """
    folder = Path(folder)
    if not folder.parent.is_dir():
        raise HypernetError(f"cannot export to {folder}: parent folder {folder.parent} does not exist")
    if folder.exists() and not overwrite:
        raise HypernetError(f"{folder} already exists (pass overwrite=True to replace it)")
    tensors = {}
    for t in lora.targets:
        a, b = lora.factors[t.key]
        tensors[f"{_PREFIX}{t.path}.lora_A.weight"] = a.detach().cpu().contiguous()
        tensors[f"{_PREFIX}{t.path}.lora_B.weight"] = b.detach().cpu().contiguous()
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        save_file(tensors, tmp / WEIGHTS_NAME, metadata={"format": "pt"})
        (tmp / CONFIG_NAME).write_text(json.dumps(peft_config_dict(lora, base_model_id), indent=2, sort_keys=True)
                                       + "\n")
        publish_modes(tmp)
        if folder.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old-", dir=folder.parent))
            os.replace(folder, old / "x")
            os.replace(tmp, folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def publish_modes(folder: Path) -> None:
    """The modes mkdir and open would give (0755/0644 under the usual umask 022), for a folder whose maker
    chose private ones (mkdtemp: 0700, safetensors: 0600), so a server running as another user can read it."""
    mask = os.umask(0)
    os.umask(mask)
    folder.chmod(0o777 & ~mask)
    for f in folder.iterdir():
        f.chmod(0o666 & ~mask)


def _pattern_value(patterns: dict, path: str, default):
    """PEFT's rule: a pattern key matches a module whose name ends with it at a dot boundary."""
    for key, value in patterns.items():
        if re.match(rf"(.*\.)?({key})$", path):
            return value
    return default


def _target_of(path: str, in_features: int, out_features: int) -> Target:
    parts = path.split(".")
    layers = [int(p) for p in parts if p.isdigit()]
    if not layers:
        raise HypernetError(f"cannot tell the decoder layer of PEFT module {path!r}")
    return Target(layers[-1], parts[-1], path, in_features, out_features)


def model_targets(model: nn.Module) -> list[Target]:
    """Every nn.Linear of the model's decoder layers: what a LoRA for it may target."""
    names = sorted({p.rsplit(".", 1)[-1] for p, m in model.named_modules()
                    if isinstance(m, nn.Linear) and any(part.isdigit() for part in p.split("."))})
    if not names:
        raise HypernetError(f"{type(model).__name__} has no nn.Linear inside numbered decoder layers")
    return find_targets(model, names)


def base_targets(model_id: str) -> list[Target]:
    """model_targets of ``model_id``, built from its config on the meta device (no weights read)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(model_id)
    except (OSError, ValueError) as e:
        raise HypernetError(f"cannot read the config of base model {model_id!r}: {str(e).splitlines()[0]}") from None
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return model_targets(model)


def check_against_base(path: str, a: torch.Tensor, b: torch.Tensor, base: Sequence[Target]) -> None:
    """One module's factors against the base model's targets; one-line HypernetError on a mismatch."""
    target = _target_of(path, a.shape[1] if a.dim() == 2 else -1, b.shape[0] if b.dim() == 2 else -1)
    layers = max(t.layer for t in base) + 1
    modules = sorted({t.module for t in base})
    if target.layer >= layers:
        raise HypernetError(f"{path}: layer {target.layer} does not exist (the base model has layers 0-{layers - 1})")
    if target.module not in modules:
        raise HypernetError(f"{path}: unknown module {target.module!r} (the base model has {', '.join(modules)})")
    known = {t.key: t for t in base}
    want = known.get(target.key)
    if want is None:
        raise HypernetError(f"{path}: the base model has no {target.module} in layer {target.layer}")
    if a.dim() != 2 or b.dim() != 2 or a.shape[0] != b.shape[1] or (a.shape[1], b.shape[0]) != (
            want.in_features, want.out_features):
        raise HypernetError(
            f"{path}: shapes A{tuple(a.shape)} B{tuple(b.shape)} do not fit the base model's "
            f"{want.in_features}->{want.out_features} layer (need A r×{want.in_features}, B {want.out_features}×r)")


def import_peft(folder: str | os.PathLike, base_model: str | None = None,
                base: Sequence[Target] | None = None) -> LoraWeights:
    """Read a PEFT LoRA folder into LoraWeights, folding PEFT's alpha/r (or alpha/√r) scaling into B.

    Factors must be finite. With ``base`` (the base model's targets: ``model_targets(model)`` or
    ``base_targets(model_id)``), layer indices, module names and shapes are checked against it too,
    so a wrong adapter fails here, with one line, rather than later, at use.
    """
    folder = Path(folder)
    try:
        cfg = json.loads((folder / CONFIG_NAME).read_text())
        tensors = load_file(folder / WEIGHTS_NAME)
    except FileNotFoundError as e:
        raise HypernetError(f"{folder} is not a PEFT adapter folder with safetensors weights: {e}") from e
    except (ValueError, SafetensorError) as e:
        raise HypernetError(f"corrupted PEFT adapter in {folder}: {e}") from e
    if cfg.get("peft_type") != "LORA":
        raise HypernetError(f"not a LoRA adapter: peft_type {cfg.get('peft_type')!r}")
    if cfg.get("use_dora") or cfg.get("bias", "none") != "none" or cfg.get("fan_in_fan_out"):
        raise HypernetError("DoRA, LoRA biases and fan_in_fan_out adapters cannot be represented as B @ A")
    pairs: dict[str, dict[str, object]] = {}
    for name, tensor in tensors.items():
        m = re.fullmatch(r"base_model\.model\.(.+)\.lora_([AB])(?:\.[^.]+)?\.weight", name)
        if m is None:
            raise HypernetError(f"unexpected tensor {name!r} in PEFT adapter (not a LoRA factor)")
        pairs.setdefault(m.group(1), {})[m.group(2)] = tensor
    targets, factors = [], {}
    for path in sorted(pairs, key=lambda p: (_target_of(p, 0, 0).layer, p)):
        if set(pairs[path]) != {"A", "B"}:
            raise HypernetError(f"PEFT adapter has only one factor for {path}")
        a, b = pairs[path]["A"], pairs[path]["B"]
        for factor, tensor in (("lora_A", a), ("lora_B", b)):
            if not tensor.is_floating_point():
                raise HypernetError(f"{path}: {factor} is {tensor.dtype}, not a float tensor")
            if not bool(torch.isfinite(tensor).all()):
                raise HypernetError(f"{path}: {factor} holds NaN or infinite values")
        if base is not None:
            check_against_base(path, a, b, base)
        r = a.shape[0]
        alpha = float(_pattern_value(cfg.get("alpha_pattern") or {}, path, cfg.get("lora_alpha", r)))
        scaling = alpha / (math.sqrt(r) if cfg.get("use_rslora") else r)
        t = _target_of(path, a.shape[1], b.shape[0])
        targets.append(t)
        factors[t.key] = (a, b * scaling)
    name = base_model if base_model is not None else str(cfg.get("base_model_name_or_path") or "")
    return LoraWeights(name, tuple(targets), factors, {})
