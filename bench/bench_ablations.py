"""Ablations of the hypernetwork at one equal training budget: stages, rank, encoder pooling.

Every variant trains as from scratch through `agent.learn.hypernet_runs.run_training` (the code behind
`agent hypernet train`; stage variants continue each other's identical checkpoints) with the same
steps per stage, then is measured the same way: cross-entropy on the assistant tokens of the held-out
skills' stage-2 samples (questions about the skill, tasks solved its way), with

- the variant's adapter generated from the right skill (`real`),
- the same hypernetwork fed another held-out skill's text (`shuffled`: does it read the skill?),
- the plain base model (`base`).

`shuffled - real` is the skill-specificity gap: near zero means the adapter is a generic one.

`multitask-lora` is the bar the hypernetwork has to clear: one plain LoRA of the same shape trained on
all training skills' stage-2 samples for as many optimizer steps, at the same batch size, as the
stages-1+2 variant (so at least its token budget: stage-2 samples are the longer ones), applied to every
held-out skill; it reads no skill, so its `shuffled` equals its `real`.

`--append` adds the variants of this run to an existing JSON made with the same settings, so a long
set of variants can be run (and survive interruptions) a few at a time.

    python bench/bench_ablations.py --data data/synth-train --val-data data/synth-heldout \
        [--stage3-data data/synth-train-s3] [--steps 30] [--variants stages-1,rank-4,...] [--threads 1] [--append]

Writes bench/results/ablations.json and ablations.png.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.machine import label_and_save, machine_info  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
MODEL = "smollm2-135m-instruct"
# name -> (stages, HypernetConfig overrides); "stages-1+2" is the reference the others change one thing of
VARIANTS: dict[str, tuple[tuple[int, ...], dict]] = {
    "stages-1": ((1,), {}),
    "stages-1+2": ((1, 2), {}),
    "stages-1+2+3": ((1, 2, 3), {}),
    "rank-4": ((1, 2), {"rank": 4}),
    "rank-16": ((1, 2), {"rank": 16}),
    "pooling-mean": ((1, 2), {"pooling": "mean"}),
    "multitask-lora": ((2,), {}),  # not a hypernetwork: see run_multitask_lora
}
# settings that must match for --append to put two runs' variants side by side
SAME_SETTINGS = ("data", "val_data", "steps", "stage3_steps", "batch_size", "lr", "kd_weight", "max_tokens", "val_examples")


def data_folder(data: Path, stage3: Path | None, work: Path) -> Path:
    """synth's stage-1/2 folder, plus stage 3's train file when it lives in another folder."""
    if stage3 is None or (data / "train-stage3.jsonl").is_file():
        return data
    joined = work / "data"
    joined.mkdir()
    for p in data.iterdir():
        (joined / p.name).symlink_to(p.resolve())
    (joined / "train-stage3.jsonl").symlink_to((stage3 / "train-stage3.jsonl").resolve())
    return joined


def held_out(loaded, val_data: Path, data: Path, libraries, max_tokens: int, n_examples: int, batch_size: int):
    """(an even spread of) the held-out stage-2 samples, tokenised once for every variant, and the base
    model's CE on them (the same for every variant)."""
    from agent.learn.hypernet_runs import load_stage_data
    from hypernet.train import evaluate

    sd = load_stage_data(loaded, 2, data, val_data, libraries, max_tokens, teacher=False)
    val = sd.data.val[::max(1, len(sd.data.val) // n_examples)][:n_examples]
    with torch.no_grad():
        base = evaluate(loaded.model, None, None, val, batch_size, sd.data.pad_id, torch.device("cpu"))
    return val, sd.data.skills, sd.data.pad_id, base


def measure(loaded, hn, held, batch_size: int, states: dict) -> dict:
    """CE on the held-out samples: right skill, another skill's text, no adapter."""
    from hypernet.batching import SkillBank
    from hypernet.train import evaluate, shuffled_skills

    val, skills, pad, base = held
    bank = SkillBank(loaded.model, hn, skills, states)
    hn.eval()
    dev = torch.device("cpu")
    with torch.no_grad():
        real = evaluate(loaded.model, hn, bank, val, batch_size, pad, dev)
        shuffled = evaluate(loaded.model, hn, bank, shuffled_skills(val), batch_size, pad, dev)
    return {"real": round(real, 4), "shuffled": round(shuffled, 4), "base": round(base, 4),
            "gap": round(shuffled - real, 4), "val_examples": len(val)}


def run_variant(name: str, loaded, args, data: Path, work: Path, held, chain: dict, states: dict) -> dict:
    """Train one variant from scratch, or, for a stage variant whose earlier stages another variant of
    this run has trained (same config, same seeds), continue from that checkpoint: the same weights a
    from-scratch run would reach, without training the shared stages twice."""
    from agent.synth.common import DEFAULT_LIBRARY
    from agent.learn.hypernet_runs import TrainOptions, load_checkpoint_file, run_training
    from hypernet.config import HypernetConfig
    from memory.db import Store

    stages, overrides = VARIANTS[name]
    done = chain.get((stages[:-1], json.dumps(overrides, sort_keys=True))) if len(stages) > 1 else None
    if done is None:
        folder = work / name
        folder.mkdir()
        todo, init, before = stages, None, {"tokens": 0, "wall": 0.0, "steps": {}}
    else:
        folder, todo, init, before = done["folder"], stages[-1:], done["path"], done
    store = Store(f"sqlite:///{folder / 'run.db'}")
    # validation inside training is only a smoke check here: the variants are measured below
    train = {"batch_size": args.batch_size, "lr": args.lr, "eval_every": 0, "save_every": 0, "max_val_examples": 4}
    if args.kd_weight is not None:
        train["kd_weight"] = args.kd_weight
    def steps_of(stage: int) -> int:
        return args.stage3_steps if stage == 3 and args.stage3_steps else args.steps

    groups: list[list[int]] = []  # one run_training per step count (stage 3 may take its own)
    for stage in todo:
        if groups and steps_of(stage) == steps_of(groups[-1][0]):
            groups[-1].append(stage)
        else:
            groups.append([stage])
    results = []
    t0 = time.perf_counter()
    for group in groups:
        opts = TrainOptions(stages=tuple(group), data=data, val_data=args.val_data, libraries=(DEFAULT_LIBRARY,),
                            out=folder / "hypernet.safetensors", steps=steps_of(group[0]),
                            max_tokens=args.max_tokens, hypernet=replace(HypernetConfig(), **overrides), train=train,
                            progress=True, init=init, save_dtype="float32")
        outcomes = run_training(store, loaded, opts, skill_states=states)
        missing = [o for o in outcomes if not o.path]
        if missing or len(outcomes) != len(group):
            raise SystemExit(f"{name}: stages {group} not all trained ({'; '.join(o.skipped or '' for o in missing)})")
        results += outcomes
        init = outcomes[-1].path
    wall = before["wall"] + time.perf_counter() - t0
    tokens = before["tokens"] + sum(o.metrics.get("tokens", 0) or 0 for o in results)
    steps = {**before["steps"], **{str(o.stage): o.metrics.get("steps") for o in results}}
    chain[(stages, json.dumps(overrides, sort_keys=True))] = {"folder": folder, "path": results[-1].path,
                                                             "tokens": tokens, "wall": wall, "steps": steps}
    hn, _ = load_checkpoint_file(Path(results[-1].path), loaded.name)
    result = measure(loaded, hn, held, args.batch_size, states)
    result.update(stages=list(stages), config=overrides, train_wall_s=round(wall, 1),
                  parameters=sum(p.numel() for p in hn.parameters()), tokens=tokens,
                  steps=steps)
    print(f"{name}: real {result['real']}, shuffled {result['shuffled']}, base {result['base']}, "
          f"gap {result['gap']} ({wall:.0f} s)", flush=True)
    return result


def run_multitask_lora(loaded, args, data: Path, held) -> dict:
    """One LoRA on every training skill's stage-2 samples, 2 × --steps steps: the hypernet's 1+2 budget."""
    from agent.learn.baselines import LoraOptions, lora_shape, schedule, tokenize_samples, train_lora
    from agent.learn.hypernet_runs import read_jsonl
    from hypernet.inject import apply_lora
    from hypernet.train import evaluate

    val, _, pad, base = held
    opts = LoraOptions(steps=2 * args.steps, batch_size=args.batch_size, max_tokens=args.max_tokens)
    examples = tokenize_samples(loaded, read_jsonl(data / "train-stage2.jsonl"), args.max_tokens)
    t0 = time.perf_counter()
    lora, metrics = train_lora(loaded.model, examples, pad, schedule(opts, len(examples)), lora_shape(),
                               loaded.name, progress=True, desc="multi-task LoRA")
    wall = time.perf_counter() - t0
    dev = torch.device("cpu")
    with torch.no_grad(), apply_lora(loaded.model, lora):
        real = evaluate(loaded.model, None, None, val, args.batch_size, pad, dev)
    result = {"real": round(real, 4), "shuffled": round(real, 4), "base": round(base, 4), "gap": 0.0,
              "val_examples": len(val), "stages": [], "config": {"lr": opts.lr, "steps": opts.steps},
              "train_wall_s": round(wall, 1), "parameters": sum(a.numel() + b.numel() for a, b in lora.factors.values()),
              "tokens": metrics["tokens"]}
    print(f"multitask-lora: real {result['real']}, base {result['base']} ({wall:.0f} s)", flush=True)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="synth folder with train-stage1/2.jsonl")
    ap.add_argument("--val-data", type=Path, required=True, help="synth folder with heldout-stage*.jsonl")
    ap.add_argument("--stage3-data", type=Path, help="folder with train-stage3.jsonl (for stages-1+2+3)")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of " + ", ".join(VARIANTS))
    ap.add_argument("--steps", type=int, default=30, help="optimizer steps per stage, equal for every variant")
    ap.add_argument("--stage3-steps", type=int, help="steps of stage 3 (default: --steps); its samples are long")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--kd-weight", type=float, help="stage-1 context distillation weight (default: the stage's)")
    ap.add_argument("--max-tokens", type=int, default=384)
    ap.add_argument("--val-examples", type=int, default=32)
    ap.add_argument("--threads", type=int, help="torch threads (1 is steadier on a shared machine)")
    ap.add_argument("--out", default=str(RESULTS / "ablations"))
    ap.add_argument("--append", action="store_true", help="add to the existing JSON (same settings required)")
    args = ap.parse_args()
    names = [v for v in args.variants.split(",") if v]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        ap.error(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    if "stages-1+2+3" in names and args.stage3_data is None and not (args.data / "train-stage3.jsonl").is_file():
        ap.error("stages-1+2+3 needs stage-3 data: pass --stage3-data DIR (agent data synth --stage 3)")
    out = Path(args.out)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    previous: dict = {}
    if args.append and out.with_suffix(".json").is_file():
        old = json.loads(out.with_suffix(".json").read_text())
        differ = [k for k in SAME_SETTINGS if old["settings"].get(k) != settings[k]]
        if differ:
            ap.error(f"--append: {out.with_suffix('.json')} was made with other {', '.join(differ)}")
        previous = old["variants"]
    if args.threads:
        torch.set_num_threads(args.threads)

    from agent.runtime.base_model import load_model

    loaded = load_model(MODEL, device="cpu", dtype="float32")
    work = Path(tempfile.mkdtemp(prefix="hn-ablation-"))
    data = data_folder(args.data, args.stage3_data, work)
    from agent.synth.common import DEFAULT_LIBRARY

    held = held_out(loaded, args.val_data, args.data, (DEFAULT_LIBRARY,), args.max_tokens, args.val_examples,
                    args.batch_size)
    chain: dict = {}
    states: dict = {}  # frozen encoder states of the skills, shared by every variant (same base model)
    variants = dict(previous)
    for name in names:  # written after every variant: a long run keeps what it finished
        load_before = os.getloadavg()[0]
        variants[name] = (run_multitask_lora(loaded, args, args.data, held) if name == "multitask-lora"
                          else run_variant(name, loaded, args, data, work, held, chain, states))
        variants[name]["machine"] = {**machine_info(), "threads": torch.get_num_threads(),
                                     "load_avg_1m_before": load_before, "load_avg_1m_after": os.getloadavg()[0]}
        result = {
            "benchmark": "ablations", "model": MODEL, "device": "cpu", "dtype": "float32",
            "measure": "CE (nats/assistant token) on held-out skills' stage-2 samples",
            "settings": settings, "variants": variants,
        }
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
        plot(result, out.with_suffix(".png"))


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["variants"])
    fig, ax = plt.subplots(figsize=(8, 4.5))
    width = 0.27
    for i, key in enumerate(("real", "shuffled", "base")):
        ax.bar([x + i * width for x in range(len(names))], [result["variants"][n][key] for n in names], width,
               label={"real": "generated from the skill", "shuffled": "from another skill",
                      "base": "no adapter"}[key])
    ax.set_xticks([x + width for x in range(len(names))], names, rotation=15)
    label_and_save(fig, ax, path, "held-out CE (nats / assistant token)", f"{result['model']} hypernetwork ablations, {result['settings']['steps']} steps per stage", legend_size=8)


if __name__ == "__main__":
    main()
