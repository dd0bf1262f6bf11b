"""LoraWeights: one adapter as low-rank factors with every scaling folded in (ΔW = B @ A)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor, nn

from .config import HypernetError
from .targets import Target, target_linears

FORMAT = "parametric-skills-lora/1"
# All metadata goes under one header key: safetensors writes the metadata map in hash order, so with
# several keys the same adapter would serialise to different bytes (and sha256) from run to run.
_HEADER_KEY = "parametric_skills"


@dataclass
class LoraWeights:
    base_model: str
    targets: tuple[Target, ...]
    factors: dict[str, tuple[Tensor, Tensor]]  # target key -> (A: r×in, B: out×r)
    metadata: dict[str, str] = field(default_factory=dict)  # free-form provenance (EMA count, β, ...)

    def __post_init__(self) -> None:
        self.targets = tuple(self.targets)
        keys = [t.key for t in self.targets]
        if not keys:
            raise HypernetError("an adapter needs at least one target")
        if len(set(keys)) != len(keys):
            raise HypernetError(f"duplicate targets in adapter: {keys}")
        if set(keys) != set(self.factors):
            raise HypernetError(f"factors {sorted(self.factors)} do not match targets {sorted(keys)}")
        for t in self.targets:
            a, b = self.factors[t.key]
            if a.dim() != 2 or b.dim() != 2 or not a.is_floating_point() or not b.is_floating_point():
                raise HypernetError(f"{t.key}: factors must be 2-D float tensors, "
                                    f"got A{tuple(a.shape)} B{tuple(b.shape)}")
            r = a.shape[0]
            if r < 1 or a.shape != (r, t.in_features) or b.shape != (t.out_features, r):
                raise HypernetError(f"{t.key}: expected A (r×{t.in_features}) and B ({t.out_features}×r), "
                                    f"got A{tuple(a.shape)} B{tuple(b.shape)}")
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in self.metadata.items()):
            raise HypernetError("LoraWeights.metadata must map str to str")

    # --- views -------------------------------------------------------------------------------
    @property
    def keys(self) -> list[str]:
        return [t.key for t in self.targets]

    @property
    def ranks(self) -> dict[str, int]:
        return {k: self.factors[k][0].shape[0] for k in self.keys}

    @property
    def max_rank(self) -> int:
        return max(self.ranks.values())

    def delta(self, key: str) -> Tensor:
        """Dense ΔW (out×in) of one target; for tests and inspection, not for the hot path."""
        a, b = self.factors[key]
        return b @ a

    def shapes_signature(self) -> list[tuple[str, str, int, int]]:
        return sorted((t.key, t.path, t.in_features, t.out_features) for t in self.targets)

    def replace(self, factors: dict[str, tuple[Tensor, Tensor]], metadata: dict[str, str] | None = None) -> LoraWeights:
        metadata = dict(self.metadata if metadata is None else metadata)
        return LoraWeights(self.base_model, self.targets, factors, metadata)

    def to(self, dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> LoraWeights:
        return self.replace({k: (a.to(device=device, dtype=dtype), b.to(device=device, dtype=dtype))
                             for k, (a, b) in self.factors.items()})

    def detach(self) -> LoraWeights:
        return self.replace({k: (a.detach(), b.detach()) for k, (a, b) in self.factors.items()})

    # --- validation against a model -----------------------------------------------------------
    def check_model(self, model: nn.Module, base_model: str | None = None) -> list[nn.Linear]:
        """The target Linears of `model`; HypernetError if the base model id or any shape differs."""
        if base_model is not None and base_model != self.base_model:
            raise HypernetError(f"adapter was made for base model {self.base_model!r}, not {base_model!r}")
        return target_linears(model, self.targets)

    # --- serialisation -----------------------------------------------------------------------
    def to_safetensors_bytes(self) -> bytes:
        tensors = {}
        for k in self.keys:
            a, b = self.factors[k]
            tensors[f"{k}.A"] = a.detach().cpu().contiguous()
            tensors[f"{k}.B"] = b.detach().cpu().contiguous()
        # ranks are derivable from the tensors but stored too, so a reader without torch can list them
        header = {"format": FORMAT, "base_model": self.base_model, "ranks": self.ranks,
                  "targets": [t.to_dict() for t in self.targets], "metadata": self.metadata}
        return st_save(tensors, metadata={_HEADER_KEY: json.dumps(header, sort_keys=True)})

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.to_safetensors_bytes()).hexdigest()

    @classmethod
    def from_safetensors_bytes(cls, data: bytes, expected_sha256: str | None = None) -> LoraWeights:
        if expected_sha256 is not None and hashlib.sha256(data).hexdigest() != expected_sha256:
            raise HypernetError("adapter bytes do not match the expected sha256 (corrupted or wrong blob)")
        header, tensors = read_safetensors(data, _HEADER_KEY, "adapter")
        if header.get("format") != FORMAT:
            raise HypernetError(f"not a LoRA adapter blob (format {header.get('format')!r}, expected {FORMAT!r})")
        try:
            targets = [Target.from_dict(t) for t in header["targets"]]
            factors = {t.key: (tensors.pop(f"{t.key}.A"), tensors.pop(f"{t.key}.B")) for t in targets}
            lora = cls(str(header["base_model"]), tuple(targets), factors, dict(header.get("metadata", {})))
        except HypernetError:
            raise
        except KeyError as e:
            raise HypernetError(f"adapter blob is missing {e}") from e
        except (TypeError, ValueError) as e:
            raise HypernetError(f"malformed adapter blob: {e}") from e
        if tensors:
            raise HypernetError(f"adapter blob has unexpected tensors: {sorted(tensors)}")
        if header.get("ranks", lora.ranks) != lora.ranks:
            raise HypernetError("adapter blob's recorded ranks do not match its tensors")
        for k, (a, b) in lora.factors.items():
            if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
                raise HypernetError(f"adapter blob has non-finite values in {k}")
        return lora


def read_safetensors(data: bytes, header_key: str, what: str) -> tuple[dict, dict[str, Tensor]]:
    """Parse safetensors bytes and the JSON stored under `header_key`; any damage is a HypernetError."""
    if not isinstance(data, (bytes, bytearray, memoryview)) or len(data) < 8:
        raise HypernetError(f"{what} bytes are empty or truncated")
    try:
        tensors = st_load(bytes(data))
    except Exception as e:  # safetensors raises its own error types (and others on garbage)
        raise HypernetError(f"corrupted {what} safetensors bytes: {e}") from e
    try:
        raw = json.loads(data[8:8 + int.from_bytes(data[:8], "little")])["__metadata__"][header_key]
        header = json.loads(raw)
    except (KeyError, TypeError, ValueError) as e:
        raise HypernetError(f"{what} safetensors header has no valid {header_key!r} metadata") from e
    if not isinstance(header, dict):
        raise HypernetError(f"{what} metadata is not a JSON object")
    return header, tensors


def cover(adapters: Sequence[LoraWeights]) -> list[LoraWeights]:
    """The adapters over the union of their targets, a target an adapter lacks given rank-1 zero factors.

    A missing target's ΔW is zero, so sums stay exact: this is what lets a policy adapter on every projection
    be the EMA's start while skill adapters touch q/v only (each fold then scales the policy's other modules
    by β, as the EMA's formula says). A target both have must agree on path and shape."""
    adapters = list(adapters)
    union: dict[str, Target] = {}
    for i, ad in enumerate(adapters):
        for t in ad.targets:
            seen = union.setdefault(t.key, t)
            if (seen.path, seen.in_features, seen.out_features) != (t.path, t.in_features, t.out_features):
                raise HypernetError(f"adapter {i}'s target {t.key} differs in path or shape from another's")
    if all(len(ad.targets) == len(union) for ad in adapters):
        return adapters
    out = []
    for ad in adapters:
        like = ad.factors[ad.keys[0]][0]
        zeros = {k: (like.new_zeros(1, t.in_features), like.new_zeros(t.out_features, 1))
                 for k, t in union.items() if k not in ad.factors}
        out.append(LoraWeights(ad.base_model, tuple(union.values()), {**ad.factors, **zeros}, dict(ad.metadata)))
    return out


def check_same_targets(adapters: Sequence[LoraWeights]) -> None:
    """All adapters share base model, target keys and shapes (ranks may differ)."""
    first = adapters[0]
    for i, other in enumerate(adapters[1:], start=1):
        if other.base_model != first.base_model:
            raise HypernetError(f"adapter {i} is for base model {other.base_model!r}, "
                                f"adapter 0 for {first.base_model!r}")
        if other.shapes_signature() != first.shapes_signature():
            raise HypernetError(f"adapter {i} targets/shapes differ from adapter 0")
