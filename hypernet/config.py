"""Hypernetwork configuration and the package's own error type."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import torch


class HypernetError(ValueError):
    """Refused input: wrong base model, mismatched shapes, corrupted bytes, bad weights."""


_DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16, "float16": torch.float16}
_POOLINGS = ("perceiver", "mean")


@dataclass(frozen=True)
class HypernetConfig:
    rank: int = 8
    alpha: float = 16.0  # LoRA scaling alpha/rank is folded into B by the generator
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")
    # encoder: which entry of the base model's hidden_states to read. 0 = token embeddings,
    # i = output of decoder layer i-1, -1 = final (normed) hidden state. Python-style negatives.
    encoder_layer: int = -1
    pooling: str = "perceiver"  # "perceiver" (n_latents queries) or "mean" (one pooled vector)
    n_latents: int = 8
    latent_dim: int = 256
    n_heads: int = 4
    aggregator_depth: int = 1  # cross-attention blocks in the Perceiver aggregator
    # generator
    trunk_width: int = 512
    trunk_blocks: int = 2
    embed_dim: int = 64  # size of the learned layer and module-type embeddings
    max_chunk_tokens: int = 1024  # longer skills are chunked; chunk LoRAs are rank-concatenated
    dtype: str = "float32"

    def __post_init__(self) -> None:
        # JSON gives lists back; keep the tuple so configs compare equal after a round trip.
        object.__setattr__(self, "target_modules", tuple(self.target_modules))
        positive = ("rank", "n_latents", "latent_dim", "n_heads", "aggregator_depth", "trunk_width", "embed_dim",
                    "max_chunk_tokens")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise HypernetError(f"HypernetConfig.{name} must be a positive integer, got {value!r}")
        if self.trunk_blocks < 0:
            raise HypernetError(f"HypernetConfig.trunk_blocks must be >= 0, got {self.trunk_blocks!r}")
        if not self.alpha > 0:
            raise HypernetError(f"HypernetConfig.alpha must be > 0, got {self.alpha!r}")
        if not self.target_modules or not all(isinstance(m, str) and m for m in self.target_modules):
            raise HypernetError(f"HypernetConfig.target_modules must be non-empty names, got {self.target_modules!r}")
        if len(set(self.target_modules)) != len(self.target_modules):
            raise HypernetError(f"HypernetConfig.target_modules has duplicates: {self.target_modules!r}")
        if self.pooling not in _POOLINGS:
            raise HypernetError(f"HypernetConfig.pooling must be one of {_POOLINGS}, got {self.pooling!r}")
        if self.latent_dim % self.n_heads:
            raise HypernetError(f"latent_dim {self.latent_dim} is not divisible by n_heads {self.n_heads}")
        if self.dtype not in _DTYPES:
            raise HypernetError(f"HypernetConfig.dtype must be one of {sorted(_DTYPES)}, got {self.dtype!r}")

    @property
    def torch_dtype(self) -> torch.dtype:
        return _DTYPES[self.dtype]

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["target_modules"] = list(self.target_modules)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HypernetConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise HypernetError(f"unknown HypernetConfig fields: {sorted(unknown)}")
        return cls(**d)
