"""EMA of adapters in ΔW space, kept low-rank: persistent ← β·persistent + (1−β)·new."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .config import HypernetError
from .lora import LoraWeights
from .merge import check_recompression, merge

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
    else:
        try:
            previous = int(persistent.metadata.get(UPDATES_KEY, "1"))  # a plain adapter counts as one
        except ValueError as e:
            raise HypernetError(f"persistent adapter has malformed EMA metadata: {e}") from e
        out, report = merge([persistent, new], [beta, 1.0 - beta], max_rank=max_rank, method=method, seed=seed)
    metadata = {UPDATES_KEY: str(previous + 1), BETA_KEY: repr(beta)}
    out = out.replace(out.factors, metadata)
    return out, EmaInfo(previous + 1, beta, out.ranks, report.rel_errors)
