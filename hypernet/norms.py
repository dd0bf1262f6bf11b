"""Sizes of and angles between adapters without forming ΔW: ⟨B₁A₁, B₂A₂⟩_F = tr((B₁ᵀB₂)(A₂A₁ᵀ)), r×r products."""

from __future__ import annotations

import math

import torch

from .lora import LoraWeights


def delta_norm(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float(torch.trace((b.T @ b) @ (a @ a.T)).clamp(min=0).sqrt())


def delta_norms(lora: LoraWeights) -> dict[str, float]:
    """Frobenius norm of ΔW per target key."""
    return {k: delta_norm(*lora.factors[k]) for k in lora.keys}


def inner(x: LoraWeights, y: LoraWeights) -> float:
    """Σ over targets of ⟨ΔW_x, ΔW_y⟩_F, from the factors (a target only one of them has adds 0)."""
    total = 0.0
    for key in (k for k in x.keys if k in y.factors):
        ax, bx = (t.double() for t in x.factors[key])
        ay, by = (t.double() for t in y.factors[key])
        total += float(torch.trace((bx.T @ by) @ (ay @ ax.T)))
    return total


def norm(x: LoraWeights) -> float:
    return math.sqrt(max(inner(x, x), 0.0))


def cosine(x: LoraWeights, y: LoraWeights) -> float:
    nx, ny = norm(x), norm(y)
    return inner(x, y) / (nx * ny) if nx > 0 and ny > 0 else 0.0


def retention(skill: LoraWeights, persistent: LoraWeights) -> float:
    n2 = inner(skill, skill)
    return inner(skill, persistent) / n2 if n2 > 0 else 0.0


def diff_norm(x: LoraWeights, y: LoraWeights) -> float:
    """‖ΔW_x − ΔW_y‖_F without forming either."""
    return math.sqrt(max(inner(x, x) - 2 * inner(x, y) + inner(y, y), 0.0))
