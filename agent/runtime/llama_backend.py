"""A llama.cpp chat backend (llama-cpp-python) with the same `chat(messages) -> (text, tokens)` as LocalChat.

* One `Llama` object per backend: llama-cpp-python keeps the KV cache of the longest common token
  prefix between calls, so a turn only evaluates the tokens added since the previous turn. To keep the
  prefix stable we render whole messages with the GGUF's own chat template and, when over budget, drop
  the oldest turns after the first user message (never cut inside a message).
* Optional GBNF grammar (grammar.gbnf): every reply is an action the loop's parser accepts.
* GGUF LoRA adapters (the policy, the run's merged skill adapter) loaded and applied together at runtime
  on the same model (llama_adapter_lora_init + llama_set_adapters_lora), no model reload; changing them
  invalidates the prefix cache.

Measured against bare llama.cpp and the transformers backend in bench/bench_backends.py (README,
*Local generation backends*).
"""

from __future__ import annotations

import ctypes
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import llama_cpp
from llama_cpp import Llama, LlamaGrammar, StoppingCriteriaList
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

RESAMPLE_TEMPERATURE = 0.7  # as the sampling attempts of generate-and-validate
CUT_ROOM = 1024  # room (at most half the context) for a second try at a grammar reply the context's end cut


def draw_seed(seed: int, n: int) -> int:
    """The sampler's seed for a chat's n-th completion. llama.cpp restarts its random stream at each call's
    seed: with one seed for every turn, a prompt whose KV cache was warm got the same reply again, and a
    refused edit came back word for word, turn after turn. Distinct for every (seed, n) with n < 1,000,003, so
    one attempt's turns never replay another's (seed + n would: generate-and-validate's attempts have
    consecutive seeds)."""
    return (seed * 1_000_003 + n) % 2**32


@dataclass
class TurnStats:
    prompt_tokens: int = 0
    reused_tokens: int = 0  # prompt tokens whose KV came from the previous call
    completion_tokens: int = 0
    seconds: float = 0.0
    history: list = field(default_factory=list)


