"""The training report of a finished `agent hypernet train` run: curves (PNG) and final metrics (JSON).

Reads what the run left beside its --out file (each stage's `.stageN.state.safetensors`: per-step
history, totals, settings) and the stage checkpoints' rows in the store (final validation: held-out
loss with the generated adapter, the base model, the wrong-skill control, ICL).

    python bench/training_report.py --out data/hypernet/hypernet-smollm2-135m.safetensors \
        [--db sqlite:///skills.db] [--report bench/results/training_report]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.machine import machine_info  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def stage_report(out: Path, stage: int, store) -> dict | None:
    from agent.learn.hypernet_runs import stage_paths
    from hypernet.trainstate import load_state
    from memory.models import HypernetCheckpoint
    from sqlalchemy import select

    ckpt, state_path = stage_paths(out, stage)
    if not state_path.is_file():
        return None
    head = load_state(state_path).header
    entry = {"stage": stage, "train": head.get("train"), "totals": head.get("totals"),
             "history": head.get("history", []), "checkpoint": str(ckpt) if ckpt.is_file() else None}
    if ckpt.is_file():
        data = ckpt.read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        entry.update(checkpoint_bytes=len(data), sha256=sha)
        with store.session() as s:
            row = s.scalars(select(HypernetCheckpoint).where(HypernetCheckpoint.sha256 == sha)).first()
            if row is not None:
                entry.update(checkpoint_id=row.id, metrics=row.metrics, data_manifest_hash=row.data_manifest_hash)
    return entry


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="the run's --out file")
    ap.add_argument("--db", default="sqlite:///skills.db", help="the store the run registered its checkpoints in")
    ap.add_argument("--report", default=str(RESULTS / "training_report"), help="output path without suffix")
    args = ap.parse_args()
    from memory.db import Store

    store = Store(args.db)
    stages = [r for r in (stage_report(args.out, n, store) for n in (1, 2, 3)) if r is not None]
    if not stages:
        raise SystemExit(f"error: no .stageN.state.safetensors beside {args.out}")
    final = args.out.stat().st_size if args.out.is_file() else None
    result = {"benchmark": "training_report", "out": str(args.out), "final_checkpoint_bytes": final,
              "stages": stages, "machine": machine_info()}
    report = Path(args.report)
    report.parent.mkdir(parents=True, exist_ok=True)
    report.with_suffix(".json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    plot(stages, report.with_suffix(".png"))
    for s in stages:
        m = s.get("metrics") or {}
        print(f"stage {s['stage']}: {m.get('steps')} steps, {m.get('tokens')} tokens, {m.get('seconds')} s; "
              f"train loss {m.get('first_loss')} -> {m.get('train_loss')}; val {m.get('val_loss')} (base "
              f"{m.get('val_loss_base')}, wrong skill {m.get('val_loss_shuffled')}, icl {m.get('val_loss_icl')})")


def plot(stages: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(stages), figsize=(6 * len(stages), 4.5), squeeze=False)
    for ax, s in zip(axes[0], stages):
        hist, m, k = s["history"], s.get("metrics") or {}, 20
        steps = [h["step"] for h in hist]
        ce = [h.get("ce", h["loss"]) for h in hist]
        smooth = [sum(ce[max(0, i - k + 1):i + 1]) / len(ce[max(0, i - k + 1):i + 1]) for i in range(len(ce))]
        ax.plot(steps, ce, alpha=0.25, label="train CE (per step)")
        ax.plot(steps, smooth, label=f"train CE ({k}-step mean)")
        val = [(h["step"], h["val_loss"]) for h in hist if h.get("val_loss") is not None]
        if m.get("val_loss_base") is not None:
            val = [(0, m["val_loss_base"])] + val
        if m.get("val_loss") is not None and steps and (not val or val[-1][0] != steps[-1]):
            val.append((steps[-1], m["val_loss"]))  # the final validation runs after the last state save
        if val:
            ax.plot([v[0] for v in val], [v[1] for v in val], "o-", label="val CE, held-out skills")
        for key, style, label in (("val_loss_base", "-.", "val CE, base model (no skill)"),
                                  ("val_loss_shuffled", "--", "val CE, hypernet fed the wrong skill"),
                                  ("val_loss_icl", ":", "val CE, skill in context (ICL)")):
            if m.get(key) is not None:
                ax.axhline(m[key], linestyle=style, color="gray", label=label)
        ax.set_title(f"stage {s['stage']}")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("loss (nats / assistant token)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
