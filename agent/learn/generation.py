"""Greedy answers for many requests on the local model, each under its own adapter, batched.

generate_all drives continuous batching (generate_continuous) where the model's KV cache is a plain
per-layer one: up to batch_size rows decode together, and a row that finishes takes the next request at
once (its prompt prefilled alone, its KV put into the batch's cache). Otherwise static left-padded batches
(generate_batch). Either way a row's answer is what LocalChat gives for its request alone.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

try:
    from transformers.cache_utils import DynamicLayer
except ImportError:  # transformers 4: no per-layer cache objects, so static batches only (see _cache_arg)
    DynamicLayer = object

from agent.runtime.backends import prompt_ids
from hypernet.inject import LoraSlots, apply_lora_rows
from hypernet.lora import LoraWeights

# Rows decoded together by default. Decode on CPU is bound by reading the weights until ~16-32 rows share
# each read: the whole `agent eval` took 261 s at 32 rows against 359 s at 8 (bench_eval_wallclock.json).
BATCH_SIZE = 32


@dataclass
class Request:
    messages: list[dict[str, str]]
    lora: LoraWeights | None = None


def _left_pad(rows: list[torch.Tensor], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = r
        mask[i, width - len(r):] = 1
    return ids, mask


def _eos_ids(model, tokenizer) -> set[int]:
    eos = model.generation_config.eos_token_id
    eos = tokenizer.eos_token_id if eos is None else eos
    return set(eos) if isinstance(eos, (list, tuple)) else {eos}


def _cut_at_eos(tokens: list[int], eos: set[int]) -> list[int]:
    for i, t in enumerate(tokens):
        if t in eos:
            return tokens[: i + 1]
    return tokens


def _prompt(model, tokenizer, request: Request, max_new_tokens: int) -> torch.Tensor:
    context = getattr(model.config, "max_position_embeddings", 2048)  # as LocalChat
    return prompt_ids(tokenizer, request.messages, context - max_new_tokens)[0]


@torch.no_grad()
def generate_batch(model, tokenizer, requests: list[Request], max_new_tokens: int) -> list[str]:
    """Greedy answers for one batch: left-padded prompts, row i under requests[i].lora (or the base).

    Prompts and decoding match LocalChat's, so a row's answer is what LocalChat gives for it alone.
    """
    rows = [_prompt(model, tokenizer, r, max_new_tokens) for r in requests]
    pad_id = tokenizer.pad_token_id or tokenizer.eos_token_id  # as LocalChat
    ids, mask = _left_pad(rows, pad_id)
    device = next(model.parameters()).device
    with apply_lora_rows(model, [r.lora for r in requests]):
        out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                             max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad_id)
    eos = _eos_ids(model, tokenizer)
    # finished rows are padded to the batch's length: cut each at its first EOS before decoding
    return [tokenizer.decode(_cut_at_eos(row.tolist(), eos), skip_special_tokens=True)
            for row in out[:, ids.shape[1]:].cpu()]


def generate_all(model, tokenizer, requests: list[Request], max_new_tokens: int, batch_size: int,
                 on_batch: Callable[[list[int], float], None] | None = None) -> list[str]:
    """Answers in request order, by continuous batching (`generate_continuous`) where the model's KV cache
    is a plain per-layer one, else by static batches (`generate_batch`), longest prompt first either way."""
    if _cache_arg(model):
        return generate_continuous(model, tokenizer, requests, max_new_tokens, batch_size, on_batch)
    lengths = [len(_prompt(model, tokenizer, r, max_new_tokens)) for r in requests]
    order = sorted(range(len(requests)), key=lambda i: -lengths[i])
    answers: list[str] = [""] * len(requests)
    for k in range(0, len(order), batch_size):
        chunk = order[k:k + batch_size]
        start = time.perf_counter()
        for i, text in zip(chunk, generate_batch(model, tokenizer, [requests[i] for i in chunk], max_new_tokens)):
            answers[i] = text
        if on_batch:
            on_batch(chunk, time.perf_counter() - start)
    return answers


def _cache_arg(model) -> str | None:
    """The forward's cache argument if continuous batching can drive this model's cache (one growing
    tensor pair per layer, transformers 5), else None."""
    import inspect

    try:
        from transformers import DynamicCache

        layers = DynamicCache(config=model.config).layers
    except (ImportError, TypeError, AttributeError):
        return None
    if not layers or any(type(layer) is not DynamicLayer for layer in layers):
        return None
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


class _Batch:
    """The running rows: their KV cache (left-padded to one width), attention mask, positions, last tokens."""

    def __init__(self, model, rows: int, device) -> None:
        from transformers import DynamicCache

        self.cache = DynamicCache(config=model.config)
        self.cache.layers = [_KVRows() for _ in self.cache.layers]  # tensors: (rows, heads, width, dim)
        self.mask = torch.zeros(rows, 0, dtype=torch.long, device=device)
        self.pos = torch.zeros(rows, dtype=torch.long, device=device)
        self.last = torch.zeros(rows, dtype=torch.long, device=device)

    def put(self, slot: int, kv, first: int) -> None:
        """Row `slot` continues from a prompt prefilled alone (kv: its cache, batch 1)."""
        width, length = self.mask.shape[1], kv.layers[0].keys.shape[-2]
        for layer, new in zip(self.cache.layers, kv.layers):
            if not layer.is_initialized:  # the first request: empty rows of its heads, dims and dtype
                layer.lazy_initialization(new.keys, new.values)
                layer.hold(new.keys.new_zeros(self.mask.shape[0], new.keys.shape[1], width, new.keys.shape[3]),
                           new.values.new_zeros(self.mask.shape[0], new.values.shape[1], width, new.values.shape[3]))
        if length > width:  # the new prompt is longer than the batch so far: widen every row on the left
            for layer in self.cache.layers:
                layer.hold(_pad_left(layer.keys, length - width), _pad_left(layer.values, length - width))
            self.mask = torch.cat([self.mask.new_zeros(self.mask.shape[0], length - width), self.mask], 1)
            width = length
        for layer, new in zip(self.cache.layers, kv.layers):
            layer.keys[slot] = _pad_left(new.keys, width - length)[0]
            layer.values[slot] = _pad_left(new.values, width - length)[0]
        self.mask[slot] = 0
        self.mask[slot, width - length:] = 1
        self.pos[slot], self.last[slot] = length, first

    def keep(self, rows: list[int]) -> None:
        idx = torch.tensor(rows, dtype=torch.long, device=self.mask.device)
        for layer in self.cache.layers:
            layer.hold(layer.keys[idx], layer.values[idx])
        self.mask, self.pos, self.last = self.mask[idx], self.pos[idx], self.last[idx]

    def trim(self) -> None:
        """Drop leading columns that no row attends to any more (their requests finished)."""
        used = self.mask.any(0).nonzero()
        start = int(used[0]) if len(used) else self.mask.shape[1]
        if start:
            for layer in self.cache.layers:
                layer.drop_front(start)
            self.mask = self.mask[:, start:]


class _KVRows(DynamicLayer):
    """One layer of the batch's KV cache, held in a buffer with room past its end: a decode step writes
    its position in place. DynamicLayer.update concatenates, copying the whole cache for every token of
    every layer; at batch 32 that copy was ~30 % of `agent eval`'s wall time (py-spy). `keys`/`values`
    stay views of the filled columns, so attention and the rest of the cache API read them as before."""

    def hold(self, keys: Tensor, values: Tensor) -> None:
        """Take these tensors as the cache (copied into a new buffer, with room for about half as much again)."""
        width = keys.shape[-2]
        room = width + width // 2 + 64
        self._k = keys.new_empty(*keys.shape[:2], room, keys.shape[3])
        self._v = values.new_empty(*values.shape[:2], room, values.shape[3])
        self._k[:, :, :width], self._v[:, :, :width] = keys, values
        self._start, self._end = 0, width
        self._views()

    def drop_front(self, n: int) -> None:
        self._start += n
        self._views()

    def update(self, key_states: Tensor, value_states: Tensor, *args, **kwargs) -> tuple[Tensor, Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
            self.hold(key_states, value_states)
            return self.keys, self.values
        add = key_states.shape[-2]
        if self._end + add > self._k.shape[-2]:
            self.hold(torch.cat([self.keys, key_states], -2), torch.cat([self.values, value_states], -2))
            return self.keys, self.values
        self._k[:, :, self._end:self._end + add] = key_states
        self._v[:, :, self._end:self._end + add] = value_states
        self._end += add
        self._views()
        return self.keys, self.values

    def _views(self) -> None:
        self.keys, self.values = self._k[:, :, self._start:self._end], self._v[:, :, self._start:self._end]


def _pad_left(x: Tensor, n: int) -> Tensor:
    return torch.cat([x.new_zeros(*x.shape[:2], n, x.shape[3]), x], 2) if n else x


@torch.no_grad()
def generate_continuous(model, tokenizer, requests: list[Request], max_new_tokens: int, batch_size: int,
                        on_done: Callable[[list[int], float], None] | None = None) -> list[str]:
    """Greedy answers, up to batch_size rows at a time, each row under its request's adapter; a finished
    row (end of text or max_new_tokens) takes the next request at once. Requests go longest prompt first.

    A new request is prefilled alone (as LocalChat would: same prompt, positions from 0) and its KV put
    into the batch's cache, left-padded under a zero mask; decoding then feeds every row its own position,
    so a row's answer is its unbatched greedy answer. on_done([i], seconds) follows each answer, seconds
    being request i's share of the wall time.
    """
    from transformers import DynamicCache

    name = _cache_arg(model)
    prompts = [_prompt(model, tokenizer, r, max_new_tokens) for r in requests]
    queue = deque(sorted(range(len(requests)), key=lambda i: -len(prompts[i])))
    eos = _eos_ids(model, tokenizer)
    device = next(model.parameters()).device
    answers: list[str] = [""] * len(requests)
    slots_n = min(batch_size, len(requests))
    if not slots_n:
        return answers
    batch = _Batch(model, slots_n, device)
    with LoraSlots(model, [r.lora for r in requests], slots_n) as loras:
        def admit(slot: int) -> bool:
            """Start the next request in row `slot`; False if it finished at its first token."""
            i = queue.popleft()
            start = time.perf_counter()
            loras.set(slot, requests[i].lora)
            with loras.only(slot):
                out = model(input_ids=prompts[i][None].to(device), use_cache=True, logits_to_keep=1,
                            **{name: DynamicCache(config=model.config)})
            first = int(out.logits[0, -1].argmax())
            batch.put(slot, out[name], first)
            owner[slot], tokens[slot], share[slot] = i, [first], time.perf_counter() - start
            return not (first in eos or max_new_tokens <= 1)

        def finish(slot: int) -> None:
            i = owner[slot]
            answers[i] = tokenizer.decode(_cut_at_eos(tokens[slot], eos), skip_special_tokens=True)
            if on_done:
                on_done([i], share[slot])

        def refill(slot: int) -> bool:
            """Finish row `slot` and refill it until a request is running there; False if the queue ran out."""
            finish(slot)
            while queue:
                if admit(slot):
                    return True
                finish(slot)
            return False

        owner, tokens, share = [-1] * slots_n, [[] for _ in range(slots_n)], [0.0] * slots_n
        live = [slot for slot in range(slots_n) if queue and (admit(slot) or refill(slot))]
        if len(live) < slots_n:  # the queue ran out while filling (answers that ended at their first token)
            batch.keep(live)
            loras.keep(live)
            owner, tokens, share = [owner[s] for s in live], [tokens[s] for s in live], [share[s] for s in live]

        while owner:
            start = time.perf_counter()
            mask = torch.cat([batch.mask, batch.mask.new_ones(len(owner), 1)], 1)
            out = model(input_ids=batch.last[:, None], attention_mask=mask, position_ids=batch.pos[:, None],
                        use_cache=True, logits_to_keep=1, **{name: batch.cache})
            batch.mask, batch.pos = mask, batch.pos + 1
            batch.last = out.logits[:, -1].argmax(-1)
            step = (time.perf_counter() - start) / len(owner)
            keep = []
            for row, tok in enumerate(batch.last.tolist()):
                tokens[row].append(tok)
                share[row] += step
                if (tok not in eos and len(tokens[row]) < max_new_tokens) or refill(row):
                    keep.append(row)
            if len(keep) < len(owner):
                batch.keep(keep)
                loras.keep(keep)
                owner, tokens, share = [owner[r] for r in keep], [tokens[r] for r in keep], [share[r] for r in keep]
            batch.trim()
    return answers
