"""Skill encoder: frozen base-model token states, then a small learned aggregator.

The base part (`encode_states`) is frozen and deterministic, so callers may cache its output by
`states_cache_key`; only the aggregator (`PerceiverAggregator` or `MeanAggregator`) is trained.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import HypernetConfig, HypernetError
from .inject import adapter_applied
from .targets import decoder_layers


def chunk_ids(ids: Tensor | Sequence[int], max_tokens: int) -> tuple[Tensor, Tensor]:
    """Split a 1-D token sequence into rows of ≤ max_tokens: (ids (n, T), mask (n, T)). Never truncates."""
    ids = torch.as_tensor(ids, dtype=torch.long).flatten()
    if ids.numel() == 0:
        raise HypernetError("empty skill: zero tokens to encode")
    pieces = list(ids.split(max_tokens))
    width = len(pieces[0])
    out = torch.zeros(len(pieces), width, dtype=torch.long)
    mask = torch.zeros(len(pieces), width, dtype=torch.bool)
    for i, p in enumerate(pieces):  # the last chunk is right-padded; causal attention never sees the pad
        out[i, :len(p)] = p
        mask[i, :len(p)] = True
    return out, mask


def states_cache_key(ids: Tensor | Sequence[int], base_model: str, layer: int, max_tokens: int) -> str:
    """Content hash under which the frozen token states of a skill may be cached."""
    ids = torch.as_tensor(ids, dtype=torch.int64).flatten().contiguous()
    h = hashlib.sha256(f"{base_model}\0{layer}\0{max_tokens}\0".encode())
    h.update(ids.numpy().tobytes())
    return h.hexdigest()


class _Stop(Exception):
    """Raised by a hook once the wanted layer has run: the rest of the base model is skipped."""


@torch.no_grad()
def encode_states(base: nn.Module, input_ids: Tensor, attention_mask: Tensor | None = None,
                  layer: int = -1) -> Tensor:
    """Hidden states (n, T, H) of `base` at `layer` (an index into transformers' hidden_states).

    Refuses while an adapter is applied to `base`: skill states are defined on the frozen base model.
    """
    if adapter_applied(base):
        raise HypernetError("an adapter is applied to the base model; remove it before encoding a skill")
    if input_ids.dim() != 2 or input_ids.shape[1] == 0:
        raise HypernetError(f"input_ids must be (n, T) with T > 0, got {tuple(input_ids.shape)}")
    if attention_mask is not None and not attention_mask.bool().any(dim=1).all():
        raise HypernetError("a row of the skill batch has no tokens")
    _, layers = decoder_layers(base, ())
    n = len(layers)
    idx = layer if layer >= 0 else n + 1 + layer
    if not 0 <= idx <= n:
        raise HypernetError(f"encoder_layer {layer} out of range for a model with {n} layers")
    device = next(base.parameters()).device
    input_ids = input_ids.to(device)
    mask = None if attention_mask is None else attention_mask.to(device=device, dtype=torch.long)
    if idx == 0:
        return base.get_input_embeddings()(input_ids)
    backbone = getattr(base, "base_model", base)  # transformers: the decoder without the LM head
    if idx == n:
        return backbone(input_ids=input_ids, attention_mask=mask, use_cache=False).last_hidden_state
    captured: list[Tensor] = []

    def grab(module, args, output):
        captured.append(output[0] if isinstance(output, tuple) else output)
        raise _Stop

    hook = layers[idx - 1].register_forward_hook(grab)
    try:
        backbone(input_ids=input_ids, attention_mask=mask, use_cache=False)
    except _Stop:
        pass
    finally:
        hook.remove()
    return captured[0]


class CrossAttentionBlock(nn.Module):
    """Latents attend over token states, then an MLP; pre-norm residual, nanoGPT style."""

    def __init__(self, d: int, n_heads: int):
        super().__init__()
        self.n_heads = n_heads
        self.ln_q, self.ln_kv, self.ln_mlp = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.q = nn.Linear(d, d)
        self.kv = nn.Linear(d, 2 * d)
        self.proj = nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, x: Tensor, ctx: Tensor, mask: Tensor) -> Tensor:
        (b, n_lat, d), t, h = x.shape, ctx.shape[1], self.n_heads
        q = self.q(self.ln_q(x)).view(b, n_lat, h, d // h).transpose(1, 2)
        k, v = self.kv(self.ln_kv(ctx)).split(d, dim=-1)
        k = k.view(b, t, h, d // h).transpose(1, 2)
        v = v.view(b, t, h, d // h).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])
        x = x + self.proj(y.transpose(1, 2).reshape(b, n_lat, d))
        return x + self.mlp(self.ln_mlp(x))


class PerceiverAggregator(nn.Module):
    """n_latents learned queries read every token: a long recipe's steps survive (one pooled vector loses them)."""

    def __init__(self, hidden_size: int, cfg: HypernetConfig):
        super().__init__()
        d = cfg.latent_dim
        self.n_out = cfg.n_latents
        # LayerNorm first: raw residual-stream states of middle layers have a few huge outlier dims.
        self.inp = nn.Sequential(nn.LayerNorm(hidden_size), nn.Linear(hidden_size, d))
        self.latents = nn.Parameter(torch.randn(cfg.n_latents, d) * 0.02)
        self.blocks = nn.ModuleList(CrossAttentionBlock(d, cfg.n_heads) for _ in range(cfg.aggregator_depth))
        self.ln_out = nn.LayerNorm(d)

    def forward(self, states: Tensor, mask: Tensor) -> Tensor:
        ctx = self.inp(states)
        x = self.latents.expand(states.shape[0], -1, -1)
        for block in self.blocks:
            x = block(x, ctx, mask.bool())
        return self.ln_out(x)  # (n, n_latents, d)


class MeanAggregator(nn.Module):
    """Masked mean of the projected token states: one vector per chunk (Text-to-LoRA's choice)."""

    def __init__(self, hidden_size: int, cfg: HypernetConfig):
        super().__init__()
        self.n_out = 1
        self.inp = nn.Sequential(nn.LayerNorm(hidden_size), nn.Linear(hidden_size, cfg.latent_dim))
        self.ln_out = nn.LayerNorm(cfg.latent_dim)

    def forward(self, states: Tensor, mask: Tensor) -> Tensor:
        m = mask.to(states.dtype).unsqueeze(-1)
        x = self.inp(states)
        pooled = (x * m).sum(1) / m.sum(1).clamp_min(1.0)
        return self.ln_out(pooled).unsqueeze(1)  # (n, 1, d)


def build_aggregator(hidden_size: int, cfg: HypernetConfig) -> nn.Module:
    return (PerceiverAggregator if cfg.pooling == "perceiver" else MeanAggregator)(hidden_size, cfg)
