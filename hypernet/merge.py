"""Adapter math: exact rank-concatenation merge and low-rank recompression.

Σ wᵢ BᵢAᵢ = [B₁ … B_k] · [w₁A₁; …; w_kA_k]: stacking along the rank axis is exact (ranks add), with the
weight on one factor only (no square roots, so negative weights work). Recompression to rank k never
forms the out×in matrix of an adapter, by one of two methods:

- "exact": QR of the stacked B and Aᵀ, an SVD of the small core R_B·R_Aᵀ, top k singular triplets: the
  optimal rank-k approximation (Eckart–Young). Its cost grows with the cube of the stacked rank.
- "randomized": a range finder (Halko–Martinsson–Tropp): sketch B·(A·Ω) with a Gaussian Ω of k + 8
  columns, power iterations, then the SVD of the (k+8)×in projection. Cost linear in the stacked rank;
  the truncation error is computed exactly (not estimated) and is near-optimal.

"auto" takes the exact path unless the core is much wider than the sketch.
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .config import HypernetError
from .lora import LoraWeights, check_same_targets, cover

log = logging.getLogger(__name__)

METHODS = ("exact", "randomized", "auto")
OVERSAMPLE = 8  # extra sketch columns: the top-k subspace is found reliably with a handful more
POWER_ITERS = 2  # each one sharpens the sketch's spectrum (costs two more passes over the factors)
_MIN_RANDOMIZED_CORE = 128  # below this the exact core's SVD takes well under a millisecond anyway
_NORM_ROWS = 64  # row block for ‖B·A‖_F² when the Gram route is dearer


@dataclass(frozen=True)
class MergeReport:
    weights: tuple[float, ...]
    stacked_ranks: dict[str, int]  # rank after concatenation, before recompression
    ranks: dict[str, int]  # final rank per target
    rel_errors: dict[str, float]  # ‖ΔW − ΔW_k‖_F / ‖ΔW‖_F per target; 0.0 where nothing was truncated
    methods: dict[str, str] = field(default_factory=dict)  # recompression path per target; empty without one

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


def check_recompression(max_rank: int, method: str) -> None:
    if not isinstance(max_rank, numbers.Integral) or isinstance(max_rank, bool) or max_rank < 1:
        raise HypernetError(f"max_rank must be an integer >= 1, got {max_rank!r}")
    if method not in METHODS:
        raise HypernetError(f"recompression method must be one of {METHODS}, got {method!r}")


def choose_method(method: str, rank: int, in_features: int, out_features: int, max_rank: int) -> str:
    """'auto' → randomized only where the exact core (min(R, in, out) wide) is ≥ 2× the sketch width and
    not tiny. Elsewhere the exact QR + SVD is as fast and optimal (e.g. an EMA step: rank 64 + 8).
    """
    if method != "auto":
        return method
    core = min(rank, in_features, out_features)
    return "randomized" if core >= max(2 * (max_rank + OVERSAMPLE), _MIN_RANDOMIZED_CORE) else "exact"


def concat_factors(pairs: Sequence[tuple[Tensor, Tensor]], weights: Sequence[float]) -> tuple[Tensor, Tensor]:
    """Exact Σ wᵢ BᵢAᵢ as one (A, B) pair of rank Σ rᵢ; differentiable, works on batched (…, r, in) factors."""
    a = torch.cat([w * a for (a, _), w in zip(pairs, weights)], dim=-2)
    b = torch.cat([b for _, b in pairs], dim=-1)
    return a, b


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _keep(s: Tensor, max_rank: int, eps: float) -> int:
    """Singular values kept: at most max_rank, numerically zero ones dropped, at least one."""
    keep = int((s > s[0] * eps).sum()) if float(s[0]) > 0 else 1
    return max(1, min(max_rank, keep))


def _split(u: Tensor, s: Tensor, vh: Tensor) -> tuple[Tensor, Tensor]:
    """(A, B) = (√s·Vh, U·√s): the singular values shared evenly between the factors."""
    root = s.sqrt()
    return root[:, None] * vh, u * root


@torch.no_grad()
def recompress_factors(a: Tensor, b: Tensor, max_rank: int, method: str = "exact",
                       seed: int = 0) -> list[tuple[Tensor, Tensor, float]]:
    """Rank-≤max_rank factors of B @ A for a batch a: (n, R, in), b: (n, out, R).

    Returns per batch element (A_k, B_k, relative Frobenius truncation error). Numerically zero singular
    directions are dropped too, so e.g. the EMA of identical adapters keeps their rank. `seed` fixes the
    randomized method's test matrix: the same inputs and seed give the same factors.
    """
    check_recompression(max_rank, method)
    dtype, work = a.dtype, _work_dtype(a.dtype)
    a, b = a.detach().to(work), b.detach().to(work)
    method = choose_method(method, b.shape[-1], a.shape[-1], b.shape[-2], max_rank)
    out = _exact(a, b, max_rank) if method == "exact" else _randomized(a, b, max_rank, seed)
    return [(na.to(dtype).contiguous(), nb.to(dtype).contiguous(), err) for na, nb, err in out]


def _exact(a: Tensor, b: Tensor, max_rank: int) -> list[tuple[Tensor, Tensor, float]]:
    out, rank = b.shape[-2:]
    inn = a.shape[-1]
    # Orthonormal bases of B's columns and A's rows; pointless (and slower) once R reaches the dimension.
    qb, rb = torch.linalg.qr(b) if rank < out else (None, b)
    qa, ra = torch.linalg.qr(a.mT) if rank < inn else (None, a.mT)
    return truncate_core(rb @ ra.mT, None if qb is None else qb.matmul,
                         None if qa is None else (lambda y: y @ qa.mT), max_rank)


def truncate_core(core: Tensor, lift_b: Callable[[Tensor], Tensor] | None, lift_a: Callable[[Tensor], Tensor] | None,
                  max_rank: int) -> list[tuple[Tensor, Tensor, float]]:
    """Best rank-≤max_rank factors of Q_B·core·Q_Aᵀ per batch element, Q_B and Q_A with orthonormal columns
    given as y ↦ Q_B·y and y ↦ y·Q_Aᵀ (None = identity): one batched SVD of the small core, then (A_k, B_k, relative Frobenius
    truncation error)."""
    u, s, vh = _core_svd(core)
    eps = torch.finfo(core.dtype).eps * max(core.shape[-2:])
    # Kept ranks and errors for the whole batch at once (one sync instead of a few per target).
    keep = (s > s[:, :1] * eps).sum(-1).where(s[:, 0] > 0, torch.ones_like(s[:, 0], dtype=torch.long))
    keep = keep.clamp(1, max_rank)
    sq = s.square()
    tail = (sq * (torch.arange(s.shape[-1], device=s.device) >= keep[:, None])).sum(-1)
    total = sq.sum(-1)
    ks, tail, total = keep.tolist(), tail.tolist(), total.tolist()
    # Lift the top directions of every target in one batched product, then cut each to its own k.
    top = max(ks)
    new_a, new_b = _split_batched(u[..., :top], s[:, :top], vh[:, :top])
    if lift_b is not None:
        new_b = lift_b(new_b)
    if lift_a is not None:
        new_a = lift_a(new_a)
    return [(new_a[i, :k], new_b[i, :, :k], math.sqrt(max(t, 0.0) / tot) if tot > 0 else 0.0)
            for i, (k, t, tot) in enumerate(zip(ks, tail, total))]


def _core_svd(core: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """SVD of a batch of small square float32 cores by the eigendecomposition of K·Kᵀ in float64: LAPACK's
    symmetric eigensolver is ~2× faster than its SVD at these sizes (the EMA step's 72×72 cores), and squaring
    in float64 keeps every singular value above float32's resolution (σᵢ/σ₁ > 1e-7) more exactly than a float32
    SVD does. Other dtypes and shapes take the SVD."""
    if core.dtype != torch.float32 or core.shape[-1] != core.shape[-2] or core.device.type != "cpu":
        return torch.linalg.svd(core, full_matrices=False)
    k = core.double()
    w, u = torch.linalg.eigh(k @ k.mT)
    w, u = w.flip(-1), u.flip(-1)
    s = w.clamp_min(0).sqrt()
    floor = s[:, :1] * (torch.finfo(torch.float32).eps * core.shape[-1])
    vh = torch.where((s > floor)[..., None], (u.mT @ k) / s.clamp_min(torch.finfo(torch.float64).tiny)[..., None], 0.0)
    return u.float(), s.float(), vh.float()


def _split_batched(u: Tensor, s: Tensor, vh: Tensor) -> tuple[Tensor, Tensor]:
    root = s.sqrt()
    return root[..., None] * vh, u * root[:, None, :]


def _orth(x: Tensor) -> Tensor:
    return torch.linalg.qr(x).Q


def _operator(a: Tensor, b: Tensor) -> tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Tensor], Tensor | None]:
    """x ↦ ΔW·x and y ↦ ΔWᵀ·y for ΔW = B·A, plus ΔW itself where it is the smaller form.

    Once R·(in + out) > in·out (e.g. 100 stacked rank-8 adapters of a 576×576 layer) the dense ΔW of the
    target is smaller than its stacked factors and every product with it is cheaper, so it is formed then
    (memory stays within the size of the inputs, never a matrix per adapter); otherwise factors only.
    """
    out, rank, inn = b.shape[-2], b.shape[-1], a.shape[-1]
    if rank * (inn + out) > inn * out:
        dense = b @ a
        return (lambda x: dense @ x), (lambda y: dense.mT @ y), dense
    return (lambda x: b @ (a @ x)), (lambda y: a.mT @ (b.mT @ y)), None


def _frob2(a: Tensor, b: Tensor) -> Tensor:
    """‖B·A‖_F² per batch element from factors, by the Gram route (R×R) or in row blocks of B·A."""
    out, rank, inn = b.shape[-2], b.shape[-1], a.shape[-1]
    if rank * (inn + out) <= inn * out:
        return ((b.mT @ b) * (a @ a.mT)).sum((-2, -1))  # trace(BᵀB·AAᵀ), both symmetric
    return sum((b[:, i:i + _NORM_ROWS] @ a).square().sum((-2, -1)) for i in range(0, out, _NORM_ROWS))


def _randomized(a: Tensor, b: Tensor, max_rank: int, seed: int) -> list[tuple[Tensor, Tensor, float]]:
    n, out, rank = b.shape
    inn = a.shape[-1]
    width = min(max_rank + OVERSAMPLE, out, inn, rank)
    apply, apply_t, dense = _operator(a, b)
    g = torch.Generator(device=a.device).manual_seed(seed)
    # One Ω for the whole batch, so ΔW·Ω is one GEMM over (n·rows); each target still sees a Gaussian Ω.
    omega = torch.randn(inn, width, generator=g, device=a.device, dtype=a.dtype)
    q = _orth(apply(omega))  # (n, out, width)
    for _ in range(POWER_ITERS):  # re-orthonormalise every half step, else rounding erases the small directions
        q = _orth(apply(_orth(apply_t(q))))
    c = apply_t(q).mT  # (n, width, in) = Qᵀ·ΔW
    qc, rc = torch.linalg.qr(c.mT)  # c = rcᵀ·qcᵀ: an SVD of width×width instead of width×in
    u, s, vh = torch.linalg.svd(rc.mT)
    eps = torch.finfo(a.dtype).eps * max(width, inn)
    ks = [_keep(s[i], max_rank, eps) for i in range(n)]
    # The true error, not an estimate: ΔW_k = P·ΔW with P the projector on Q·U_k, so the error is the norm
    # of the residual (I − P)·ΔW and ‖ΔW‖² = error² + Σ_{i≤k} sᵢ². Computing the residual itself (not
    # ‖ΔW‖² − kept) avoids cancellation in float32 when the error is small.
    mask = torch.arange(width, device=a.device) < torch.tensor(ks, device=a.device)[:, None]
    qk = q @ (u * mask[:, None, :])  # (n, out, width), columns beyond k zeroed
    if dense is not None:
        tail2 = (dense - qk @ (qk.mT @ dense)).square().sum((-2, -1))
    else:
        tail2 = _frob2(a, b - qk @ (qk.mT @ b))
    tail2, kept2 = tail2.tolist(), (s.square() * mask).sum(-1).tolist()
    results = []
    for i, k in enumerate(ks):
        new_a, new_b = _split(u[i, :, :k], s[i, :k], vh[i, :k])
        total = tail2[i] + kept2[i]
        err = math.sqrt(max(tail2[i], 0.0) / total) if total > 0 else 0.0
        results.append((new_a @ qc[i].mT, q[i] @ new_b, err))
    return results


def target_groups(adapters: Sequence[LoraWeights]) -> dict[tuple[int, int, tuple[int, ...]], list[str]]:
    """The target keys by (in, out, each adapter's rank there): the targets one batched call can cover."""
    first = adapters[0]
    groups: dict[tuple[int, int, tuple[int, ...]], list[str]] = {}
    for t in first.targets:
        ranks = tuple(ad.factors[t.key][0].shape[0] for ad in adapters)
        groups.setdefault((t.in_features, t.out_features, ranks), []).append(t.key)
    return groups


def _stacked_groups(adapters: Sequence[LoraWeights], weights: Sequence[float]) -> Iterator[tuple[list[str], Tensor, Tensor]]:
    """Per group of targets with equal shapes and ranks: (keys, A (n, R, in), B (n, out, R)) of Σ wᵢ BᵢAᵢ.

    Built with one copy of the factors per group (the weights then applied in place to that copy).
    """
    first = adapters[0]
    dtype = first.factors[first.keys[0]][0].dtype
    for (inn, out, ranks), keys in target_groups(adapters).items():
        n, rank = len(keys), sum(ranks)
        a = torch.cat([ad.factors[k][0].to(dtype) for k in keys for ad in adapters]).view(n, rank, inn)
        if any(w != 1.0 for w in weights):
            row_w = torch.cat([torch.full((r,), w, dtype=dtype, device=a.device) for r, w in zip(ranks, weights)])
            a.mul_(row_w[:, None])
        bt = torch.cat([ad.factors[k][1].to(dtype).mT for k in keys for ad in adapters]).view(n, rank, out)
        yield keys, a, bt.mT


def _recompress_stacked(adapters: Sequence[LoraWeights], weights: Sequence[float], max_rank: int, method: str,
                        seed: int) -> tuple[dict[str, tuple[Tensor, Tensor]], dict[str, float], dict[str, str]]:
    factors, errors, methods = {}, {}, {}
    for keys, a, b in _stacked_groups(adapters, weights):
        used = choose_method(method, b.shape[-1], a.shape[-1], b.shape[-2], max_rank)
        for key, (na, nb, err) in zip(keys, recompress_factors(a, b, max_rank, used, seed)):
            factors[key], errors[key], methods[key] = (na, nb), err, used
    return factors, errors, methods


def recompress(lora: LoraWeights, max_rank: int, method: str = "auto",
               seed: int = 0) -> tuple[LoraWeights, dict[str, float]]:
    """Recompress every target to rank ≤ max_rank; returns the adapter and per-target relative errors."""
    check_recompression(max_rank, method)
    factors, errors, _ = _recompress_stacked([lora], [1.0], max_rank, method, seed)
    return lora.replace({k: factors[k] for k in lora.keys}), {k: errors[k] for k in lora.keys}


def merge(adapters: Sequence[LoraWeights], weights: Sequence[float], max_rank: int | None = None,
          method: str = "auto", seed: int = 0) -> tuple[LoraWeights, MergeReport]:
    """ΔW = Σ wᵢ ΔWᵢ by rank concatenation; with max_rank, recompressed to rank ≤ max_rank (see `METHODS`)."""
    adapters = cover(adapters)  # a target one adapter lacks is a zero ΔW there
    w = check_weights(weights, len(adapters))
    check_same_targets(adapters)
    if max_rank is not None:
        check_recompression(max_rank, method)
    kept = [(ad, x) for ad, x in zip(adapters, w) if x != 0.0]  # a zero weight adds nothing but rank
    first = adapters[0]
    stacked = {k: sum(ad.factors[k][0].shape[0] for ad, _ in kept) for k in first.keys}
    if max_rank is None:
        dtype = first.factors[first.keys[0]][0].dtype
        factors = {}
        for key in first.keys:
            pairs = [(ad.factors[key][0].to(dtype), ad.factors[key][1].to(dtype)) for ad, _ in kept]
            factors[key] = concat_factors(pairs, [x for _, x in kept])
        merged = LoraWeights(first.base_model, first.targets, factors, {})
        return merged, MergeReport(tuple(w), stacked, merged.ranks, {k: 0.0 for k in merged.keys})
    # Stacked straight into per-group batches: the concatenated adapter itself is never built.
    factors, errors, methods = _recompress_stacked([ad for ad, _ in kept], [x for _, x in kept], max_rank,
                                                   method, seed)
    merged = LoraWeights(first.base_model, first.targets, {k: factors[k] for k in first.keys}, {})
    errors = {k: errors[k] for k in merged.keys}
    log.debug("merge of %d adapters to rank <= %d (%s): max relative truncation error %.3g",
              len(kept), max_rank, "/".join(sorted(set(methods.values()))), max(errors.values()))
    return merged, MergeReport(tuple(w), stacked, merged.ranks, errors, {k: methods[k] for k in merged.keys})
