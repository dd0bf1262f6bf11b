"""Adapter math: exact rank-concatenation merge and optimal low-rank recompression.

Σ wᵢ BᵢAᵢ = [B₁ … B_k] · [w₁A₁; …; w_kA_k]: stacking along the rank axis is exact (ranks add), with the
weight on one factor only (no square roots, so negative weights work). Recompression to rank k takes
QR of the stacked B and Aᵀ, an SVD of the small core R_B·R_Aᵀ, and keeps the top k singular triplets:
the optimal rank-k approximation (Eckart–Young) without ever forming the out×in matrix.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .config import HypernetError
from .lora import LoraWeights, check_same_targets

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MergeReport:
    weights: tuple[float, ...]
    stacked_ranks: dict[str, int]  # rank after concatenation, before recompression
    ranks: dict[str, int]  # final rank per target
    rel_errors: dict[str, float]  # ‖ΔW − ΔW_k‖_F / ‖ΔW‖_F per target; 0.0 where nothing was truncated

    @property
    def max_rel_error(self) -> float:
        return max(self.rel_errors.values(), default=0.0)


def check_weights(weights: Sequence[float], n: int) -> list[float]:
    w = [float(x) for x in weights]
    if n == 0:
        raise HypernetError("nothing to merge: the adapter list is empty")
    if len(w) != n:
        raise HypernetError(f"{n} adapters but {len(w)} weights")
    if not all(math.isfinite(x) for x in w):
        raise HypernetError(f"merge weights must be finite, got {w}")
    if all(x == 0.0 for x in w):
        raise HypernetError("all merge weights are zero: the merged adapter would be empty")
    return w


def concat_factors(pairs: Sequence[tuple[Tensor, Tensor]], weights: Sequence[float]) -> tuple[Tensor, Tensor]:
    """Exact Σ wᵢ BᵢAᵢ as one (A, B) pair of rank Σ rᵢ; differentiable, works on batched (…, r, in) factors."""
    a = torch.cat([w * a for (a, _), w in zip(pairs, weights)], dim=-2)
    b = torch.cat([b for _, b in pairs], dim=-1)
    return a, b


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


@torch.no_grad()
def recompress_factors(a: Tensor, b: Tensor, max_rank: int) -> list[tuple[Tensor, Tensor, float]]:
    """Best rank-≤max_rank factors of B @ A for a batch a: (n, R, in), b: (n, out, R).

    Returns per batch element (A_k, B_k, relative Frobenius truncation error). Numerically zero singular
    directions are dropped too, so e.g. the EMA of identical adapters keeps their rank.
    """
    if max_rank < 1:
        raise HypernetError(f"max_rank must be >= 1, got {max_rank}")
    dtype, work = a.dtype, _work_dtype(a.dtype)
    a, b = a.detach().to(work), b.detach().to(work)
    n, out, rank = b.shape
    inn = a.shape[-1]
    # Orthonormal bases of B's columns and A's rows; pointless (and slower) once R reaches the dimension.
    qb, rb = torch.linalg.qr(b) if rank < out else (None, b)
    qa, ra = torch.linalg.qr(a.mT) if rank < inn else (None, a.mT)
    core = rb @ ra.mT  # min(out,R) × min(in,R)
    u, s, vh = torch.linalg.svd(core, full_matrices=False)
    eps = torch.finfo(work).eps * max(core.shape[-2:])
    results = []
    for i in range(n):
        si = s[i]
        total = float((si**2).sum())
        keep = int((si > si[0] * eps).sum()) if total > 0 else 1
        k = max(1, min(max_rank, keep))
        err = math.sqrt(max(float((si[k:] ** 2).sum()), 0.0) / total) if total > 0 else 0.0
        root = si[:k].sqrt()
        new_b = u[i, :, :k] * root
        new_a = root[:, None] * vh[i, :k]
        if qb is not None:
            new_b = qb[i] @ new_b
        if qa is not None:
            new_a = new_a @ qa[i].mT
        results.append((new_a.to(dtype).contiguous(), new_b.to(dtype).contiguous(), err))
    return results


def recompress(lora: LoraWeights, max_rank: int) -> tuple[LoraWeights, dict[str, float]]:
    """Recompress every target to rank ≤ max_rank; returns the adapter and per-target relative errors."""
    groups: dict[tuple, list[str]] = {}
    for k, (a, b) in lora.factors.items():  # batch targets of equal shape through one QR/SVD call
        groups.setdefault((tuple(a.shape), tuple(b.shape), a.dtype), []).append(k)
    factors, errors = {}, {}
    for keys in groups.values():
        a = torch.stack([lora.factors[k][0] for k in keys])
        b = torch.stack([lora.factors[k][1] for k in keys])
        for k, (na, nb, err) in zip(keys, recompress_factors(a, b, max_rank)):
            factors[k], errors[k] = (na, nb), err
    return lora.replace({k: factors[k] for k in lora.keys}), {k: errors[k] for k in lora.keys}


def merge(adapters: Sequence[LoraWeights], weights: Sequence[float],
          max_rank: int | None = None) -> tuple[LoraWeights, MergeReport]:
    """ΔW = Σ wᵢ ΔWᵢ by rank concatenation; with max_rank, the optimal rank-≤max_rank recompression."""
    adapters = list(adapters)
    w = check_weights(weights, len(adapters))
    check_same_targets(adapters)
    kept = [(ad, x) for ad, x in zip(adapters, w) if x != 0.0]  # a zero weight adds nothing but rank
    first = adapters[0]
    dtype = first.factors[first.keys[0]][0].dtype
    factors = {}
    for key in first.keys:
        pairs = [(ad.factors[key][0].to(dtype), ad.factors[key][1].to(dtype)) for ad, _ in kept]
        factors[key] = concat_factors(pairs, [x for _, x in kept])
    merged = LoraWeights(first.base_model, first.targets, factors, {})
    stacked = merged.ranks
    errors = {k: 0.0 for k in merged.keys}
    if max_rank is not None:
        merged, errors = recompress(merged, max_rank)
        log.debug("merge of %d adapters to rank <= %d: max relative truncation error %.3g",
                  len(kept), max_rank, max(errors.values()))
    return merged, MergeReport(tuple(w), stacked, merged.ranks, errors)
