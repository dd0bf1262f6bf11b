"""Local generation backends side by side, in one run, on the embedded SmolLM2-135M-Instruct Q4_1 GGUF:

    bare            llama_cpp.Llama on the GGUF, nothing else (the reference), n_threads=2
    llama           the llama backend's engine (LlamaChat: GGUF, n_threads=2, its default), no adapter
    llama+policy    the same with the shipped policy adapter applied as a GGUF LoRA (unmerged, at runtime),
                    its factors in float32
    llama+policy-f16, llama+policy-q8_0   the same with the LoRA's factors stored as f16 / q8_0 (q8_0 where
                    a row is whole blocks of 32, f16 elsewhere): fewer bytes read beside the weights per token
    llama+merged-q8_0, llama+merged-q4_1   the policy merged into the GGUF's weights instead (those weights
                    requantized to q8_0 / to the base's own q4_1; local_chat.merged_gguf): no runtime LoRA
    llama+policy+skill, llama+merged-q8_0+skill   a parametric run's adapters: the policy (at runtime or
                    merged) and a skill adapter at runtime shaped as the merged top-3 skills (rank 24 on
                    q_proj/v_proj; random values: the cost depends on the shapes only)
    *-1t            each of the first three on one thread (on a shared 2-core machine the second thread can cost
                    more than it brings: llama.cpp's threads wait for each other at every layer)
    torch           the torch backend's model (transformers on the GGUF dequantized to float32)
    torch+policy    the same with the policy adapter merged into the weights (as the torch backend does)

Every measurement round visits every configuration in turn (the engines are loaded side by side), so
they share whatever load the machine has; ratios are against bare llama.cpp on as many threads.
Per configuration, all greedy:
- prefill tokens/s: a fresh ~1,000-token prompt to the first generated token;
- decode tokens/s: the next 63 tokens (64 generated, end of text not stopping it), after the prefill;
- turn latency vs turn index (not for `torch`: merged into the weights, the adapter costs nothing there,
  and torch+policy is the torch backend as the agent runs it): a scripted 10-turn conversation, every turn
  the same for all configurations:
  the prompt so far, a fixed-length reply (32 tokens generated), then a fixed scripted assistant message
  and a ~150-token observation appended for the next turn. The llama engines keep the KV cache of the
  longest common token prefix (so a turn prefills only what was appended); the torch backend
  (LocalChat, transformers' generate) re-reads the whole conversation every turn;
- the llama backend as the agent uses it, `LlamaChat.chat` with the policy under the action grammar, over
  the same conversation (replies end where the grammar ends them): latency, tokens, reused prefix per turn.

Agreement of greedy outputs under the policy adapter, llama (Q4_1 + GGUF LoRA) vs torch (the same Q4_1
values dequantized to float32, LoRA merged): per prompt of a fixed set, 32 greedy tokens from each; reported
are exact sequence matches, the common prefix, and the teacher-forced top-1 agreement (torch's argmax at
every position of llama's sequence); as controls, the teacher-forced rate of llama without the adapter
against torch with it, and of both without. The weights are the same numbers in both; what differs is the
arithmetic (llama.cpp quantizes activations to 8 bits for the Q4_1 products, keeps the KV cache in f16 and
applies the LoRA beside the weights), so near-ties can flip and a greedy sequence diverge from there.

Writes bench/results/backends.json (machine, load before/after every section) and backends.png.

    python bench/bench_backends.py [--quick] [--note "..."]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.machine import label_and_save, machine_info  # noqa: E402

RESULTS = ROOT / "bench" / "results"
CONFIGS = ("bare", "bare-1t", "llama", "llama-1t", "llama+policy", "llama+policy-1t", "llama+policy-f16",
           "llama+policy-q8_0", "llama+merged-q8_0", "llama+merged-q4_1", "llama+policy+skill",
           "llama+merged-q8_0+skill", "torch", "torch+policy")
LORA_DTYPES = ("f16", "q8_0")
MERGED = ("q8_0", "q4_1")  # types the policy's merged weights are requantized to
SKILL_RANK = 24  # a parametric run's merged skill adapter: the top 3 skills at rank 8 each
NO_TURNS = ("torch",)
N_THREADS = 2
N_CTX = 4096
PREFILL_TOKENS = 1000
DECODE_TOKENS = 64
TURNS, REPLY_TOKENS = 10, 32
AGREE_TOKENS = 32
AGREE_PROMPTS = [
    "Fix the failing test in stats.py.",
    "The test test_median_even fails: median([1, 2, 3, 4]) returns 3 instead of 2.5. Fix it.",
    "paginate() returns one page too many when the item count is a multiple of the page size. Fix it.",
    "camel_to_snake('HTTPServer') should be 'http_server'; the test says 'h_t_t_p_server'. Fix it.",
    "def clamp(value, low, high):",
    "Write a commit message for a fix of an off-by-one error in a pagination helper.",
    "Review this change: `if n > 0:` became `if n >= 0:` in mean().",
    "List the steps to localize a bug from a failing assertion.",
]
SCRIPTED_REPLY = "I will look at the failing test first.\n```test\n```"


def observation(turn: int) -> str:
    """~150 tokens that look like a compact test report (different every turn)."""
    lines = [f"$ pytest -q  (run {turn})", f"FAILED tests/test_stats.py::test_case_{turn} - AssertionError"]
    for i in range(3):
        lines.append(f"  stats.py:{10 + 3 * i + turn}: in median: return values[len(values) // 2] + {i}")
    lines += [f"E   assert {turn + 1.5} == {turn + 2.5}", f"E    +  where {turn + 1.5} = median([1, 2, {turn}, 4])",
              f"{turn} failed, {12 - turn} passed in 0.0{turn}s"]
    return "\n".join(lines)


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# --- engines ---------------------------------------------------------------------------------------------

class LlamaEngine:
    """Greedy generation of a fixed number of tokens on a llama_cpp.Llama (bare or the backend's)."""

    def __init__(self, llm) -> None:
        self.llm = llm

    def fresh(self) -> None:
        self.llm.reset()
        self.llm._ctx.kv_cache_clear()

    def generate(self, ids: list[int], n: int) -> tuple[list[int], float, float, int]:
        """(tokens, seconds to the first token, seconds for the rest, prompt tokens reused from the cache)."""
        from agent.runtime.llama_backend import cached_prefix

        reused = cached_prefix(self.llm, ids)
        out, t0 = [], time.perf_counter()
        t1 = t0
        for tok in self.llm.generate(ids, top_k=1, top_p=1.0, min_p=0.0, temp=0.0, reset=True):
            out.append(tok)
            if len(out) == 1:
                t1 = time.perf_counter()
            if len(out) == n:
                break
        return out, t1 - t0, time.perf_counter() - t1, min(reused, len(ids) - 1)


class TorchEngine:
    """transformers' generate on the dequantized model, as LocalChat runs it (no KV kept between calls)."""

    def __init__(self, model) -> None:
        self.model = model

    def fresh(self) -> None:
        pass

    def generate(self, ids: list[int], n: int) -> tuple[list[int], float, float, int]:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        stamps: list[float] = []

        class Stamp(StoppingCriteria):  # called once per generated token: the first call ends the prefill
            def __call__(self, input_ids, scores, **kwargs):
                stamps.append(time.perf_counter())
                return torch.zeros(input_ids.shape[0], dtype=torch.bool)

        x = torch.tensor([ids])
        with torch.no_grad():
            t0 = time.perf_counter()
            out = self.model.generate(input_ids=x, attention_mask=torch.ones_like(x), do_sample=False, pad_token_id=0,
                                      max_new_tokens=n, min_new_tokens=n,
                                      stopping_criteria=StoppingCriteriaList([Stamp()]))
        return out[0, len(ids):].tolist(), stamps[0] - t0, stamps[-1] - stamps[0], 0


# --- measurements ----------------------------------------------------------------------------------------

def conversation(render, turns: int) -> list[list[int]]:
    """The prompt (token ids) of every turn of the scripted conversation."""
    from agent.runtime.loop import SYSTEM, first_message

    messages = [{"role": "system", "content": SYSTEM},
                {"role": "user", "content": first_message("fix the failing test in stats.py")}]
    prompts = []
    for turn in range(turns):
        prompts.append(render(messages))
        messages += [{"role": "assistant", "content": SCRIPTED_REPLY}, {"role": "user", "content": observation(turn)}]
    return prompts


def scripted_messages(turns: int) -> list[list[dict]]:
    from agent.runtime.loop import SYSTEM, first_message

    messages = [{"role": "system", "content": SYSTEM},
                {"role": "user", "content": first_message("fix the failing test in stats.py")}]
    out = []
    for turn in range(turns):
        out.append(list(messages))
        messages += [{"role": "assistant", "content": SCRIPTED_REPLY}, {"role": "user", "content": observation(turn)}]
    return out


def agreement(llama_engine, model, prompts: list[list[int]], n: int, eos: int, free: bool = True) -> dict:
    """llama's greedy answer vs torch's (free=True), and torch teacher-forced on llama's: up to n tokens, an
    answer ending at its end-of-text token (included)."""
    import torch

    def cut(seq: list[int]) -> list[int]:
        return seq[: seq.index(eos) + 1] if eos in seq else seq

    rows = []
    for ids in prompts:
        llama_engine.fresh()
        ours = cut(llama_engine.generate(ids, n)[0])
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids + ours[:-1]])).logits[0, len(ids) - 1:]
        row = {"prompt_tokens": len(ids), "answer_tokens": len(ours),
               "teacher_forced_top1": (logits.argmax(-1) == torch.tensor(ours)).float().mean().item()}
        if free:
            x = torch.tensor([ids])
            with torch.no_grad():  # transformers' greedy, stopping at end of text like llama's answer
                theirs = cut(model.generate(input_ids=x, attention_mask=torch.ones_like(x), do_sample=False,
                                            max_new_tokens=n, eos_token_id=eos,
                                            pad_token_id=eos)[0, len(ids):].tolist())
            row["exact"] = ours == theirs
            row["common_prefix"] = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b),
                                        min(len(ours), len(theirs)))
        rows.append(row)
    out = {"tokens": n, "prompts": len(rows),
           "teacher_forced_top1": statistics.mean(r["teacher_forced_top1"] for r in rows), "rows": rows}
    if free:
        out["exact_rate"] = sum(r["exact"] for r in rows) / len(rows)
        out["mean_common_prefix"] = statistics.mean(r["common_prefix"] for r in rows)
    return out