class LlamaChat:
    def __init__(self, gguf_path: str | os.PathLike, *, n_ctx: int = 2048, n_threads: int = 2,
                 max_new_tokens: int = 256, grammar: str | None = None, temperature: float = 0.0,
                 seed: int = 0, adapters: list[str | os.PathLike] | None = None, verbose: bool = False) -> None:
        self.llm = Llama(model_path=str(gguf_path), n_ctx=n_ctx, n_threads=n_threads,
                         n_threads_batch=n_threads, seed=seed, verbose=verbose)
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.seed = seed
        self.draws = 0  # completions so far: each samples with its own draw_seed
        self.grammar = LlamaGrammar.from_string(grammar, verbose=False) if grammar else None  # GBNF text
        meta = self.llm.metadata
        vocab = self.llm._model
        self._formatter = Jinja2ChatFormatter(
            template=meta["tokenizer.chat_template"],
            eos_token=vocab.token_get_text(self.llm.token_eos()),
            bos_token=vocab.token_get_text(self.llm.token_bos()),
            add_generation_prompt=True)
        self._adapters: dict[str, object] = {}  # path -> llama_adapter_lora pointer (freed with the model)
        self.adapters: list[str] = []
        self.stats = TurnStats()
        if adapters:
            self.set_adapters(adapters)

    # --- prompt --------------------------------------------------------------------------------
    def render(self, messages: list[dict[str, str]]) -> list[int]:
        text = self._formatter(messages=messages).prompt
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    def prompt_tokens(self, messages: list[dict[str, str]], room: int | None = None) -> list[int]:
        """The rendered prompt, oldest turns dropped until `room` tokens (default max_new_tokens) stay free."""
        budget = self.llm.n_ctx() - (room or self.max_new_tokens)
        msgs = list(messages)
        ids = self.render(msgs)
        while len(ids) > budget and len(msgs) > 3:
            del msgs[2]  # oldest turn after the system prompt and the task
            ids = self.render(msgs)
        if len(ids) > budget:  # a single huge message: keep its head and tail
            ids = ids[: budget // 4] + ids[-(budget - budget // 4):]
        return ids

    # --- generation ------------------------------------------------------------------------------
    def chat(self, messages: list[dict[str, str]]) -> tuple[str, int]:
        ids = self.prompt_tokens(messages)
        text, n_out, cut = self._complete(ids)
        spent = len(ids) + n_out
        if cut and self.grammar is not None:
            # Cut at the context's end: the block is still open, so the reply cannot parse. Once more with older
            # turns dropped for CUT_ROOM tokens of room; the grammar's bounded lines end a reply (actions.gbnf).
            ids = self.prompt_tokens(messages, room=min(max(CUT_ROOM, self.max_new_tokens), self.llm.n_ctx() // 2))
            text, n_out, _ = self._complete(ids)
            spent += len(ids) + n_out
        return text, spent

    def _complete(self, ids: list[int]) -> tuple[str, int, bool]:
        """(reply, its tokens, whether it was cut by the token cap) of one completion from the prompt `ids`."""
        reused = cached_prefix(self.llm, ids)
        # Under the grammar the cap is the context's room, not max_new_tokens (a cut reply cannot parse);
        # max_new_tokens is the room prompt_tokens keeps free.
        cap = self.max_new_tokens if self.grammar is None else self.llm.n_ctx() - len(ids)
        start = time.perf_counter()
        seed, self.draws = draw_seed(self.seed, self.draws), self.draws + 1
        out = self.llm.create_completion(
            prompt=ids, max_tokens=cap, temperature=self.temperature,
            top_k=0 if self.temperature > 0 else 40, top_p=1.0, min_p=0.0, repeat_penalty=1.0,
            seed=seed, grammar=self.grammar,
            stopping_criteria=None if self.grammar else StoppingCriteriaList([self._stop_after_block(len(ids))]))
        choice = out["choices"][0]
        n_out = out["usage"]["completion_tokens"]
        self.stats = TurnStats(len(ids), reused, n_out, time.perf_counter() - start)
        return choice["text"], n_out, choice["finish_reason"] == "length"

    def sample(self, messages: list[dict[str, str]], k: int) -> tuple[str, int]:
        """The k-th sampled alternative to the reply to `messages` (loop.Sampler): T = RESAMPLE_TEMPERATURE, a seed
        of its own per k; the prompt's KV cache is reused, so it costs only the new reply's tokens."""
        saved = self.temperature, self.seed
        self.temperature, self.seed = RESAMPLE_TEMPERATURE, saved[1] * 1000 + 500 + k  # never an attempt's seed
        try:
            return self.chat(messages)
        finally:
            self.temperature, self.seed = saved

    def _stop_after_block(self, prompt_len: int):
        """Free decoding: stop once the reply holds a complete fenced block (as LocalChat does)."""
        def stop(input_ids, logits) -> bool:
            new = input_ids[prompt_len:]
            return self.llm.detokenize(list(new)).count(b"```") >= 2
        return stop

    # --- adapters ----------------------------------------------------------------------------------
    def set_adapters(self, paths: list[str | os.PathLike], scale: float = 1.0) -> float:
        """Apply these GGUF LoRAs together (none: the base); returns the seconds spent loading them."""
        start = time.perf_counter()
        ctx = self.llm._ctx.ctx
        keys = [str(Path(p).resolve()) for p in paths]
        for key in keys:
            if key not in self._adapters:
                ptr = llama_cpp.llama_adapter_lora_init(self.llm._model.model, key.encode("utf-8"))
                if not ptr:
                    raise ValueError(f"llama.cpp could not load the LoRA adapter {key}")
                self._adapters[key] = ptr
        if keys:
            adapters = (llama_cpp.llama_adapter_lora_p_ctypes * len(keys))(*(self._adapters[k] for k in keys))
            scales = (ctypes.c_float * len(keys))(*([scale] * len(keys)))
            rc = llama_cpp.llama_set_adapters_lora(ctx, adapters, len(keys), scales)
        else:
            rc = llama_cpp.llama_set_adapters_lora(ctx, None, 0, None)
        if rc != 0:
            raise ValueError(f"llama_set_adapters_lora failed ({rc})")
        self.adapters = keys
        self.llm.reset()  # the cached KV was computed with the previous weights
        self.llm._ctx.kv_cache_clear()
        return time.perf_counter() - start

    def set_adapter(self, path: str | os.PathLike | None, scale: float = 1.0) -> float:
        return self.set_adapters([] if path is None else [path], scale)

    # --- logits (for tests) --------------------------------------------------------------------------
    def next_token_logits(self, ids: list[int]):
        """Logits after `ids` (fresh evaluation, cache cleared)."""
        self.llm.reset()
        self.llm._ctx.kv_cache_clear()
        self.llm.eval(ids)
        return self.last_logits()

    def last_logits(self):
        """Logits of the last evaluated token (a copy). llama-cpp-python fills `scores` only with logits_all."""
        import numpy as np
        ptr = llama_cpp.llama_get_logits_ith(self.llm._ctx.ctx, -1)
        return np.ctypeslib.as_array(ptr, shape=(self.llm.n_vocab(),)).copy()


def cached_prefix(llm, ids: list[int]) -> int:
    """How many leading tokens of `ids` the llama.cpp context already holds (what a turn need not prefill)."""
    reused = 0
    for a, b in zip(llm._input_ids[: llm.n_tokens], ids):
        if a != b:
            break
        reused += 1
    return reused
