"""Behavioural forgetting: after 10, 25 and 50 EMA additions, does the model still follow the skills added first?

Skill adapters are made by the shipped hypernetwork from real library skills and added one by one to a
persistent adapter with the EMA (hypernet.ema.ema_update, the accumulate job's fold, rank cap 64), for
several β. The first --track additions are held-out skills, one per subtask in turn; so are the additions
at the checkpoints (10, 25, 50), so the newest skill there can be scored too; the rest are training-split
skills, which only have to be there.

The score is behavioural but cheap: the mean log-probability per token of the skill's held-out reference
answers (agent.synth.eval_items, --items per skill), teacher-forced under the model with the persistent
adapter applied and no skill in context (agent.learn.evaluate.reference_logprobs, the accumulate gate's
scorer). A skill's gain is its score minus the base model's. "Right after" is the gain just after the skill
was added; its retention at checkpoint t is gain_t / gain_right-after, and the forgetting drop is
100 - retention, in points of the right-after gain. Generating answers and running the skills' checks (the
skill-following adherence of `agent eval`) would be the stricter score; at 2 cores it costs minutes per
checkpoint per β, so it is not run here.

The adapter-space proxy of bench_forgetting.py (cosine between a skill's ΔW and the persistent ΔW) is
computed at the same points; the JSON reports how well its retention (cosine_t / cosine_right-after)
predicts the behavioural retention (Pearson and Spearman over every skill, checkpoint and β).

Retention at a checkpoint is gain-weighted (sum of the tracked skills' gains now / sum right after), with a
95 % bootstrap interval over the tracked skills, and also given against each skill's own adapter alone. Each
scored skill is also scored under another held-out skill's adapter: the gap to its own adapter is the
skill-specific part of the gain (the rest is the answer format any skill adapter teaches).

β is chosen from behaviour: the largest min(mean gain of the tracked skills right after each was added, their
mean gain after the last addition): the plasticity/stability balance the proxy bench uses, in log-probability
on the same skills.

    python bench/bench_forgetting_behaviour.py [--additions 50] [--track 6] [--items 2] [--betas 0.5,0.8,0.9,0.95]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.machine import machine_info, title_and_save  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
CHECKPOINTS = (10, 25, 50)


def order_skills(heldout: list, train: list, additions: int, track: int) -> list:
    """The addition order: `track` held-out skills (subtasks in turn), held-out skills again at the
    checkpoints, training skills everywhere else."""
    by_subtask: dict[str, list] = {}
    for s in heldout:
        by_subtask.setdefault(s.subtask, []).append(s)
    rotation = [s for i in range(max(map(len, by_subtask.values()))) for group in by_subtask.values()
                if i < len(group) for s in [group[i]]]
    points = [t for t in CHECKPOINTS if track < t <= additions]
    if track + len(points) > len(rotation):
        raise SystemExit(f"--track {track}: only {len(rotation)} held-out skills for {track + len(points)} places")
    if additions - track - len(points) > len(train):
        raise SystemExit(f"--additions {additions}: only {len(train)} training skills to fill with")
    held, fill = iter(rotation), iter(train)
    return [next(held) if t <= track or t in points else next(fill) for t in range(1, additions + 1)]


def score(loaded, items_by_skill: dict[str, list], names: list[str], lora) -> dict[str, float]:
    """Mean log-probability per token of each named skill's references under `lora` (None: the base model)."""
    from agent.learn.evaluate import reference_logprobs

    flat = [(n, it) for n in names for it in items_by_skill[n]]
    sums = reference_logprobs(loaded, [it for _, it in flat], lora)
    out: dict[str, list[float]] = {}
    for (n, _), (total, tokens) in zip(flat, sums):
        acc = out.setdefault(n, [0.0, 0])
        acc[0], acc[1] = acc[0] + total, acc[1] + tokens
    return {n: t / max(k, 1) for n, (t, k) in out.items()}