def agreement_runs(chat, loaded, policy, agree_prompts: list[str]) -> dict:
    """Under the policy: llama (chat's engine, the policy applied) vs torch (merged); then two controls."""
    from hypernet.inject import apply_lora

    render = chat.render
    eos = chat.llm.token_eos()
    agree_ids = [render([{"role": "user", "content": p}]) for p in agree_prompts]
    agree = {}
    with apply_lora(loaded.model, policy, mode="merge", base_model=loaded.name):
        agree["policy"] = agreement(LlamaEngine(chat.llm), loaded.model, agree_ids, AGREE_TOKENS, eos)
        chat.set_adapters([])  # control: llama without the adapter against torch with it
        agree["llama_base_vs_torch_policy"] = agreement(LlamaEngine(chat.llm), loaded.model, agree_ids, AGREE_TOKENS,
                                                        eos, free=False)
    agree["base"] = agreement(LlamaEngine(chat.llm), loaded.model, agree_ids, AGREE_TOKENS, eos, free=False)
    agree["load_1m"] = load()[0]
    return agree


def skill_shaped(loaded):
    """A random adapter shaped as a parametric run's merged skill adapter (SKILL_RANK on q_proj and v_proj)."""
    import torch

    from hypernet.lora import LoraWeights
    from hypernet.targets import find_targets

    g = torch.Generator().manual_seed(0)
    targets = find_targets(loaded.model, ("q_proj", "v_proj"))
    return LoraWeights(loaded.name, tuple(targets), {
        t.key: (torch.randn(SKILL_RANK, t.in_features, generator=g) / t.in_features ** 0.5,
                torch.randn(t.out_features, SKILL_RANK, generator=g) * 1e-3) for t in targets})


