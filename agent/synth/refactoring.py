"""Reference refactorings: the function with the degradations a skill targets undone."""

from __future__ import annotations

from agent import checks as ck
from agent.synth.layout import Content, Layout, fence
from agent.tasks.task import Task

MOTIVATION = {
    "shorten-names": "Single-letter names hide what each value holds.",
    "camel-case": "camelCase locals break the project's snake_case convention.",
    "inline-constants": "Bare numbers hide their meaning and drift apart when one copy changes.",
    "strip-hints": "Type hints document the accepted types and let a type checker catch misuse.",
    "strip-docstring": "A docstring tells callers what the function does without reading its body.",
    "percent-format": "f-strings read more clearly than `%` formatting.",
    "bare-except": "A bare `except` also swallows `KeyboardInterrupt` and real bugs.",
}
REFACTOR_CODE_PARTS = ("Code", "Refactored code", "After", "Result")


def render_refactor(task: Task, spec: ck.Spec) -> str | None:
    t = task.truth
    layout = Layout(spec)
    code = [("python", t["clean_code"])]
    tests = f"the existing tests in `test_{t['module']}.py` still pass" if t["origin"] == "corpus" else "the logic is untouched"
    behaviour = f"Behaviour is unchanged: {tests}."
    contents = {
        "Changes": Content(items=list(t["changes"])), "What changed": Content(items=list(t["changes"])),
        "Motivation": Content(" ".join(MOTIVATION[k] for k in t["kinds"])),
        "Why": Content(" ".join(MOTIVATION[k] for k in t["kinds"])),
        "Behavior": Content(behaviour), "Behaviour": Content(behaviour), "Verification": Content(behaviour),
        "Risks": Content("Low: no logic changed."), "Risk": Content("Low: no logic changed."),
    }
    contents.update({name: Content("", code=code) for name in REFACTOR_CODE_PARTS})
    renames = [c for c in t["changes"] if c.startswith("Rename")]
    contents["Renames"] = Content(items=renames) if renames else Content("None.")
    constants = [f"`{name} = {value}`" for name, value in t["constants"].items()]
    contents["Constants"] = Content(items=constants) if constants else Content("None.")
    contents["Summary"] = Content(" ".join(t["changes"]))
    if layout.parts:
        if any(p not in contents for p in layout.parts) or not any(p in REFACTOR_CODE_PARTS for p in layout.parts):
            return None
        return layout.assemble(contents)
    if spec.get("code-only"):
        return fence(*code[0]) + "\n"
    bullets = "\n".join(f"- {c}" for c in t["changes"])
    return f"{bullets}\n\n{fence(*code[0])}\n"
