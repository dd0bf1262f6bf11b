"""EMA of adapters in ΔW space, kept low-rank: persistent ← β·persistent + (1−β)·new.

The step is an incremental SVD (Brand 2006) where it can be. A persistent adapter written by an exact
recompression is in split form, A = √s·Vh and B = U·√s: B's columns and A's rows are already orthogonal.
Stacking the new adapter's rank r beside it then needs a QR of only the r new columns after projecting out
U, not a QR of all R = rank + r stacked columns; what is left is the R×R core's SVD. The Gram matrix of
the persistent factors (one batched GEMM) gives the orthogonality check and the norms at once, and U's
projections of the new columns are r-row products. [B_p, B_n] = [U, Q]·R_B holds by construction whatever
U's rounding, so the folded ΔW is merge's to float rounding; orthogonality makes the truncation optimal
and the error exact, which is why it is checked per target (a plain adapter, or drift past the tolerance,
takes merge's QR and comes out re-orthogonalised). Targets of one shape are already one batched call in
merge; torch's CPU QR/SVD loop over the batch in LAPACK, so batching alone did not make the step cheaper:
the work per target did.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch
from torch import Tensor

from .config import HypernetError
from .lora import LoraWeights, check_same_targets, cover
from .merge import _work_dtype, check_recompression, choose_method, merge, recompress_factors, \
    target_groups, truncate_core

UPDATES_KEY = "ema_updates"
BETA_KEY = "ema_beta"


@dataclass(frozen=True)
class EmaInfo:
    updates: int  # how many adapters have been folded in, this one included
    beta: float
    ranks: dict[str, int]
    rel_errors: dict[str, float]  # truncation error of this step's recompression, per target

    @property
    def max_rel_error(self) -> float:
        return max(self.rel_errors.values(), default=0.0)


def ema_update(persistent: LoraWeights | None, new: LoraWeights, beta: float, max_rank: int = 64,
               method: str = "auto", seed: int = 0) -> tuple[LoraWeights, EmaInfo]:
    """One EMA step as a weighted rank concatenation recompressed to max_rank (`method`: see merge.METHODS).

    With no persistent adapter yet, the result is `new` itself (recompressed only if above max_rank).
    """
    beta = float(beta)
    if not (math.isfinite(beta) and 0.0 <= beta < 1.0):
        raise HypernetError(f"EMA beta must be in [0, 1), got {beta}")
    check_recompression(max_rank, method)
    if persistent is None:
        previous = 0
        out, report = merge([new], [1.0], max_rank=max_rank if new.max_rank > max_rank else None,
                            method=method, seed=seed)
        errors = report.rel_errors
    else:
        persistent, new = cover([persistent, new])  # e.g. a policy on every module, skills on q/v: zero ΔW
        try:
            previous = int(persistent.metadata.get(UPDATES_KEY, "1"))  # a plain adapter counts as one
        except ValueError as e:
            raise HypernetError(f"persistent adapter has malformed EMA metadata: {e}") from e
        if beta == 0.0:  # merge drops a zero weight: the step is `new` recompressed
            out, report = merge([persistent, new], [beta, 1.0], max_rank=max_rank, method=method, seed=seed)
            errors = report.rel_errors
        else:
            workers = torch.get_num_threads()  # the caller's budget of cores, before _one_thread
            with _one_thread(new):
                out, errors = fold(persistent, new, beta, max_rank, method, seed, workers)
    metadata = {UPDATES_KEY: str(previous + 1), BETA_KEY: repr(beta)}
    out = out.replace(out.factors, metadata)
    return out, EmaInfo(previous + 1, beta, out.ranks, errors)


@contextlib.contextmanager
def _one_thread(lora: LoraWeights) -> Iterator[None]:
    """Run on one intra-op thread on CPU. The step is ~60 LAPACK calls on 72×72 to 576×72 matrices: a
    second OpenMP thread never made it faster here and, with the cores shared (the agent's own generation,
    other jobs), made it 5-10× slower, waiting on a descheduled thread (bench_hypernet_merge, EMA rows).
    torch's thread count is process-wide: other threads' torch work runs on one thread meanwhile."""
    threads = torch.get_num_threads()
    if not _on_cpu(lora) or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


# Largest |uᵢ·uⱼ| between distinct normalised columns for which persistent factors count as orthogonal
# (float32 SVD output is ~1e-6 off; past this the fold would still be exact, the truncation not optimal).
ORTHO_TOL = {torch.float32: 1e-5, torch.float64: 1e-12}


def fold(persistent: LoraWeights, new: LoraWeights, beta: float, max_rank: int, method: str = "exact",
         seed: int = 0, workers: int = 1) -> tuple[LoraWeights, dict[str, float]]:
    """β·persistent + (1−β)·new recompressed to rank ≤ max_rank, per group of equally shaped targets: the
    incremental exact path where the persistent factors are orthogonal, merge's recompression elsewhere.

    The groups (q_proj's targets, v_proj's, ...) share nothing, so they run side by side on up to `workers`
    threads: their LAPACK calls release the GIL and each is single-threaded (`_one_thread`), so a core that
    is busy elsewhere delays only its own group, never a barrier of OpenMP threads. (Cutting each group in
    halves would even out the threads' work a little, but then the rounding would depend on the thread count.)"""
    check_same_targets([persistent, new])
    dtype = persistent.factors[persistent.keys[0]][0].dtype
    groups = list(target_groups([persistent, new]).values())

    # A group's factors are stacked as four batches, the persistent and the new apart: each contiguous, which
    # the fold's products read in place (slices of one concatenation were copied by every batched product).
    def one(keys: list[str]) -> list[tuple[str, tuple[Tensor, Tensor], float]]:
        ap, bp, an, bn = (torch.stack([lora.factors[k][i].to(dtype) for k in keys])
                          for lora in (persistent, new) for i in (0, 1))
        folded = _fold_group(ap.mul_(beta), bp, an.mul_(1.0 - beta), bn, max_rank, method, seed)
        return [(key, (na.to(dtype).contiguous(), nb.to(dtype).contiguous()), err)
                for key, (na, nb, err) in zip(keys, folded)]

    workers = min(len(groups), workers)
    if workers > 1 and _on_cpu(persistent):
        with ThreadPoolExecutor(workers) as pool:
            done = [row for rows in pool.map(one, groups) for row in rows]
    else:
        done = [row for keys in groups for row in one(keys)]
    factors = {key: f for key, f, _ in done}
    errors = {key: err for key, _, err in done}
    out = persistent.replace({k: factors[k] for k in persistent.keys}, {})
    return out, {k: errors[k] for k in persistent.keys}


def _on_cpu(lora: LoraWeights) -> bool:
    return lora.factors[lora.keys[0]][0].device.type == "cpu"


def _fold_group(ap: Tensor, bp: Tensor, an: Tensor, bn: Tensor, max_rank: int, method: str,
                seed: int) -> list[tuple[Tensor, Tensor, float]]:
    """One group's fold of the persistent (ap (n, p, in), bp (n, out, p)) and new (an, bn) factors."""
    inn, out, rank = ap.shape[-1], bp.shape[-2], ap.shape[-2] + an.shape[-2]
    used = choose_method(method, rank, inn, out, max_rank)
    results: list = [None] * ap.shape[0]
    todo = list(range(ap.shape[0]))
    if used == "exact" and rank < min(inn, out):
        work = _work_dtype(ap.dtype)
        ap, bp, an, bn = ap.to(work), bp.to(work), an.to(work), bn.to(work)
        gb, ga = bp.mT @ bp, ap @ ap.mT  # the persistent columns of B (rows of A) against each other
        ok = _orthogonal(gb, ORTHO_TOL[work]) & _orthogonal(ga, ORTHO_TOL[work])
        if bool(ok.all()):
            return _fold_split_form(ap, bp, an, bn, ga, gb, max_rank)
        if bool(ok.any()):
            idx = ok.nonzero().flatten()
            for i, r in zip(idx.tolist(), _fold_split_form(ap[idx], bp[idx], an[idx], bn[idx], ga[idx], gb[idx],
                                                           max_rank)):
                results[i] = r
            todo = (~ok).nonzero().flatten().tolist()
    a, b = torch.cat([ap[todo], an[todo]], dim=1), torch.cat([bp[todo], bn[todo]], dim=2)
    for i, r in zip(todo, recompress_factors(a, b, max_rank, used, seed)):
        results[i] = r
    return results


def _orthogonal(gram: Tensor, tol: float) -> Tensor:
    """Per batch element: are the vectors of this Gram matrix (n, p, p) orthogonal and none of them zero?"""
    d = gram.diagonal(dim1=-2, dim2=-1)
    inv = d.clamp_min(torch.finfo(gram.dtype).tiny).rsqrt()
    cos = gram * inv[:, :, None] * inv[:, None, :] - torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device)
    return (cos.abs().amax((-2, -1)) <= tol) & (d > 0).all(-1)


