"""Accumulation: accepted skills folded into the persistent adapter with the EMA, as versions.

Every fold writes a new EMA version (Adapter kind "ema", version N+1) and marks the skill with that version
in ONE transaction, after re-reading the latest version inside it: a crash leaves either both or neither,
and two accumulators cannot both build on version N (the second re-reads, or hits the unique version).
Versions are never rewritten: a rollback to V writes version N+1 equal to V.

The gate (setting `ema_gate`, on by default): after each fold, version N and its parent are scored on
held-out items (`adapter_evaluator`; by default the mean log-probability of held-out references under the
model with the version applied) and both scores become EvalResult rows (run "ema-gate-vN"). A fold that
scores lower than its parent by more than `ema_gate_tolerance` is rolled back: version N+1 equals the
parent, its meta names the skill and the scores (meta.gate), and the skill keeps its mark (ema_version N,
plus provenance.ema_rollback), so it is never folded again. The evaluation is slow, so it runs between the
fold's transaction and the verdict's: a crash in between leaves the latest version without a verdict, and
the next run gates it before folding anything.

Version meta: op (update | rollback | compact), beta, updates, skill (the one folded in, or the one a gate
rollback took out), skills_added, contributors (every skill still in the adapter with its effective EMA
weight), max_rel_error (truncation), norms per module, total_norm, rank, parent_version; a gate rollback
also has gate (skill, skill_id, version, metric, baseline, candidate, tolerance).

Compaction (the `compact` job) frees space without losing history:
- the latest version is recompressed to `max_rank` if it is above it (a new version, op "compact");
- skill adapters that nothing will read again are deleted: those of rejected or superseded skill
  versions, and all but the newest adapter of each skill (older hypernetworks' conversions); they are
  a cache that conversion rebuilds (adapters converted from a folder, with no skill row, are kept);
- EMA versions older than the last `keep_last` keep their row (meta, norms, contributors, the original
  sha256 under meta.pruned) but lose their weights; rollback to them is refused with that reason;
- hypernetwork checkpoint files in the checkpoint folder that no row names (a retrain killed between
  writing the file and registering it) are deleted once an hour old.
The SQLite file itself only shrinks with VACUUM (`sqlite3 skills.db VACUUM` when nothing else uses it).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from sqlalchemy import delete, select

from agent.evolve.context import EvolveContext, FoldableAdapter, GateScore, TrainingUnavailable
from hypernet.ema import BETA_KEY, UPDATES_KEY, ema_update
from hypernet.lora import LoraWeights
from hypernet.merge import recompress
from hypernet.norms import cosine, delta_norms, diff_norm
from memory import adapters as adapter_repo
from memory import evolution as evo_repo
from memory import skills as skill_repo
from memory.errors import StoreError
from memory.models import Adapter, EvalResult, HypernetCheckpoint, Skill, utcnow

MIN_WEIGHT = 1e-4  # contributors whose EMA weight fell below this are dropped from the list (not the math)


def load_version(row: Adapter) -> LoraWeights:
    if (row.meta or {}).get("pruned"):
        raise StoreError(f"EMA version {row.version}'s weights were pruned by compaction "
                         "(rows stay; weights are kept for the last versions only)")
    return LoraWeights.from_safetensors_bytes(adapter_repo.checked_blob(row), expected_sha256=row.sha256)


def _norm_meta(lora: LoraWeights) -> dict[str, Any]:
    norms = delta_norms(lora)
    return {"norms": {k: round(v, 6) for k, v in norms.items()},
            "total_norm": round(sum(v * v for v in norms.values()) ** 0.5, 6), "rank": lora.max_rank}


def write_version(session, lora: LoraWeights, *, op: str, parent: Adapter | None, meta: dict[str, Any],
                  hypernet_id: int | None = None) -> Adapter:
    """Insert the next EMA version (inside the caller's transaction)."""
    from agent.runtime.skill_adapters import describe

    info = describe(lora)
    version = adapter_repo.next_ema_version(session)
    full = {"op": op, "parent_version": parent.version if parent else None, **meta, **_norm_meta(lora)}
    return adapter_repo.add(session, kind="ema", blob=lora.to_safetensors_bytes(), base_model=lora.base_model,
                            rank=info["rank"], targets=info["targets"], shapes=info["shapes"],
                            hypernet_id=hypernet_id, version=version, meta=full)


def _contributors(parent: Adapter | None, beta: float, added: dict[str, Any]) -> list[dict[str, Any]]:
    old = list((parent.meta or {}).get("contributors") or []) if parent else []
    if parent is None:
        return [{**added, "weight": 1.0}]
    # a policy entry stays however small: it marks the lineage that replaces the separate policy adapter
    out = [{**c, "weight": c["weight"] * beta} for c in old if c["weight"] * beta >= MIN_WEIGHT or c.get("policy")]
    return out + [{**added, "weight": round(1.0 - beta, 10)}]


def start_from_policy(store, lora: LoraWeights, source: str) -> VersionInfo:
    """EMA version 1 = a policy adapter (issue 15's option b): the persistent adapter starts from what the
    agent already does well, skills fold in beneath it, and each fold scales it by β like any contributor.
    Parametric solves then take the policy from here instead of as a separate adapter. Only for a store with
    no persistent adapter yet: starting over under skills already folded would silently drop them."""
    with store.session() as s:
        latest = adapter_repo.latest_ema(s, lora.base_model)
        if latest is not None:
            raise StoreError(f"the persistent adapter already exists (EMA version {latest.version}): "
                             "a policy can only be its start")
        row = write_version(s, lora.replace(lora.factors, {UPDATES_KEY: "1"}), op="init", parent=None, meta={
            "beta": None, "updates": 1, "skill": None, "skills_added": [], "max_rel_error": 0.0,
            "contributors": [{"name": "policy", "policy": source, "weight": 1.0}]})
        return VersionInfo.of(row)


# --- the accumulate job ----------------------------------------------------------------------------------

def run(ctx: EvolveContext) -> dict[str, Any]:
    beta, max_rank = ctx.settings.beta, ctx.settings.max_rank
    folded: list[dict[str, Any]] = []
    errors: list[str] = []
    done: set[int] = set()
    gated: list[dict[str, Any]] = []
    scores: dict[str | None, GateScore] = {}  # by sha256: a fold's parent was scored as the fold before
    gating = ctx.settings.ema_gate

    def judge(version: int) -> None:
        # any other evaluator failure fails the job: nothing may fold on an unjudged version
        nonlocal gating
        try:
            gated.append(gate(ctx, version, scores))
        except TrainingUnavailable as exc:  # no evaluator in this installation: folds go on unjudged
            gating = False
            gated.append({"version": version, "status": "not gated", "reason": str(exc)})

    with ctx.store.session() as s:
        up_to = evo_repo.last_ids(s)[1]  # skills written during this run are the next run's
        latest = adapter_repo.latest_ema(s, ctx.base_model)
        left = latest.version if gating and latest is not None and awaits_gate(s, latest) else None
    if left is not None:  # a fold whose verdict a crash interrupted: judged before anything builds on it
        judge(left)
    while not ctx.stopping():
        with ctx.store.session() as s:
            todo = [(r.id, r.name, r.version, skill_repo.to_doc(r))
                    for r in evo_repo.pending_skills(s, ctx.settings.sources, limit=ctx.settings.batch + len(done),
                                                     up_to=up_to)
                    if r.id not in done][: ctx.settings.batch]
        if not todo:
            break
        for skill_id, name, skill_version, doc in todo:
            if ctx.stopping():
                break
            done.add(skill_id)
            ctx.fault("accumulate:convert")
            try:
                conv = ctx.convert(doc, skill_id)
                with ctx.store.session() as s:
                    out = fold(s, ctx, skill_id, conv, beta, max_rank)
            except Exception as exc:  # noqa: BLE001 - one bad skill must not block the others; it stays pending
                errors.append(f"{name}: {type(exc).__name__}: {exc}"[:300])
                continue
            if out is not None:
                folded.append(out)
                if gating and not ctx.stopping():  # (stopped: the next run judges it first)
                    judge(out["version"])
    return {"folded": folded, "errors": errors, "beta": beta, "gated": gated, "stopped": ctx.stopping()}


def fold(session, ctx: EvolveContext, skill_id: int, conv: FoldableAdapter, beta: float, max_rank: int) -> dict | None:
    """One EMA step for one skill: re-check, read the latest version, write N+1, mark the skill."""
    row = session.get(Skill, skill_id)
    if row is None or not row.is_current or row.status != "active" or row.ema_version is not None:
        return None  # someone else folded it, or it changed meanwhile
    parent = adapter_repo.latest_ema(session, conv.lora.base_model)
    persistent = load_version(parent) if parent is not None else None
    new, info = ema_update(persistent, conv.lora, beta, max_rank=max_rank)
    added = {"name": row.name, "skill_id": row.id, "version": row.version, "adapter_id": conv.adapter_id}
    ctx.fault("accumulate:in-txn")
    ver = write_version(session, new, op="update", parent=parent, hypernet_id=conv.hypernet_id, meta={
        "beta": beta, "updates": info.updates, "skill": row.name, "skills_added": [added],
        "contributors": _contributors(parent, beta, added), "max_rel_error": round(info.max_rel_error, 6),
        "max_rank": max_rank})
    ctx.fault("accumulate:before-mark")
    row.ema_version = ver.version
    return {"skill": row.name, "version": ver.version, "updates": info.updates,
            "max_rel_error": round(info.max_rel_error, 6), "total_norm": ver.meta["total_norm"]}


# --- the gate ---------------------------------------------------------------------------------------------

def gate_run_id(version: int) -> str:
    return f"ema-gate-v{version}"


def awaits_gate(session, row: Adapter) -> bool:
    """A fold with no verdict yet (rollbacks and compactions change no skill's share: never judged)."""
    return (row.meta or {}).get("op") == "update" and session.scalar(
        select(EvalResult.id).where(EvalResult.run_id == gate_run_id(row.version)).limit(1)) is None


def gate(ctx: EvolveContext, version: int, scores: dict[str | None, GateScore]) -> dict[str, Any]:
    """Score EMA version `version` and its parent; roll the fold back if it lowered the held-out score."""
    with ctx.store.session() as s:
        row = evo_repo.ema_version(s, version)
        pv = (row.meta or {}).get("parent_version")
        parent = evo_repo.ema_version(s, pv) if pv is not None else None
        for r in (row, parent):
            if r is not None:
                s.expunge(r)
    m = row.meta or {}
    if parent is not None and (parent.meta or {}).get("pruned"):
        return {"version": version, "status": "not gated", "reason": f"version {pv}'s weights were pruned"}
    evaluator = ctx.adapter_evaluator or default_adapter_evaluate
    ctx.fault("accumulate:eval")
    for r in (parent, row):  # a rollback version has its source's bytes: scored once
        key = r.sha256 if r is not None else None
        if key not in scores:
            scores[key] = evaluator(ctx, r)
    b, c = scores[parent.sha256 if parent is not None else None], scores[row.sha256]
    tolerance = ctx.settings.ema_gate_tolerance
    kept = c.value >= b.value - tolerance
    added = (m.get("skills_added") or [{}])[0]
    verdict = {"skill": m.get("skill"), "skill_id": added.get("skill_id"), "version": version, "metric": c.metric,
               "baseline": b.value, "candidate": c.value, "tolerance": tolerance}
    ctx.fault("accumulate:before-verdict")
    with ctx.store.session() as s:
        latest = adapter_repo.latest_ema(s, row.base_model)
        if not awaits_gate(s, row):
            return {"version": version, "status": "already gated"}
        if latest.id != row.id:  # another accumulator built on it meanwhile: its own gate judges the sum
            return {"version": version, "status": "not gated", "reason": f"version {latest.version} came after it"}
        for role, score, v in (("baseline", b, pv), ("candidate", c, version)):
            s.add(EvalResult(run_id=gate_run_id(version), mode="parametric", split="heldout", subtask="overall",
                             metric=score.metric, value=float(score.value), n=int(score.n), base_model=row.base_model,
                             hypernet_id=None, details={"role": role, "gate": "ema", "ema_version": v,
                                                        "skill": m.get("skill"), **score.details}))
        if kept:
            return {**verdict, "status": "kept"}
        src = s.get(Adapter, parent.id) if parent is not None else None
        back = _write_rollback(s, src, latest, skill=m.get("skill"), gate=verdict)
        skill = s.get(Skill, added["skill_id"]) if added.get("skill_id") is not None else None
        if skill is not None:  # its ema_version stays set: pending_skills never offers it again
            skill.provenance = {**(skill.provenance or {}), "ema_rollback": {**verdict, "rollback": back.version}}
        return {**verdict, "status": "rolled back", "rollback": back.version}


def default_adapter_evaluate(ctx: EvolveContext, row: Adapter | None) -> GateScore:
    """Mean log-probability per token of the held-out references (the retrain gate's held-out items, with
    neither the item's skill nor any other adapter) under the model with this EMA version: teacher-forced,
    one forward pass per item, no generation."""
    try:
        from agent.learn.evaluate import reference_logprobs
    except ImportError:
        raise TrainingUnavailable("evaluation not available: agent.learn is not part of this installation") from None

    lora = load_version(row) if row is not None else None
    with ctx.model_lock:
        items = ctx.heldout_items()
        scores = reference_logprobs(ctx.loaded(), items, lora)
    total, tokens = sum(s for s, _ in scores), sum(n for _, n in scores)
    return GateScore("ref_logprob", total / max(tokens, 1), len(items), {"tokens": tokens})


# --- listing, diff, rollback ------------------------------------------------------------------------------

@dataclass(frozen=True)
class VersionInfo:
    version: int
    adapter_id: int
    base_model: str
    op: str
    beta: float | None
    updates: int | None
    skill: str | None
    rank: int
    total_norm: float | None
    max_rel_error: float | None
    contributors: list[dict[str, Any]]
    norms: dict[str, float]
    pruned: bool
    created_at: str | None
    gate: dict[str, Any] | None = None  # a gate rollback: the skill taken out and the two held-out scores

    @classmethod
    def of(cls, row: Adapter) -> VersionInfo:
        m = row.meta or {}
        return cls(row.version, row.id, row.base_model, m.get("op", "update"), m.get("beta"), m.get("updates"),
                   m.get("skill"), row.rank, m.get("total_norm"), m.get("max_rel_error"),
                   list(m.get("contributors") or []), dict(m.get("norms") or {}), bool(m.get("pruned")),
                   row.created_at.isoformat() if row.created_at else None, m.get("gate"))

    def row(self) -> dict[str, Any]:
        return {"version": self.version, "op": self.op, "skill": self.skill, "beta": self.beta,
                "updates": self.updates, "rank": self.rank, "total_norm": self.total_norm,
                "max_rel_error": self.max_rel_error, "skills": sum(not c.get("policy") for c in self.contributors),
                "policy": self.policy, "pruned": self.pruned, "created_at": self.created_at, "gate": self.gate}

    @property
    def policy(self) -> float | None:
        """The policy's weight in this version, if it started from one (start_from_policy)."""
        return adapter_repo.policy_weight(self.contributors)


def versions(ctx_store, base_model: str | None = None) -> list[VersionInfo]:
    with ctx_store.session() as s:
        return [VersionInfo.of(r) for r in evo_repo.ema_versions(s, base_model)]


@dataclass
class VersionDiff:
    old: VersionInfo
    new: VersionInfo
    diff_norm: float | None  # ‖ΔW_new − ΔW_old‖_F (None when a side's weights were pruned)
    cosine: float | None
    modules: list[dict[str, Any]] = field(default_factory=list)  # largest per-module norm changes
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    reweighted: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"old": self.old.row(), "new": self.new.row(), "diff_norm": self.diff_norm, "cosine": self.cosine,
                "modules": self.modules, "added": self.added, "removed": self.removed, "reweighted": self.reweighted}


