"""LoRA generator: [skill embedding; layer embedding; module embedding] → residual MLP → A, B heads.

All targets of all skills go through the trunk in one batched pass; one head pair per module type.
B's head starts at zero, so an untrained hypernetwork gives ΔW = 0 exactly and the model is unchanged;
A starts at the scale of PEFT's kaiming-uniform LoRA A, so B receives gradient from the first step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .config import HypernetConfig, HypernetError
from .targets import Target


class ResidualBlock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.ln = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.Linear(width, width))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.mlp(self.ln(x))


class LoraGenerator(nn.Module):
    def __init__(self, cfg: HypernetConfig, targets: Sequence[Target], n_latents: int):
        super().__init__()
        self.targets = list(targets)
        self.rank, self.scaling = cfg.rank, cfg.scaling
        self.module_types = list(dict.fromkeys(t.module for t in self.targets))
        shapes: dict[str, tuple[int, int]] = {}
        for t in self.targets:  # one head per module type needs one shape per module type
            if shapes.setdefault(t.module, (t.in_features, t.out_features)) != (t.in_features, t.out_features):
                raise HypernetError(f"{t.module} has different shapes across layers; one head cannot serve them")
        self.shapes = shapes
        w, e, r = cfg.trunk_width, cfg.embed_dim, cfg.rank
        self.skill_proj = nn.Linear(n_latents * cfg.latent_dim, w)
        self.layer_emb = nn.Embedding(max(t.layer for t in self.targets) + 1, e)
        self.module_emb = nn.Embedding(len(self.module_types), e)
        self.inp = nn.Linear(w + 2 * e, w)
        self.trunk = nn.Sequential(*[ResidualBlock(w) for _ in range(cfg.trunk_blocks)])
        self.ln_out = nn.LayerNorm(w)
        self.head_a = nn.ModuleDict({m: nn.Linear(w, r * i) for m, (i, o) in shapes.items()})
        self.head_b = nn.ModuleDict({m: nn.Linear(w, o * r) for m, (i, o) in shapes.items()})
        for head in self.head_b.values():
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)
        self.register_buffer("layer_idx", torch.tensor([t.layer for t in self.targets]), persistent=False)
        self.register_buffer("module_idx", torch.tensor([self.module_types.index(t.module) for t in self.targets]),
                             persistent=False)
        self._positions = {m: [j for j, t in enumerate(self.targets) if t.module == m] for m in self.module_types}

    def forward(self, emb: Tensor) -> dict[str, tuple[Tensor, Tensor]]:
        """emb (S, n_latents, d) → {key: (A (S, r, in), B (S, out, r))} with scaling folded into B."""
        s, n_t = emb.shape[0], len(self.targets)
        skill = self.skill_proj(emb.flatten(1))  # (S, w)
        where = torch.cat([self.layer_emb(self.layer_idx), self.module_emb(self.module_idx)], dim=-1)  # (T, 2e)
        x = torch.cat([skill[:, None].expand(-1, n_t, -1), where[None].expand(s, -1, -1)], dim=-1)
        h = self.ln_out(self.trunk(self.inp(x)))  # (S, T, w)
        out: dict[str, tuple[Tensor, Tensor]] = {}
        for m, pos in self._positions.items():
            (i, o), r = self.shapes[m], self.rank
            hm = h[:, pos]
            # Default head init on LayerNormed input gives std ≈ 1/√3; × 1/√in makes A's std 1/√(3·in),
            # the std of PEFT's kaiming-uniform LoRA A.
            a = self.head_a[m](hm).view(s, len(pos), r, i) * (1.0 / math.sqrt(i))
            b = self.head_b[m](hm).view(s, len(pos), o, r) * self.scaling
            for j, p in enumerate(pos):
                out[self.targets[p].key] = (a[:, j], b[:, j])
        return {t.key: out[t.key] for t in self.targets}
