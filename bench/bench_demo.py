"""`make demo` after set-up, timed: the whole target as a user runs it, --repeats times, each on a fresh store.

Runs `make demo` in the repository root (set-up must already be done and newer than pyproject.toml: its
stamp makes `setup` a no-op; the run refuses otherwise, since the first install is timed separately), with
AGENT_DB_URL pointing at a new SQLite file per repeat so no run sees an earlier one's skills or trajectories (the model cache in
$AGENT_HOME is shared, as for a user's second run). Records each run's wall seconds, whether it printed
`verified: True`, and the machine load before and after.

    python bench/bench_demo.py [--repeats 3]   # -> bench/results/demo.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.machine import machine_info  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=RESULTS / "demo.json")
    args = ap.parse_args()
    if args.repeats < 1:
        raise SystemExit("--repeats must be at least 1")
    stamp = ROOT / ".venv" / ".installed"
    if not stamp.is_file():
        raise SystemExit("set-up is not done (no .venv/.installed): run `make setup` once first")
    if stamp.stat().st_mtime < (ROOT / "pyproject.toml").stat().st_mtime:
        # make would re-install inside the first timed run
        raise SystemExit("set-up is older than pyproject.toml: run `make setup` first")
    before = machine_info()
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-demo-") as tmp:
        for i in range(args.repeats):
            env = {**os.environ, "AGENT_DB_URL": f"sqlite:///{tmp}/run{i}.db"}
            start = time.perf_counter()
            proc = subprocess.run(["make", "demo"], cwd=ROOT, env=env, capture_output=True, text=True)
            seconds = time.perf_counter() - start
            out = proc.stdout + proc.stderr
            runs.append({"seconds": round(seconds, 1), "exit": proc.returncode, "verified": "verified: True" in out,
                         "load_avg_1m": round(os.getloadavg()[0], 2)})
            print(f"run {i + 1}: {seconds:.1f} s, exit {proc.returncode}, verified {runs[-1]['verified']}", flush=True)
            if proc.returncode != 0:
                print(out[-3000:], file=sys.stderr)
    secs = [r["seconds"] for r in runs]
    data = {"bench": "demo", "command": "make demo (after set-up)", "machine": before,
            "runs": runs, "median_seconds": round(statistics.median(secs), 1), "min_seconds": min(secs),
            "max_seconds": max(secs), "all_verified": all(r["verified"] for r in runs),
            "load_avg_1m_after": round(os.getloadavg()[0], 2)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=1))
    print(f"median {data['median_seconds']} s over {args.repeats}; all verified: {data['all_verified']}; wrote {args.out}")


if __name__ == "__main__":
    main()