def diff(store, v_old: int, v_new: int, top: int = 10) -> VersionDiff:
    with store.session() as s:
        a, b = evo_repo.ema_version(s, v_old), evo_repo.ema_version(s, v_new)
        ia, ib = VersionInfo.of(a), VersionInfo.of(b)
        la = None if ia.pruned else load_version(a)
        lb = None if ib.pruned else load_version(b)
    if ia.base_model != ib.base_model:
        raise StoreError(f"versions {v_old} and {v_new} belong to different base models")
    dn = cs = None
    if la is not None and lb is not None:
        dn, cs = round(diff_norm(lb, la), 6), round(cosine(lb, la), 6)
    keys = sorted(set(ia.norms) | set(ib.norms))
    modules = sorted(({"module": k, "old": ia.norms.get(k, 0.0), "new": ib.norms.get(k, 0.0),
                       "change": round(ib.norms.get(k, 0.0) - ia.norms.get(k, 0.0), 6)} for k in keys),
                     key=lambda m: -abs(m["change"]))[:top]
    wa = {(c["name"], c.get("version")): c["weight"] for c in ia.contributors}
    wb = {(c["name"], c.get("version")): c["weight"] for c in ib.contributors}
    fmt = lambda k: f"{k[0]}@v{k[1]}" if k[1] is not None else k[0]  # noqa: E731
    return VersionDiff(ia, ib, dn, cs, modules, [fmt(k) for k in wb if k not in wa],
                       [fmt(k) for k in wa if k not in wb],
                       [{"skill": fmt(k), "old": round(wa[k], 6), "new": round(wb[k], 6)}
                        for k in wb if k in wa and abs(wa[k] - wb[k]) > 1e-9])


