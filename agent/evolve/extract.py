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
   and two extractors never both write.
"""

from __future__ import annotations

import keyword
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from memory import evolution as evo_repo
from memory import skills as skill_repo
from memory.errors import SkillFormatError
from memory.models import Skill, Trajectory, utcnow
from memory.skillfile import SkillDoc, parse, validate

if TYPE_CHECKING:
    from agent.evolve.cycle import EvolveContext

SUBTASK = "bug-fixing"
MAX_EVENTS = 50  # provenance lists are capped: a popular skill must not grow without bound
MAX_NOTES = 20
MAX_ITEM_ERRORS = 3


# --- what a trajectory holds, detached from the session ------------------------------------------

@dataclass(frozen=True)
class TrajectoryView:
    id: int
    task: str
    repo: str
    status: str
    verified: bool
    outcome: dict[str, Any]
    actions: list[dict[str, Any]]
    active_skills: list[dict[str, Any]]
    errors: int = 0

    @classmethod
    def from_row(cls, row: Trajectory) -> TrajectoryView:
        actions = [dict(st.action) for st in row.steps if st.role == "assistant" and st.action]
        return cls(row.id, row.task, row.repo, row.status, bool(row.verified), dict(row.outcome or {}), actions,
                   list(row.active_skills or []), int((row.extraction_info or {}).get("errors", 0)))

    @property
    def diff(self) -> str:
        return str(self.outcome.get("diff") or "")


@dataclass(frozen=True)
class Verification:
    ok: bool
    detail: str


def _python_of(test_cmd: str) -> str:
    """The interpreter a recorded test command names (solve writes it as an absolute path), else ours."""
    import os
    import shlex
    import sys

    try:
        first = shlex.split(test_cmd)[0]
    except (ValueError, IndexError):
        return sys.executable
    return first if os.path.isabs(first) and "python" in os.path.basename(first) else sys.executable


def verify_in_sandbox(view: TrajectoryView, allow_unconfined: bool = False, timeout: float = 300.0) -> Verification:
    """Re-run the trajectory's test command in a new workspace of its repo with its diff applied."""
    import tempfile
    from pathlib import Path

    from sandbox.gitcmd import run_git
    from sandbox.runner import Sandbox
    from sandbox.workspace import Workspace

    test_cmd = str(view.outcome.get("test_cmd") or "")
    if not Path(view.repo).is_dir():
        return Verification(False, f"repository {view.repo} is gone")
    with Workspace.create(view.repo) as ws:
        # host git touches the fresh copy before any sandboxed code has run in it, so its config is ours
        env = {"GIT_CEILING_DIRECTORIES": str(ws.root)}
        with tempfile.NamedTemporaryFile("wb", prefix="parametric-skills-", suffix=".patch") as fh:
            fh.write(view.diff.encode("utf-8", errors="surrogateescape"))
            fh.flush()
            args = ["apply", "--binary", "--whitespace=nowarn"]
            if run_git([*args, "--check", fh.name], cwd=ws.path, env=env, check=False).returncode == 0:
                run_git([*args, fh.name], cwd=ws.path, env=env)
            elif run_git([*args, "-R", "--check", fh.name], cwd=ws.path, env=env, check=False).returncode != 0:
                return Verification(False, "the diff no longer applies to the repository")
            # else: the repository already holds the fix (solve --apply): test it as it is
        runner = Sandbox(ws.path, python=_python_of(test_cmd), allow_unconfined=allow_unconfined)
        result = runner.run(test_cmd, timeout=timeout)
    tail = result.output.strip().splitlines()[-1:] or [""]
    return Verification(result.ok, f"exit code {result.exit_code}: {tail[0][:200]}")


# --- instance details: what a general skill must not mention ----------------------------------------

_PY_WORDS = set(keyword.kwlist) | {"self", "None", "True", "False", "print", "len", "range", "value", "values"}


