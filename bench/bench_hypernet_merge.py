"""Merge + recompress k random adapters shaped like the embedded model's (SmolLM2-135M) LoRA targets.

30 layers, q_proj 576→576 and v_proj 576→192, rank 8 each, merged with random weights and recompressed
to rank ≤ 64 by the exact (QR + SVD) and the randomized method side by side, interleaved at every k:
time (median and min of repeats), relative truncation error (max and mean over targets), the peak
resident memory above the baseline while merging (sampled), and the bytes of the exact path's tensors
(computed). The sweep runs with torch's default thread count and with one thread, or with --threads.

The EMA step (fold one new rank-8 adapter into a rank-64 persistent one, 60 targets) is timed as
`ema_update` does it (incremental fold of the split-form persistent adapter, on one thread) and as the
general exact merge of the same two adapters (QR of all 72 stacked columns per target: the step before the
incremental fold), interleaved, wall and CPU time, at each thread count; `--ema-only` runs just that and
writes ema_step.json.

    python bench/bench_hypernet_merge.py [--quick] [--threads N] [--ema-only] [--note "beside a 1-thread training job"]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.machine import machine_info  # noqa: E402
from hypernet import LoraWeights, Target, ema_update, merge  # noqa: E402
from hypernet.merge import OVERSAMPLE, POWER_ITERS, choose_method  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
LAYERS, HIDDEN, KV_OUT, RANK, MAX_RANK = 30, 576, 192, 8, 64
SHAPES = {"q_proj": (HIDDEN, HIDDEN), "v_proj": (HIDDEN, KV_OUT)}


def targets() -> list[Target]:
    return [Target(i, m, f"model.layers.{i}.self_attn.{m}", fin, fout)
            for i in range(LAYERS) for m, (fin, fout) in SHAPES.items()]


def random_adapter(seed: int) -> LoraWeights:
    g = torch.Generator().manual_seed(seed)
    ts = targets()
    factors = {t.key: (torch.randn(RANK, t.in_features, generator=g) / t.in_features**0.5,
                       torch.randn(t.out_features, RANK, generator=g) * 0.01) for t in ts}
    return LoraWeights("smollm2-135m-instruct", tuple(ts), factors)


def working_bytes(k: int, itemsize: int = 4) -> int:
    """Exact path: tensors alive during one module type's batched recompression (the larger of the two), plus inputs."""
    total_rank = k * RANK
    per_type = []
    for fin, fout in SHAPES.values():
        stacked = total_rank * (fin + fout)
        qr = (min(fout, total_rank) * (fout + total_rank) if total_rank < fout else 0) + \
             (min(fin, total_rank) * (fin + total_rank) if total_rank < fin else 0)
        cr, cc = min(fout, total_rank), min(fin, total_rank)
        svd = cr * cc * 2 + min(cr, cc) * (cr + cc + 1)  # core, its copy in LAPACK, U, S, Vh
        per_type.append(LAYERS * (stacked + qr + svd))
    inputs = k * LAYERS * sum(RANK * (fin + fout) for fin, fout in SHAPES.values())
    return itemsize * (inputs + max(per_type))


