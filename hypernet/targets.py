"""Find the Linear modules a LoRA targets in any Llama/Qwen/Mistral-shaped model.

Nothing here is model specific: the decoder layers are the ModuleList whose every element holds the
target modules, and a target module is found by the last component of its dotted name.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from .config import HypernetError


@dataclass(frozen=True)
class Target:
    layer: int  # index in the decoder layer list
    module: str  # short module name, e.g. "q_proj"
    path: str  # dotted path inside the model, e.g. "model.layers.3.self_attn.q_proj"
    in_features: int
    out_features: int

    @property
    def key(self) -> str:
        return f"layers.{self.layer}.{self.module}"

    def to_dict(self) -> dict:
        return {"layer": self.layer, "module": self.module, "path": self.path,
                "in_features": self.in_features, "out_features": self.out_features}

    @classmethod
    def from_dict(cls, d: dict) -> Target:
        try:
            return cls(int(d["layer"]), str(d["module"]), str(d["path"]), int(d["in_features"]),
                       int(d["out_features"]))
        except (KeyError, TypeError, ValueError) as e:
            raise HypernetError(f"malformed target description {d!r}: {e}") from e


def _find_in_layer(layer: nn.Module, name: str) -> list[tuple[str, nn.Module]]:
    return [(p, m) for p, m in layer.named_modules() if p.rsplit(".", 1)[-1] == name]


def decoder_layers(model: nn.Module, target_modules: Sequence[str]) -> tuple[str, nn.ModuleList]:
    """The (path, ModuleList) of decoder layers: the longest ModuleList whose elements all hold the targets."""
    best: tuple[str, nn.ModuleList] | None = None
    for path, mod in model.named_modules():
        if not isinstance(mod, nn.ModuleList) or len(mod) == 0:
            continue
        if all(_find_in_layer(layer, name) for layer in mod for name in target_modules):
            if best is None or len(mod) > len(best[1]):
                best = (path, mod)
    if best is None:
        raise HypernetError(f"no decoder layer list with modules {list(target_modules)} in {type(model).__name__}")
    return best


def find_targets(model: nn.Module, target_modules: Sequence[str]) -> list[Target]:
    """Ordered targets: by layer, then in the order of `target_modules`."""
    prefix, layers = decoder_layers(model, target_modules)
    targets = []
    for i, layer in enumerate(layers):
        for name in target_modules:
            found = _find_in_layer(layer, name)
            if len(found) != 1:
                raise HypernetError(f"layer {i}: module name {name!r} is ambiguous: {[p for p, _ in found]}")
            sub, mod = found[0]
            if not isinstance(mod, nn.Linear):
                raise HypernetError(f"layer {i}: {sub} is {type(mod).__name__}, only nn.Linear can be targeted")
            path = ".".join(p for p in (prefix, str(i), sub) if p)
            targets.append(Target(i, name, path, mod.in_features, mod.out_features))
    return targets


def target_linears(model: nn.Module, targets: Sequence[Target]) -> list[nn.Linear]:
    """The nn.Linear of each target, checked against its recorded shape."""
    linears = []
    for t in targets:
        try:
            mod = model.get_submodule(t.path)
        except AttributeError as e:
            raise HypernetError(f"model has no module {t.path!r} (adapter made for another architecture?)") from e
        if not isinstance(mod, nn.Linear):
            raise HypernetError(f"{t.path} is {type(mod).__name__}, not nn.Linear")
        if (mod.in_features, mod.out_features) != (t.in_features, t.out_features):
            raise HypernetError(
                f"{t.path}: model shape in={mod.in_features} out={mod.out_features} but adapter expects "
                f"in={t.in_features} out={t.out_features} (adapter made for another base model?)")
        linears.append(mod)
    return linears