def ranks(xs: list[float]) -> list[float]:
    order = sorted(range(len(xs)), key=xs.__getitem__)
    r = [0.0] * len(xs)
    for pos, i in enumerate(order):
        r[i] = float(pos)
    return r


def correlation(xs: list[float], ys: list[float]) -> float | None:
    if len(xs) < 3 or statistics.pstdev(xs) == 0 or statistics.pstdev(ys) == 0:
        return None
    return round(float(torch.corrcoef(torch.tensor([xs, ys], dtype=torch.float64))[0, 1]), 3)


def retention(skills: dict[str, dict], seed: int = 0, draws: int = 2000) -> dict:
    """Gain-weighted retention of the tracked skills at one checkpoint: 100 * sum(gain now) / sum(gain right
    after), over the skills whose adapter helped right after (a ratio per skill explodes where that gain is
    near 0), with a 95 % bootstrap interval over skills; and the same against each skill's own adapter alone."""
    import random

    helped = [v for v in skills.values() if v["right_after"] > 1e-4]
    if not helped:
        return {"retained_pct": None, "ci95": None, "of_own_pct": None, "forgetting_points": None, "skills": 0}

    def pct(vs, key):
        den = sum(v[key] for v in vs)
        return 100 * sum(v["gain"] for v in vs) / den if den > 0 else float("nan")

    rng = random.Random(seed)
    boots = sorted(pct([rng.choice(helped) for _ in helped], "right_after") for _ in range(draws))
    boots = [b for b in boots if b == b]  # a draw of skills whose gains sum to <= 0 has no ratio
    lo, hi = boots[int(0.025 * len(boots))], boots[int(0.975 * len(boots)) - 1]
    kept = pct(helped, "right_after")
    return {"retained_pct": round(kept, 1), "ci95": [round(lo, 1), round(hi, 1)],
            "of_own_pct": round(pct(helped, "own"), 1), "forgetting_points": round(100 - kept, 1),
            "skills": len(helped)}