@dataclass(frozen=True)
class InstanceDetails:
    files: frozenset[str]
    identifiers: frozenset[str]
    literals: frozenset[str]

    def found_in(self, text: str) -> list[str]:
        hits = [f for f in self.files if re.search(rf"(?<![\w.]){re.escape(f)}(?![\w])", text, re.I)]
        hits += [i for i in self.identifiers if re.search(rf"\b{re.escape(i)}\b", text)]
        for lit in self.literals:
            pattern = rf"(?<![\w.]){re.escape(lit)}(?![\w.])" if lit[0].isdigit() else re.escape(lit)
            if re.search(pattern, text):
                hits.append(lit)
        return sorted(set(hits))


def _changed_lines(diff: str) -> list[str]:
    return [l[1:] for l in diff.splitlines() if l[:1] in "+-" and not l.startswith(("+++", "---"))]


def instance_details(view: TrajectoryView) -> InstanceDetails:
    diff = view.diff
    files: set[str] = set()
    for m in re.finditer(r"^(?:\+\+\+|---) [ab]/(\S+)", diff, re.M):
        files.add(m.group(1))
    for act in view.actions:
        if act.get("kind") in ("read", "edit") and act.get("arg"):
            files.add(str(act["arg"]).split(":", 1)[0].strip())
    files |= {f.rsplit("/", 1)[-1] for f in files}
    files = {f for f in files if "." in f and len(f) >= 4}
    idents: set[str] = set()
    for m in re.finditer(r"^@@[^@]*@@\s*(?:async\s+)?(?:def|class)\s+(\w+)", diff, re.M):
        idents.add(m.group(1))
    for m in re.finditer(r"^[ +-]\s*(?:async\s+)?(?:def|class)\s+(\w+)", diff, re.M):
        idents.add(m.group(1))
    tail = str((view.outcome.get("tests_before") or {}).get("tail") or "")
    idents |= set(re.findall(r"\btest_\w+", tail))
    idents = {i for i in idents if len(i) >= 3 and i not in _PY_WORDS}
    literals: set[str] = set()
    for line in _changed_lines(diff):
        literals |= {m.group(2) for m in re.finditer(r"(['\"])([^'\"\n]{2,}?)\1", line)}
        literals |= {m.group(0) for m in re.finditer(r"(?<![\w.])\d+(?:\.\d+)?(?![\w.])", line) if len(m.group(0)) >= 2}
    return InstanceDetails(frozenset(files), frozenset(idents), frozenset(literals))


# --- generalising the trajectory ----------------------------------------------------------------------

@dataclass(frozen=True)
class ChangeKind:
    key: str
    name: str
    when: str  # completes "Use when a unit test fails because ..."
    edit_step: str


CHANGE_KINDS = {
    "return-value": ChangeKind(
        "return-value", "fix-wrong-return-value",
        "one branch of a function returns the wrong value",
        "Find the branch that handles the failing input and compare what it returns with what the docstring and "
        "the test expect; change only that return expression."),
    "comparison": ChangeKind(
        "comparison", "fix-wrong-comparison",
        "a condition compares with the wrong operator or the wrong bound",
        "Check every comparison in the function against the documented range: strict versus inclusive bounds and "
        "the direction of the operator; correct the one that disagrees."),
    "off-by-one": ChangeKind(
        "off-by-one", "fix-off-by-one-error",
        "an index, a count or a range bound is off by one",
        "Walk the loop or slice by hand on the smallest failing input and check the first and the last index it "
        "touches; move the bound by one where it misses or overshoots."),
    "missing-guard": ChangeKind(
        "missing-guard", "fix-missing-edge-case-guard",
        "an edge case (empty input, a missing value, a zero) is not handled",
        "Add a guard for the edge case at the top of the function that returns or raises what the docstring "
        "promises, and leave the main path unchanged."),
    "operator": ChangeKind(
        "operator", "fix-wrong-arithmetic-operator",
        "an arithmetic expression uses the wrong operator",
        "Recompute the failing expression by hand with the test's inputs and find the operator that gives the "
        "wrong result; replace only that operator."),
    "logic": ChangeKind(
        "logic", "fix-failing-test-minimal-edit",
        "the code under test has a small logic error",
        "Locate the smallest statement whose result differs from what the test expects and correct it, without "
        "reformatting or refactoring anything around it."),
}