def rollback(store, version: int) -> VersionInfo:
    """A new version equal to `version` (same weights and contributors); history is never rewritten."""
    with store.session() as s:
        src = evo_repo.ema_version(s, version)
        parent = adapter_repo.latest_ema(s, src.base_model)
        if parent is not None and parent.id == src.id:
            raise StoreError(f"version {version} is already the latest EMA version: nothing to roll back")
        return VersionInfo.of(_write_rollback(s, src, parent))


def _write_rollback(session, src: Adapter | None, latest: Adapter, **meta: Any) -> Adapter:
    """The next version equal to `src`; None: to no persistent adapter (all-zero weights, no contributors)."""
    if src is not None:
        lora, m = load_version(src), src.meta or {}
    else:
        like = load_version(latest)
        zeros = {k: (torch.zeros_like(a[:1]), torch.zeros_like(b[:, :1])) for k, (a, b) in like.factors.items()}
        lora = like.replace(zeros, {UPDATES_KEY: "0", BETA_KEY: like.metadata.get(BETA_KEY, "0")})
        m = {"updates": 0}
    kept = {c["name"] for c in m.get("contributors") or []}
    dropped = [c["name"] for c in (latest.meta or {}).get("contributors") or [] if c["name"] not in kept]
    return write_version(session, lora, op="rollback", parent=latest,
                         hypernet_id=src.hypernet_id if src is not None else None, meta={
                             "from_version": src.version if src is not None else None, "beta": m.get("beta"),
                             "updates": m.get("updates"), "skill": None, "skills_added": [],
                             "contributors": list(m.get("contributors") or []), "max_rel_error": 0.0,
                             "dropped_skills": dropped, **meta})


