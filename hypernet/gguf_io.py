"""LoRA factors as a GGUF LoRA adapter that llama.cpp loads (llama_adapter_lora_init / --lora).

Layout (checked against llama.cpp's src/llama-adapter.cpp and convert_lora_to_gguf.py, vendored in
llama-cpp-python 0.3.36):

* KV: general.type = "adapter", general.architecture = the base model's (must match, else
  "model arch and LoRA arch mismatch"), adapter.type = "lora", adapter.lora.alpha (f32).
* Tensors: `blk.{i}.{attn_q,attn_k,attn_v,attn_output,ffn_gate,ffn_up,ffn_down}.weight.lora_a` and
  `.lora_b`. A is stored as the numpy array (r, in) -> ggml ne = [in, r]; B as (out, r) -> ne = [r, out],
  i.e. exactly the PEFT/our layout; llama.cpp checks base.ne[0] == a.ne[0], base.ne[1] == b.ne[1] and
  a.ne[1] == b.ne[0] ("lora_a tensor is not transposed" otherwise).
* Scale: llama.cpp uses scale = user_scale * alpha / rank when alpha != 0, else user_scale
  (llama_adapter_lora_weight::get_scale). alpha is one number per file but our merged adapters have a
  rank per target, so we fold each target's scale into B and write alpha = 0: ΔW = B @ A exactly
  (times the user scale given at load time, 1.0 by default).
* llama models: convert_hf_to_gguf permutes the rows of q_proj / k_proj (rotary layout: HF's half
  split -> GGML's interleaved pairs). ΔW's rows are B's rows, so B of q (n_head) and k (n_head_kv)
  gets the same permutation; A is untouched.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import numpy as np

from .lora import LoraWeights

# HF module short name -> GGUF tensor base name (llama-family)
GGUF_NAMES = {
    "q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "o_proj": "attn_output",
    "gate_proj": "ffn_gate", "up_proj": "ffn_up", "down_proj": "ffn_down",
}
PERMUTED_ARCHS = {"llama"}  # archs whose q/k rows convert_hf_to_gguf permutes (LlamaModel.undo_permute)


class GGUFLoraError(ValueError):
    """Factors that cannot be written as, or do not fit, a GGUF LoRA for the given base."""


def permute_rows(w: np.ndarray, n_head: int, n_head_kv: int | None = None) -> np.ndarray:
    """convert_hf_to_gguf's LlamaModel.permute, applied to the first (output) axis of `w`."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    out = w.shape[0]
    return (w.reshape(n_head, 2, out // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape))


def base_info(base_gguf: str | os.PathLike) -> dict:
    """Architecture, head counts and tensor shapes (numpy order: out, in) of a base GGUF."""
    from gguf import GGUFReader

    reader = GGUFReader(str(base_gguf))

    def field(key: str):
        f = reader.fields.get(key)
        if f is None:
            return None
        value = f.parts[f.data[0]]
        return bytes(value).decode() if f.types and f.types[0].name == "STRING" else int(value[0])

    arch = field("general.architecture")
    shapes = {t.name: tuple(int(x) for x in reversed(t.shape.tolist())) for t in reader.tensors}
    return {"arch": arch, "n_head": field(f"{arch}.attention.head_count"),
            "n_head_kv": field(f"{arch}.attention.head_count_kv"), "shapes": shapes}


def write_gguf_lora(path: str | os.PathLike,
                    factors: Mapping[tuple[int, str], tuple[np.ndarray, np.ndarray, float]],
                    base_gguf: str | os.PathLike, *, dtype: str = "f32", name: str = "lora",
                    extra_kv: Mapping[str, str] | None = None) -> Path:
    """Write {(layer, hf_module): (A r×in, B out×r, scale)} as a GGUF LoRA for `base_gguf` (ΔW = scale·B@A).

    Factors may be numpy arrays or torch tensors (anything np.asarray takes). Shapes are checked against
    the base GGUF's tensors; the file is written next to `path` and renamed into place.
    """
    import gguf

    info = base_info(base_gguf)
    if dtype not in ("f32", "f16", "q8_0"):
        raise GGUFLoraError(f"dtype must be f32, f16 or q8_0, not {dtype!r}")

    def add(tname: str, x: np.ndarray) -> None:
        # q8_0 needs rows (the last numpy axis) in blocks of 32; smaller ranks fall back to f16
        if dtype == "q8_0" and x.shape[-1] % 32 == 0:
            q = gguf.quants.quantize(x.astype(np.float32), gguf.GGMLQuantizationType.Q8_0)
            writer.add_tensor(tname, q, raw_shape=q.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            writer.add_tensor(tname, np.ascontiguousarray(x, dtype=np.float32 if dtype == "f32" else np.float16))

    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # own name: two processes may write the same file
    writer = gguf.GGUFWriter(str(tmp), arch=info["arch"])
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_name(name)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, 0.0)  # 0: scale = user scale (each target's scale is in B)
    for key, value in (extra_kv or {}).items():
        writer.add_string(key, value)
    for base, a, b in _gguf_factors(factors, info):
        add(f"{base}.lora_a", a)
        add(f"{base}.lora_b", b)
    return _finish(writer, tmp, path, writer.write_tensors_to_file)


def _gguf_factors(factors: Mapping[tuple[int, str], tuple[np.ndarray, np.ndarray, float]],
                  info: dict) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """(base tensor name, A r×in, B out×r in the GGUF's row order with the scale folded in) per target,
    checked against the base's shapes."""
    arch = info["arch"]
    for (layer, module), (a, b, scale) in sorted(factors.items()):
        if module not in GGUF_NAMES:
            raise GGUFLoraError(f"module {module!r} has no GGUF name (known: {', '.join(GGUF_NAMES)})")
        a = np.asarray(_numpy(a), dtype=np.float32)
        b = np.asarray(_numpy(b), dtype=np.float32) * np.float32(scale)
        if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[1]:
            raise GGUFLoraError(f"layer {layer} {module}: need A (r×in), B (out×r); got {a.shape}, {b.shape}")
        base = f"blk.{layer}.{GGUF_NAMES[module]}.weight"
        expected = info["shapes"].get(base)
        if expected is None:
            raise GGUFLoraError(f"base model has no tensor {base}")
        if expected != (b.shape[0], a.shape[1]):
            raise GGUFLoraError(f"{base}: base is out×in {expected}, adapter gives {(b.shape[0], a.shape[1])}")
        if arch in PERMUTED_ARCHS and module == "q_proj":
            b = permute_rows(b, info["n_head"], info["n_head"])
        elif arch in PERMUTED_ARCHS and module == "k_proj":
            b = permute_rows(b, info["n_head"], info["n_head_kv"])
        yield base, a, b


def _finish(writer, tmp: Path, path: Path, write_tensors: Callable[[], None]) -> Path:
    """Header, metadata and tensors to the temporary file, renamed into place; nothing left on failure."""
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        write_tensors()
        writer.close()
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


MERGED_TYPES = ("q8_0", "q4_1", "f16")  # what write_merged_gguf requantizes the changed weights to


def write_merged_gguf(path: str | os.PathLike,
                      factors: Mapping[tuple[int, str], tuple[np.ndarray, np.ndarray, float]],
                      base_gguf: str | os.PathLike, *, qtype: str = "q8_0") -> Path:
    """The base GGUF with ΔW = scale·B@A added to each target's weight, that weight requantized to `qtype`;
    every other tensor and all metadata copied as they are. llama.cpp then runs the adapter at the price of
    the model alone, not of two extra products per target and token.

    The sum is made on the base's dequantized values. Requantizing to the base's own Q4_1 rounds a policy's
    ΔW (~3 % of ‖W‖) away under 4-bit noise larger than itself; Q8_0 keeps it (bench_backends, agreement)."""
    import gguf

    if qtype not in MERGED_TYPES:
        raise GGUFLoraError(f"qtype must be one of {', '.join(MERGED_TYPES)}, not {qtype!r}")
    target_type = gguf.GGMLQuantizationType[qtype.upper()]
    info = base_info(base_gguf)
    deltas = {base: b @ a for base, a, b in _gguf_factors(factors, info)}
    reader = gguf.GGUFReader(str(base_gguf))
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    writer = gguf.GGUFWriter(str(tmp), arch=info["arch"])
    for field in reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue  # the writer writes these itself
        vtype = field.types[0]
        writer.add_key_value(field.name, field.contents(), vtype,
                             sub_type=field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None)
    tensors = []
    for t in reader.tensors:
        if t.name in deltas:
            merged = gguf.quants.dequantize(t.data, t.tensor_type) + deltas[t.name]
            data = merged.astype(np.float16) if qtype == "f16" else gguf.quants.quantize(merged, target_type)
            tensors.append((t.name, data, target_type))
        else:
            tensors.append((t.name, t.data, t.tensor_type))
    for name, data, ttype in tensors:
        writer.add_tensor_info(name, data.shape, data.dtype, data.nbytes, ttype)

    def write_tensors() -> None:
        writer.write_ti_data_to_file()
        for _, data, _ in tensors:
            writer.write_tensor_data(data)

    return _finish(writer, tmp, path, write_tensors)


def from_lora_weights(lora: LoraWeights) -> dict[tuple[int, str], tuple[np.ndarray, np.ndarray, float]]:
    """LoraWeights -> the mapping write_gguf_lora takes (our B already carries each target's scale)."""
    return {(t.layer, t.module): (_numpy(lora.factors[t.key][0]), _numpy(lora.factors[t.key][1]), 1.0)
            for t in lora.targets}


def export_gguf_lora(lora: LoraWeights, path: str | os.PathLike, base_gguf: str | os.PathLike, **kw) -> Path:
    """Write an adapter as a GGUF LoRA for the base GGUF it was made for (shapes checked against it)."""
    return write_gguf_lora(path, from_lora_weights(lora), base_gguf, **kw)


def _numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        return x.detach().cpu().float().numpy()
    return np.asarray(x)