_CMP = re.compile(r"<=|>=|==|!=|<|>|\bis not\b|\bis\b|\bnot in\b|\bin\b")
_ARITH = re.compile(r"//|\*\*|[+\-*/%]")


def _tokens(line: str) -> list[str]:
    return re.findall(r"\w+|<=|>=|==|!=|//|\*\*|\S", line)


def classify_change(diff: str) -> ChangeKind:
    removed = [l[1:].strip() for l in diff.splitlines() if l.startswith("-") and not l.startswith("---")]
    added = [l[1:].strip() for l in diff.splitlines() if l.startswith("+") and not l.startswith("+++")]
    removed, added = [l for l in removed if l], [l for l in added if l]
    if added and not removed and any(re.match(r"if\b", l) for l in added):
        return CHANGE_KINDS["missing-guard"]
    for old, new in zip(removed, added):
        if _CMP.findall(old) != _CMP.findall(new):
            return CHANGE_KINDS["comparison"]
        ot, nt = _tokens(old), _tokens(new)
        nums = [(a, b) for a, b in zip(ot, nt) if a != b and a.isdigit() and b.isdigit()]
        if (nums and all(abs(int(a) - int(b)) == 1 for a, b in nums)) or (
                len(nt) == len(ot) + 2 and "".join(nt).replace("+1", "").replace("-1", "") == "".join(ot)):
            return CHANGE_KINDS["off-by-one"]
        if len(ot) == len(nt) and [t for t in ot if not _ARITH.fullmatch(t)] == [t for t in nt if not _ARITH.fullmatch(t)]:
            return CHANGE_KINDS["operator"]
        if old.startswith("return") and new.startswith("return"):
            return CHANGE_KINDS["return-value"]
    if len(added) > len(removed) and any(re.match(r"if\b", l) for l in added):
        return CHANGE_KINDS["missing-guard"]
    return CHANGE_KINDS["logic"]


def _step_key(action: dict[str, Any], edited: bool) -> str | None:
    kind = action.get("kind")
    if kind == "test":
        return "rerun" if edited else "run-tests"
    if kind == "read":
        return "read"
    if kind == "edit":
        return "edit"
    if kind == "bash":
        cmd = str(action.get("arg", "")).strip()
        if re.match(r"(grep|rg|ag|git grep)\b", cmd):
            return "search"
        if re.match(r"(cat|head|tail|sed -n|less)\b", cmd):
            return "read"
        if re.match(r"(pytest|python3? -m (pytest|unittest)|make test)\b", cmd) or "pytest" in cmd:
            return "rerun" if edited else "run-tests"
        if re.match(r"(python3?|\S*/python3?)\b", cmd):
            return "reproduce"
        return "inspect"
    return None


STEP_TEXT = {
    "run-tests": "Run the test suite first and read the failing assertion: which test fails, and the expected "
                 "versus the actual value.",
    "inspect": "List the repository to see which module the failing test imports.",
    "search": "Search the code for the function named in the traceback to find where it is defined.",
    "read": "Open the module under test and read the failing function together with its docstring.",
    "reproduce": "Reproduce the failure with a one-line call to the function using the test's inputs.",
    "rerun": "Rerun the whole test suite: the failing test must pass and no other test may break.",
}
SHORT = {"run-tests": "run tests", "inspect": "list files", "search": "search code", "read": "read failing module",
         "reproduce": "reproduce", "rerun": "rerun tests"}


def procedure(view: TrajectoryView) -> list[str]:
    """The action sequence as step keys, consecutive repeats collapsed, failed edits before the last dropped."""
    keys: list[str] = []
    edited = False
    for act in view.actions:
        key = _step_key(act, edited)
        if key is None:
            continue
        edited = edited or key == "edit"
        if not keys or keys[-1] != key:
            keys.append(key)
    # the procedure a skill teaches: it starts from the failing run and ends on a green one
    if not keys or keys[0] != "run-tests":
        keys.insert(0, "run-tests")
    if "edit" not in keys:
        keys.append("edit")
    if keys[-1] != "rerun":
        keys.append("rerun")
    return keys