def run_beta(beta: float, adapters: list, order: list, tracked: list[str], items, loaded, base: dict,
             own: dict[str, float], max_rank: int, bar) -> dict:
    from hypernet.ema import ema_update
    from hypernet.norms import cosine

    persistent, right_after, checkpoints = None, {}, []
    for t, (doc, lora) in enumerate(zip(order, adapters), 1):
        persistent, _ = ema_update(persistent, lora, beta, max_rank=max_rank)
        if doc.name in tracked:
            s = score(loaded, items, [doc.name], persistent)[doc.name]
            right_after[doc.name] = {"t": t, "gain": s - base[doc.name], "cosine": cosine(lora, persistent)}
        if t in CHECKPOINTS:
            names = [n for n in tracked if n in right_after and right_after[n]["t"] < t]
            scores = score(loaded, items, names + [doc.name], persistent)
            skills = {}
            for n in names:
                ra, gain = right_after[n], scores[n] - base[n]
                cos = cosine(adapters[ra["t"] - 1], persistent)
                helped = ra["gain"] > 1e-4
                skills[n] = {"gain": round(gain, 4), "right_after": round(ra["gain"], 4), "own": own[n],
                             "retained_pct": round(100 * gain / ra["gain"], 1) if helped else None,
                             "proxy_retained_pct": (round(100 * cos / ra["cosine"], 1) if helped and ra["cosine"]
                                                    else None)}
            checkpoints.append({"t": t, "newest": doc.name, "newest_gain": round(scores[doc.name] - base[doc.name], 4),
                                "tracked_mean_gain": round(statistics.fmean(v["gain"] for v in skills.values()), 4),
                                **retention(skills), "skills": skills})
        bar.update(1)
    plasticity = statistics.fmean(v["gain"] for v in right_after.values())
    stability = checkpoints[-1]["tracked_mean_gain"]
    return {"beta": beta, "right_after_mean_gain": round(plasticity, 4), "balance": round(min(plasticity, stability), 4),
            "right_after": {n: {"t": v["t"], "gain": round(v["gain"], 4), "cosine": round(v["cosine"], 4)}
                            for n, v in right_after.items()},
            "checkpoints": checkpoints}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--additions", type=int, default=50)
    ap.add_argument("--track", type=int, default=6, help="the first N additions whose retention is followed")
    ap.add_argument("--items", type=int, default=2, help="reference answers per scored skill")
    ap.add_argument("--betas", default="0.5,0.8,0.9,0.95")
    ap.add_argument("--max-rank", type=int, default=64)
    ap.add_argument("--out", type=Path, default=RESULTS / "forgetting_behaviour.json")
    args = ap.parse_args()
    try:
        betas = [float(b) for b in args.betas.split(",")]
    except ValueError:
        raise SystemExit(f"--betas: expected numbers separated by commas, got {args.betas!r}") from None
    if not all(0.0 < b < 1.0 for b in betas):
        raise SystemExit("--betas: each β must be in (0, 1)")
    if args.track < 1 or args.items < 1 or args.additions <= args.track:
        raise SystemExit("--track and --items must be at least 1, and --additions more than --track")

    from agent.runtime.base_model import load_model
    from agent.runtime.hypernet_loader import load
    from agent.runtime.skill_adapters import convert_skill
    from agent.synth.build import load_library, select_split
    from agent.synth.eval_items import make_eval_items
    from hypernet.progress import Bar

    start, info = time.perf_counter(), machine_info()
    library = load_library(None)
    order = order_skills(select_split(library, "heldout"), select_split(library, "train"), args.additions, args.track)
    tracked = [d.name for d in order[:args.track]]
    scored = {d.name for t, d in enumerate(order, 1) if t <= args.track or t in CHECKPOINTS}
    items: dict[str, list] = {}
    for it in make_eval_items(split="heldout", n=args.items, seed=0):
        if it.skill.name in scored:
            items.setdefault(it.skill.name, []).append(it)
    missing = sorted(scored - items.keys())
    if missing:
        raise SystemExit(f"no checked eval items for {', '.join(missing)}")
    loaded = load_model()
    handle = load(loaded, None)
    if not handle.trained:
        raise SystemExit("no trained hypernetwork: its adapters change nothing, so there is nothing to forget")
    docs = [s.doc for s in order]
    phases = {"items_and_model": round(time.perf_counter() - start, 1)}
    bar = Bar(len(docs) * (1 + len(betas)), "forgetting (behaviour)")
    adapters = []
    for doc in docs:
        adapters.append(convert_skill(None, loaded, handle, doc).lora)
        bar.update(1)
    phases["convert"] = round(time.perf_counter() - start - sum(phases.values()), 1)
    base = score(loaded, items, sorted(items), None)
    # how skill-specific a gain is: each scored skill under its own adapter alone, and under the adapter of
    # the next scored skill (a different held-out skill): equal gains mean the adapters teach the answer
    # format, not the skill, and then "retention" of the skill cannot be told from the newer skills' gain
    at = {d.name: t for t, d in enumerate(docs) if d.name in items}
    names = list(at)
    own = {n: round(score(loaded, items, [n], adapters[at[n]])[n] - base[n], 4) for n in names}
    other = {n: round(score(loaded, items, [n], adapters[at[names[(i + 1) % len(names)]]])[n] - base[n], 4)
             for i, n in enumerate(names)}
    phases["base_own_other"] = round(time.perf_counter() - start - sum(phases.values()), 1)
    runs = {f"ema-{b}": run_beta(b, adapters, docs, tracked, items, loaded, base, own, args.max_rank, bar) for b in betas}
    bar.close()
    phases["ema_runs"] = round(time.perf_counter() - start - sum(phases.values()), 1)

    proxy, behaviour = [], []
    for r in runs.values():
        for c in r["checkpoints"]:
            for v in c["skills"].values():
                if v["proxy_retained_pct"] is not None and v["retained_pct"] is not None:
                    proxy.append(v["proxy_retained_pct"])
                    behaviour.append(v["retained_pct"])
    chosen = max(runs.values(), key=lambda r: r["balance"])
    data = {
        "bench": "forgetting_behaviour",
        "score": "mean reference log-probability per token (teacher-forced, no skill in context); gain = minus the "
                 "base model's; retention = sum of the tracked skills' gains at t / sum right after each was added",
        "machine": info,
        "config": {"additions": args.additions, "track": args.track, "items": args.items, "betas": betas,
                   "max_rank": args.max_rank, "checkpoints": [t for t in CHECKPOINTS if t <= args.additions],
                   "hypernet": handle.source, "model": loaded.name},
        "order": [{"t": t, "skill": d.name, "split": s.split, "tracked": d.name in tracked}
                  for t, (d, s) in enumerate(zip(docs, order), 1)],
        "base_score": {n: round(v, 4) for n, v in base.items()},
        "own_adapter_gain": own,
        "other_adapter_gain": other,
        "specificity": {"mean_own": round(statistics.fmean(own.values()), 4),
                        "mean_other": round(statistics.fmean(other.values()), 4)},
        "criterion": "balance = min(mean gain of the tracked skills right after each was added, their mean gain "
                     "after the last addition): plasticity and stability on the same skills",
        "chosen_beta": chosen["beta"],
        "headline": {k: {"balance": r["balance"], "right_after_mean_gain": r["right_after_mean_gain"],
                         **{f"t{c['t']}": {key: c[key] for key in ("forgetting_points", "ci95", "of_own_pct",
                                                                   "tracked_mean_gain", "newest_gain")}
                            for c in r["checkpoints"]}}
                     for k, r in runs.items()},
        "proxy_vs_behaviour": {"points": len(proxy), "pearson": correlation(proxy, behaviour),
                               "spearman": correlation(ranks(proxy), ranks(behaviour))},
        "runs": runs,
        "seconds": round(time.perf_counter() - start, 1),
        "phase_seconds": phases,
        "load_avg_1m_after": round(machine_info()["load_avg_1m"], 2),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=1))
    plot(data, args.out.with_suffix(".png"))
    print(json.dumps({"chosen_beta": data["chosen_beta"], "headline": data["headline"],
                      "proxy_vs_behaviour": data["proxy_vs_behaviour"], "specificity": data["specificity"],
                      "seconds": data["seconds"], "phase_seconds": phases}, indent=1))


