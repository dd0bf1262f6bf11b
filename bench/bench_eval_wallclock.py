"""The whole `agent eval` command, timed: this tree against earlier commits, at several batch sizes, one after
the other in one run on the same machine.

Each configuration runs `agent eval --n 1 --mode none --mode icl --mode parametric` (30 held-out skills x 3
modes = 90 answers, 200 new tokens, the shipped hypernetwork) under /usr/bin/time in a throwaway store:
model load, 30 skill conversions, generation, BERTScore, all of it. An earlier commit runs from a git
worktree of it with this tree's virtual environment (same packages). Answers are compared with the first
configuration's; check scores per mode are recorded. Writes bench/results/eval_wallclock.json and .png.

    python bench/bench_eval_wallclock.py --config HEAD:8 --config 7721753:8 --config .:8 --config .:32
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.machine import label_and_save, machine_info  # noqa: E402

_TIME_FIELDS = {"wall_s": r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)",
                "user_cpu_s": r"User time \(seconds\): (\S+)", "max_rss_kb": r"Maximum resident set size \(kbytes\): (\d+)"}


def _seconds(clock: str) -> float:
    parts = [float(p) for p in clock.split(":")]
    return sum(p * 60 ** i for i, p in enumerate(reversed(parts)))


def _tree(ref: str, scratch: Path) -> tuple[Path, str]:
    """A checkout of `ref` ('.' = this working tree) and its commit."""
    if ref == ".":
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True,
                               text=True).stdout.strip()
        return ROOT, head.stdout.strip() + ("+changes" if dirty else "")
    commit = subprocess.run(["git", "rev-parse", "--short", ref], cwd=ROOT, capture_output=True, text=True, check=True)
    path = scratch / f"tree-{commit.stdout.strip()}"
    if not path.exists():
        subprocess.run(["git", "worktree", "add", "-f", "--detach", str(path), ref], cwd=ROOT, check=True,
                       capture_output=True)
    return path, commit.stdout.strip()


def run_one(tree: Path, batch_size: int, scratch: Path, label: str) -> dict:
    out = scratch / f"out-{label}"
    db = scratch / f"db-{label}.sqlite"
    cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "agent.cli", "eval", "--n", "1", "--mode", "none",
           "--mode", "icl", "--mode", "parametric", "--batch-size", str(batch_size), "--db", f"sqlite:///{db}",
           "--out", str(out)]
    env = dict(os.environ, PYTHONPATH=str(tree))
    where = subprocess.run([sys.executable, "-c", "import agent; print(agent.__file__)"], cwd=tree, env=env,
                           capture_output=True, text=True).stdout.strip()
    if not where.startswith(str(tree)):  # the editable install must not shadow the tree under test
        raise SystemExit(f"{label}: `agent` imports from {where}, not from {tree}")
    load_start = os.getloadavg()[0]
    done = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{label}: agent eval failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    row: dict = {"load_avg_1m_start": round(load_start, 2), "load_avg_1m_end": round(os.getloadavg()[0], 2)}
    for key, pattern in _TIME_FIELDS.items():
        value = re.search(pattern, done.stderr).group(1)
        row[key] = _seconds(value) if key == "wall_s" else float(value)
    report = json.loads((out / "eval_heldout.json").read_text())
    row["answers"] = {f"{r['skill']}|{r['task_id']}|{r['mode']}": r["response"] for r in report["items"]}
    row["check_score"] = {mode: round(100 * sum(float(r["check_score"]) for r in report["items"] if r["mode"] == mode)
                                      / max(1, sum(r["mode"] == mode for r in report["items"])), 2)
                          for mode in ("none", "icl", "parametric")}
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", action="append", required=True,
                    help="REF:BATCH_SIZE, REF a commit or '.' for this working tree (repeatable, run in order)")
    ap.add_argument("--note", default="")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "eval_wallclock.json")
    args = ap.parse_args()
    configs = []
    for spec in args.config:
        ref, _, bs = spec.rpartition(":")
        if not ref or not bs.isdigit() or int(bs) < 1:
            ap.error(f"--config wants REF:BATCH_SIZE, got {spec!r}")
        configs.append((ref, int(bs)))

    scratch = Path(tempfile.mkdtemp(prefix="bench-eval-wallclock-"))
    started, rows = time.time(), {}
    try:
        for ref, bs in configs:
            tree, commit = _tree(ref, scratch)
            label = f"{commit}@{bs}"
            row = run_one(tree, bs, scratch, label.replace("+", "_"))
            rows[label] = {"ref": ref, "commit": commit, "batch_size": bs} | row
            print(label, json.dumps({k: v for k, v in row.items() if k != "answers"}), flush=True)
    finally:
        for path in scratch.glob("tree-*"):
            subprocess.run(["git", "worktree", "remove", "-f", str(path)], cwd=ROOT, capture_output=True)
        shutil.rmtree(scratch, ignore_errors=True)

    first = next(iter(rows.values()))
    for row in rows.values():
        row["identical_answers_to_first"] = sum(row["answers"][k] == v for k, v in first["answers"].items())
    result = {
        "bench": "eval_wallclock", "how": __doc__.split("\n\n")[1].replace("\n", " "), "note": args.note,
        "machine": machine_info(), "seconds": round(time.time() - started, 1), "answers": len(first["answers"]),
        "configs": {k: {kk: vv for kk, vv in v.items() if kk != "answers"} for k, v in rows.items()},
        "wall_speedup_over_first": {k: round(first["wall_s"] / v["wall_s"], 2) for k, v in rows.items()},
        "cpu_speedup_over_first": {k: round(first["user_cpu_s"] / v["user_cpu_s"], 2) for k, v in rows.items()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    plot(result, args.out.with_suffix(".png"))
    print(json.dumps({k: result[k] for k in ("wall_speedup_over_first", "cpu_speedup_over_first")}))


def plot(result: dict, path: Path) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    labels = list(result["configs"])
    fig, ax = plt.subplots(figsize=(7, 3.8))
    x = range(len(labels))
    ax.bar([i - 0.2 for i in x], [result["configs"][k]["wall_s"] for k in labels], 0.4, label="wall s")
    ax.bar([i + 0.2 for i in x], [result["configs"][k]["user_cpu_s"] / 2 for k in labels], 0.4, label="user CPU s / 2")
    ax.set_xticks(list(x), [f"{k}\n{result['wall_speedup_over_first'][k]}x" for k in labels], fontsize=8)
    label_and_save(fig, ax, path, "seconds", f"agent eval, {result['answers']} answers (commit@batch size)")


if __name__ == "__main__":
    main()