def dense_merge_ms(adapters: list[LoraWeights], weights: list[float]) -> float:
    """Baseline PEFT 'svd' style: build every dense ΔW, full SVD, truncate."""
    t0 = time.perf_counter()
    for key in adapters[0].keys:
        dense = sum(w * ad.delta(key) for ad, w in zip(adapters, weights))
        u, s, vh = torch.linalg.svd(dense, full_matrices=False)
        _ = (u[:, :MAX_RANK] * s[:MAX_RANK]) @ vh[:MAX_RANK]
    return 1e3 * (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer k values and repeats")
    ap.add_argument("--threads", type=int, help="torch threads (default: the default count, then 1)")
    ap.add_argument("--note", default="", help="machine conditions, stored in the JSON")
    ap.add_argument("--ema-only", action="store_true", help="only the EMA step, to ema_step.json")
    ap.add_argument("--baseline-tree", type=Path, help="with --ema-only: also time this checkout's ema_update, "
                    "interleaved with ours (e.g. a git worktree of an older commit)")
    ap.add_argument("--baseline-commit", default="", help="the baseline tree's commit, stored in the JSON")
    ap.add_argument("--repeats", type=int, default=15, help="with --ema-only: timed steps per path")
    args = ap.parse_args()
    if args.ema_only:
        return ema_only(args)
    ks = [1, 2, 4, 8, 16, 32, 64, 100] if args.quick else [1, 2, 4, 8, 16, 32, 64, 100, 128, 256]
    repeats = 2 if args.quick else 3
    pool = [random_adapter(s) for s in range(max(ks))]
    default_threads = torch.get_num_threads()
    thread_counts = [args.threads] if args.threads else sorted({default_threads, 1}, reverse=True)
    sweeps, ema = {}, {}
    load_at_start = os.getloadavg()
    for threads in thread_counts:
        torch.set_num_threads(threads)
        sweeps[str(threads)] = sweep(pool, ks, repeats)
        ema[str(threads)] = {m: ema_step_ms(pool, 5, m) for m in ("exact", "randomized")}
        ema[str(threads)]["incremental_vs_general"] = ema_paths(pool, 15)
        print("ema step", threads, json.dumps(ema[str(threads)]), flush=True)
    torch.set_num_threads(default_threads)
    shapes = {"layers": LAYERS, **{m: list(s) for m, s in SHAPES.items()}, "rank": RANK, "max_rank": MAX_RANK}
    out = {"bench": "hypernet_merge", "machine": machine_info(), "note": args.note,
           "load_avg_at_start": load_at_start, "load_avg_at_end": os.getloadavg(), "quick": args.quick,
           "shapes": shapes, "randomized": {"oversample": OVERSAMPLE, "power_iters": POWER_ITERS, "seed": 0},
           "rows_by_threads": sweeps, "ema_step_by_threads": ema}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "hypernet_merge.json").write_text(json.dumps(out, indent=2) + "\n")
    plot(sweeps, RESULTS / "hypernet_merge.png")


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_delta(fn) -> tuple[object, int]:
    """fn() and the peak resident memory above the level before it, sampled every ~1 ms from a thread
    (torch releases the GIL in its kernels; large tensors are mmapped, so freeing them lowers RSS)."""
    base, peak, done = rss_bytes(), [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss_bytes())
            time.sleep(0.001)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        result = fn()
    finally:
        done.set()
        t.join()
    return result, max(peak[0], rss_bytes()) - base


def ema_step_ms(pool: list[LoraWeights], repeats: int, method: str) -> dict:
    """The frequent operation: fold one new rank-8 adapter into a rank-64 persistent EMA adapter."""
    persistent = None
    for ad in pool[:9]:
        persistent, _ = ema_update(persistent, ad, 0.9, max_rank=MAX_RANK)
    times = []
    for i in range(repeats):
        t0 = time.perf_counter()
        _, info = ema_update(persistent, pool[9 + i % 8], 0.9, max_rank=MAX_RANK, method=method)
        times.append(1e3 * (time.perf_counter() - t0))
    return {"persistent_rank": persistent.max_rank, "ms_median": statistics.median(times), "ms_min": min(times),
            "max_rel_truncation_error": info.max_rel_error}


