"""Helpers for the hypernet tests: tiny random models and random adapters (no tokenizer, no hub)."""

from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from hypernet import HypernetConfig, LoraWeights, Target, find_targets

VOCAB = 512


def tiny_llama(seed: int = 0, dtype: torch.dtype = torch.float32, layers: int = 2) -> LlamaForCausalLM:
    """GQA on purpose: v_proj/k_proj (64→32) are narrower than q_proj (64→64)."""
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2)
    return LlamaForCausalLM(cfg).to(dtype).eval()


def tiny_qwen2(seed: int = 0, dtype: torch.dtype = torch.float32) -> Qwen2ForCausalLM:
    torch.manual_seed(seed)
    cfg = Qwen2Config(vocab_size=VOCAB, hidden_size=48, intermediate_size=96, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=1)
    return Qwen2ForCausalLM(cfg).to(dtype).eval()


def small_config(**overrides) -> HypernetConfig:
    base = dict(rank=4, alpha=8.0, n_latents=4, latent_dim=32, n_heads=4, trunk_width=64, trunk_blocks=1,
                embed_dim=16, max_chunk_tokens=32)
    base.update(overrides)
    return HypernetConfig(**base)


def random_lora(targets: list[Target], rank: int | dict[str, int] = 4, seed: int = 0,
                dtype: torch.dtype = torch.float64, base_model: str = "tiny", scale: float = 0.1) -> LoraWeights:
    g = torch.Generator().manual_seed(seed)
    factors = {}
    for t in targets:
        r = rank[t.key] if isinstance(rank, dict) else rank
        a = torch.randn(r, t.in_features, generator=g, dtype=dtype) * scale
        b = torch.randn(t.out_features, r, generator=g, dtype=dtype) * scale
        factors[t.key] = (a, b)
    return LoraWeights(base_model, tuple(targets), factors)


def synthetic_targets(shapes: list[tuple[int, int]], layers: int = 1) -> list[Target]:
    """Targets without a model: one module type per (in, out) shape, repeated over `layers`."""
    return [Target(i, f"m{j}", f"model.layers.{i}.m{j}", fin, fout)
            for i in range(layers) for j, (fin, fout) in enumerate(shapes)]


def llama_targets(model=None) -> list[Target]:
    return find_targets(model if model is not None else tiny_llama(), ("q_proj", "v_proj"))


def random_ids(n: int, seed: int = 0, batch: int | None = None) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    shape = (n,) if batch is None else (batch, n)
    return torch.randint(0, VOCAB, shape, generator=g)


def make_b_nonzero(hn, scale: float = 0.02, seed: int = 0) -> None:
    """Give the zero-initialised B heads random weights so that every parameter gets gradient."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for head in hn.generator.head_b.values():
            head.weight.copy_(torch.randn(head.weight.shape, generator=g, dtype=head.weight.dtype) * scale)
