"""`agent solve` on the bundled example with each mode: outcome, steps, seconds, tokens.

    python bench/bench_solve.py [--model smollm2-135m-instruct] [--max-steps 6]

Runs the real CLI in-process against a throwaway database; writes bench/results/solve_modes.json + .png.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.machine import machine_info  # noqa: E402


def run_mode(mode: str, model: str, max_steps: int, db: str) -> dict:
    import contextlib
    import io

    from agent.cli import main

    out = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(out):
        try:
            main(["solve", str(ROOT / "examples" / "buggy-stats"), "fix the failing test", "--mode", mode,
                  "--model", model, "--max-steps", str(max_steps), "--db", db, "--json"])
        except SystemExit as exc:
            if exc.code:
                raise
    report = json.loads(out.getvalue())
    return {"mode": mode, "status": report["status"], "verified": report["verified"], "steps": report["steps"],
            "tokens": report["tokens"], "loop_seconds": report["seconds"],
            "wall_seconds": round(time.perf_counter() - start, 1), "active_skills": report["active_skills"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--max-steps", type=int, default=6)
    ap.add_argument("--modes", default="none,icl,parametric")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = f"sqlite:///{tmp}/bench.db"
        rows = [run_mode(m, args.model, args.max_steps, db) for m in args.modes.split(",")]
    data = {"benchmark": "solve_modes", "model": args.model, "max_steps": args.max_steps, "results": rows,
            "machine": machine_info()}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "solve_modes.json").write_text(json.dumps(data, indent=2))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3))
    ax.bar([r["mode"] for r in rows], [r["wall_seconds"] for r in rows],
           color=["tab:green" if r["verified"] else "tab:gray" for r in rows])
    for i, r in enumerate(rows):
        ax.text(i, r["wall_seconds"], f"{r['steps']} steps\n{r['status']}", ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("seconds")
    ax.set_title(f"agent solve on examples/buggy-stats ({args.model})")
    fig.tight_layout()
    fig.savefig(args.out / "solve_modes.png", dpi=110)
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
