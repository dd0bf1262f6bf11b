"""Evaluation generation, old vs new on the same requests: one answer at a time (LocalChat, the adapter
merged per answer, as `agent eval` did) against left-padded batches with one adapter per row.

    python bench/bench_eval_generation.py [--skills 4] [--batch-size 8] [--max-new-tokens 200] [--threads N]
                                          [--skip-old]

Requests: the first --skills held-out skills (spread over subtasks) × modes none, icl, parametric, random,
built exactly as `agent eval` builds them. Writes bench/results/eval_generation.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.machine import machine_info  # noqa: E402


def one_at_a_time(loaded, requests, max_new_tokens: int) -> list[str]:
    """The previous `agent eval` loop; prints each answer's CPU seconds so a cut-short run still tells."""
    from agent.runtime.backends import LocalChat
    from hypernet.inject import apply_lora

    chat = LocalChat(loaded.model, loaded.tokenizer, max_new_tokens=max_new_tokens, stop_after_block=False)
    answers = []
    for i, r in enumerate(requests):
        cpu = time.process_time()
        if r.lora is None:
            answers.append(chat.chat(r.messages)[0])
        else:
            with apply_lora(loaded.model, r.lora, mode="merge"):
                answers.append(chat.chat(r.messages)[0])
        print(f"old {i + 1}/{len(requests)}: {time.process_time() - cpu:.1f} cpu s", flush=True)
    return answers


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--skills", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=200)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--hypernet", default=None)
    ap.add_argument("--skip-old", action="store_true", help="Only the batched path (full-size runs).")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "eval_generation.json")
    args = ap.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from agent.learn.evaluate import MODES, plan
    from agent.learn.generation import generate_all
    from agent.runtime.hypernet_loader import load as load_hypernet
    from agent.runtime.base_model import load_model
    from agent.synth.eval_items import make_eval_items

    from agent.commands.evaluation import first_skills

    items = make_eval_items(split="heldout", n=1, seed=0)
    per_subtask = max(1, -(-args.skills // 6))
    items = first_skills(items, per_subtask)[: args.skills]
    loaded = load_model(args.model)
    handle = load_hypernet(loaded, None, args.hypernet)
    _, requests = plan(items, loaded, handle, MODES)
    # CPU time as well as wall time: on a shared machine wall time mostly measures the neighbours
    start, cpu = time.perf_counter(), time.process_time()
    new = generate_all(loaded.model, loaded.tokenizer, requests, args.max_new_tokens, args.batch_size,
                       lambda rows, s: print(f"new batch of {len(rows)}: {s:.1f} wall s, "
                                         f"{time.process_time() - cpu:.1f} cpu s so far", flush=True))
    new_s, new_cpu = time.perf_counter() - start, time.process_time() - cpu
    print(f"new: {new_s:.1f} wall s, {new_cpu:.1f} cpu s", flush=True)
    if args.skip_old:
        return
    start, cpu = time.perf_counter(), time.process_time()
    old = one_at_a_time(loaded, requests, args.max_new_tokens)
    old_s, old_cpu = time.perf_counter() - start, time.process_time() - cpu
    tokens = [len(loaded.tokenizer(a, add_special_tokens=False)["input_ids"]) for a in old]
    result = {
        "requests": len(requests), "skills": [it.skill.name for it in items], "modes": list(MODES),
        "batch_size": args.batch_size, "max_new_tokens": args.max_new_tokens, "hypernet": handle.source,
        "old_seconds": round(old_s, 1), "new_seconds": round(new_s, 1), "speedup_wall": round(old_s / new_s, 2),
        "old_cpu_seconds": round(old_cpu, 1), "new_cpu_seconds": round(new_cpu, 1),
        "speedup_cpu": round(old_cpu / new_cpu, 2),
        "answer_tokens_old": sum(tokens), "identical_answers": sum(a == b for a, b in zip(old, new)),
        "machine": machine_info(),
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