# --- main --------------------------------------------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="a check that it runs: tiny sizes, numbers meaningless")
    ap.add_argument("--note", default="", help="machine conditions, stored in the JSON")
    ap.add_argument("--agreement-only", action="store_true",
                    help="recompute only the agreement section of the existing backends.json")
    args = ap.parse_args()
    global PREFILL_TOKENS, DECODE_TOKENS, REPLY_TOKENS, AGREE_TOKENS
    repeats, turns, agree_prompts = 3, TURNS, AGREE_PROMPTS
    if args.quick:
        PREFILL_TOKENS, DECODE_TOKENS, REPLY_TOKENS, AGREE_TOKENS = 200, 8, 4, 6
        repeats, turns, agree_prompts = 1, 3, AGREE_PROMPTS[:2]

    import contextlib

    import llama_cpp
    import torch

    from agent.runtime.actions import GRAMMAR_PATH
    from agent.runtime.base_model import embedded_gguf, load_model
    from agent.runtime.llama_backend import LlamaChat
    from agent.runtime.local_chat import gguf_adapter, load_policy, merged_gguf
    from hypernet.inject import apply_lora

    out = {"bench": "backends", "machine": {**machine_info(), "llama_cpp_python": llama_cpp.__version__,
                                            "llama_n_threads": N_THREADS},
           "note": args.note, "quick": args.quick, "load_at_start": load()}
    t_start = time.perf_counter()
    loaded = load_model("smollm2-135m-instruct")
    gguf = embedded_gguf(loaded.name)
    policy = load_policy(None, loaded)
    policy_gguf = gguf_adapter(policy, gguf, "f32")
    typed_gguf = {dtype: gguf_adapter(policy, gguf, dtype) for dtype in LORA_DTYPES}
    out["model"] = {"gguf": gguf.name, "torch_dtype": str(next(loaded.model.parameters()).dtype),
                    "policy_ranks": sorted(set(policy.ranks.values())), "policy_targets": len(policy.keys),
                    "lora_file_bytes": {"f32": policy_gguf.stat().st_size,
                                        **{d: f.stat().st_size for d, f in typed_gguf.items()}}}

    if args.agreement_only:
        path = Path(os.environ.get("BENCH_RESULTS", RESULTS)) / "backends.json"
        old = json.loads(path.read_text())
        chat = LlamaChat(gguf, n_ctx=N_CTX, n_threads=1, adapters=[policy_gguf])
        old["agreement"] = agreement_runs(chat, loaded, policy, agree_prompts)
        old["agreement"]["separate_run"] = {"note": args.note, "load_at_start": out["load_at_start"]}
        path.write_text(json.dumps(old, indent=2) + "\n")
        print(json.dumps({k: v for k, v in old["agreement"]["policy"].items() if k != "rows"}))
        return
    bare = {t: llama_cpp.Llama(model_path=str(gguf), n_ctx=N_CTX, n_threads=t, n_threads_batch=t, verbose=False)
            for t in (N_THREADS, 1)}
    merged = {q: merged_gguf(policy, gguf, q) for q in MERGED}
    skill_gguf = gguf_adapter(skill_shaped(loaded), gguf)

    def files(name: str) -> tuple[Path, list[Path]]:
        """A llama config's model file and runtime LoRAs."""
        model = next((merged[q] for q in MERGED if f"+merged-{q}" in name), gguf)
        runtime = [typed_gguf.get(name.rsplit("-", 1)[-1], policy_gguf)] if "+policy" in name else []
        return model, runtime + ([skill_gguf] if name.endswith("+skill") else [])

    chats = {name: LlamaChat(files(name)[0], n_ctx=N_CTX, n_threads=1 if name.endswith("-1t") else N_THREADS,
                             max_new_tokens=96, grammar=GRAMMAR_PATH.read_text(), adapters=files(name)[1] or None)
             for name in CONFIGS if name.startswith("llama")}
    out["model"]["merged_file_bytes"] = {q: f.stat().st_size for q, f in merged.items()}
    render = chats["llama"].render
    filler = " ".join(f"line {i}: total = total + values[{i}]" for i in range(200))
    prompt = render([{"role": "user", "content": filler}])[:PREFILL_TOKENS]
    prompts = conversation(render, turns)
    out["conversation"] = {"turns": turns, "prompt_tokens": [len(p) for p in prompts],
                           "scripted_reply": SCRIPTED_REPLY, "observation_tokens": [len(render([{"role": "user",
                           "content": observation(t)}])) for t in range(turns)]}
    engines = {name: LlamaEngine(bare[1 if name.endswith("-1t") else N_THREADS]) if name.startswith("bare")
               else LlamaEngine(chats[name].llm) if name.startswith("llama") else TorchEngine(loaded.model)
               for name in CONFIGS}

    @contextlib.contextmanager
    def config(name: str):
        """The engine of `name`; torch+policy merges the adapter into the shared torch model meanwhile."""
        with contextlib.ExitStack() as stack:
            if name == "torch+policy":
                stack.enter_context(apply_lora(loaded.model, policy, mode="merge", base_model=loaded.name))
            yield engines[name]

    # Every measurement round visits every configuration in turn, so they share the machine's load.
    for name in CONFIGS:
        with config(name) as engine:
            engine.fresh()
            engine.generate(prompt[:64], 4)  # warm-up
    samples: dict[str, list] = {name: [] for name in CONFIGS}
    for _ in range(repeats):
        for name in CONFIGS:
            with config(name) as engine:
                engine.fresh()
                toks, first, rest, _ = engine.generate(prompt, DECODE_TOKENS)
                samples[name].append((len(prompt) / first, (len(toks) - 1) / rest, load()[0]))
    turn_rows: dict[str, list] = {name: [] for name in CONFIGS if name not in NO_TURNS}
    for name in turn_rows:
        engines[name].fresh()
    for i, ids in enumerate(prompts):
        for name in turn_rows:
            with config(name) as engine:
                toks, first, rest, reused = engine.generate(ids, REPLY_TOKENS)
            turn_rows[name].append({"turn": i + 1, "prompt_tokens": len(ids), "reused_tokens": reused,
                                    "seconds": first + rest, "first_token_s": first, "load_1m": load()[0]})
        print("turn", i + 1, json.dumps({n: round(r[-1]["seconds"], 2) for n, r in turn_rows.items()}), flush=True)
    results = {}
    for name in CONFIGS:
        pre, dec, loads = zip(*samples[name])
        results[name] = {"speed": {"prefill_tokens": len(prompt), "decode_tokens": DECODE_TOKENS, "repeats": repeats,
                                   "prefill_tok_s": statistics.median(pre), "prefill_tok_s_all": list(pre),
                                   "decode_tok_s": statistics.median(dec), "decode_tok_s_all": list(dec),
                                   "load_1m": list(loads)}}
        if name in turn_rows:
            rows = turn_rows[name]
            results[name]["turns"] = {"reply_tokens": REPLY_TOKENS, "turns": rows,
                                      "last_over_first": rows[-1]["seconds"] / rows[0]["seconds"]}
        print(name, json.dumps({k: round(results[name]["speed"][k], 1) for k in ("prefill_tok_s", "decode_tok_s")}),
              flush=True)
    for name in CONFIGS:  # against bare llama.cpp on as many threads (the torch backends: the 2-thread one)
        s, ref = results[name]["speed"], results["bare-1t" if name.endswith("-1t") else "bare"]["speed"]
        results[name]["vs_bare"] = {"prefill": s["prefill_tok_s"] / ref["prefill_tok_s"],
                                    "decode": s["decode_tok_s"] / ref["decode_tok_s"]}
    out["configs"] = results
    dec = {name: results[name]["speed"]["decode_tok_s"] for name in CONFIGS}
    out["adapter_cost"] = {"llama_decode_with_over_without": dec["llama+policy"] / dec["llama"],
                           **{f"llama_{d}_decode_with_over_without": dec[f"llama+policy-{d}"] / dec["llama"]
                              for d in LORA_DTYPES},
                           **{f"llama_merged_{q}_decode_over_without": dec[f"llama+merged-{q}"] / dec["llama"]
                              for q in MERGED},
                           "llama_run_adapters_decode_over_without": dec["llama+policy+skill"] / dec["llama"],
                           "llama_run_adapters_merged_q8_0_decode_over_without":
                               dec["llama+merged-q8_0+skill"] / dec["llama"],
                           "llama_1t_decode_with_over_without": dec["llama+policy-1t"] / dec["llama-1t"],
                           "torch_decode_with_over_without": dec["torch+policy"] / dec["torch"]}

    # the agent's own call: chat() under the grammar (replies end where the grammar ends them), interleaved
    grammar = {name: [] for name in ("llama+policy", "llama+policy-1t")}
    for name in grammar:
        chats[name].llm.reset()
        chats[name].llm._ctx.kv_cache_clear()
    for i, messages in enumerate(scripted_messages(turns)):
        for name, rows in grammar.items():
            t0 = time.perf_counter()
            chats[name].chat(messages)
            st = chats[name].stats
            rows.append({"turn": i + 1, "prompt_tokens": st.prompt_tokens, "reused_tokens": st.reused_tokens,
                         "completion_tokens": st.completion_tokens, "seconds": time.perf_counter() - t0,
                         "load_1m": load()[0]})
    out["grammar_chat"] = {name: {"turns": rows, "decode_tok_s_overall": sum(r["completion_tokens"] for r in rows)
                                  / sum(r["seconds"] for r in rows)} for name, rows in grammar.items()}
    print("grammar chat", json.dumps({n: [round(r["seconds"], 2) for r in rows] for n, rows in grammar.items()}),
          flush=True)
    chat = chats["llama+policy-1t"]

    out["agreement"] = agreement_runs(chat, loaded, policy, agree_prompts)
    agree = out["agreement"]
    # the typed LoRAs against torch with the float32 policy merged: what storing the factors smaller costs
    agree_ids = [chat.render([{"role": "user", "content": p}]) for p in agree_prompts]
    with apply_lora(loaded.model, policy, mode="merge", base_model=loaded.name):
        for dtype in LORA_DTYPES:
            agree[f"policy_{dtype}"] = agreement(LlamaEngine(chats[f"llama+policy-{dtype}"].llm), loaded.model,
                                                 agree_ids, AGREE_TOKENS, chat.llm.token_eos())
        for q in MERGED:  # the policy merged into the weights, requantized
            agree[f"policy_merged_{q}"] = agreement(LlamaEngine(chats[f"llama+merged-{q}"].llm), loaded.model,
                                                    agree_ids, AGREE_TOKENS, chat.llm.token_eos())
    print("agreement", json.dumps({k: v["teacher_forced_top1"] for k, v in agree.items() if isinstance(v, dict)}),
          agree["policy"]["exact_rate"])
    out["load_at_end"] = load()
    out["seconds"] = time.perf_counter() - t_start
    out["torch_threads"] = torch.get_num_threads()
    results_dir = Path(os.environ.get("BENCH_RESULTS", RESULTS))  # --quick runs elsewhere, not over the real file
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / "backends.json").write_text(json.dumps(out, indent=2) + "\n")
    plot(out, results_dir / "backends.png")


