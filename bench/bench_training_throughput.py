"""Training throughput on CPU: the hypernetwork vs plain LoRA fine-tuning of the same base, same tokens.

Each method runs full optimizer steps (forward, loss on the assistant tokens, backward, AdamW) on the
same batch of B×T tokens of the embedded SmolLM2-135M-Instruct (float32), with rank-8 LoRA on q/v:

- hypernet: the training loop's own step (`hypernet.train.compute_loss`): the batch's skills (one per
  row, all different: the worst case) go through the aggregator + generator, each row gets its own
  LoRA through batched hooks, and the gradient flows back into the hypernetwork. The frozen encoder
  states of the skills are cached, as in training (their one-off cost is reported apart);
- plain LoRA: one shared A, B per target as leaf parameters, applied with the same hooks;
- PEFT LoRA: `peft.get_peft_model` on a copy of the base.

Methods are interleaved step by step so that load from other jobs on a shared machine hits all alike;
the medians give tokens/s and the ratio hypernet / plain LoRA (target: within 1.3×).

    python bench/bench_training_throughput.py [--steps 4] [--batch 4] [--seq 256]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.machine import label_and_save, machine_info  # noqa: E402
from hypernet import HypernetConfig, Hypernetwork, apply_lora  # noqa: E402
from hypernet.batching import IGNORE, Example, SkillBank, collate  # noqa: E402
from hypernet.train import TrainConfig, compute_loss, target_logits  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
MODEL = "smollm2-135m-instruct"


def library_texts(n: int) -> list[str]:
    from memory.seed import seed_docs

    docs = seed_docs()
    if len(docs) < n:
        raise SystemExit(f"need {n} skills in memory/library, found {len(docs)}")
    return [d.text for d in docs[:n]]


def make_batch(tok, texts: list[str], seq: int) -> tuple[list[Example], dict[str, list[int]]]:
    """Row i: seq tokens of skill text i+1 (stand-in for a conversation); the last half is the reply."""
    skills = {f"s{i}": tok(t, add_special_tokens=False)["input_ids"] for i, t in enumerate(texts)}
    stream = tok("\n\n".join(texts[::-1]) * 4, add_special_tokens=False)["input_ids"]
    rows = []
    for i in range(len(texts)):
        ids = stream[i * seq:(i + 1) * seq]
        labels = [IGNORE] * (seq // 2) + ids[seq // 2:]
        rows.append(Example(f"s{i}", tuple(ids), tuple(labels)))
    return rows, skills


def step_hypernet(base, hn, opt, batch, bank, cfg):
    loss, _ = compute_loss(base, hn, hn.targets, batch, bank, None, cfg)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.item()


def _descend(logits, opt, batch) -> float:
    sel, tgt = target_logits(logits, batch.labels)
    loss = F.cross_entropy(sel.float(), tgt)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.item()


def step_plain(base, factors, targets, opt, batch):
    with apply_lora(base, factors, targets=targets):
        logits = base(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False).logits
    return _descend(logits, opt, batch)


def step_peft(model, opt, batch):
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False).logits
    return _descend(logits, opt, batch)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=4, help="timed steps per method (after one warm-up step)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--no-peft", action="store_true")
    ap.add_argument("--threads", type=int, help="torch threads (1 is steadier on a shared machine)")
    ap.add_argument("--out", default=str(RESULTS / "training_throughput"))
    args = ap.parse_args()

    from agent.runtime.base_model import load_model

    if args.threads:
        torch.set_num_threads(args.threads)

    loaded = load_model(MODEL, device="cpu", dtype="float32")
    base, tok = loaded.model, loaded.tokenizer
    load_before = os.getloadavg()
    rows, skill_ids = make_batch(tok, library_texts(args.batch), args.seq)
    batch = collate(rows, range(len(rows)), tok.pad_token_id)
    n_tokens = batch.n_tokens

    cfg_hn = HypernetConfig()  # the shipped configuration: rank 8 on q_proj, v_proj
    torch.manual_seed(0)
    hn = Hypernetwork.for_model(base, cfg_hn, MODEL).train()
    bank = SkillBank(base, hn, skill_ids)
    t0 = time.perf_counter()
    bank.batch(batch.skills)  # the one-off encode of every skill (cached for the whole run)
    encode_s = time.perf_counter() - t0
    opt_hn = torch.optim.AdamW(hn.parameters(), lr=1e-4)
    train_cfg = TrainConfig()

    targets = hn.targets
    g = torch.Generator().manual_seed(0)
    plain = {t.key: (torch.nn.Parameter(torch.randn(cfg_hn.rank, t.in_features, generator=g) / t.in_features ** 0.5),
                     torch.nn.Parameter(torch.zeros(t.out_features, cfg_hn.rank))) for t in targets}
    opt_plain = torch.optim.AdamW([p for ab in plain.values() for p in ab], lr=1e-4)

    methods = {
        "hypernet": lambda: step_hypernet(base, hn, opt_hn, batch, bank, train_cfg),
        "plain_lora": lambda: step_plain(base, plain, targets, opt_plain, batch),
    }
    if not args.no_peft:
        from peft import LoraConfig, get_peft_model

        peft_model = get_peft_model(copy.deepcopy(base), LoraConfig(r=cfg_hn.rank, lora_alpha=cfg_hn.alpha,
                                                                    target_modules=list(cfg_hn.target_modules),
                                                                    lora_dropout=0.0))
        peft_model.train()
        opt_peft = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-4)
        methods["peft_lora"] = lambda: step_peft(peft_model, opt_peft, batch)

    times: dict[str, list[float]] = {m: [] for m in methods}
    for m, fn in methods.items():  # warm-up: allocator, first-call overheads
        fn()
    for _ in range(args.steps):
        for m, fn in methods.items():
            t = time.perf_counter()
            fn()
            times[m].append(time.perf_counter() - t)

    med = {m: statistics.median(v) for m, v in times.items()}
    overhead = hypernet_overhead(hn, opt_hn, bank, batch, args.steps)
    result = {
        "benchmark": "training_throughput",
        "model": MODEL, "dtype": "float32", "device": "cpu",
        "batch": args.batch, "seq": args.seq, "tokens_per_step": n_tokens,
        "loss_tokens_per_step": int((batch.labels != IGNORE).sum()),
        "lora": {"rank": cfg_hn.rank, "targets": list(cfg_hn.target_modules), "n_targets": len(targets)},
        "hypernet_params": sum(p.numel() for p in hn.parameters()),
        "skills_per_step": len(batch.skills),
        "encode_once_s": round(encode_s, 3),
        "step_s": {m: [round(x, 3) for x in v] for m, v in times.items()},
        "median_step_s": {m: round(v, 3) for m, v in med.items()},
        "tokens_per_s": {m: round(n_tokens / v, 1) for m, v in med.items()},
        "ratio_hypernet_vs_plain_lora": round(med["hypernet"] / med["plain_lora"], 3),
        "ratio_hypernet_vs_peft_lora": round(med["hypernet"] / med["peft_lora"], 3) if "peft_lora" in med else None,
        # what the hypernet adds to a step, timed alone (less exposed to other jobs than whole steps)
        "hypernet_overhead_s": overhead,
        "ratio_from_overhead": round((med["plain_lora"] + overhead["total"]) / med["plain_lora"], 3),
        "target_ratio": 1.3,
        "machine": {**machine_info(), "load_avg_1m_before": load_before[0], "load_avg_1m_after": os.getloadavg()[0]},
        "note": "2 shared CPU cores: other jobs ran at the same time; methods interleaved step by step.",
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    plot(result, out.with_suffix(".png"))
    print(json.dumps({k: result[k] for k in ("median_step_s", "tokens_per_s", "ratio_hypernet_vs_plain_lora",
                                             "ratio_hypernet_vs_peft_lora", "hypernet_overhead_s",
                                             "ratio_from_overhead", "encode_once_s")}, indent=2))


def hypernet_overhead(hn, opt, bank, batch, reps: int) -> dict[str, float]:
    """Median seconds of the hypernet's own work per step: aggregator + generator forward, their
    backward (from fixed random cotangents on the factors), and the AdamW step over its parameters."""
    states, mask, chunks = bank.batch(batch.skills)
    g = torch.Generator().manual_seed(1)
    parts: dict[str, list[float]] = {"forward": [], "backward": [], "optimizer": []}
    cot = None
    for _ in range(reps + 1):
        t0 = time.perf_counter()
        factors = hn(states, mask, chunks)
        factors = {k: (a[batch.rows], b[batch.rows]) for k, (a, b) in factors.items()}
        if cot is None:
            cot = {k: (torch.randn(a.shape, generator=g), torch.randn(b.shape, generator=g))
                   for k, (a, b) in factors.items()}
        loss = sum((a * cot[k][0]).sum() + (b * cot[k][1]).sum() for k, (a, b) in factors.items())
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        opt.step()
        opt.zero_grad(set_to_none=True)
        t3 = time.perf_counter()
        for name, dt in zip(parts, (t1 - t0, t2 - t1, t3 - t2)):
            parts[name].append(dt)
    out = {k: round(statistics.median(v[1:]), 3) for k, v in parts.items()}  # the first rep warms up
    out["total"] = round(sum(out.values()), 3)
    return out


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    names = list(result["tokens_per_s"])
    ax1.bar(names, [result["tokens_per_s"][n] for n in names], color=["tab:blue", "tab:gray", "tab:olive"][:len(names)])
    ax1.set_ylabel("training tokens / s (median step)")
    ax1.set_title(f"hypernet / plain LoRA: {result['ratio_hypernet_vs_plain_lora']}× (steps), "
                  f"{result['ratio_from_overhead']}× (overhead alone)", fontsize=9)
    for n in names:
        ax2.plot(result["step_s"][n], marker="o", label=n)
    ax2.set_xlabel("timed step (interleaved)")
    label_and_save(fig, ax2, path, "seconds", f"{result['model']}, {result['batch']}×{result['seq']} tokens, rank {result['lora']['rank']}")


if __name__ == "__main__":
    main()
