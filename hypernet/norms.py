"""Sizes of adapters without forming ΔW: ‖BA‖_F² = trace((BᵀB)(AAᵀ)), an r×r product."""

from __future__ import annotations

import torch

from .lora import LoraWeights


def delta_norm(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float(torch.trace((b.T @ b) @ (a @ a.T)).clamp(min=0).sqrt())


def delta_norms(lora: LoraWeights) -> dict[str, float]:
    """Frobenius norm of ΔW per target key."""
    return {k: delta_norm(*lora.factors[k]) for k in lora.keys}