def plot(data: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4))
    for name, r in data["runs"].items():
        width = 2.6 if r["beta"] == data["chosen_beta"] else 1.2
        t = [c["t"] for c in r["checkpoints"]]
        points = [c["forgetting_points"] if c["forgetting_points"] is not None else float("nan")
                  for c in r["checkpoints"]]
        # forgetting = 100 - retained, so its interval is [100 - retained's high, 100 - retained's low]
        bands = [(100 - c["ci95"][1], 100 - c["ci95"][0]) if c["ci95"] else (p, p)
                 for p, c in zip(points, r["checkpoints"])]
        errors = [[p - lo for p, (lo, _) in zip(points, bands)], [hi - p for p, (_, hi) in zip(points, bands)]]
        axes[0].errorbar(t, points, yerr=errors, fmt="o-", lw=width, capsize=3, label=name)
        axes[1].plot(t, [c["newest_gain"] for c in r["checkpoints"]], "o-", lw=width, label=name)
    axes[0].axhline(5, color="grey", ls=":", lw=1)
    axes[0].set(title="tracked skills: points of right-after gain lost", xlabel="EMA additions",
                ylabel="forgetting (points)")
    axes[1].set(title="newest skill's gain", xlabel="EMA additions", ylabel="Δ mean log-prob / token")
    axes[0].legend(fontsize=8)
    title_and_save(fig, path, f"Behavioural forgetting: {data['config']['track']} tracked held-out skills, "
                   f"{data['config']['additions']} additions; β={data['chosen_beta']} chosen (thick)")


if __name__ == "__main__":
    main()
