"""Skill text → LoraWeights in one call, with the time of each stage."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn

from .config import HypernetError
from .hypernetwork import Hypernetwork
from .lora import LoraWeights


@dataclass(frozen=True)
class ConvertTimings:
    n_tokens: int
    n_chunks: int
    tokenize_ms: float
    encode_ms: float  # frozen base model forward (cacheable by content hash)
    generate_ms: float  # aggregator + generator

    @property
    def total_ms(self) -> float:
        return self.tokenize_ms + self.encode_ms + self.generate_ms


def convert(hypernet: Hypernetwork, base: nn.Module, tokenizer, text: str) -> tuple[LoraWeights, ConvertTimings]:
    hypernet.check_base(base)
    t0 = time.perf_counter()
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) == 0:
        raise HypernetError("empty skill: the text has no tokens")
    t1 = time.perf_counter()
    states, mask, _ = hypernet.encode_batch(base, [torch.tensor(ids)])
    t2 = time.perf_counter()
    lora = hypernet.generate(states, mask)
    t3 = time.perf_counter()
    return lora, ConvertTimings(len(ids), states.shape[0], 1e3 * (t1 - t0), 1e3 * (t2 - t1), 1e3 * (t3 - t2))
