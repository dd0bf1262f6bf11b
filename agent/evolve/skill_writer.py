"""From a verified trajectory to a candidate SKILL.md: what it must not mention (instance details), the kind
of change, the procedure it followed, a template or model-written skill, and the linter."""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass, field
from typing import Any

from agent.evolve.verify import TrajectoryView
from memory.errors import SkillFormatError
from memory.skillfile import SkillDoc, parse, validate

SUBTASK = "bug-fixing"


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