def ema_paths(pool: list[LoraWeights], repeats: int, baseline=None) -> dict:
    """The EMA step by ema_update (incremental fold) and by the general exact merge, interleaved step by
    step; with `baseline` (another tree's hypernet package), its ema_update too, and our step's wall time
    over the baseline's per step (median, 95 % bootstrap interval)."""
    persistent = None
    for ad in pool[:9]:
        persistent, _ = ema_update(persistent, ad, 0.9, max_rank=MAX_RANK)
    paths = {"incremental": lambda ad: ema_update(persistent, ad, 0.9, max_rank=MAX_RANK, method="exact")[0],
             "general": lambda ad: merge([persistent, ad], [0.9, 0.1], max_rank=MAX_RANK, method="exact")[0]}
    if baseline is not None:
        paths["baseline"] = lambda ad: baseline.ema_update(persistent, ad, 0.9, max_rank=MAX_RANK, method="exact")[0]
    wall: dict[str, list[float]] = {k: [] for k in paths}
    cpu: dict[str, list[float]] = {k: [] for k in paths}
    out = {}
    for i in range(repeats + 1):
        for name, step in paths.items():
            t0, c0 = time.perf_counter(), time.process_time()
            out[name] = step(pool[9 + i % 8])
            if i:  # the first round warms up LAPACK
                wall[name].append(1e3 * (time.perf_counter() - t0))
                cpu[name].append(1e3 * (time.process_time() - c0))
    def rel(x: LoraWeights) -> float:
        ref = out["general"]
        return max(float(torch.linalg.norm(x.delta(k) - ref.delta(k)) / torch.linalg.norm(ref.delta(k)))
                   for k in ref.keys)

    row = {"threads": torch.get_num_threads(), "repeats": repeats, "load_avg_1m": os.getloadavg()[0],
           **{name: {"wall_ms_median": statistics.median(wall[name]), "wall_ms_min": min(wall[name]),
                     "cpu_ms_median": statistics.median(cpu[name]), "cpu_ms_min": min(cpu[name])} for name in paths},
           "max_rel_delta_difference": rel(out["incremental"])}
    if baseline is not None:
        ratios = [x / y for x, y in zip(wall["incremental"], wall["baseline"])]
        row["incremental_over_baseline"] = {"median": statistics.median(ratios), "ci95": bootstrap_median(ratios)}
        row["baseline_max_rel_delta_difference"] = rel(out["baseline"])
    return row


def bootstrap_median(xs: list[float], n: int = 2000, seed: int = 0) -> list[float]:
    """95 % percentile-bootstrap interval of the median."""
    import random

    rng = random.Random(seed)
    meds = sorted(statistics.median(rng.choices(xs, k=len(xs))) for _ in range(n))
    return [meds[int(0.025 * n)], meds[int(0.975 * n) - 1]]


