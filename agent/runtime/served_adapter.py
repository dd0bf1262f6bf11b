"""A run's adapter on an OpenAI-compatible server that loads LoRA adapters at run time (vLLM).

vLLM takes adapters through `POST /v1/load_lora_adapter {"lora_name", "lora_path"}` and
`POST /v1/unload_lora_adapter {"lora_name"}` when it was started with `VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`
and `--enable-lora --max-lora-rank N`; a chat request then names the adapter as its model. `serve_adapter`
writes the adapter as a PEFT folder the server reads by path (so the server must see that path: same
machine, or a shared folder), loads it under a name no other run uses, yields a chat with that name, and
unloads it and removes the folder on every way out (an error, Ctrl-C). vLLM reads the files when it loads the
adapter and again whenever it evicted it from its CPU cache and a request needs it, so the folder lives until the
unload.

A request takes one adapter, so the run's adapters (the policy adapter and the merged skill adapter, which the
local path applies together) are summed exactly into one (`combine`: rank concatenation over the union of the
targeted modules).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import secrets
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.runtime.adapter_export import vllm_max_lora_rank
from agent.runtime.base_model import agent_home
from agent.runtime.endpoint import EndpointChat, EndpointError
from hypernet.lora import LoraWeights

LOAD_PATH = "/load_lora_adapter"
UNLOAD_PATH = "/unload_lora_adapter"
UNLOAD_TIMEOUT = 15.0  # on the way out (maybe after Ctrl-C): one quick try and a retry, not the chat's patience
SERVER_FLAGS = "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True and --enable-lora --max-lora-rank N"


def default_folder() -> Path:
    return agent_home() / "served-adapters"


def combine(adapters: Sequence[LoraWeights]) -> LoraWeights:
    """ΔW = Σ ΔWᵢ, exactly, over the union of the adapters' targets (ranks add where targets meet).

    hypernet.merge.merge needs equal targets; the policy adapter targets every linear layer and the
    hypernetwork's adapters only some, so they are stacked module by module here."""
    import torch

    adapters = list(adapters)
    if not adapters:
        raise ValueError("combine needs at least one adapter")
    if len(adapters) == 1:
        return adapters[0]
    base = adapters[0].base_model
    for other in adapters[1:]:
        if other.base_model != base:
            raise ValueError(f"adapters for different base models: {base!r} and {other.base_model!r}")
    targets, parts = {}, {}
    for lora in adapters:
        for t in lora.targets:
            known = targets.setdefault(t.key, t)
            if (known.in_features, known.out_features) != (t.in_features, t.out_features):
                raise ValueError(f"{t.key}: {known.in_features}->{known.out_features} in one adapter, "
                                 f"{t.in_features}->{t.out_features} in another")
            parts.setdefault(t.key, []).append(lora.factors[t.key])
    factors = {}
    for key, pairs in parts.items():
        dtype = pairs[0][0].dtype
        factors[key] = (torch.cat([a.to(dtype) for a, _ in pairs], dim=0),
                        torch.cat([b.to(dtype) for _, b in pairs], dim=1))
    ordered = sorted(targets.values(), key=lambda t: (t.layer, t.path))
    return LoraWeights(base, ordered, {t.key: factors[t.key] for t in ordered}, {})


def digest(lora: LoraWeights) -> str:
    return hashlib.sha256(lora.to_safetensors_bytes()).hexdigest()


@dataclass
class ServedAdapter:
    """What the trajectory records about the adapter a run chatted with."""

    name: str
    endpoint: str
    base_model: str  # what the PEFT folder names as its base: the model the server serves
    sha256: str
    max_rank: int
    modules: int
    folder: str
    parts: list[dict[str, Any]] = field(default_factory=list)

    def record(self) -> dict[str, Any]:
        return {"name": self.name, "endpoint": self.endpoint, "base_model": self.base_model, "sha256": self.sha256,
                "max_rank": self.max_rank, "modules": self.modules, "parts": self.parts,
                "server_flag": f"--max-lora-rank {vllm_max_lora_rank(self.max_rank) or self.max_rank}"}


def _post(chat: EndpointChat, path: str, body: dict, **options: Any) -> str:
    import openai

    client = chat.client.with_options(**options) if options else chat.client
    try:
        return str(client.post(path, cast_to=str, body=body))
    except openai.NotFoundError as exc:
        if _route_missing(exc):
            raise EndpointError(f"endpoint {chat.url} has no {path}: it does not load LoRA adapters at run time "
                                f"(vLLM needs {SERVER_FLAGS})") from None
        raise chat._error(exc) from None
    except openai.OpenAIError as exc:
        raise chat._error(exc) from None


