"""Skill extraction: verified trajectories become candidate skills, checked, de-duplicated and stored.

Per pending trajectory:
1. Not verified: never a skill. The skills it had active get their use counted and a "what not to do"
   note in their provenance; the trajectory is marked skipped.
2. Verified: the claim is re-checked by a fresh run (new sandbox workspace, the trajectory's diff applied,
   its test command). Failing that, skipped.
3. Candidates: the writer model (teacher endpoint or local model) answers a structured prompt; a
   deterministic template built from the trajectory's generalised action sequence is the fallback. The
   linter decides: a candidate it refuses is stored with status "rejected" and the reason; the first one
   it accepts goes on.
4. De-duplication by embedding similarity against the library: AGREE (same procedure: the existing skill
   gains support), EDIT (close: the existing extracted skill gets a new version with the new steps), ADD.
5. One transaction writes the skill rows, the counters and the trajectory's extraction state, after
   checking the trajectory is still pending: a crash before it leaves the trajectory pending (redone),
   and two extractors never both write."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

from agent.evolve.context import EvolveContext
from agent.evolve.skill_writer import (
    Candidate,
    classify_change,
    instance_details,
    lint_candidate,
    model_candidate,
    procedure,
    procedure_summary,
    template_candidate,
)
from agent.evolve.verify import TrajectoryView
from agent.runtime.retrieval import skill_key
from memory import evolution as evo_repo
from memory import skills as skill_repo
from memory.models import Skill, Trajectory, utcnow
from memory.skillfile import SkillDoc

MAX_EVENTS = 50  # provenance lists are capped: a popular skill must not grow without bound
MAX_NOTES = 20
MAX_ITEM_ERRORS = 3

# --- de-duplication -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Neighbour:
    skill_id: int
    name: str
    similarity: float


def nearest(doc: SkillDoc, library: list[tuple[int, str, str]], embed: Callable[[list[str]], Any]) -> Neighbour | None:
    """The most similar library skill by cosine of unit-norm embeddings of name + description."""
    if not library:
        return None
    vecs = embed([skill_key(doc.name, doc.description)] + [skill_key(n, d) for _, n, d in library])
    sims = (vecs[1:] @ vecs[0]).tolist()
    best = max(range(len(library)), key=lambda i: sims[i])
    return Neighbour(library[best][0], library[best][1], round(float(sims[best]), 4))


def dedup_action(neighbour: Neighbour | None, agree: float, edit: float) -> str:
    if neighbour is None or neighbour.similarity < edit:
        return "ADD"
    return "AGREE" if neighbour.similarity >= agree else "EDIT"


def _steps(body: str) -> list[str]:
    return [m.group(1).strip() for m in re.finditer(r"^\d+\.\s+(.+)$", body, re.M)]


def _norm(text: str) -> str:
    return re.sub(r"\W+", " ", text.lower()).strip()


def merged_doc(existing: SkillDoc, candidate: SkillDoc) -> SkillDoc | None:
    """The existing skill plus the candidate's steps it lacks, under "Also seen"; None if nothing is new."""
    have = {_norm(s) for s in _steps(existing.body)}
    new = [s for s in _steps(candidate.body) if _norm(s) not in have]
    if not new:
        return None
    extra = "\n".join(f"- {s}" for s in new[:3])
    body = existing.body.rstrip() + f"\n\n## Also seen\n\nOther verified runs also did this:\n\n{extra}\n"
    if "## Also seen" in existing.body:
        body = existing.body.rstrip() + "\n" + extra + "\n"
    return SkillDoc(existing.name, existing.description, body, existing.license, existing.compatibility,
                    dict(existing.metadata))


# --- deciding (slow, outside any transaction) -------------------------------------------------------------

@dataclass
class Decision:
    kind: str  # skill | skip | error
    reason: str = ""
    action: str = ""  # ADD | EDIT | AGREE
    doc: SkillDoc | None = None
    target_id: int | None = None
    similarity: float | None = None
    rejected: list[Candidate] = field(default_factory=list)
    origin: str = ""
    procedure: str = ""