@torch.no_grad()
def _fold_split_form(ap: Tensor, bp: Tensor, an: Tensor, bn: Tensor, ga: Tensor, gb: Tensor,
                     max_rank: int) -> list[tuple[Tensor, Tensor, float]]:
    """recompress_factors' exact path for [B_p, B_n]·[A_p; A_n] whose persistent columns of B and rows of A
    are orthogonal (their Gram matrices ga = A_p·A_pᵀ, gb = B_pᵀ·B_p given): the bases are extended by the new
    vectors only, and applied to the kept directions without being formed."""
    lead = ap.shape[-2]
    nb, qb, rb = _extend(bp, bn, gb)
    na, qa, ra = _extend(ap.mT, an.mT, ga)
    return truncate_core(rb @ ra.mT,
                         # Q_B·y and y·Q_Aᵀ: the persistent columns' product, the new ones' added to it in place
                         lambda y: (bp @ (y[:, :lead] / nb[..., None])).baddbmm_(qb, y[:, lead:]),
                         lambda y: ((y[..., :lead] / na[:, None, :]) @ ap).baddbmm_(y[..., lead:], qa.mT),
                         max_rank)


def _extend(lead: Tensor, new: Tensor, gram: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """A QR of [L, N] (n, d, p + r) whose p columns L are orthogonal, given their Gram matrix Lᵀ·L (n, p, p):
    Q = [L/‖L‖, Q_n] and R = [[diag ‖L‖, UᵀN], [0, R_n]] with Q_n·R_n = N − U·UᵀN (U = L/‖L‖).
    Returns (‖L‖, Q_n, R): Q is applied as L·diag(1/‖L‖) and Q_n, never formed."""
    p, r = lead.shape[-1], new.shape[-1]
    n2 = gram.diagonal(dim1=-2, dim2=-1)  # ‖L‖²
    norms = n2.sqrt()
    # LᵀN and L·(LᵀN/‖L‖²) as the transposes of r-row products: MKL's batched GEMM is several times slower
    # with an output only r (8) columns wide than with one r rows high
    lt_n = (new.mT @ lead).mT
    q_n, r_n = torch.linalg.qr(new - ((lt_n / n2[..., None]).mT @ lead.mT).mT)
    top = torch.cat([torch.diag_embed(norms), lt_n / norms[..., None]], dim=-1)
    bottom = torch.cat([r_n.new_zeros(r_n.shape[0], r, p), r_n], dim=-1)
    return norms, q_n, torch.cat([top, bottom], dim=-2)
