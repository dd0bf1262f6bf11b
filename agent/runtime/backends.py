"""Chat backends for the agent loop: a local transformers model, or an OpenAI-compatible endpoint."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request

import torch


class EndpointError(ValueError):
    """An endpoint that cannot be reached or answers with an error."""


def _stop_after_block(tokenizer, prompt_len: int):
    from transformers import StoppingCriteria

    class StopAfterBlock(StoppingCriteria):
        """Stop decoding once the reply holds a complete fenced block: the loop reads only the first action."""

        def __call__(self, input_ids, scores, **kwargs) -> torch.Tensor:
            text = tokenizer.decode(input_ids[0, prompt_len:], skip_special_tokens=True)
            return torch.full((input_ids.shape[0],), text.count("```") >= 2, dtype=torch.bool,
                              device=input_ids.device)

    return StopAfterBlock()


def prompt_ids(tokenizer, messages: list[dict[str, str]], budget: int) -> torch.Tensor:
    """(1, T) chat-template ids with the generation prompt, cut to `budget` tokens."""
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                        return_dict=True)["input_ids"]
    if ids.shape[1] > budget:
        # keep the system prompt's effect by keeping the start and the most recent turns
        ids = torch.cat([ids[:, : budget // 4], ids[:, -(budget - budget // 4):]], dim=1)
    return ids


class LocalChat:
    """Decoding with the local model (greedy at temperature 0, else seeded sampling); whatever adapter is
    applied to it is in effect."""

    def __init__(self, model, tokenizer, max_new_tokens: int = 256, context: int | None = None,
                 stop_after_block: bool = True, temperature: float = 0.0, seed: int = 0) -> None:
        self.model = model
        self.temperature = temperature
        self.generator_seed = seed
        self.stop_after_block = stop_after_block
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self.context = context or getattr(model.config, "max_position_embeddings", 2048)

    @torch.no_grad()
    def chat(self, messages: list[dict[str, str]]) -> tuple[str, int]:
        ids = prompt_ids(self.tokenizer, messages, self.context - self.max_new_tokens)
        from transformers import StoppingCriteriaList

        ids = ids.to(self.model.device)
        stop = StoppingCriteriaList([_stop_after_block(self.tokenizer, ids.shape[1])] if self.stop_after_block else [])
        sampling = {"do_sample": False}
        if self.temperature > 0:
            torch.manual_seed(self.generator_seed)
            self.generator_seed += 1  # another draw next turn, the same sequence for the same seed
            sampling = {"do_sample": True, "temperature": self.temperature, "top_k": 0, "top_p": 1.0}
        out = self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), stopping_criteria=stop,
                                  max_new_tokens=self.max_new_tokens, **sampling,
                                  pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id)
        new = out[0, ids.shape[1]:]
        return self.tokenizer.decode(new, skip_special_tokens=True), int(ids.shape[1] + new.shape[0])


class EndpointChat:
    """Any OpenAI-compatible /chat/completions endpoint; skills can only go in context here."""

    def __init__(self, url: str, model: str, key_env: str = "OPENAI_API_KEY", timeout: float = 120.0,
                 max_tokens: int = 512) -> None:
        self.url = url.rstrip("/")
        if not self.url.startswith(("http://", "https://")):
            raise EndpointError(f"endpoint {url!r} must be an http(s) URL")
        self.model = model
        self.key = os.environ.get(key_env, "")
        self.timeout = timeout
        self.max_tokens = max_tokens

    def probe(self) -> None:
        """One tiny request, so a refused or wrong endpoint fails before a run sets anything up."""
        self.chat([{"role": "user", "content": "Reply with OK."}], max_tokens=1)

    def chat(self, messages: list[dict[str, str]], max_tokens: int | None = None) -> tuple[str, int]:
        body = json.dumps({"model": self.model, "messages": messages, "temperature": 0,
                           "max_tokens": max_tokens or self.max_tokens}).encode()
        url = self.url if self.url.endswith("/chat/completions") else f"{self.url}/chat/completions"
        req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json",
                                                              **({"Authorization": f"Bearer {self.key}"} if self.key else {})})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                data = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            raise EndpointError(f"endpoint {url} answered HTTP {exc.code}: {exc.reason}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise EndpointError(f"endpoint {url} unreachable: {getattr(exc, 'reason', exc)}") from None
        except json.JSONDecodeError:
            raise EndpointError(f"endpoint {url} did not answer JSON") from None
        try:
            text = data["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            raise EndpointError(f"endpoint {url} answered without choices[0].message.content") from None
        usage = data.get("usage") or {}
        return text, int(usage.get("total_tokens") or 0)
