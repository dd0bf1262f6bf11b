"""The local model as a chat for one run, with the run's adapters in effect: the policy adapter and the
merged skill adapter (parametric mode).

Two backends behind the loop's `ChatModel`:
- `llama` (default for the embedded model): llama.cpp on the embedded Q4_1 GGUF, the adapters as GGUF
  LoRAs, every reply decoded under the action grammar (actions.gbnf), the prompt prefix's KV reused
  across turns;
- `torch`: transformers on the dequantized weights, the adapters merged into them for the run; replies
  are free text and go through the loop's parse + format-error path.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from pathlib import Path

from agent.runtime.backends import LocalChat
from agent.runtime.base_model import EMBEDDED, LoadedModel, agent_home, embedded_gguf
from hypernet.inject import apply_lora
from hypernet.lora import LoraWeights

BACKENDS = ("llama", "torch")
SHIPPED_POLICY = {"smollm2-135m-instruct": Path(__file__).resolve().parents[1] / "data" / "policy-smollm2-135m"}


class BackendError(ValueError):
    """A backend that cannot serve this model here (one line for the user)."""


def llama_available() -> bool:
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return False
    return True


def default_backend(model_name: str) -> str:
    return "llama" if model_name in EMBEDDED and llama_available() else "torch"


def load_policy(spec: str | None, loaded: LoadedModel) -> LoraWeights | None:
    """The policy adapter: a PEFT folder, "none", or (None) the one shipped for this base model if any."""
    from hypernet.peft_io import import_peft, model_targets

    if spec == "none":
        return None
    path = Path(spec) if spec else SHIPPED_POLICY.get(loaded.name)
    if path is None or (spec is None and not path.is_dir()):
        return None
    if not path.is_dir():
        raise BackendError(f"policy adapter {path}: no such folder")
    return import_peft(path, base_model=loaded.name, base=model_targets(loaded.model))


# The factors' type in the GGUF LoRA llama.cpp applies at every token (f32, f16 or q8_0): see bench_backends.
GGUF_LORA_DTYPE = "f32"


def gguf_adapter(lora: LoraWeights, base_gguf: Path, dtype: str = GGUF_LORA_DTYPE) -> Path:
    """The adapter as a GGUF LoRA, cached by content and type (the same merged adapter is written once)."""
    from hypernet.gguf_io import export_gguf_lora

    digest = hashlib.sha256(lora.to_safetensors_bytes()).hexdigest()[:20]
    path = agent_home() / "gguf-lora" / (f"{digest}.gguf" if dtype == "f32" else f"{digest}.{dtype}.gguf")
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        export_gguf_lora(lora, path, base_gguf, dtype=dtype)
    return path


def merged_gguf(lora: LoraWeights, base_gguf: Path, qtype: str = "q8_0") -> Path:
    """The base GGUF with the adapter merged into its weights (requantized to `qtype`), cached by content:
    llama.cpp then runs it at the model's own price (bench_backends: llama+merged-*)."""
    from hypernet.gguf_io import from_lora_weights, write_merged_gguf

    digest = hashlib.sha256(lora.to_safetensors_bytes()).hexdigest()[:20]
    path = agent_home() / "gguf-merged" / f"{base_gguf.stem}+{digest}.{qtype}.gguf"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_merged_gguf(path, from_lora_weights(lora), base_gguf, qtype=qtype)
    return path


@contextlib.contextmanager
def open_local_chat(loaded: LoadedModel, adapters: list[LoraWeights], *, backend: str, max_new_tokens: int = 256,
                    seed: int = 0, temperature: float = 0.0, n_ctx: int = 4096) -> Iterator[object]:
    """A ChatModel for one run with `adapters` in effect until the block ends."""
    if backend == "llama":
        if loaded.name not in EMBEDDED:
            raise BackendError(f"--backend llama serves the embedded models ({', '.join(EMBEDDED)}), "
                               f"not {loaded.name!r}: use --backend torch")
        if not llama_available():
            raise BackendError("--backend llama needs llama-cpp-python (pip install llama-cpp-python)")
        from agent.runtime.actions import GRAMMAR_PATH
        from agent.runtime.llama_backend import LlamaChat

        base = embedded_gguf(loaded.name)
        files = [gguf_adapter(a, base) for a in adapters]
        yield LlamaChat(base, n_ctx=n_ctx, max_new_tokens=max_new_tokens, grammar=GRAMMAR_PATH.read_text(),
                        temperature=temperature, seed=seed, adapters=files)
        return
    if backend != "torch":
        raise BackendError(f"unknown backend {backend!r} (one of {', '.join(BACKENDS)})")
    with contextlib.ExitStack() as stack:
        for lora in adapters:
            stack.enter_context(apply_lora(loaded.model, lora, mode="merge", base_model=loaded.name))
        yield LocalChat(loaded.model, loaded.tokenizer, max_new_tokens=max_new_tokens, temperature=temperature,
                        seed=seed)