def decide(ctx: EvolveContext, view: TrajectoryView) -> Decision:
    if not view.verified:
        return Decision("skip", "not verified: a failed run never becomes a skill")
    if not view.diff.strip() or not view.outcome.get("test_cmd"):
        return Decision("skip", "no diff or test command recorded")
    ctx.fault("extract:verify")
    check = ctx.verify(view)
    if not check.ok:
        return Decision("skip", f"fresh test run does not confirm the fix: {check.detail}"[:500])
    details = instance_details(view)
    rejected: list[Candidate] = []
    chosen: Candidate | None = None
    writer = ctx.writer()
    if writer is not None:
        chat, origin = writer
        ctx.fault("extract:write")
        try:
            with ctx.model_lock:
                cand = model_candidate(chat, view, origin)
        except Exception as exc:  # noqa: BLE001 - a broken writer must not stop extraction: template follows
            cand = Candidate(None, origin, "", [f"writer failed: {type(exc).__name__}: {exc}"[:300]])
        if cand.doc is not None:
            cand.problems = lint_candidate(cand.doc, details)
        if cand.ok:
            chosen = cand
        else:
            rejected.append(cand)
    if chosen is None:
        cand = template_candidate(view, details)
        cand.problems = lint_candidate(cand.doc, details)
        if cand.ok:
            chosen = cand
        else:
            rejected.append(cand)
    keys = procedure(view)
    summary = procedure_summary(keys, classify_change(view.diff))
    if chosen is None:
        return Decision("skip", "every candidate failed the linter", rejected=rejected, procedure=summary)
    library = ctx.library()
    near = nearest(chosen.doc, [x for x in library], ctx.embed)
    action = dedup_action(near, ctx.settings.agree_threshold, ctx.settings.edit_threshold)
    return Decision("skill", action=action, doc=chosen.doc, target_id=near.skill_id if near and action != "ADD" else None,
                    similarity=near.similarity if near else None, rejected=rejected, origin=chosen.origin,
                    procedure=summary)


# --- applying (one transaction) -------------------------------------------------------------------------

def _event(action: str, view: TrajectoryView, similarity: float | None) -> dict[str, Any]:
    return {"action": action, "trajectory": view.id, "similarity": similarity, "at": utcnow().isoformat()}


def _outcome(view: TrajectoryView) -> dict[str, Any]:
    o = view.outcome
    return {"status": view.status, "verified": view.verified,
            "tests_before": bool((o.get("tests_before") or {}).get("passed")),
            "tests_after": bool((o.get("tests_after") or {}).get("passed")), "steps": len(view.actions)}


def _count_active(session, view: TrajectoryView, note: str | None) -> list[str]:
    """Use/win counters of the skills the run had active; a failed run leaves a what-not-to-do note."""
    touched = []
    for entry in view.active_skills:
        name = entry.get("name") if isinstance(entry, dict) else None
        row = skill_repo.current(session, name) if name else None
        if row is None:
            continue  # e.g. "ema-v3", or a skill removed since
        row.use_count = (row.use_count or 0) + 1
        row.win_count = (row.win_count or 0) + int(view.verified)
        if note:
            prov = dict(row.provenance or {})
            prov["avoid"] = (list(prov.get("avoid") or []) + [{"trajectory": view.id, "status": view.status,
                                                                "note": note}])[-MAX_NOTES:]
            row.provenance = prov
        touched.append(row.name)
    return touched


def _store_rejected(session, view: TrajectoryView, cand: Candidate) -> str:
    name = f"rejected-t{view.id}-{cand.origin}"
    doc = cand.doc
    description = doc.description if doc and doc.description.strip() else f"unparsable candidate from trajectory {view.id}"
    body = doc.body if doc and doc.body.strip() else (cand.raw.strip() or "(empty reply)")
    meta = dict(doc.metadata) if doc else {"origin": cand.origin}
    if doc:
        meta["proposed-name"] = doc.name[:64]
    stored = SkillDoc(name, description[:1024], body[:20000], metadata=meta)
    skill_repo.upsert(session, stored, source="extracted",
                      provenance={"trajectories": [view.id], "task": view.task[:500], "outcome": _outcome(view),
                                  "origin": cand.origin})
    row = skill_repo.current(session, name)
    row.status, row.status_reason = "rejected", "; ".join(cand.problems)[:2000]
    return name


def _free_name(session, name: str) -> str:
    n = 2
    candidate = name
    while skill_repo.current(session, candidate) is not None:
        candidate = f"{name[:60]}-{n}"
        n += 1
    return candidate