def _route_missing(exc) -> bool:
    """A web framework's bare 404 for an unknown route ({"detail": "Not Found"}), not vLLM's own 404 answer
    about an adapter name ({"error": {"message": ..., "type": "NotFoundError"}})."""
    body = exc.body if isinstance(exc.body, dict) else {}
    return "type" not in body and "message" not in body


def probe(chat: EndpointChat) -> None:
    """Before any set-up: does the server take adapters at run time? vLLM's adapter API answers the unload of a
    name nobody loaded with a 404 that names it ("The lora adapter 'NAME' cannot be found."); a server without
    that API answers a 404 about the route (a bare {"detail": "Not Found"}, OpenAI's "Invalid URL", llama.cpp's
    "File Not Found"): EndpointError, with the flags to start vLLM with."""
    import openai

    name = f"parametric-skills-probe-{secrets.token_hex(4)}"
    quick = chat.client.with_options(max_retries=1, timeout=min(chat.timeout, UNLOAD_TIMEOUT))
    try:
        quick.post(UNLOAD_PATH, cast_to=str, body={"lora_name": name})
    except openai.APIStatusError as exc:
        if exc.status_code in (404, 405) and name not in f"{exc.body} {exc.message}":
            raise EndpointError(f"endpoint {chat.url} does not load LoRA adapters at run time (no {UNLOAD_PATH}): "
                                f"parametric mode needs a vLLM server started with {SERVER_FLAGS}") from None
        if exc.status_code not in (400, 404, 422):  # 400/422: the route is there and judged the body
            raise chat._error(exc) from None
    except openai.OpenAIError as exc:
        raise chat._error(exc) from None


def _load_error(chat: EndpointChat, err: EndpointError, lora: LoraWeights) -> EndpointError:
    text = str(err)
    if "max_lora_rank" in text or "max-lora-rank" in text:
        need = vllm_max_lora_rank(lora.max_rank)
        return EndpointError(f"{text} (this run's adapter has rank {lora.max_rank}: start the server with "
                             f"--max-lora-rank {need or lora.max_rank})")
    return err


@contextlib.contextmanager
def serve_adapter(chat: EndpointChat, lora: LoraWeights, base_model_id: str, *, folder: Path | None = None,
                  parts: list[dict[str, Any]] | None = None,
                  warn: Callable[[str], None] | None = None) -> Iterator[tuple[EndpointChat, ServedAdapter]]:
    """`lora` loaded on `chat`'s server for the duration of the block: yields (a chat whose model is the
    adapter's name, what to record). `base_model_id` is what the PEFT folder names as its base (the served
    model). Unloaded and removed on every exit; an unload that fails is told to `warn`, not raised (the run's
    own outcome or error comes first)."""
    from hypernet.peft_io import export_peft

    sha = digest(lora)
    name = f"parametric-skills-{sha[:12]}-{secrets.token_hex(3)}"
    root = Path(folder) if folder is not None else default_folder()
    root.mkdir(parents=True, exist_ok=True)
    path = (root / name).absolute()
    export_peft(lora, path, base_model_id=base_model_id)  # readable modes: the server may be another user
    served = ServedAdapter(name, chat.url, base_model_id, sha, lora.max_rank, len(lora.targets), str(path),
                           list(parts or []))
    loaded = False
    try:
        try:
            # vLLM answers a refused adapter (rank over its limit, a module it cannot serve) with a 500: one retry
            _post(chat, LOAD_PATH, {"lora_name": name, "lora_path": str(path)}, max_retries=1)
        except EndpointError as err:
            if "already been loaded" not in str(err):  # a retried load whose first try got through
                raise _load_error(chat, err, lora) from None
        loaded = True
        as_adapter = copy.copy(chat)
        as_adapter.model = name
        yield as_adapter, served
    finally:
        try:
            if loaded:
                _post(chat, UNLOAD_PATH, {"lora_name": name}, max_retries=1, timeout=UNLOAD_TIMEOUT)
        except (EndpointError, KeyboardInterrupt) as err:
            if warn is not None:
                warn(f"adapter {name} could not be unloaded from {chat.url} ({err or 'interrupted'}); it stays "
                     f"loaded until the server restarts or POST {chat.url}{UNLOAD_PATH} "
                     f'{{"lora_name": "{name}"}}')
        finally:
            shutil.rmtree(path, ignore_errors=True)
