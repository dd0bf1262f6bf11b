"""A short real training run of the hypernetwork on the embedded model: does the loss fall?

Synthesises a small data set from the seed library (train skills, and held-out skills for
validation) unless --data is given, trains one or more stages through `agent.learn.hypernet_runs.run_training`
(the code behind `agent hypernet train`), and writes the loss curve (PNG) and the final metrics (JSON):

- train loss per step (cross-entropy on assistant tokens; + 0.5 × top-k KD in stage 1);
- validation on held-out skills: the hypernet's LoRA, the plain base model (no skill), the base model
  with the skill in context (ICL), and the hypernet fed another skill's text (wrong-skill control).

    python bench/bench_training_run.py [--stages 1] [--steps 60] [--data DIR --val-data DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.machine import label_and_save, machine_info  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
MODEL = "smollm2-135m-instruct"


def synth_data(root: Path, n_per_skill: int) -> tuple[Path, Path]:
    from agent.synth.build import synth

    synth(None, stages=(1, 2), n_per_skill=n_per_skill, seed=0, out_dir=root / "train", split="train")
    synth(None, stages=(1, 2), n_per_skill=n_per_skill, seed=0, out_dir=root / "heldout", split="heldout")
    return root / "train", root / "heldout"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--stages", default="1", help="comma-separated, e.g. 1 or 1,2")
    ap.add_argument("--steps", type=int, default=60, help="optimizer steps per stage")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--kd-weight", type=float, help="context-distillation weight (default: the stage's)")
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--eval-every", type=int, default=20)
    ap.add_argument("--val-examples", type=int, default=32)
    ap.add_argument("--n-per-skill", type=int, default=2)
    ap.add_argument("--data", type=Path)
    ap.add_argument("--val-data", type=Path)
    ap.add_argument("--threads", type=int, help="torch threads (1 is steadier on a shared machine)")
    ap.add_argument("--out", default=str(RESULTS / "training_run"))
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from agent.runtime.base_model import load_model
    from agent.synth.common import DEFAULT_LIBRARY
    from agent.learn.hypernet_runs import TrainOptions, run_training
    from memory.db import Store

    work = Path(tempfile.mkdtemp(prefix="hn-run-"))
    data, val = (args.data, args.val_data) if args.data else synth_data(work, args.n_per_skill)
    loaded = load_model(MODEL, device="cpu", dtype="float32")
    store = Store(f"sqlite:///{work / 'run.db'}")
    history: list[dict] = []
    stages = tuple(int(s) for s in args.stages.split(","))
    opts = TrainOptions(stages=stages, data=data, val_data=val, libraries=(DEFAULT_LIBRARY,),
                        out=work / "hypernet.safetensors", steps=args.steps, max_tokens=args.max_tokens,
                        train={"batch_size": args.batch_size, "lr": args.lr, "eval_every": args.eval_every,
                               "kd_weight": args.kd_weight,
                               "max_val_examples": args.val_examples, "save_every": 0},
                        progress=True)
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    outcomes = run_training(store, loaded, opts, on_log=history.append)
    wall = time.perf_counter() - t0
    result = {
        "benchmark": "training_run", "model": MODEL, "dtype": "float32", "device": "cpu",
        "stages": [{"stage": o.stage, "metrics": o.metrics, "data": o.data, "checkpoint_bytes":
                    Path(o.path).stat().st_size if o.path else None} for o in outcomes],
        "settings": {"steps": args.steps, "batch_size": args.batch_size, "lr": args.lr, "max_tokens": args.max_tokens,
                     "kd_weight": args.kd_weight, "threads": torch.get_num_threads(),
                     "n_per_skill": args.n_per_skill, "val_examples": args.val_examples},
        "history": history, "wall_s": round(wall, 1),
        "machine": {**machine_info(), "load_avg_1m_before": load_before, "load_avg_1m_after": os.getloadavg()[0]},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    plot(result, out.with_suffix(".png"))
    for s in result["stages"]:
        m = s["metrics"]
        print(f"stage {s['stage']}: loss {m.get('first_loss'):.3f} -> {m.get('train_loss'):.3f}; val "
              f"{m.get('val_loss')} (base {m.get('val_loss_base')}, icl {m.get('val_loss_icl')}, wrong skill "
              f"{m.get('val_loss_shuffled')}); {m['tokens_per_s']} tokens/s")


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for s in result["stages"]:
        m = s["metrics"]
        hist = [h for h in result["history"] if h["stage"] == s["stage"]]
        steps = [h["step"] for h in hist]
        k = 10

        def smooth(key: str) -> list[float]:
            return [sum(h[key] for h in hist[max(0, i - k + 1):i + 1]) / len(hist[max(0, i - k + 1):i + 1])
                    for i in range(len(hist))]

        if "kd" in hist[0]:
            ax.plot(steps, smooth("loss"), alpha=0.6, label=f"stage {s['stage']} train CE + KD·w ({k}-step mean)")
        ax.plot(steps, [h["ce"] for h in hist], alpha=0.3, label=f"stage {s['stage']} train CE (per step)")
        ax.plot(steps, smooth("ce"), label=f"stage {s['stage']} train CE ({k}-step mean)")
        val = [(0, m.get("val_loss_base"))] + [(h["step"], h["val_loss"]) for h in hist if h.get("val_loss") is not None]
        ax.plot([v[0] for v in val], [v[1] for v in val], "o-", label=f"stage {s['stage']} val CE, held-out skills")
        for key, style in (("val_loss_icl", ":"), ("val_loss_shuffled", "--")):
            if m.get(key) is not None:
                ax.axhline(m[key], linestyle=style, color="gray",
                           label={"val_loss_icl": "val CE, base + skill in context (ICL)",
                                  "val_loss_shuffled": "val CE, hypernet fed the wrong skill"}[key])
    ax.set_xlabel("optimizer step")
    label_and_save(fig, ax, path, "loss (nats / assistant token)", f"{result['model']} hypernetwork, {result['settings']['batch_size']} samples/step, CPU", legend_size=8)


if __name__ == "__main__":
    main()
