"""Two bench_solve result files compared task by task, for a change that cannot run beside the old code in one
process (the backend's sampling, say): the same draw of tasks, config, attempts and step limit in both.

    python bench/compare_solve.py BEFORE.json AFTER.json [--config parametric] [--json]

On the tasks both finished: fixes at the first attempt and within K, the discordant tasks (fixed by only one
side) with a two-sided exact sign test on them, and the mean turns, tokens and seconds a task on each side
with their ratio. A run is deterministic given its code (greedy first attempt, seeded sampling), so the
older file stands for the old code's run; seconds are not (load), and the 600-second cap per attempt could
turn on them. Writes the comparison into AFTER.json under "vs", keyed by BEFORE's file name.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

SAME = ("tasks", "source", "seed", "attempts", "max_steps", "resamples")  # settings both files must share


def sign_test(only_before: int, only_after: int) -> float:
    """Two-sided exact binomial p-value of the discordant pairs under 'neither side is better'."""
    n, k = only_before + only_after, min(only_before, only_after)
    if n == 0:
        return 1.0
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n)


def compare(before: dict, after: dict, config: str) -> dict:
    differing = [k for k in SAME if before["settings"].get(k) != after["settings"].get(k)]
    if differing:
        raise ValueError("the runs differ in " + ", ".join(
            f"{k} ({before['settings'].get(k)} vs {after['settings'].get(k)})" for k in differing))
    old = {r["task"]: r for r in before["runs"] if r["config"] == config}
    pairs = [(old[r["task"]], r) for r in after["runs"] if r["config"] == config and r["task"] in old]
    if not pairs:
        raise ValueError(f"no task of config {config!r} finished in both runs")
    out: dict = {"config": config, "tasks": len(pairs)}
    for name, key in (("k1", "first_verified"), ("within_k", "verified")):
        only_b = [a["task"] for a, b in pairs if a[key] and not b[key]]
        only_a = [b["task"] for a, b in pairs if b[key] and not a[key]]
        out[name] = {"fixed": [sum(a[key] for a, _ in pairs), sum(b[key] for _, b in pairs)],
                     "only_before": only_b, "only_after": only_a,
                     "sign_test_p": round(sign_test(len(only_b), len(only_a)), 3)}
    for field in ("turns", "tokens", "seconds", "format_errors"):
        mb, ma = (statistics.mean(p[i][field] for p in pairs) for i in (0, 1))
        out[field] = {"mean": [round(mb, 1), round(ma, 1)], "ratio": round(ma / mb, 3) if mb else None}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("before", type=Path)
    ap.add_argument("after", type=Path)
    ap.add_argument("--config", default="parametric", help="the config compared (default parametric)")
    ap.add_argument("--json", action="store_true", help="print the comparison as JSON")
    args = ap.parse_args()
    try:
        before, after = (json.loads(p.read_text()) for p in (args.before, args.after))
        result = compare(before, after, args.config)
    except (OSError, ValueError, KeyError) as exc:  # json's errors are ValueErrors
        print(f"compare_solve: {exc}", file=sys.stderr)
        sys.exit(2)
    after.setdefault("vs", {})[args.before.name] = result
    args.after.write_text(json.dumps(after, indent=2) + "\n")
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{result['tasks']} tasks, {args.config}: before vs after")
    for name in ("k1", "within_k"):
        r = result[name]
        print(f"  fixed {name}: {r['fixed'][0]} vs {r['fixed'][1]}  (only before {len(r['only_before'])}, "
              f"only after {len(r['only_after'])}, sign test p = {r['sign_test_p']})")
    for field in ("turns", "tokens", "seconds", "format_errors"):
        r = result[field]
        print(f"  mean {field}: {r['mean'][0]} vs {r['mean'][1]}  (ratio {r['ratio']})")


if __name__ == "__main__":
    main()
