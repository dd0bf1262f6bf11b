"""Put a LoRA into a model without reloading it: forward hooks (differentiable) or merged weights.

hooks: each target Linear's output gets + (x Aᵀ) Bᵀ. The factors are used as given, so generated
    factors that carry grad train the hypernetwork through the frozen base (no peft leaf parameters).
    Factors may be batched, A: (S, r, in), B: (S, out, r), one adapter per batch row of the input.
merge: W ← W + B A in place for fast inference; the original weight tensors are kept and put back
    on removal, so the base is restored bit-identically (no subtraction round-off).
apply_lora_rows: a different LoraWeights (or none) per batch row, as hooks, for batched generation
    where rows need different skills' adapters.
LoraSlots: the same for a batch whose rows are replaced while it runs (continuous batching): a slot's
    adapter is rewritten in place when the slot takes a new request.

    with apply_lora(model, lora, mode="merge"):
        model.generate(...)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence

import torch
from torch import Tensor, nn

from .config import HypernetError
from .lora import LoraWeights
from .targets import Target, target_linears

MODES = ("hooks", "merge")
# Set on every target Linear while an adapter is applied, so the skill encoder can refuse to read
# adapted activations (its states must come from the frozen base, or caches and training disagree).
APPLIED_ATTR = "_hypernet_lora_depth"


def adapter_applied(model: nn.Module) -> bool:
    return any(getattr(m, APPLIED_ATTR, 0) for m in model.modules())


class LoraHandle:
    """An applied adapter; `remove()` (or leaving the `with` block) takes it out again."""

    def __init__(self) -> None:
        self._hooks: list[torch.utils.hooks.RemovableHandle] = []
        self._saved: list[tuple[nn.Linear, Tensor]] = []
        self._marked: list[nn.Linear] = []

    def _mark(self, lin: nn.Linear) -> None:
        setattr(lin, APPLIED_ATTR, getattr(lin, APPLIED_ATTR, 0) + 1)
        self._marked.append(lin)

    def remove(self) -> None:
        for h in self._hooks:
            h.remove()
        with torch.no_grad():
            for lin, weight in reversed(self._saved):
                lin.weight.data = weight
        for lin in self._marked:
            setattr(lin, APPLIED_ATTR, getattr(lin, APPLIED_ATTR) - 1)
        self._hooks, self._saved, self._marked = [], [], []

    def __enter__(self) -> LoraHandle:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def _lora_hook(a: Tensor, b: Tensor):
    def hook(module: nn.Linear, args: tuple, output: Tensor) -> Tensor:
        x = args[0]
        if a.dim() == 3 and (x.dim() != 3 or x.shape[0] != a.shape[0]):
            raise HypernetError(f"batched LoRA for {a.shape[0]} inputs, got input of shape {tuple(x.shape)}")
        return output + (x @ a.mT) @ b.mT

    return hook


def apply_lora(model: nn.Module, lora: LoraWeights | Mapping[str, tuple[Tensor, Tensor]], mode: str = "hooks", *,
               targets: Sequence[Target] | None = None, base_model: str | None = None) -> LoraHandle:
    """Apply `lora` to `model` now; returns a handle that removes it (also a context manager).

    `lora` is a LoraWeights, or a raw {target key: (A, B)} map (e.g. the hypernetwork's batched output)
    together with `targets`. With `base_model`, a LoraWeights made for another base is refused.
    """
    if mode not in MODES:
        raise HypernetError(f"mode must be one of {MODES}, got {mode!r}")
    if isinstance(lora, LoraWeights):
        targets, factors = lora.targets, lora.factors
        linears = lora.check_model(model, base_model)
    else:
        if targets is None:
            raise HypernetError("a raw factor map needs `targets`")
        factors = lora
        if set(factors) != {t.key for t in targets}:
            raise HypernetError(f"factor keys {sorted(factors)} do not match targets")
        linears = target_linears(model, targets)
        for t in targets:
            a, b = factors[t.key]
            if a.shape[-1] != t.in_features or b.shape[-2] != t.out_features or a.shape[-2] != b.shape[-1] \
                    or a.dim() != b.dim() or a.dim() not in (2, 3):
                raise HypernetError(f"{t.key}: factors A{tuple(a.shape)} B{tuple(b.shape)} do not fit "
                                    f"in={t.in_features} out={t.out_features}")
    handle = LoraHandle()
    try:
        for t, lin in zip(targets, linears):
            a, b = factors[t.key]
            w = lin.weight
            handle._mark(lin)
            if mode == "hooks":
                a, b = a.to(device=w.device, dtype=w.dtype), b.to(device=w.device, dtype=w.dtype)
                handle._hooks.append(lin.register_forward_hook(_lora_hook(a, b)))
                continue
            if a.dim() != 2:
                raise HypernetError("merge mode takes one adapter, not a batch of factors")
            with torch.no_grad():
                work = torch.float64 if w.dtype == torch.float64 else torch.float32
                delta = b.detach().to(device=w.device, dtype=work) @ a.detach().to(device=w.device, dtype=work)
                handle._saved.append((lin, w.data))
                lin.weight.data = (w.data.to(work) + delta).to(w.dtype)
    except BaseException:
        handle.remove()
        raise
    return handle


def _stack_rows(loras: Sequence[LoraWeights | None], target: Target, like: Tensor) -> tuple[Tensor, Tensor]:
    """Row factors for one target as (S, r_max, in) and (S, out, r_max), zero-padded.

    Zero rank padding and zero factors for rows without this target add exactly 0, so every row sees
    only its own ΔW = B A (scaling already folded in, as everywhere in LoraWeights).
    """
    ranks = [lora.ranks[target.key] for lora in loras if lora is not None and target.key in lora.factors]
    r = max(ranks)
    a = like.new_zeros((len(loras), r, target.in_features))
    b = like.new_zeros((len(loras), target.out_features, r))
    for i, lora in enumerate(loras):
        if lora is not None and target.key in lora.factors:
            ai, bi = lora.factors[target.key]
            a[i, : ai.shape[0]] = ai.detach().to(a)
            b[i, :, : bi.shape[1]] = bi.detach().to(b)
    return a, b


def _targets_of(model: nn.Module, loras: Sequence[LoraWeights | None],
                base_model: str | None) -> dict[str, tuple[Target, nn.Linear]]:
    """Every target any adapter covers, with its Linear, each adapter checked against the model."""
    by_key: dict[str, tuple[Target, nn.Linear]] = {}
    for lora in loras:
        if lora is None:
            continue
        for t, lin in zip(lora.targets, lora.check_model(model, base_model)):
            seen = by_key.setdefault(t.key, (t, lin))
            if seen[1] is not lin:
                raise HypernetError(f"adapters disagree on the module for {t.key}: {seen[0].path} vs {t.path}")
    return by_key


class LoraSlots(LoraHandle):
    """Per-row adapters for a batch of `slots` rows whose requests change while it runs.

    Buffers per target are sized once for every adapter that will be used (`loras`: the maximum rank,
    the union of targets), zero where a slot's adapter has nothing, so `set(slot, lora)` is a copy and
    a row sees exactly its own ΔW. `only(slot)` runs a forward on that one slot (a new request's
    prefill); `keep(slots)` drops the other rows once the batch shrinks.
    """

    def __init__(self, model: nn.Module, loras: Sequence[LoraWeights | None], slots: int, *,
                 base_model: str | None = None) -> None:
        super().__init__()
        self._rows: slice | None = None
        self._buf: dict[str, tuple[Tensor, Tensor]] = {}
        try:
            for t, lin in _targets_of(model, loras, base_model).values():
                r = max(lora.ranks[t.key] for lora in loras if lora is not None and t.key in lora.factors)
                w = lin.weight.detach()
                self._buf[t.key] = (w.new_zeros((slots, r, t.in_features)), w.new_zeros((slots, t.out_features, r)))
                self._mark(lin)
                self._hooks.append(lin.register_forward_hook(self._hook(t.key)))
        except BaseException:
            self.remove()
            raise

    def _hook(self, key: str):
        def hook(module: nn.Linear, args: tuple, output: Tensor) -> Tensor:
            a, b = self._buf[key]
            if self._rows is not None:
                a, b = a[self._rows], b[self._rows]
            x = args[0]
            if x.dim() != 3 or x.shape[0] != a.shape[0]:
                raise HypernetError(f"batched LoRA for {a.shape[0]} inputs, got input of shape {tuple(x.shape)}")
            return output + (x @ a.mT) @ b.mT

        return hook

    def set(self, slot: int, lora: LoraWeights | None) -> None:
        """Slot `slot` runs under `lora` from now on (None: the base); one of the adapters given at creation."""
        for key, (a, b) in self._buf.items():
            a[slot].zero_()
            b[slot].zero_()
            if lora is not None and key in lora.factors:
                ai, bi = lora.factors[key]
                a[slot, : ai.shape[0]] = ai.detach().to(a)
                b[slot, :, : bi.shape[1]] = bi.detach().to(b)

    def keep(self, slots: Sequence[int]) -> None:
        """Only these rows remain, in this order."""
        idx = torch.as_tensor(list(slots), dtype=torch.long)
        self._buf = {k: (a[idx.to(a.device)], b[idx.to(b.device)]) for k, (a, b) in self._buf.items()}

    @contextlib.contextmanager
    def only(self, slot: int) -> Iterator[None]:
        self._rows = slice(slot, slot + 1)
        try:
            yield
        finally:
            self._rows = None

    def __enter__(self) -> LoraSlots:
        return self


def apply_lora_rows(model: nn.Module, loras: Sequence[LoraWeights | None], *,
                    base_model: str | None = None) -> LoraHandle:
    """Apply `loras[i]` to batch row i only (None: that row runs the base model); returns the handle.

    Adapters may differ in rank and in which targets they cover; each is checked against `model`
    (and `base_model`, if given) like apply_lora does. Every forward while applied must have batch
    size len(loras): the hook is a batched matmul, x (S,T,in) · Aᵀ (S,in,r) · Bᵀ (S,r,out).
    """
    handle = LoraHandle()
    try:
        for t, lin in _targets_of(model, loras, base_model).values():
            a, b = _stack_rows(loras, t, lin.weight.detach())
            handle._mark(lin)
            handle._hooks.append(lin.register_forward_hook(_lora_hook(a, b)))
    except BaseException:
        handle.remove()
        raise
    return handle
