"""Per-command overhead of the sandbox versus a plain subprocess.

For `true` and `python -c pass`: median wall time over N runs of
- plain: subprocess.run(["bash", "-c", cmd])
- unconfined: Sandbox with bwrap disabled (launcher, rlimits, cgroups, capture)
- sandbox: the real bubblewrap Sandbox, with its default Limits (memory and
  pids cgroup where one can be made; as root, setpriv to an unprivileged uid
  and the workspace handed to it before each command)
As root the unconfined variant runs the system Python (/usr/bin/python3): its
unprivileged uid cannot reach an interpreter under /root.
Writes bench/results/sandbox_overhead.json and sandbox_overhead.png.

    python bench/bench_sandbox.py [--runs 50]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sandbox.bwrap as bw  # noqa: E402
from bench.machine import label_and_save  # noqa: E402
from sandbox import Limits, Sandbox, Workspace  # noqa: E402
from sandbox.cgroup import memory_parent, pids_parent  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
COMMANDS = {"true": "true", "python -c pass": "python -c pass"}


def median_ms(fn, runs: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1000)
    return statistics.median(samples)


def interleaved_medians(fns: dict[str, object], runs: int, warmup: int = 3) -> dict[str, float]:
    """Round-robin the variants so load changes on a shared machine hit all alike."""
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for i in range(warmup + runs):
        for key, fn in fns.items():
            t = time.perf_counter()
            fn()  # type: ignore[operator]
            if i >= warmup:
                samples[key].append((time.perf_counter() - t) * 1000)
    return {k: statistics.median(v) for k, v in samples.items()}


def plain_runner(cwd: str):
    env = {"PATH": f"{os.path.dirname(sys.executable)}:/usr/bin:/bin"}

    def run(cmd: str) -> None:
        subprocess.run(["bash", "-c", cmd], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       check=True)

    return run


def unconfined_sandbox(cwd: str) -> Sandbox:
    real = bw.find_bwrap
    bw.find_bwrap = lambda: None  # type: ignore[assignment]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            python = "/usr/bin/python3" if os.geteuid() == 0 and os.path.exists("/usr/bin/python3") else sys.executable
            return Sandbox(cwd, allow_unconfined=True, python=python)
    finally:
        bw.find_bwrap = real  # type: ignore[assignment]


def bench_workspace(runs: int) -> float:
    """Workspace.create + diff + cleanup on a 200-file git repo."""
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        repo.mkdir()
        for i in range(200):
            (repo / f"mod_{i}.py").write_text(f"X = {i}\n" * 50)
        env = {**os.environ, "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@b",
               "GIT_COMMITTER_NAME": "b", "GIT_COMMITTER_EMAIL": "b@b"}
        for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "x"]):
            subprocess.run(["git", *args], cwd=repo, env=env, check=True)

        def cycle() -> None:
            with Workspace.create(repo) as ws:
                (ws.path / "mod_0.py").write_text("changed\n")
                ws.diff()

        return median_ms(cycle, max(5, runs // 5), warmup=1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    load_before = round(os.getloadavg()[0], 2)

    with tempfile.TemporaryDirectory() as ws:
        plain = plain_runner(ws)
        loose = unconfined_sandbox(ws)
        boxed = Sandbox(ws, limits=Limits())
        rows = {}
        for label, cmd in COMMANDS.items():
            for name, box in (("unconfined", loose), ("sandbox", boxed)):  # time only commands that work
                r = box.run(cmd, timeout=60)
                if r.exit_code != 0:
                    raise SystemExit(f"{name} {cmd!r} failed (exit {r.exit_code}): {r.output.strip()}")
            m = interleaved_medians({
                "plain": lambda: plain(cmd),
                "unconfined": lambda: loose.run(cmd, timeout=60),
                "sandbox": lambda: boxed.run(cmd, timeout=60),
            }, args.runs)
            p, u, s = m["plain"], m["unconfined"], m["sandbox"]
            rows[label] = {"plain_ms": round(p, 2), "unconfined_ms": round(u, 2), "sandbox_ms": round(s, 2),
                           "sandbox_over_plain": round(s / p, 2), "overhead_ms": round(s - p, 2)}
            print(f"{label:16s} plain {p:7.2f} ms  unconfined {u:7.2f} ms  sandbox {s:7.2f} ms  x{s / p:.2f}")
    ws_ms = bench_workspace(args.runs)
    print(f"workspace create+diff+cleanup (200 files): {ws_ms:.1f} ms")

    bwrap = bw.find_bwrap()
    version = subprocess.run([bwrap, "--version"], capture_output=True, text=True).stdout.strip() if bwrap else None
    report = {
        "benchmark": "sandbox per-command overhead (median wall ms)",
        "runs": args.runs,
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "machine": platform.machine(),
            "python": platform.python_version(),
            "bwrap": version,
            "pids_cgroup": pids_parent() is not None,
            "memory_cgroup": memory_parent() is not None,
            "euid": os.geteuid(),
            "commands_run_as_uid": boxed.run_as if boxed.run_as is not None else os.geteuid(),
            "unconfined_python": loose.python,
            # Other jobs share these cores; a high load inflates every column.
            "loadavg_1m_before": load_before,
            "loadavg_1m_after": round(os.getloadavg()[0], 2),
        },
        "commands": rows,
        "workspace_cycle_ms_200_files": round(ws_ms, 1),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "sandbox_overhead.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(rows, RESULTS / "sandbox_overhead.png")


def plot(rows: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = [("plain_ms", "plain subprocess"), ("unconfined_ms", "unconfined (limits only)"),
             ("sandbox_ms", "bubblewrap sandbox")]
    labels = list(rows)
    width = 0.26
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, (key, name) in enumerate(kinds):
        xs = [j + (i - 1) * width for j in range(len(labels))]
        bars = ax.bar(xs, [rows[l][key] for l in labels], width, label=name)
        ax.bar_label(bars, fmt="%.1f", fontsize=8)
    ax.set_xticks(range(len(labels)), labels)
    label_and_save(fig, ax, out, "median wall time per command (ms)", f"Sandbox overhead ({os.cpu_count()} CPUs, {platform.machine()})", dpi=120)


if __name__ == "__main__":
    main()