# --- compaction -------------------------------------------------------------------------------------------

def compact(ctx: EvolveContext) -> dict[str, Any]:
    out: dict[str, Any] = {}
    ctx.fault("compact:recompress")
    out["recompressed"] = _recompress_latest(ctx)
    ctx.fault("compact:prune-skills")
    out["skill_adapters_deleted"] = _prune_skill_adapters(ctx)
    ctx.fault("compact:prune-ema")
    out["ema_blobs_pruned"] = _prune_ema_blobs(ctx)
    out["checkpoint_files_deleted"] = _prune_checkpoint_files(ctx)
    return out


def _recompress_latest(ctx: EvolveContext) -> list[int]:
    written = []
    with ctx.store.session() as s:
        models = {r.base_model for r in s.scalars(select(Adapter).where(Adapter.kind == "ema"))}
        for base in sorted(models):
            latest = adapter_repo.latest_ema(s, base)
            if latest is None or latest.rank <= ctx.settings.max_rank:
                continue
            if ctx.settings.ema_gate and awaits_gate(s, latest):
                continue  # an unjudged fold stays the latest until the next accumulate's gate judges it
            lora, errors = recompress(load_version(latest), ctx.settings.max_rank)
            m = latest.meta or {}
            row = write_version(s, lora, op="compact", parent=latest, hypernet_id=latest.hypernet_id, meta={
                "beta": m.get("beta"), "updates": m.get("updates"), "skill": None, "skills_added": [],
                "contributors": list(m.get("contributors") or []),
                "max_rel_error": round(max(errors.values(), default=0.0), 6), "max_rank": ctx.settings.max_rank})
            written.append(row.version)
    return written