def apply(session, ctx: EvolveContext, view: TrajectoryView, d: Decision) -> dict[str, Any] | None:
    """Write the decision; None when another worker already handled this trajectory."""
    row = session.get(Trajectory, view.id)
    if row is None or row.extraction != "pending":
        return None
    info: dict[str, Any] = {"at": utcnow().isoformat()}
    if d.kind == "error":
        errors = view.errors + 1
        info |= {"errors": errors, "last_error": d.reason}
        if errors < MAX_ITEM_ERRORS:
            row.extraction_info = info
            return {"trajectory": view.id, "result": "error", "reason": d.reason}
        d = Decision("skip", f"extraction failed {errors} times: {d.reason}")
    note = None
    if not view.verified:
        note = f"run ended {view.status} without passing tests after {len(view.actions)} actions"
    info["counted"] = _count_active(session, view, note)
    ctx.fault("extract:in-txn")
    info["rejected"] = [_store_rejected(session, view, c) for c in d.rejected]
    if d.kind == "skip":
        row.extraction, info["reason"] = "skipped", d.reason
        row.extraction_info = info
        return {"trajectory": view.id, "result": "skipped", "reason": d.reason, "rejected": info["rejected"]}
    action, doc = d.action, d.doc
    target = session.get(Skill, d.target_id) if d.target_id else None
    if target is not None and not target.is_current:
        target = skill_repo.current(session, target.name)
    if action != "ADD" and target is None:
        action = "ADD"
    if action == "ADD":
        same = skill_repo.current(session, doc.name)
        if same is not None and same.content_hash == doc.content_hash:
            action, target = "AGREE", same
        elif same is not None:
            doc = SkillDoc(_free_name(session, doc.name), doc.description, doc.body, doc.license, doc.compatibility,
                           dict(doc.metadata))
    event = _event(action, view, d.similarity)
    if action == "EDIT":
        merged = merged_doc(skill_repo.to_doc(target), doc) if target.source == "extracted" else None
        if merged is None or lint_candidate(merged, instance_details(view)):
            action, event["action"] = "AGREE", "AGREE"
            event["note"] = "nothing new to add" if target.source == "extracted" else f"{target.source} skills are not rewritten"
        else:
            prov = _supported(target.provenance, view, event)
            skill_repo.upsert(session, merged, source="extracted", provenance=prov)
            name = merged.name
    if action == "AGREE":
        target.provenance = _supported(target.provenance, view, event)
        name = target.name
    if action == "ADD":
        skill_repo.upsert(session, doc, source="extracted", provenance={
            "trajectories": [view.id], "task": view.task[:500], "outcome": _outcome(view), "origin": d.origin,
            "procedure": d.procedure, "support": 1, "events": [event]})
        name = doc.name
    ctx.fault("extract:before-mark")
    row.extraction = "extracted"
    info |= {"action": action, "skill": name, "similarity": d.similarity, "origin": d.origin}
    row.extraction_info = info
    return {"trajectory": view.id, "result": action, "skill": name, "similarity": d.similarity,
            "origin": d.origin, "rejected": info["rejected"]}


def _supported(provenance: dict | None, view: TrajectoryView, event: dict) -> dict:
    prov = dict(provenance or {})
    prov["support"] = int(prov.get("support") or 1) + 1
    prov["trajectories"] = (list(prov.get("trajectories") or []) + [view.id])[-MAX_EVENTS:]
    prov["events"] = (list(prov.get("events") or []) + [event])[-MAX_EVENTS:]
    return prov


# --- the job --------------------------------------------------------------------------------------------

def run(ctx: EvolveContext) -> dict[str, Any]:
    """Extract from every trajectory pending when the run starts (until stopped); returns counts and per-trajectory results."""
    counts: Counter[str] = Counter()
    results: list[dict[str, Any]] = []
    failed: set[int] = set()
    with ctx.store.session() as s:
        up_to = evo_repo.last_ids(s)[0]  # what arrives during this run is the next run's
    while not ctx.stopping():
        with ctx.store.session() as s:
            batch = [TrajectoryView.from_row(r) for r in evo_repo.pending_trajectories(
                         s, limit=ctx.settings.batch + len(failed), up_to=up_to)
                     if r.id not in failed][: ctx.settings.batch]
        if not batch:
            break
        for view in batch:
            if ctx.stopping():
                break
            try:
                decision = decide(ctx, view)
            except Exception as exc:  # noqa: BLE001 - one bad trajectory must not block the others
                decision = Decision("error", f"{type(exc).__name__}: {exc}"[:500])
                failed.add(view.id)
            with ctx.store.session() as s:
                out = apply(s, ctx, view, decision)
            if out is None:
                counts["already-done"] += 1
                continue
            counts[out["result"]] += 1
            if out.get("rejected"):
                counts["rejected-candidates"] += len(out["rejected"])
            results.append(out)
    return {"counts": dict(counts), "results": results[-50:], "stopped": ctx.stopping()}