def load_baseline(tree: Path):
    """Another checkout's `hypernet` package, imported beside ours under its own name."""
    import importlib.util

    init = tree / "hypernet" / "__init__.py"
    if not init.is_file():
        raise SystemExit(f"--baseline-tree: {tree} has no hypernet/__init__.py")
    spec = importlib.util.spec_from_file_location("hypernet_baseline", init,
                                                  submodule_search_locations=[str(init.parent)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def ema_only(args) -> None:
    pool = [random_adapter(s) for s in range(17)]
    default_threads = torch.get_num_threads()
    thread_counts = [args.threads] if args.threads else sorted({default_threads, 1}, reverse=True)
    load_at_start, rows = os.getloadavg(), {}
    baseline = load_baseline(args.baseline_tree) if args.baseline_tree else None
    for threads in thread_counts:
        torch.set_num_threads(threads)
        rows[str(threads)] = ema_paths(pool, args.repeats, baseline)
        print("ema step", threads, json.dumps(rows[str(threads)]), flush=True)
    torch.set_num_threads(default_threads)
    out = {"bench": "ema_step", "machine": machine_info(), "note": args.note, "load_avg_at_start": load_at_start,
           "load_avg_at_end": os.getloadavg(), "shapes": {"layers": LAYERS, **{m: list(s) for m, s in SHAPES.items()},
                                                          "rank": RANK, "persistent_rank": MAX_RANK},
           "before": {"source": "hypernet_merge.json ema_step_by_threads, exact (the general path, then "
                                "without the batched truncation)", "ms_median_2_threads": 148.9,
                      "ms_median_1_thread": 179.6},
           "baseline_tree": args.baseline_tree and str(args.baseline_tree), "baseline_commit": args.baseline_commit,
           "by_threads": rows}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "ema_step.json").write_text(json.dumps(out, indent=2) + "\n")


def measure(pool: list[LoraWeights], weights: list[float], method: str) -> dict:
    t0 = time.perf_counter()
    (merged, report), peak = peak_rss_delta(lambda: merge(pool, weights, max_rank=MAX_RANK, method=method))
    errors = list(report.rel_errors.values())
    return {"ms": 1e3 * (time.perf_counter() - t0), "peak_rss_delta_bytes": peak, "final_max_rank": merged.max_rank,
            "max_rel_truncation_error": max(errors), "mean_rel_truncation_error": statistics.mean(errors),
            "used": sorted(set(report.methods.values()))}


def sweep(pool: list[LoraWeights], ks: list[int], repeats: int) -> list[dict]:
    g = torch.Generator().manual_seed(1)
    rows = []
    for k in (8, 100):  # warm up LAPACK for both regimes (first calls of a shape are slow)
        for method in ("exact", "randomized"):
            merge(pool[:min(k, len(pool))], [1.0] * min(k, len(pool)), max_rank=MAX_RANK, method=method)
    for k in ks:
        weights = (torch.rand(k, generator=g) + 0.1).tolist()
        runs: dict[str, list[dict]] = {"exact": [], "randomized": []}
        for _ in range(repeats):  # interleaved, so both methods see the same machine load
            for method in runs:
                runs[method].append(measure(pool[:k], weights, method))
        auto = {m: choose_method("auto", k * RANK, fin, fout, MAX_RANK) for m, (fin, fout) in SHAPES.items()}
        row = {"k": k, "stacked_rank": k * RANK, "auto_picks": auto, "working_bytes_exact": working_bytes(k),
               "load_avg_1m": os.getloadavg()[0], "threads": torch.get_num_threads()}
        for method, rs in runs.items():
            times = [r["ms"] for r in rs]
            row[method] = {"ms_median": statistics.median(times), "ms_min": min(times),
                           "peak_rss_delta_bytes": max(r["peak_rss_delta_bytes"] for r in rs),
                           **{key: rs[0][key] for key in ("final_max_rank", "max_rel_truncation_error",
                                                           "mean_rel_truncation_error", "used")}}
        if k in (8, 32, 100):
            row["dense_svd_baseline_ms"] = dense_merge_ms(pool[:k], weights)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def plot(sweeps: dict[str, list[dict]], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(15, 4))
    for threads, rows in sweeps.items():
        ks = [r["k"] for r in rows]
        for method, style in (("exact", "o-"), ("randomized", "^-")):
            ax1.plot(ks, [r[method]["ms_median"] for r in rows], style, label=f"{method}, {threads} thread(s)")
            ax2.plot(ks, [r[method]["max_rel_truncation_error"] for r in rows], style,
                     label=f"{method}, {threads} thread(s)")
            ax3.plot(ks, [r[method]["peak_rss_delta_bytes"] / 2**20 for r in rows], style,
                     label=f"{method} (measured), {threads} thread(s)")
        dense = [(r["k"], r["dense_svd_baseline_ms"]) for r in rows if "dense_svd_baseline_ms" in r]
        if dense:
            ax1.plot(*zip(*dense), "s--", label=f"dense ΔW + full SVD, {threads} thread(s)")
    ax1.axhline(100, color="grey", lw=0.8, ls=":", label="100 ms target")
    ax1.set(xscale="log", yscale="log", xlabel="adapters merged (k)", ylabel="ms",
            title=f"merge to rank ≤ {MAX_RANK}, 60 targets")
    ax1.legend(fontsize=7)
    ax2.set(xscale="log", xlabel="adapters merged (k)", ylabel="max relative error",
            title="truncation error (worst target)")
    ax2.legend(fontsize=7)
    ax3.plot(ks, [r["working_bytes_exact"] / 2**20 for r in rows], "k:", label="exact path (computed)")
    ax3.set(xscale="log", xlabel="adapters merged (k)", ylabel="MiB", title="peak memory above baseline")
    ax3.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