def _prune_skill_adapters(ctx: EvolveContext) -> int:
    with ctx.store.session() as s:
        rows = list(s.scalars(select(Adapter).where(Adapter.kind == "skill").order_by(Adapter.id.desc())))
        newest_of: dict[int, int] = {}
        doomed = []
        for r in rows:
            skill = r.skill
            if r.skill_id is None:
                continue  # converted from a folder, not from the store: nothing says it is unused
            if not skill.is_current or skill.status != "active":
                doomed.append(r.id)
            elif r.skill_id in newest_of:
                doomed.append(r.id)  # an older conversion of the same skill (e.g. by an older hypernetwork)
            else:
                newest_of[r.skill_id] = r.id
        if doomed:
            s.execute(delete(Adapter).where(Adapter.id.in_(doomed)))
        return len(doomed)


def _prune_ema_blobs(ctx: EvolveContext) -> list[int]:
    keep = ctx.settings.keep_last
    if keep <= 0:
        return []
    pruned = []
    empty_sha = hashlib.sha256(b"").hexdigest()
    with ctx.store.session() as s:
        rows = evo_repo.ema_versions(s)
        by_model: dict[str, list[Adapter]] = {}
        for r in rows:
            by_model.setdefault(r.base_model, []).append(r)
        for chain in by_model.values():
            for r in chain[:-keep]:
                if (r.meta or {}).get("pruned"):
                    continue
                r.meta = {**(r.meta or {}), "pruned": {"sha256": r.sha256, "bytes": len(r.blob),
                                                       "at": utcnow().isoformat()}}
                r.blob, r.sha256 = b"", empty_sha
                pruned.append(r.version)
    return pruned


def _prune_checkpoint_files(ctx: EvolveContext, min_age_s: float = 3600.0) -> list[str]:
    folder = ctx.checkpoint_dir
    if not folder.is_dir():
        return []
    with ctx.store.session() as s:
        known = {str(Path(p).resolve()) for p in s.scalars(select(HypernetCheckpoint.path)) if p}
    gone = []
    for f in folder.glob("*.safetensors"):
        if str(f.resolve()) not in known and time.time() - f.stat().st_mtime > min_age_s:
            f.unlink(missing_ok=True)
            gone.append(f.name)
    return gone