def procedure_summary(keys: list[str], change: ChangeKind) -> str:
    edit = f"edit {change.key.replace('-', ' ')}"
    return " → ".join(edit if k == "edit" else SHORT[k] for k in keys)


# --- candidates ---------------------------------------------------------------------------------------

@dataclass
class Candidate:
    doc: SkillDoc | None
    origin: str  # model | teacher | template
    raw: str = ""
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.doc is not None and not self.problems


def _max_diff_lines(view: TrajectoryView, details: InstanceDetails) -> int:
    changed = len(_changed_lines(view.diff))
    n = max(6, 2 * changed)
    while str(n) in details.literals:  # the bound must not look like a value taken from the trajectory
        n += 1
    return n


def _metadata(view: TrajectoryView, origin: str, limit: int) -> dict[str, str]:
    return {"subtask": SUBTASK, "split": "train", "checks": f"fix-passes-tests; max-diff-lines={limit}",
            "origin": origin, "source-trajectory": str(view.id)}


def _rules(limit: int) -> str:
    return ("## Rules\n\n- The fix must make the failing tests pass without breaking the others.\n"
            f"- Keep the fix minimal: the diff adds and removes at most {limit} lines in total.\n")


def template_candidate(view: TrajectoryView, details: InstanceDetails | None = None) -> Candidate:
    """A deterministic skill from the generalised action sequence: the fallback when the writer fails."""
    details = details or instance_details(view)
    change = classify_change(view.diff)
    keys = procedure(view)
    limit = _max_diff_lines(view, details)
    steps = [change.edit_step if k == "edit" else STEP_TEXT[k] for k in keys] + ["Submit only once the suite passes."]
    numbered = "\n".join(f"{i}. {s}" for i, s in enumerate(steps, 1))
    # only what tells this skill apart: shared boilerplate here would make every template a near-duplicate
    description = f"Use when a unit test fails because {change.when}; fix it with the smallest edit."
    body = (f"Distilled from a verified agent run ({procedure_summary(keys, change)}).\n\n"
            f"## When to use\n\nA test fails and the cause is that {change.when}. The procedure works for any "
            "module: it never needs more than the test output, the function under test and its docstring.\n\n"
            f"## Steps\n\n{numbered}\n\n{_rules(limit)}")
    doc = SkillDoc(change.name, description, body, metadata=_metadata(view, "template", limit))
    return Candidate(doc, "template")


WRITER_SYSTEM = """You write reusable skills for a coding agent. A skill is a short, general procedure in the \
Agent Skills format (SKILL.md). It must work for any repository: never mention file names, function or \
variable names, test names, or literal values from the example."""

WRITER_EXAMPLE = """---
name: fix-inverted-condition
description: Use when a unit test fails because an if-condition is inverted; find the condition and flip it.
---
## When to use

A test fails and the function takes the wrong branch for the failing input.

## Steps

1. Run the test suite and read the failing assertion.
2. Open the module under test and read the function and its docstring.
3. Evaluate each condition by hand with the test's inputs and find the one that picks the wrong branch.
4. Flip that condition and nothing else.
5. Rerun the whole test suite and submit once it passes."""


def writer_messages(view: TrajectoryView, change: ChangeKind, keys: list[str]) -> list[dict[str, str]]:
    steps = "\n".join(f"{i}. {STEP_TEXT[k] if k != 'edit' else 'edit: ' + change.when}" for i, k in enumerate(keys, 1))
    user = (f"A coding agent solved this task; a fresh test run confirmed the fix.\n\nTask: {view.task[:400]}\n"
            f"Kind of bug: {change.when}.\nWhat the agent did, generalised:\n{steps}\n\n"
            "Write the skill another agent should follow next time. Format, exactly like this example:\n\n"
            f"{WRITER_EXAMPLE}\n\nRules: name is lowercase words joined by hyphens; the description is one sentence "
            "starting with \"Use when\"; 4 to 7 numbered steps; no file names, identifiers or literal values. "
            "Answer with the SKILL.md only.")
    return [{"role": "system", "content": WRITER_SYSTEM}, {"role": "user", "content": user}]


