"""`agent eval` generation: static batches vs continuous batching, and 8 distinct adapters vs one shared.

Requests: held-out skills × modes parametric and random (a LoRA per skill from the shipped hypernetwork, and
one from unrelated text: every request its own adapter), built as `agent eval` builds them; greedy,
--batch-size rows.

1. As `agent eval` runs (answers end at end of text or --max-new-tokens):
    static        generate_batch over chunks of --batch-size (the previous `agent eval`: a batch runs until
                  its longest answer ends), one adapter per row (apply_lora_rows)
    continuous    generate_continuous (a finished row takes the next request at once), one adapter per row
2. What distinct adapters cost (the S-LoRA / Punica question), every answer exactly --fixed-tokens long (end
   of text ignored) so all variants generate the same tokens, continuous batching throughout:
    distinct      every row its own adapter (LoraSlots: per-row factors, one batched matmul per target)
    same-hooks    every row the same adapter, through the same per-row hooks
    merged        one adapter merged into the weights: no adapter work at decode time
    base          no adapter
Wall and CPU seconds, generated tokens (in 1 the answers re-tokenized), CPU ms per token; for 1, how many
answers are identical.
Writes bench/results/eval_batching.json.

    python bench/bench_eval_batching.py [--skills 8] [--batch-size 8] [--max-new-tokens 200] [--fixed-tokens 48]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.machine import machine_info  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--skills", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=200)
    ap.add_argument("--fixed-tokens", type=int, default=48)
    ap.add_argument("--note", default="")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "eval_batching.json")
    args = ap.parse_args()

    from agent.commands.evaluation import first_skills
    from agent.learn.evaluate import plan
    from agent.learn.generation import Request, generate_batch, generate_continuous
    from agent.runtime.base_model import load_model
    from agent.runtime.hypernet_loader import load as load_hypernet
    from agent.synth.eval_items import make_eval_items
    from hypernet.inject import apply_lora

    items = make_eval_items(split="heldout", n=1, seed=0)
    items = first_skills(items, max(1, -(-args.skills // 6)))[: args.skills]
    loaded = load_model("smollm2-135m-instruct")
    handle = load_hypernet(loaded, None, None)
    _, requests = plan(items, loaded, handle, ("parametric", "random"))
    model, tok = loaded.model, loaded.tokenizer
    load_start = os.getloadavg()

    def run(name: str, fn, generated: int | None = None) -> tuple[dict, list[str]]:
        """generated: the exact token count where known, else the answers re-tokenized."""
        start, cpu = time.perf_counter(), time.process_time()
        answers = fn()
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        tokens = generated or sum(len(tok(a, add_special_tokens=False)["input_ids"]) for a in answers)
        row = {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "answer_tokens": tokens,
               "tokens_per_wall_s": round(tokens / wall, 2), "cpu_ms_per_token": round(1e3 * cpu / tokens, 1),
               "load_avg_1m_after": os.getloadavg()[0]}
        print(name, json.dumps(row), flush=True)
        return row, answers

    def static() -> list[str]:
        order = sorted(range(len(requests)), key=lambda i: -len(tok.apply_chat_template(requests[i].messages)))
        out = [""] * len(requests)
        for k in range(0, len(order), args.batch_size):
            chunk = order[k:k + args.batch_size]
            for i, text in zip(chunk, generate_batch(model, tok, [requests[i] for i in chunk], args.max_new_tokens)):
                out[i] = text
        return out

    def fixed(reqs, merged=None):
        def fn() -> list[str]:
            saved = model.generation_config.eos_token_id
            model.generation_config.eos_token_id = []  # no end of text: every answer --fixed-tokens long
            try:
                with contextlib.ExitStack() as stack:
                    if merged is not None:
                        stack.enter_context(apply_lora(model, merged, mode="merge", base_model=loaded.name))
                    return generate_continuous(model, tok, reqs, args.fixed_tokens, args.batch_size)
            finally:
                model.generation_config.eos_token_id = saved
        return fn

    generate_continuous(model, tok, requests[:2], 4, 2)  # warm-up
    results, answers = {}, {}
    results["static"], answers["static"] = run("static", static)
    results["continuous"], answers["continuous"] = run(
        "continuous", lambda: generate_continuous(model, tok, requests, args.max_new_tokens, args.batch_size))
    one = requests[0].lora
    fixed_runs = {"distinct": fixed(requests), "same-hooks": fixed([Request(r.messages, one) for r in requests]),
                  "merged": fixed([Request(r.messages) for r in requests], merged=one),
                  "base": fixed([Request(r.messages) for r in requests])}
    adapters = {name: run(name, fn, len(requests) * args.fixed_tokens)[0] for name, fn in fixed_runs.items()}
    out = {
        "bench": "eval_batching", "machine": machine_info(), "note": args.note, "load_avg_at_start": load_start,
        "load_avg_at_end": os.getloadavg(), "requests": len(requests), "distinct_adapters": len(
            {id(r.lora) for r in requests}), "skills": [it.skill.name for it in items], "modes": ["parametric", "random"],
        "batch_size": args.batch_size, "max_new_tokens": args.max_new_tokens, "hypernet": handle.source,
        "adapter_ranks": sorted({r for req in requests for r in req.lora.ranks.values()}),
        "adapter_targets": len(requests[0].lora.keys), "fixed_tokens": args.fixed_tokens,
        "as_eval_runs": results, "adapter_cost": adapters,
        "continuous_over_static_wall": round(results["static"]["wall_s"] / results["continuous"]["wall_s"], 2),
        "continuous_over_static_cpu": round(results["static"]["cpu_s"] / results["continuous"]["cpu_s"], 2),
        "cpu_per_token_over_merged": {name: round(r["cpu_ms_per_token"] / adapters["merged"]["cpu_ms_per_token"], 2)
                                      for name, r in adapters.items()},
        "identical_answers_static_vs_continuous": sum(a == b for a, b in zip(answers["static"], answers["continuous"])),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: v for k, v in out.items() if k not in ("machine", "skills")}, indent=1))


if __name__ == "__main__":
    main()