def plot(out: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    configs = out["configs"]
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(16, 4.2))
    names = list(configs)
    for ax, key, title in ((ax1, "decode_tok_s", f"decode ({DECODE_TOKENS} greedy tokens)"),
                           (ax2, "prefill_tok_s", f"prefill ({PREFILL_TOKENS} tokens)")):
        vals = [configs[n]["speed"][key] for n in names]
        bars = ax.bar(names, vals, color=["grey" if n.startswith("bare") else "C0" if n.startswith("llama") else "C1"
                                          for n in names], alpha=0.9)
        for b, n in zip(bars, names):
            ax.annotate(f"{configs[n]['vs_bare'][key.split('_')[0]]:.2f}×",
                        (b.get_x() + b.get_width() / 2, b.get_height()),
                        ha="center", va="bottom", fontsize=8)
        ax.set_ylabel("tokens/s")
        ax.set_title(f"{title}; × bare llama.cpp")
        ax.tick_params(axis="x", labelsize=7, labelrotation=30)
    for n in names:
        if "turns" not in configs[n]:
            continue
        rows = configs[n]["turns"]["turns"]
        ax3.plot([r["turn"] for r in rows], [r["seconds"] for r in rows], "o-", label=n)
    for n, style in (("llama+policy", "k^--"), ("llama+policy-1t", "kv:")):
        rows = out["grammar_chat"][n]["turns"]
        ax3.plot([r["turn"] for r in rows], [r["seconds"] for r in rows], style, label=f"{n}, chat() + grammar")
    ax3.set_xlabel("turn")
    label_and_save(fig, ax3, path, "seconds per turn",
                   f"turn latency ({REPLY_TOKENS}-token replies; "
                   f"load {out['load_at_start'][0]}→{out['load_at_end'][0]})",
                   legend_size=7)


if __name__ == "__main__":
    main()