def parse_written(raw: str) -> SkillDoc:
    """A SKILL.md from a model's reply: tolerant of code fences and text around it, strict about content."""
    text = raw.strip()
    fenced = re.search(r"```(?:markdown|md|yaml)?\n(.*?)```", text, re.S)
    if fenced and "name:" in fenced.group(1):
        text = fenced.group(1).strip()
    start = text.find("---")
    if start < 0:
        name = re.search(r"^name:\s*(.+)$", text, re.M)
        desc = re.search(r"^description:\s*(.+)$", text, re.M)
        if not (name and desc):
            raise SkillFormatError("no frontmatter (name and description) in the reply")
        body = text[max(name.end(), desc.end()):]
        text = f"---\nname: {name.group(1).strip()}\ndescription: {desc.group(1).strip()}\n---\n{body}"
    else:
        text = text[start:]
    return parse(text, where="written skill")


def model_candidate(chat, view: TrajectoryView, origin: str) -> Candidate:
    change = classify_change(view.diff)
    keys = procedure(view)
    raw, _ = chat.chat(writer_messages(view, change, keys))
    try:
        doc = parse_written(raw)
    except SkillFormatError as exc:
        return Candidate(None, origin, raw, [str(exc)])
    details = instance_details(view)
    limit = _max_diff_lines(view, details)
    body = doc.body.rstrip() + "\n"
    if "## Rules" not in body:  # the checks are the extraction's, not the writer's: state them for it
        body += "\n" + _rules(limit)
    doc = SkillDoc(doc.name, doc.description, body, metadata=_metadata(view, origin, limit))
    return Candidate(doc, origin, raw)


# --- the linter ---------------------------------------------------------------------------------------

def _fallback_lint(doc: SkillDoc) -> list[str]:
    problems = []
    try:
        validate(doc)
    except SkillFormatError as exc:
        problems.append(str(exc))
    if len(re.findall(r"^\d+\. \S", doc.body, re.M)) < 3:
        problems.append("body has no procedure (need at least 3 numbered steps)")
    if len(doc.body.split()) < 40:
        problems.append("body too short")
    return problems


def lint_candidate(doc: SkillDoc, details: InstanceDetails) -> list[str]:
    """The project linter (agent.checks.lint) when present, plus the checks only extraction can make."""
    try:
        from agent.checks.lint import lint
    except ImportError:
        lint = _fallback_lint
    problems = list(lint(doc))
    try:
        validate(doc)
    except SkillFormatError as exc:
        problems.insert(0, str(exc))
    leaked = details.found_in(f"{doc.name}\n{doc.description}\n{doc.body}")
    if leaked:
        problems.append(f"mentions instance details of its trajectory: {', '.join(leaked[:5])}")
    if re.search(r"<[A-Za-z_ ]+>|\bTODO\b|\.\.\.\s*$", doc.body):
        problems.append("contains placeholders (<...>, TODO or a trailing ...)")
    return list(dict.fromkeys(problems))


# --- de-duplication -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Neighbour:
    skill_id: int
    name: str
    similarity: float


def skill_text(name: str, description: str) -> str:
    from agent.runtime.retrieval import skill_key

    return skill_key(name, description)


def nearest(doc: SkillDoc, library: list[tuple[int, str, str]], embed: Callable[[list[str]], Any]) -> Neighbour | None:
    """The most similar library skill by cosine of unit-norm embeddings of name + description."""
    if not library:
        return None
    vecs = embed([skill_text(doc.name, doc.description)] + [skill_text(n, d) for _, n, d in library])
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
    """Extract from every pending trajectory (until stopped); returns counts and per-trajectory results."""
    counts: Counter[str] = Counter()
    results: list[dict[str, Any]] = []
    failed: set[int] = set()
    while not ctx.stopping():
        with ctx.store.session() as s:
            batch = [TrajectoryView.from_row(r) for r in evo_repo.pending_trajectories(s, limit=ctx.settings.batch + len(failed))
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
