"""The hypernetwork: skill tokens → frozen base states → aggregator → generator → LoRA factors.

Only the aggregator and the generator are learned; the base model is passed in, never owned, so one
loaded model serves generation, injection and inference alike.

    hn = Hypernetwork.for_model(base, HypernetConfig(), base_model_id="smollm2-135m-instruct")
    lora = hn.lora_from_ids(base, ids)                  # inference: one LoraWeights
    states, mask, chunks = hn.encode_batch(base, skills)  # training: cacheable frozen part
    factors = hn(states, mask, chunks)                  # differentiable {key: (A (S,R,in), B (S,out,R))}
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import HypernetConfig, HypernetError
from .encoder import build_aggregator, chunk_ids, encode_states
from .generator import LoraGenerator
from .lora import LoraWeights
from .merge import concat_factors
from .targets import Target, find_targets, target_linears

Factors = dict[str, tuple[Tensor, Tensor]]


def hidden_size_of(base: nn.Module) -> int:
    return base.get_input_embeddings().embedding_dim


def join_chunks(factors: Factors, chunks: Sequence[int]) -> Factors:
    """Per skill, rank-concatenate its chunk LoRAs with weight 1/n_chunks; zero-pad ranks to batch them.

    Zero rows of A and zero columns of B add nothing to ΔW, so padding is exact.
    """
    if all(c == 1 for c in chunks):
        return factors
    out: Factors = {}
    for key, (a, b) in factors.items():
        r_max = max(chunks) * a.shape[-2]
        a_rows, b_rows, start = [], [], 0
        for c in chunks:
            ai, bi = concat_factors([(a[j], b[j]) for j in range(start, start + c)], [1.0 / c] * c)
            a_rows.append(F.pad(ai, (0, 0, 0, r_max - ai.shape[0])))
            b_rows.append(F.pad(bi, (0, r_max - bi.shape[1])))
            start += c
        out[key] = (torch.stack(a_rows), torch.stack(b_rows))
    return out


class Hypernetwork(nn.Module):
    def __init__(self, config: HypernetConfig, targets: Sequence[Target], hidden_size: int, base_model_id: str):
        super().__init__()
        self.config = config
        self.targets = tuple(targets)
        self.hidden_size = hidden_size
        self.base_model_id = base_model_id
        self.aggregator = build_aggregator(hidden_size, config)
        self.generator = LoraGenerator(config, self.targets, self.aggregator.n_out)
        self.to(config.torch_dtype)

    @classmethod
    def for_model(cls, base: nn.Module, config: HypernetConfig, base_model_id: str) -> Hypernetwork:
        return cls(config, find_targets(base, config.target_modules), hidden_size_of(base), base_model_id)

    @property
    def dtype(self) -> torch.dtype:
        return self.generator.skill_proj.weight.dtype

    def check_base(self, base: nn.Module) -> None:
        """HypernetError unless `base` has this hypernetwork's target shapes and hidden size."""
        target_linears(base, self.targets)
        if hidden_size_of(base) != self.hidden_size:
            raise HypernetError(f"base hidden size {hidden_size_of(base)} != hypernetwork's {self.hidden_size}")

    # --- frozen part: cacheable ------------------------------------------------------------------
    def encode_batch(self, base: nn.Module,
                     skills: Sequence[Tensor | Sequence[int]]) -> tuple[Tensor, Tensor, list[int]]:
        """Token states of every chunk of every skill: (states (N, T, H), mask (N, T), chunks per skill)."""
        if len(skills) == 0:
            raise HypernetError("no skills to encode")
        pieces = [chunk_ids(ids, self.config.max_chunk_tokens) for ids in skills]
        width = max(ids.shape[1] for ids, _ in pieces)
        ids = torch.cat([F.pad(i, (0, width - i.shape[1])) for i, _ in pieces])
        mask = torch.cat([F.pad(m, (0, width - m.shape[1])) for _, m in pieces])
        states = encode_states(base, ids, mask, self.config.encoder_layer)
        return states, mask, [len(i) for i, _ in pieces]

    # --- learned part ---------------------------------------------------------------------------
    def aggregate(self, states: Tensor, mask: Tensor) -> Tensor:
        """Skill embedding per chunk: (N, n_latents, latent_dim) (n_latents = 1 for mean pooling)."""
        device = self.generator.skill_proj.weight.device
        return self.aggregator(states.to(device=device, dtype=self.dtype), mask.to(device).bool())

    def from_embedding(self, emb: Tensor, chunks: Sequence[int] | None = None) -> Factors:
        factors = self.generator(emb)
        return factors if chunks is None else join_chunks(factors, chunks)

    def forward(self, states: Tensor, mask: Tensor, chunks: Sequence[int] | None = None) -> Factors:
        """Differentiable LoRA factors per skill: {key: (A (S, R, in), B (S, out, R))}, R = rank × max chunks.

        Without `chunks`, every row of `states` is its own skill.
        """
        return self.from_embedding(self.aggregate(states, mask), chunks)

    @torch.no_grad()
    def generate(self, states: Tensor, mask: Tensor) -> LoraWeights:
        """One skill's LoraWeights from the token states of its chunks (all rows belong to that skill)."""
        factors = self(states, mask, [states.shape[0]])
        return LoraWeights(self.base_model_id, self.targets,
                           {k: (a[0].contiguous(), b[0].contiguous()) for k, (a, b) in factors.items()},
                           {"n_chunks": str(states.shape[0])})

    def lora_from_ids(self, base: nn.Module, ids: Tensor | Sequence[int]) -> LoraWeights:
        self.check_base(base)
        states, mask, _ = self.encode_batch(base, [ids])
        return self.generate(states, mask)
