"""Reference bug fixes: a unified diff or the whole fixed function, with the asked-for extras."""

from __future__ import annotations

from agent import checks as ck
from agent.synth.bug_localization import missing_extras
from agent.synth.layout import Content, Layout, fence, first_free
from agent.tasks.task import Task

FIX_CODE_PARTS = ("Fix", "Patch", "Change", "Solution", "Code")
FIX_FREE = ("Root cause", "Cause", "Problem", "Diagnosis", "Summary")


def render_fix(task: Task, spec: ck.Spec) -> str | None:
    t = task.truth
    layout = Layout(spec)
    lang = spec.get("code-block").value if spec.get("code-block") else "python"
    if lang == "diff":
        code = [("diff", t["diff"])]
    elif lang == "python":
        code = [("python", t["fixed_function"])]
    else:
        return None
    fix_sentence = t["fix"][0].upper() + t["fix"][1:] + f" on line {t['line']}."
    test = t["failing_tests"][0] if t["failing_tests"] else ""
    regression = [("python", t["failing_test_source"])] if spec.get("regression-test") and t.get("failing_test_source") else []
    if spec.get("regression-test") and not regression:
        return None
    contents = {
        "Root cause": Content(t["cause"]), "Cause": Content(t["cause"]), "Problem": Content(t["cause"]),
        "Diagnosis": Content(t["cause"]),
        "Summary": Content(f"Fix `{t['name']}`: {t['fix']}."),
        "Fix": Content(fix_sentence, code=code), "Patch": Content(fix_sentence, code=code),
        "Change": Content(fix_sentence, code=code), "Solution": Content(fix_sentence, code=code),
        "Code": Content("", code=code),
        "Regression test": Content(f"`{test}` fails before the fix and passes after it.", code=regression),
        "Test": Content(f"`{test}` fails before the fix and passes after it.", code=regression),
        "Verification": Content(f"Run `pytest {t['test_file']}`: `{test}` passes again."),
        "Risk": Content(f"Low: one line of `{t['name']}` changes."),
    }

    def build(extras: list[str]) -> str | None:
        parts = {k: Content(v.text, list(v.items), list(v.code)) for k, v in contents.items()}
        if layout.parts:
            if any(p not in parts for p in layout.parts) or not any(p in FIX_CODE_PARTS for p in layout.parts):
                return None
            if regression and not any(p in ("Regression test", "Test") for p in layout.parts):
                parts[layout.parts[-1]].code += regression
            free = first_free(layout.parts, FIX_FREE) or first_free(layout.parts, FIX_CODE_PARTS)
            parts[free].text = " ".join([parts[free].text] + extras).strip()
            return layout.assemble(parts)
        chunks = [" ".join([t["cause"], *extras, fix_sentence]), fence(*code[0])]
        if regression:
            chunks += [f"Regression test (`{test}`):", fence(*regression[0])]
        return "\n\n".join(chunks) + "\n"

    first = build([])
    if first is None:
        return None
    extras = missing_extras(first, t, spec)
    return build(extras) if extras else first
